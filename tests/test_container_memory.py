"""ComfyUI's memory inside a container: the limit is found, and ComfyUI's caches stay within it.

The cgroup files are faked in a folder (COMFY_CGROUP_DIR) whose usage a thread keeps equal to
the real resident memory of ComfyUI's process, as the kernel's accounting would; the stand-in
plays 0.38.1's RAM-pressure cache, measuring with psutil as ComfyUI does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from launcher.config import load as load_launcher_config
from launcher.memory import SITE, Limit, container_limit, limit_in, memory_plan, own_cgroup_dirs
from tests.stack import Stack

MB = 1024**2


def cgroup_files(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)
    return folder


# -- finding the limit -------------------------------------------------------------------------


def test_a_limit_is_read_from_cgroup_v2_and_v1_files(tmp_path: Path) -> None:
    assert limit_in(cgroup_files(tmp_path / "v2", memory_max="8589934592\n")) == Limit(
        8 << 30, tmp_path / "v2", "memory.max"
    )
    assert limit_in(cgroup_files(tmp_path / "open", memory_max="max\n")) is None
    v1 = cgroup_files(tmp_path / "v1", memory_limit_in_bytes="4294967296\n")
    assert limit_in(v1) == Limit(4 << 30, v1, "memory.limit_in_bytes")
    assert limit_in(cgroup_files(tmp_path / "v1-open", memory_limit_in_bytes="9223372036854771712\n")) is None


@pytest.mark.parametrize(
    ("proc", "limit_at", "hybrid"),
    [
        ("0::/kubepods/pod1/ctr\n", "kubepods/pod1", False),  # v2: the pod's limit binds, read from the ancestor
        ("4:memory:/docker/abc\n0::/\n", "memory/docker/abc", False),  # v1
        ("4:memory:/\n0::/ctr\n", "unified/ctr", True),  # v2 beside v1 ("hybrid")
    ],
)
def test_the_cgroup_is_found_through_proc_self_cgroup(tmp_path: Path, monkeypatch, proc, limit_at, hybrid) -> None:
    monkeypatch.delenv("COMFY_CGROUP_DIR", raising=False)
    root = tmp_path / "cgroup"
    if hybrid:
        (root / "unified").mkdir(parents=True)
    directory = root / limit_at
    cgroup_files(directory, memory_max="3221225472", memory_limit_in_bytes="3221225472")
    cgroup_files(root / limit_at / "ctr", memory_max="max")  # a child without a limit of its own
    cgroup_files(root / "unified" if hybrid else root, memory_max="99999999999")  # a looser one above
    (tmp_path / "cgroup-file").write_text(proc)
    assert container_limit("", tmp_path / "cgroup-file", root).directory == directory
    assert own_cgroup_dirs(tmp_path / "cgroup-file", root)[0].is_relative_to(root)


def test_comfy_cgroup_dir_names_the_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COMFY_CGROUP_DIR", str(cgroup_files(tmp_path / "c", memory_max="1073741824")))
    configured = load_launcher_config().cgroup_dir
    assert container_limit(configured, tmp_path / "no-such-proc-file", tmp_path / "nowhere").bytes == 1 << 30


def test_the_plan_says_what_was_found_and_what_was_done(tmp_path: Path) -> None:
    machine = psutil.virtual_memory().total
    comfyui = tmp_path / "ComfyUI"
    (comfyui / "comfy").mkdir(parents=True)
    assert memory_plan(comfyui, {}, None).env == {}
    loose = memory_plan(comfyui, {}, Limit(machine * 2, tmp_path, "memory.max"))
    assert loose.env == {} and "nothing to do" in loose.log_line
    tight = memory_plan(comfyui, {"PYTHONPATH": "/theirs"}, Limit(1 << 30, tmp_path, "memory.max"))
    assert tight.env == {"PYTHONPATH": f"{SITE}:/theirs", "COMFY_WORKER_CGROUP_DIR": str(tmp_path)}
    assert tight.log_line.startswith(f"ComfyUI's memory: the container's limit is 1.0 GB ({tmp_path}/memory.max)")
    assert "clamped to the container" in tight.log_line
    (comfyui / "comfy" / "system_memory.py").write_text("def virtual_memory_available():\n    pass\n")
    own = memory_plan(comfyui, {}, Limit(1 << 30, tmp_path, "memory.max"))
    assert own.env == {} and own.log_line.endswith("the installed ComfyUI measures within its container itself")


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_comfyuis_psutil_sees_the_container(tmp_path: Path, version: str) -> None:
    if version == "v2":
        folder = cgroup_files(tmp_path, memory_max=str(1 << 30), memory_current=str(700 * MB))
        (folder / "memory.stat").write_text(f"anon 1\ninactive_file {100 * MB}\n")
    else:
        folder = cgroup_files(tmp_path, memory_limit_in_bytes=str(1 << 30), memory_usage_in_bytes=str(700 * MB))
        (folder / "memory.stat").write_text(f"total_inactive_file {100 * MB}\n")
    env = {**os.environ, "PYTHONPATH": str(SITE), "COMFY_WORKER_CGROUP_DIR": str(folder)}
    script = "import json, psutil; m = psutil.virtual_memory(); print(json.dumps([m.total, m.available, m.percent]))"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    total, available, percent = json.loads(done.stdout)
    assert total == 1 << 30
    assert available == min(psutil.virtual_memory().available, (1 << 30) - 600 * MB)
    assert percent == round(((1 << 30) - available) * 100 / (1 << 30), 1)
    machine = subprocess.run(
        [sys.executable, "-c", script], env={**env, "COMFY_WORKER_CGROUP_DIR": ""}, capture_output=True, text=True
    )
    assert json.loads(machine.stdout)[0] == psutil.virtual_memory().total


# -- a series of workflows under a limit -----------------------------------------------------------


class Kernel:
    """The kernel's part of a fake cgroup: its usage is one process's resident memory, always.

    Once a process is followed, memory.current is a named pipe that a thread answers: each read
    gets the process's resident memory at that moment, as the kernel's own accounting gives it.
    (A file rewritten every few milliseconds can be stale on a busy machine, and ComfyUI's cache,
    reading it between evictions, would then free more than it has to.) One figure per read: the
    thread writes once the reader's open has returned, and opens the pipe again only once the
    reader has closed it; written to sooner, the pipe would hand one read two figures as one
    huge number, and the cache would free everything. A pipe's writer gets no event for either,
    so the reader's /proc/PID/fd is looked at every 0.1 ms while a read is under way (between
    reads the thread sleeps in its open). Another thread samples the peak (what the
    kernel's out-of-memory killer would see) and the latest figure, which the file holds again
    after `stop()`.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pid: int | None = None
        self._pipe: tuple[int, int] | None = None  # the named pipe's (device, inode)
        self.peak = 0
        self.latest = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=work, daemon=True) for work in (self._answer, self._sample)]

    def set_limit(self, size: int) -> None:
        self._write("memory.max", size)

    def follow(self, pid: int) -> None:
        self.pid = pid
        pipe = self.folder / ".memory.current.pipe"
        os.mkfifo(pipe)
        pipe.replace(self.folder / "memory.current")  # readers never find it missing
        self._pipe = _identity(self.folder / "memory.current")
        for thread in self._threads:
            thread.start()

    def rss(self) -> int:
        assert self.pid
        return psutil.Process(self.pid).memory_info().rss

    def _answer(self) -> None:
        while not self._stop.is_set():
            pipe = os.open(self.folder / "memory.current", os.O_WRONLY)  # waits for a reader
            try:
                if self._until(self._reading):  # its open has returned
                    os.write(pipe, str(self.rss()).encode())
            except (OSError, psutil.Error):  # the reader left, or the process ended: it reads nothing
                pass
            finally:
                os.close(pipe)
            self._until(lambda: not self._reading())  # it has read to the end

    def _reading(self) -> bool:
        """Whether the followed process has the pipe open."""
        try:
            links = list(Path(f"/proc/{self.pid}/fd").iterdir())
        except OSError:
            return False
        return any(_identity(link) == self._pipe for link in links)

    def _until(self, condition: Callable[[], bool]) -> bool:
        """Wait for `condition`; False when stopped first."""
        while not condition():
            if self._stop.wait(0.0001):
                return False
        return True

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.latest = self.rss()
            self.peak = max(self.peak, self.latest)

    def _write(self, name: str, value: int) -> None:
        temporary = self.folder / f".{name}"
        temporary.write_text(str(value))
        temporary.replace(self.folder / name)  # readers never see half a number

    def stop(self) -> None:
        self._stop.set()
        waking = os.open(self.folder / "memory.current", os.O_RDONLY | os.O_NONBLOCK)  # the answering thread returns
        self._write("memory.current", self.latest)  # later readers read a file again
        for thread in self._threads:
            thread.join(5)
        os.close(os.open(f"/proc/self/fd/{waking}", os.O_WRONLY | os.O_NONBLOCK))  # a read still opening it ends
        os.close(waking)


