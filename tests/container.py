"""The worker's image through podman, as RunPod and a person in a Pod use it: plain functions for tests and bench.

    conf = setup()                        # podman's packages and containers.conf (scripts/image setup)
    image = build_image()                 # the checkout's image on the Debian 12 stand-in base
    volume = make_volume(folder, image)   # the stand-in ComfyUI with a com_venv made by the image's Python
    worker = Container.run(image, volume, SERVE_API_LOCALLY="true")
    worker.wait_accepting_jobs(); worker.runsync({...}); worker.stop()

Building goes through scripts/image (what `make image` runs), so tests, benchmarks and users build the
image the same way. Containers use podman's default bridge network: ports are published on loopback only,
ComfyUI (127.0.0.1 inside) and supervisord's socket stay out of reach, and the host is
host.containers.internal (a test's server binds the bridge's address, `host_address()`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from tests.processes import OnLoopback, answers_200, free_port, wait_until
from tests.stack import declare_flags

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "image"
IMAGE_TAG = "localhost/comfy-worker:test"
DEBIAN_BASE = "localhost/comfy-worker-base:debian12"  # the name scripts/image gives the base it makes
PYTHON = "/usr/bin/python3.11"
VOLUME = "/runpod-volume"
WORKER_SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"
CONTAINER_API_PORT = 8000
CONTAINER_SIDECAR_PORT = 8081
HOST_NAME = "host.containers.internal"  # the host, as a container on podman's bridge reaches it


def setup() -> Path:
    """podman, runc and mmdebstrap installed (apt-get when missing), and the containers.conf to run them with."""
    result = subprocess.run([str(SCRIPT), "setup"], capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/image setup failed:\n{result.stdout}{result.stderr}")
    return Path(result.stdout.strip())


def podman(*args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """`podman ARGS` with the project's containers.conf; stdout and stderr as text."""
    env = {**os.environ, "CONTAINERS_CONF": str(REPO / ".run" / "podman" / "containers.conf")}
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def build_image(tag: str = IMAGE_TAG, base: str = "debian12") -> str:
    """The checkout's image, built by scripts/image (layers cached by podman between builds); returns `tag`."""
    setup()
    env = {**os.environ, "BASE_IMAGE": base}
    result = subprocess.run(
        [str(SCRIPT), "build", tag], capture_output=True, text=True, timeout=1800, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"building the image failed:\n{result.stdout[-6000:]}{result.stderr[-6000:]}")
    return tag


