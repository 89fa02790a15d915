"""Shared fixtures, one per kind of stack, each always torn down.

- `rig` (module): tests/handler_harness.py's Rig, the stand-in ComfyUI, the sidecar and the
  handler without supervisord. A module shapes it by overriding `rig_shape`.
- `make_stack` / `stack` (test): tests/stack.py's Stack, the whole worker under supervisord.
- `world` (test): tests/sidecar_world.py's World, the sidecar's pieces one by one.
- `moto` (module): an S3 server with the module's BUCKET.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.handler_harness import MotoServer, Rig, RigShape
from tests.sidecar_world import World
from tests.stack import Stack


@pytest.fixture(scope="module")
def rig_shape() -> RigShape:
    """The default: the handler started with the harness's own settings. A module overrides it."""
    return RigShape()


@pytest.fixture(scope="module")
def rig(rig_shape: RigShape, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    running = Rig(tmp_path_factory.mktemp("rig"), rig_shape.comfy_env, rig_shape.shared_env)
    rig_shape.prepare(running)
    if rig_shape.handler_env is None:
        running.start_without_handler()
    else:
        running.start(rig_shape.handler_env)
    yield running
    running.stop()


@pytest.fixture
def world() -> Iterator[World]:
    made = World()
    yield made
    made.close()


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