def _identity(path: Path) -> tuple[int, int] | None:
    """What `path` is (through a /proc/PID/fd link: what the descriptor is open on)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def run_prompt(stack: Stack, seed: int) -> list[str]:
    """One workflow of ComfyUI's (12 MB of images each seed), run to the end; the nodes it found cached."""
    prompt = {
        "1": {"class_type": "StandinBigImages", "inputs": {"count": 4, "width": 1024, "height": 1024, "seed": seed}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    prompt_id = str(uuid.uuid4())
    answer = requests.post(f"{stack.comfy_url}/prompt", json={"prompt": prompt, "prompt_id": prompt_id}, timeout=30)
    assert answer.status_code == 200, answer.text

    def finished() -> dict | None:
        return requests.get(f"{stack.comfy_url}/history/{prompt_id}", timeout=10).json().get(prompt_id)

    entry = stack.wait_for(finished, 60, 0.02, what=f"prompt {seed}")
    assert entry["status"]["status_str"] == "success", entry
    return next(data["nodes"] for event, data in entry["status"]["messages"] if event == "execution_cached")


@pytest.mark.parametrize("contained", [True, False], ids=["worker-clamps", "control-without"])
def test_a_series_of_workflows_stays_under_the_containers_limit(
    make_stack: Callable[..., Stack], tmp_path: Path, contained: bool
) -> None:
    folder = cgroup_files(tmp_path / "cgroup", memory_current="0")
    kernel = Kernel(folder)
    kernel.set_limit(1 << 30)  # below the machine's RAM: the launcher acts
    env = {"STANDIN_COMFYUI_VERSION": "0.38.1", "COMFY_EXTRA_ARGS": "--cache-ram 0.04", "MALLOC_ARENA_MAX": "2"}
    if contained:
        env["COMFY_CGROUP_DIR"] = str(folder)
    stack = make_stack(**env).start()
    stack.wait_accepting_jobs()
    kernel.follow(stack.pid_of("comfyui"))
    limit = kernel.rss() + 240 * MB  # the container: ComfyUI as it idles, and 240 MB for its work
    kernel.set_limit(limit)
    try:
        for seed in range(30):
            run_prompt(stack, seed)
        again = run_prompt(stack, 29)  # the latest workflow, sent again
        oldest = run_prompt(stack, 0)
    finally:
        kernel.stop()
    if contained:
        assert any("clamped to the container" in line for line in stack.lines if "ComfyUI's memory: " in line)
        assert kernel.peak < limit, f"peak {kernel.peak / MB:.0f} MB, limit {limit / MB:.0f} MB"
        assert again == ["1", "2"], f"what fits stays cached (held {kernel.latest / MB:.0f} of {limit / MB:.0f} MB)"
        assert "1" not in oldest, "the oldest workflow's images were freed (its small preview may stay, as in ComfyUI)"
    else:
        assert kernel.peak > limit + 100 * MB, "without the worker, the cache grows past the container's limit"
