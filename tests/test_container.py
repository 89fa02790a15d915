"""The image as users run it: built from this checkout, started, probed and stopped with podman.

The image is built once per session (tests/container.py, through scripts/image as `make image` does) on the
Debian 12 stand-in base, and every container mounts a volume folder holding the stand-in ComfyUI with a
com_venv made by the image's own Python. The containers are started together by one module fixture, so
their start-ups overlap; each test then waits on its own. `worker` is shared by the tests that only use it
(jobs, Pod-shell commands, security); the others have a container each, since they stop or break it.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from PIL import Image

from tests.container import (
    CONTAINER_API_PORT,
    CONTAINER_SIDECAR_PORT,
    HOST_NAME,
    PYTHON,
    Container,
    bridge_kept_up,
    build_image,
    image_size,
    make_volume,
    run_in_image,
    volume_snapshot,
)
from tests.fake_runpod import FakeRunPod
from tests.handler_harness import MotoServer
from tests.images import b64, noise_png
from tests.workflows import (
    assert_own_images,
    completed,
    image_chain,
    model_loading_job,
    own_images_job,
    write_tiny_model,
)
from worker_common.recent_models import RecentModels

REPO = Path(__file__).resolve().parent.parent
BUCKET = "outputs"
SECRETS = {"S3_BUCKET_CREDS_SECRET_ACCESS_KEY": "s3-secret-in-the-container", "COMFY_ORG_API_KEY": "comfy-org-secret"}
PORT_HEALTH = "8082"
ALARMING = re.compile(r"Traceback|\bERROR\b|CRITICAL|FATAL|[Kk]illed|unexpectedly")
WORKER_FOLDERS = "/var/lib/comfy-worker"


# -- the image, the volume and the containers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> str:
    started = time.monotonic()
    tag = build_image()
    took = time.monotonic() - started
    line = f"[image] {tag}: {image_size(tag) / 1e9:.2f} GB on the Debian 12 base, built (or found) in {took:.0f} s"
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{line}")  # in every run's output, passed or not
    return tag


@pytest.fixture(scope="module")
def volume(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = make_volume(tmp_path_factory.mktemp("volume"), image)
    yield folder


@pytest.fixture(scope="module")
def copy_volume(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A volume of its own for the container that copies ComfyUI's code: it keeps its manifest and pack there.
    An earlier worker's record names a model its jobs loaded: the container copies it to its disk."""
    folder = make_volume(tmp_path_factory.mktemp("volume-copy"), image)
    write_tiny_model(folder / "ComfyUI" / "models" / "checkpoints" / "tiny.safetensors")
    RecentModels(folder / "ComfyUI", "an-earlier-worker").loaded(["checkpoints/tiny.safetensors"])
    return folder


