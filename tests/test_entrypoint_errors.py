"""The entrypoint's last line says why it exits, even when one of its own commands fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.handler_harness import base_env
from tests.stack import VENV, copy_project

# Replaces the worker's folder preparation with a bug: an exception nobody expected.
FAILING_PREPARE = """
import worker_common.layout as layout

def prepare(self):
    raise RuntimeError("an unexpected bug in prepare")

layout.Layout.prepare = prepare
"""


def run_entrypoint(home: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    done = subprocess.run(
        [str(home / "services" / "entrypoint")],
        env={**base_env(), "WORKER_VENV": str(VENV), "COMFYUI_DIR": str(home / "standin" / "ComfyUI"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout.splitlines()


def test_a_failing_mkdir_ends_with_the_exit_line(tmp_path: Path) -> None:
    home = copy_project(tmp_path)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    code, lines = run_entrypoint(home, {"LOG_DIR": str(not_a_folder / "logs")})
    assert code == 1
    assert lines[-1].startswith("[entrypoint] exiting with code 1: line "), lines
    assert "mkdir -p" in lines[-1] and "failed with status 1" in lines[-1], lines


def test_an_exception_in_prepare_ends_with_the_exit_line(tmp_path: Path) -> None:
    home = copy_project(tmp_path)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(FAILING_PREPARE)
    pythonpath = os.pathsep.join([str(tmp_path / "site"), str(home)])
    code, lines = run_entrypoint(home, {"PYTHONPATH": pythonpath, "WORKER_DATA_DIR": str(tmp_path / "data")})
    assert code == 1
    assert lines[-1] == "[entrypoint] exiting with code 1: RuntimeError: an unexpected bug in prepare", lines