def image_size(image: str) -> int:
    """The image's size in bytes, as podman counts it (all its layers, the base's included)."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)


def run_in_image(image: str, *command: str, volume: Path | None = None, user: str | None = None) -> str:
    """Run `command` in a throw-away container of `image` (not the worker's entrypoint); its output."""
    options = ["--rm", "--network", "none", "--entrypoint", command[0]]
    if volume is not None:
        options += ["--volume", f"{volume}:{VOLUME}"]
    if user:
        options += ["--user", user]
    return podman("run", *options, image, *command[1:], timeout_s=300).stdout


def make_volume(folder: Path, image: str, python: str = PYTHON) -> Path:
    """A network volume in `folder`: the stand-in ComfyUI, and its com_venv made by `python` inside the image.

    The venv is made as a user makes one in a Pod (`python3.11 -m venv`), so its bin/python links to the
    image's interpreter. It gets the stand-in's packages (aiohttp, Pillow) from the worker's venv through a
    .pth file rather than from the network: tests reach nothing beyond the machine. Everything is readable by
    every user, as the README asks (ComfyUI runs as a user of its own).
    """
    folder.mkdir(parents=True, exist_ok=True)
    comfyui = folder / "ComfyUI"
    shutil.copytree(
        REPO / "standin" / "ComfyUI",
        comfyui,
        ignore=shutil.ignore_patterns("__pycache__", "output", "temp", "user", "input", ".venv"),
    )
    for name in ("input", "output", "temp"):
        (comfyui / name).mkdir(exist_ok=True)
    declare_flags(comfyui, "0.3.64")  # the release the stand-in plays when STANDIN_COMFYUI_VERSION is unset
    venv = f"{VOLUME}/ComfyUI/com_venv"
    run_in_image(image, python, "-m", "venv", "--without-pip", venv, volume=folder)
    version = run_in_image(image, python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
    site = comfyui / "com_venv" / "lib" / f"python{version.strip()}" / "site-packages"
    (site / "worker-venv.pth").write_text(f"{WORKER_SITE_PACKAGES}\n")
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    return folder


def volume_snapshot(folder: Path) -> dict[str, tuple[int, int, float]]:
    """Every path under `folder` with its mode, size and modification time: what a change would alter."""
    return {
        str(path.relative_to(folder)): (stat.st_mode, stat.st_size, stat.st_mtime)
        for path in sorted(folder.rglob("*"))
        if "__pycache__" not in path.parts
        for stat in [path.lstat()]
    }


@contextlib.contextmanager
def bridge_kept_up(image: str) -> Iterator[str]:
    """The host's address on podman's bridge, as containers resolve host.containers.internal; a test's
    server that containers must reach binds it. A container is kept running on the bridge meanwhile:
    the first container brings the bridge up, and netavark (podman's network stack where it is
    installed) takes it down, the address with it, when the last one stops (CNI leaves it up)."""
    name = f"comfy-worker-bridge-{os.getpid()}"
    podman("run", "--detach", "--rm", "--name", name, "--entrypoint", "sleep", image, "infinity", timeout_s=300)
    try:
        yield podman("exec", name, "getent", "hosts", HOST_NAME).stdout.split()[0]
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


class Container(OnLoopback):
    """One container of the worker's image, named, with its API and sidecar published on loopback."""

    def __init__(self, name: str, image: str, api_port: int, sidecar_port: int) -> None:
        self.name = name
        self.image = image
        self.api_port = api_port
        self.sidecar_port = sidecar_port

    @classmethod
    def run(
        cls,
        image: str,
        volume: Path | None,
        *,
        sidecar_port: int = CONTAINER_SIDECAR_PORT,
        options: tuple[str, ...] = (),
        **env: str,
    ) -> Container:
        """Start a detached container (the image's own entrypoint) with `volume` at /runpod-volume and `env`.

        `sidecar_port` is the port inside the container (PORT_HEALTH's value when the test sets it);
        `options` are more `podman run` options (a benchmark's --cpus or --memory, say).
        The stand-in needs only aiohttp and Pillow in its venv, so COMFY_VENV_REQUIRED_MODULES says so
        unless `env` does.
        """
        container = cls(f"comfy-worker-test-{uuid.uuid4().hex[:10]}", image, free_port(), free_port())
        env = {"COMFY_VENV_REQUIRED_MODULES": "aiohttp PIL", **env}
        arguments = ["run", "--detach", "--name", container.name, *options]
        arguments += ["--publish", f"127.0.0.1:{container.api_port}:{CONTAINER_API_PORT}"]
        arguments += ["--publish", f"127.0.0.1:{container.sidecar_port}:{sidecar_port}"]
        if volume is not None:
            arguments += ["--volume", f"{volume}:{VOLUME}"]
        for name, value in env.items():
            arguments += ["--env", f"{name}={value}"]
        podman(*arguments, image)
        return container

    # -- lifecycle ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """podman's view: Status (running, exited...), ExitCode, Pid, ..."""
        return json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def address(self) -> str:
        """The container's own address on podman's bridge (reachable from the host, published or not)."""
        return podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", self.name).stdout.strip()

    def running(self) -> bool:
        return self.state()["Status"] == "running"

    def wait_exit(self, timeout_s: float = 120) -> int:
        """The container's exit code, once it has stopped by itself."""
        return int(podman("wait", self.name, timeout_s=timeout_s).stdout.strip())

    def stop(self, timeout_s: int = 60) -> int:
        """`podman stop`: SIGTERM, then SIGKILL after `timeout_s`; the exit code."""
        podman("stop", "--time", str(timeout_s), self.name, timeout_s=timeout_s + 60)
        return self.wait_exit()

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def last_line(self) -> str:
        lines = [line for line in self.logs().splitlines() if line.strip()]
        return lines[-1] if lines else ""

    # -- inside ------------------------------------------------------------------------

    def exec(self, *command: str, user: str | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """`podman exec` as a shell in a Pod runs it (root unless `user`); not checked."""
        options = ["--user", user] if user else []
        return podman("exec", *options, self.name, *command, timeout_s=timeout_s, check=False)

    def shell(self, script: str, user: str | None = None) -> subprocess.CompletedProcess:
        return self.exec("bash", "-c", script, user=user)

    def healthy(self) -> bool:
        """`podman healthcheck run`: the image's HEALTHCHECK, once (no systemd here to run it on a timer)."""
        return podman("healthcheck", "run", self.name, check=False).returncode == 0

    def program_pid(self, program: str) -> int:
        return int(self.exec("supervisorctl", "pid", program).stdout.strip())

    # -- talking to it -----------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 120, what: str = "") -> Any:
        """Poll `predicate` until it is true; fail with the container's log should it exit or time run out."""

        def exited() -> str | None:
            return None if self.running() else f"{self.name} exited"

        return wait_until(predicate, timeout_s, what, interval_s=0.1, ended=exited, context=lambda: self.logs()[-6000:])

    def wait_accepting_jobs(self, timeout_s: float = 120) -> None:
        """Until the runpod local API answers (SERVE_API_LOCALLY=true), which the handler serves once ready."""
        self.wait_for(lambda: answers_200(f"{self.api_url}/"), timeout_s, "the local API")

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until the sidecar's /readyz answers 200 (through the published port)."""

        def ready() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.sidecar_url}/readyz", timeout=1).status_code == 200
            return False

        self.wait_for(ready, timeout_s, "readiness")

    def runsync(self, job_input: dict, timeout_s: float = 120) -> dict:
        response = requests.post(f"{self.api_url}/runsync", json={"input": job_input}, timeout=timeout_s)
        response.raise_for_status()
        return response.json()