@pytest.fixture(scope="module")
def other_python_volume(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A volume whose com_venv was made with Python 3.12 (an Ubuntu 24.04 Pod): links to /usr/bin/python3.12."""
    folder = make_volume(tmp_path_factory.mktemp("volume-py312"), image)
    venv = folder / "ComfyUI" / "com_venv"
    (venv / "lib" / "python3.11").rename(venv / "lib" / "python3.12")
    for name in ("python", "python3", "python3.11"):
        (venv / "bin" / name).unlink()
    (venv / "bin" / "python3.12").symlink_to("/usr/bin/python3.12")
    for name in ("python", "python3"):
        (venv / "bin" / name).symlink_to("python3.12")
    config = (venv / "pyvenv.cfg").read_text()
    config = re.sub(r"(?m)^version = .*$", "version = 3.12.3", config).replace(PYTHON, "/usr/bin/python3.12")
    (venv / "pyvenv.cfg").write_text(config)
    return folder


@pytest.fixture(scope="module")
def bridge(image: str) -> Iterator[str]:
    with bridge_kept_up(image) as address:
        yield address


@pytest.fixture(scope="module")
def s3(bridge: str) -> Iterator[MotoServer]:
    """moto on podman's bridge address: the containers reach it as host.containers.internal."""
    server = MotoServer(host=bridge)
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runpod(bridge: str) -> Iterator[FakeRunPod]:
    fake = FakeRunPod(rtt_s=0.01, host=bridge)
    yield fake
    fake.close()


def runpod_variables(pod_id: str) -> dict[str, str]:
    """What RunPod sets in every serverless worker besides the job URLs (PORT_HEALTH moves the sidecar)."""
    return {
        "RUNPOD_POD_ID": pod_id,
        "RUNPOD_ENDPOINT_ID": "endpoint-test",
        "RUNPOD_POD_HOSTNAME": f"{pod_id}-64410f5c",
        "RUNPOD_GPU_COUNT": "1",
        "RUNPOD_CPU_COUNT": "2",
        "RUNPOD_DC_ID": "EU-RO-1",
        "RUNPOD_VOLUME_ID": "volume-test",
        "PORT_HEALTH": PORT_HEALTH,
    }


@dataclass
class Containers:
    worker: Container  # the local API, S3 on moto, secrets set: shared by the tests that only use it
    runpod: Container  # the runpod SDK's job-take loop against the fake RunPod; stopped during a job
    health: Container  # healthy, then ComfyUI hangs; then supervisord is killed
    never_ready: Container  # ComfyUI never answers: unhealthy, then exit 3
    no_volume: Container
    copied: Container  # ComfyUI runs from its code's copy on the container's disk
    other_python: Container


@pytest.fixture(scope="module")
def containers(
    image: str, volume: Path, copy_volume: Path, other_python_volume: Path, s3: MotoServer, runpod: FakeRunPod
) -> Iterator[Containers]:
    """Every container of the module, started at once; all removed at the end."""
    s3_env = {
        "S3_ENDPOINT_URL": s3.url,  # by address: moto takes a host name's first label for a bucket
        "S3_BUCKET_NAME": BUCKET,
        "S3_BUCKET_CREDS_ACCESS_KEY_ID": "test",
        "S3_REGION": "us-east-1",
        "S3_UPLOAD_MODE": "oversize",
        "RESPONSE_SIZE_LIMIT_BYTES": "100000",
    }
    plans = {
        "worker": (volume, {"SERVE_API_LOCALLY": "true", **runpod_variables("pod-worker"), **s3_env, **SECRETS}),
        "runpod": (
            volume,
            {"STANDIN_EXEC_DELAY_S": "3", **runpod_variables("pod-runpod"), **runpod.env("pod-runpod", HOST_NAME)},
        ),
        "health": (volume, {"PROBE_TIMEOUT_S": "1"}),
        "never_ready": (volume, {"STANDIN_NEVER_READY": "1", "COMFY_READY_TIMEOUT_S": "20"}),
        "no_volume": (None, {}),
        # The code copy as a slow volume gets it (a local folder answers too fast to make one otherwise).
        "copied": (copy_volume, {"SERVE_API_LOCALLY": "true", "CODE_COPY_MIN_CALL_MS": "0"}),
        "other_python": (other_python_volume, {}),
    }
    started: dict[str, Container] = {}
    try:
        for name, (folder, env) in plans.items():
            port = int(env.get("PORT_HEALTH", CONTAINER_SIDECAR_PORT))
            started[name] = Container.run(image, folder, sidecar_port=port, **env)
        yield Containers(**started)
    finally:
        for container in started.values():
            container.remove()


@pytest.fixture(scope="module")
def worker(containers: Containers) -> Container:
    containers.worker.wait_accepting_jobs()
    return containers.worker


# -- start-up and health ---------------------------------------------------------------------------------------


def test_healthcheck_is_unhealthy_while_starting_and_comfyui_never_ready_exits_3(containers: Containers) -> None:
    never_ready = containers.never_ready
    assert never_ready.running(), never_ready.logs()
    assert not never_ready.healthy()
    code = never_ready.wait_exit()
    assert code == 3, never_ready.logs()
    assert "exiting with code 3: " in never_ready.last_line() and "COMFY_READY_TIMEOUT_S=20" in never_ready.logs()


def test_no_volume_exits_78_saying_so(containers: Containers) -> None:
    container = containers.no_volume
    assert container.wait_exit() == 78, container.logs()
    assert "exiting with code 78: " in container.last_line() and "no network volume" in container.last_line()


def test_a_venv_made_with_another_python_exits_78_naming_it(containers: Containers) -> None:
    container = containers.other_python
    assert container.wait_exit() == 78, container.logs()
    last = container.last_line()
    assert "exiting with code 78: " in last and "dangling link to python3.12" in last, last
    assert "made with Python 3.12.3 from /usr/bin" in last, last
    assert PYTHON in last, "the line names the image's own Python to recreate the venv with"


def test_healthy_once_ready_unhealthy_once_comfyui_hangs_and_killing_supervisord_exits_70(
    containers: Containers,
) -> None:
    health = containers.health
    health.wait_for(health.healthy, what="podman healthcheck run to pass")
    comfyui = health.program_pid("comfyui")
    assert health.exec("kill", "-STOP", str(comfyui)).returncode == 0
    health.wait_for(lambda: not health.healthy(), what="the healthcheck to fail with ComfyUI hung")
    health.exec("kill", "-CONT", str(comfyui))
    supervisord = int(health.exec("supervisorctl", "pid").stdout)
    assert health.exec("kill", "-KILL", str(supervisord)).returncode == 0
    assert health.wait_exit() == 70, health.logs()
    assert "exiting with code 70: supervisord ended unexpectedly" in health.last_line()


# -- jobs --------------------------------------------------------------------------------------------------------


def test_a_base64_job_through_the_local_api_with_runpods_variables(worker: Container) -> None:
    assert_own_images(worker.runsync(own_images_job(seed=0x123456)), 0x123456)
    readyz = json.loads(worker.exec("comfy-worker", "readyz").stdout)
    assert readyz["ready"] is True
    listening = worker.exec("cat", "/proc/net/tcp").stdout
    assert f"00000000:{int(PORT_HEALTH):04X} 00000000:0000 0A" in listening, "the sidecar is not on PORT_HEALTH"
    assert f":{8081:04X} 00000000:0000 0A" not in listening, "the sidecar is on its default port despite PORT_HEALTH"


def test_an_oversize_output_goes_to_s3_on_moto_from_inside_the_container(worker: Container, s3: MotoServer) -> None:
    picture = noise_png(300, 300, seed=7)
    job = {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": "big.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "big"}},
        },
        "images": [{"name": "big.png", "image": b64(picture)}],
    }
    [item] = completed(worker.runsync(job))["images"]
    assert item["type"] == "s3_url", item
    keys = [entry["Key"] for entry in s3.client().list_objects_v2(Bucket=BUCKET)["Contents"]]
    [key] = [key for key in keys if key.endswith(item["filename"])]
    stored = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    original = Image.open(io.BytesIO(picture)).convert("RGB").tobytes()
    assert Image.open(io.BytesIO(stored)).convert("RGB").tobytes() == original


