"""Shared fixtures: a real worker stack per test, always torn down."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.handler_harness import MotoServer
from tests.stack import Stack


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Build (not start) stacks with extra environment; every one is killed at the end."""
    stacks: list[Stack] = []

    def build(**env: str) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", env)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.kill_everything()


@pytest.fixture
def stack(make_stack) -> Stack:
    """A started stack with the stand-in ComfyUI, accepting jobs."""
    running = make_stack().start()
    running.wait_accepting_jobs()
    return running


@pytest.fixture(scope="module")
def moto(request: pytest.FixtureRequest) -> Iterator[MotoServer]:
    """A real S3-compatible server (moto) on loopback, with the test module's BUCKET created."""
    server = MotoServer()
    server.client().create_bucket(Bucket=request.module.BUCKET)
    yield server
    server.stop()
