"""The whole stack with the code copy on: ComfyUI runs from the container's disk, the volume is only read.

The stand-in ComfyUI and a small venv (its packages the test venv's, through a .pth file) are
the "volume"; CODE_COPY_MIN_CALL_MS=0 makes the worker copy them as from a slow volume.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import requests

from tests.stack import REPO, VENV, Stack, declare_flags
from tests.test_stack import assert_job_returns_png
from tests.workflows import model_loading_job, write_tiny_model
from worker_common import recent_models


def small_venv(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    site = next((folder / "lib").glob("python3*/site-packages"))
    (site / "test-venv.pth").write_text(f"{next((VENV / 'lib').glob('python3*/site-packages'))}\n")
    return folder


def tree_state(root: Path) -> dict[Path, int]:
    return {path: path.lstat().st_mtime_ns for path in root.rglob("*")}


def standin_volume(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(the ComfyUI install, its venv, its tiny model file) on a "volume" in `tmp_path`."""
    comfy = tmp_path / "volume" / "ComfyUI"
    shutil.copytree(REPO / "standin" / "ComfyUI", comfy, ignore=shutil.ignore_patterns("__pycache__"))
    venv = small_venv(tmp_path / "volume" / "venv")
    declare_flags(comfy, "0.3.64")  # the install's own cli_args.py, as the stack declares it: part of the volume
    return comfy, venv, write_tiny_model(comfy / "models" / "checkpoints" / "tiny.safetensors")


def test_comfyui_runs_from_the_copy_and_the_volume_is_only_read(tmp_path: Path) -> None:
    comfy, venv, _tiny = standin_volume(tmp_path)
    volume = comfy.parent
    (comfy / "assets").mkdir()  # data, no code: read from the volume where it lies
    for index in range(4):
        (comfy / "assets" / f"a{index}.js").write_text("export {};\n")
    before = tree_state(volume)
    env = {"COMFYUI_VENV": str(venv), "CODE_COPY_MIN_CALL_MS": "0", "CODE_COPY_DIR": str(tmp_path / "code")}
    env["CODE_COPY_DATA_LINK_MIN_FILES"] = "4"
    stack = Stack(tmp_path / "stack", env, comfyui_dir=comfy)
    try:
        stack.start()
        stack.wait_accepting_jobs(120)
        assert_job_returns_png(stack)
        assert stack.runsync(model_loading_job())["status"] == "COMPLETED"
        copied = stack.wait_line("ComfyUI's code copied to")
        assert "0 removed" in copied
        linked = int(re.search(r"(\d+) data folders linked", copied).group(1))  # assets/, and the stand-in's own
        assert linked >= 1
        assert "no likely models" in stack.wait_line("model prefetch:"), "no warm-up workflow, no jobs yet"
        assert stack.wait_line("code pack: wrote"), "a pack of the copy for fresh workers, beside ComfyUI's start"
        argv = psutil.Process(stack.pid_of("comfyui")).cmdline()
        assert argv[0] == str(tmp_path / "code" / "venv" / "bin" / "python")
        assert psutil.Process(stack.pid_of("comfyui")).cwd() == str(tmp_path / "code" / "ComfyUI")
        assert (tmp_path / "code" / "ComfyUI" / "assets").readlink() == comfy / "assets"
        metrics = requests.get(f"{stack.sidecar_url}/metrics", timeout=10).text
        assert "comfy_worker_code_from_copy 1.0" in metrics
        assert "comfy_worker_code_copy_files_copied" in metrics
        assert f"comfy_worker_code_copy_data_folders_linked {float(linked)}" in metrics
        assert "comfy_worker_startup_code_ready_seconds" in metrics
        assert 'comfy_worker_startup_phase_seconds{phase="supervisord_up"}' in metrics
        assert 'comfy_worker_startup_phase_seconds{phase="first_job_done"}' in metrics
        assert 'comfy_worker_startup_phase_seconds{phase="comfyui_answered"}' in metrics
        assert 'comfy_worker_startup_phase_seconds{phase="first_model_loaded"}' in metrics
        assert stack.wait_line("first job done")
        command = [str(stack.home / "bin" / "comfy-worker"), "status"]
        status = subprocess.run(command, env=stack.env, capture_output=True, text=True, timeout=60)
        assert "code        ComfyUI's code from a copy on the container's disk, ready" in status.stdout, status.stdout
        assert f"{linked} data folders read from it in place" in status.stdout
        phases = next(line for line in status.stdout.splitlines() if line.startswith("phases"))
        for phase in ("code", "ComfyUI answered", "ready", "first model loaded", "first job done"):
            assert phase in phases, phases
    finally:
        stack.stop()
        stack.kill_everything()
    changed = {path for path, mtime in tree_state(volume).items() if before.get(path) != mtime}
    kept, models = comfy / ".comfy-worker" / "code", comfy / ".comfy-worker" / "models"
    own = {comfy, kept.parent, kept, *kept.iterdir(), models, *models.iterdir()}
    assert changed == own, "only the worker's own files: its manifest and pack, its record of the models jobs loaded"
    assert sorted(path.suffixes[-1] for path in kept.iterdir()) == [".json", ".json", ".pack"], "and its pack"


def test_the_first_jobs_model_is_loaded_from_its_copy_on_the_disk_never_stale(tmp_path: Path) -> None:
    comfy, venv, tiny = standin_volume(tmp_path)
    recent_models.RecentModels(comfy, "an-earlier-worker").loaded(["checkpoints/tiny.safetensors"])
    cache = tmp_path / "model-cache"
    env = {"COMFYUI_VENV": str(venv), "CODE_COPY_MIN_CALL_MS": "0", "CODE_COPY_DIR": str(tmp_path / "code")}
    stack = Stack(tmp_path / "stack", env | {"MODEL_CACHE_DIR": str(cache)}, comfyui_dir=comfy)
    try:
        stack.start()
        said = stack.wait_line("model prefetch:")
        assert "copied to the container's disk: checkpoints/tiny.safetensors" in said, said
        stat = tiny.stat()
        tiny.write_bytes(b"\xff" * stat.st_size)  # unreadable as a model, same size and mtime: the copy is read
        os.utime(tiny, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        stack.wait_accepting_jobs(120)
        argv = psutil.Process(stack.pid_of("comfyui")).cmdline()  # the launcher's process is ComfyUI's by now
        assert argv[argv.index("--extra-model-paths-config") + 1] == str(cache / "extra_model_paths.yaml")
        assert stack.runsync(model_loading_job())["status"] == "COMPLETED", "loaded from the copy"
        tiny.write_bytes(b"\xff" * 8)  # replaced on the volume: the copy is stale
        result = stack.runsync(model_loading_job(color=1))  # not ComfyUI's cached outputs: the loader runs again
        assert result["status"] == "FAILED", "the volume's own (broken) file, not the stale copy"
        assert stack.wait_line("changed since it was copied to the disk")
        assert not (cache / "checkpoints" / "tiny.safetensors").exists()
    finally:
        stack.stop()
        stack.kill_everything()