def test_podman_stop_during_a_runpod_job_delivers_it_and_exits_0(containers: Containers, runpod: FakeRunPod) -> None:
    container = containers.runpod
    container.wait_ready()
    runpod.add({"id": "job-stopped", "input": image_chain(prefix="stopped")})
    runpod.wait_for("take", timeout_s=60)
    container.wait_for(lambda: "job-stopped" in container.logs(), what="the job to start")
    time.sleep(1)  # the stand-in executes for 3 s: the stop lands mid-job
    assert container.stop(timeout_s=60) == 0, container.logs()
    result = runpod.result("job-stopped")
    assert result is not None and "output" in result.body, runpod.requests
    assert result.path == "/job-done/pod-runpod/job-stopped", "the SDK builds the URL from RUNPOD_POD_ID"
    assert result.body["output"]["images"][0]["type"] == "base64"
    log = container.logs()
    assert not ALARMING.search(log), ALARMING.search(log)
    assert container.last_line().endswith("exiting with code 0"), log[-3000:]


def test_two_containers_on_one_volume_each_get_their_own_images(
    image: str, volume: Path, worker: Container, tmp_path: Path
) -> None:
    before = volume_snapshot(volume)
    second = Container.run(image, volume, SERVE_API_LOCALLY="true", RUNPOD_POD_ID="pod-second")
    try:
        second.wait_accepting_jobs()
        seeds = {worker: 0x10A0B0, second: 0x20C0D0}
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                (pool.submit(container.runsync, own_images_job(seed + round_)), seed + round_)
                for round_ in range(2)
                for container, seed in seeds.items()
            ]
            for future, seed in futures:
                assert_own_images(future.result(), seed)
    finally:
        second.remove()
    assert volume_snapshot(volume) == before, "a container changed the volume"


# -- a shell in a Pod --------------------------------------------------------------------------------------------


def readme_pod_commands() -> list[str]:
    """The commands README's "Debugging in a Pod" block shows, comments removed."""
    section = REPO.joinpath("README.md").read_text().split("## Debugging in a Pod", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_every_pod_shell_command_of_the_readme_works_in_the_container(worker: Container) -> None:
    commands = readme_pod_commands()
    assert {"supervisorctl status", "comfy-worker status", "supervisorctl restart comfyui"} <= set(commands)
    for command in commands:
        # `tail -f` follows until interrupted, as in a terminal: 3 s of it.
        script = f"timeout 3 {command}; [ $? = 124 ]" if " -f " in command else command
        result = worker.shell(script)
        assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        assert result.stdout.strip(), f"{command} printed nothing"
        if command == "supervisorctl restart comfyui":
            worker.wait_ready()
    for command in ("comfy-worker probe", "comfy-worker --help", "supervisorctl tail handler"):
        assert worker.shell(command).returncode == 0, command
    status = worker.exec("supervisorctl", "status").stdout
    assert all(re.search(rf"(?m)^{name}\s+RUNNING", status) for name in ("comfyui", "sidecar", "handler")), status


def test_ps_and_top_show_the_workers_processes(worker: Container) -> None:
    ps = worker.exec("ps", "-eo", "user,args")
    assert ps.returncode == 0, ps.stderr
    assert re.search(r"(?m)^comfyui\s+.*main\.py", ps.stdout), ps.stdout
    assert "supervisord" in ps.stdout and "-m handler" in ps.stdout
    top = worker.exec("top", "-b", "-n", "1", "-c", "-w", "400")
    assert top.returncode == 0 and "supervisord" in top.stdout, top.stdout + top.stderr


# -- security ----------------------------------------------------------------------------------------------------


def test_comfyui_runs_as_its_own_user_and_reaches_no_secret_log_or_socket(worker: Container) -> None:
    comfyui = worker.program_pid("comfyui")
    assert worker.exec("ps", "-o", "user=", "-p", str(comfyui)).stdout.strip() == "comfyui"
    assert not any(secret in worker.exec("cat", f"/proc/{comfyui}/environ").stdout for secret in SECRETS.values())
    others = [
        1,
        worker.program_pid("handler"),
        worker.program_pid("sidecar"),
        int(worker.exec("supervisorctl", "pid").stdout),
    ]
    for pid in others:
        denied = worker.exec("cat", f"/proc/{pid}/environ", user="comfyui")
        assert denied.returncode != 0 and not denied.stdout, f"ComfyUI's user reads the environment of pid {pid}"
    for path in ("/var/log/comfy-worker", "/opt/comfy-worker/.run"):
        assert worker.exec("ls", path, user="comfyui").returncode != 0, f"ComfyUI's user lists {path}"
    assert worker.exec("supervisorctl", "status", user="comfyui").returncode != 0, "ComfyUI's user controls supervisord"


def test_comfyui_writes_only_in_the_workers_folders(worker: Container, volume: Path) -> None:
    for folder in ("/runpod-volume/ComfyUI", "/runpod-volume/ComfyUI/models", "/opt/comfy-worker", "/opt/venv", "/etc"):
        result = worker.exec("touch", f"{folder}/written-by-comfyui", user="comfyui")
        assert result.returncode != 0, f"ComfyUI's user writes in {folder}"
    assert worker.exec("touch", f"{WORKER_FOLDERS}/output/probe", user="comfyui").returncode == 0
    worker.exec("rm", f"{WORKER_FOLDERS}/output/probe")
    completed(worker.runsync(image_chain(prefix="where")))
    owned = worker.shell(
        r"find / \( -path /proc -o -path /sys -o -path /runpod-volume \) -prune -o -user comfyui -print"
    )
    paths = owned.stdout.split()
    assert paths and all(path.startswith(WORKER_FOLDERS) for path in paths), paths
    assert not list(volume.rglob("written-by-comfyui"))


def test_only_the_sidecar_and_the_local_api_are_reachable_from_outside(worker: Container) -> None:
    listening = worker.exec("cat", "/proc/net/tcp").stdout
    comfy_port = f"{8188:04X}"
    assert re.search(rf"0100007F:{comfy_port} 00000000:0000 0A", listening), "ComfyUI listens on 127.0.0.1:8188"
    assert not re.search(rf"00000000:{comfy_port} 00000000:0000 0A", listening), "ComfyUI listens on every address"
    with pytest.raises(OSError), socket.create_connection((worker.address(), 8188), timeout=2):
        pass
    for port in (CONTAINER_API_PORT, int(PORT_HEALTH)):
        with socket.create_connection((worker.address(), port), timeout=2):
            pass


# -- what the image holds ----------------------------------------------------------------------------------------


def test_the_image_holds_only_what_dockerignore_lets_in(image: str) -> None:
    listed = run_in_image(image, "find", "/opt/comfy-worker", "-type", "f", "-not", "-path", "*/__pycache__/*")
    in_image = {path.removeprefix("/opt/comfy-worker/") for path in listed.split()}
    context = set(exclude_paths(str(REPO), (REPO / ".dockerignore").read_text().splitlines()))
    tracked = set(
        subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    )
    not_copied = {"requirements.lock", "Dockerfile", ".dockerignore"}  # the builder's, and what docker always sends
    expected = {path for path in context & tracked if (REPO / path).is_file()} - not_copied
    assert in_image == expected, f"image only: {sorted(in_image - expected)}; missing: {sorted(expected - in_image)}"
    for unwanted in ("tests", "standin", "bench", ".git", ".venv"):
        assert not any(path.split("/")[0] == unwanted for path in in_image), unwanted


def test_the_workers_venv_is_the_lock(image: str) -> None:
    frozen = run_in_image(image, "/opt/venv/bin/python", "-m", "pip", "freeze", "--all", "--disable-pip-version-check")
    installed = {line.lower() for line in frozen.split() if not line.lower().startswith(("pip==", "setuptools=="))}
    lock = {
        line.split()[0].lower()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if re.match(r"^[a-z0-9]", line, re.IGNORECASE)
    }
    normalise = lambda pins: {re.sub(r"[-_.]+", "-", pin) for pin in pins}  # noqa: E731
    assert normalise(installed) == normalise(lock)
    assert run_in_image(image, "readlink", "-f", "/opt/venv/bin/python").strip() == PYTHON


def test_comfyui_runs_from_a_copy_of_its_code_as_its_own_user(containers: Containers) -> None:
    # The launcher copies as root under the entrypoint's umask 077; ComfyUI's user must still read the copy.
    copied = containers.copied
    copied.wait_accepting_jobs()
    assert "ComfyUI's code copied to /var/lib/comfy-worker/code" in copied.logs(), copied.logs()
    assert completed(copied.runsync(image_chain(prefix="copied")))["images"], copied.logs()
    comfyui = copied.exec("ps", "-o", "user=,args=", "-p", str(copied.program_pid("comfyui"))).stdout
    assert comfyui.startswith("comfyui ") and "/var/lib/comfy-worker/code/ComfyUI" in comfyui, comfyui
    # The likely model copied to the container's disk, found there by ComfyUI's user through the paths file.
    assert "--extra-model-paths-config /var/lib/comfy-worker/model-cache/extra_model_paths.yaml" in comfyui
    assert completed(copied.runsync(model_loading_job()))["images"], copied.logs()
    assert "copied to the container's disk: checkpoints/tiny.safetensors" in copied.logs(), copied.logs()
