"""Drop-in for worker-comfyui 5.x users: their client, examples, habits and settings work unchanged.

Everything runs for real on loopback: the stand-in ComfyUI, the sidecar and the handler (tests/handler_harness.py
or the supervised stack of tests/stack.py), S3 on moto's server.
"""

from __future__ import annotations

import base64
import configparser
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from PIL import Image

from tests.handler_harness import PYTHON, REPO, FileServer, MotoServer, Rig, RigShape, s3_env
from tests.stack import Stack
from tests.test_examples import model_free_workflows

BUCKET = "compat"
REQUESTS_DIR = REPO / "examples" / "requests"
EXAMPLE_PNG = REPO / "standin" / "ComfyUI" / "input" / "example.png"
# Keys RunPod's API gateway adds to a response; the worker (and runpod's local API) never sends them.
PLATFORM_KEYS = {"delayTime", "executionTime"}
TINY_PNG = base64.b64encode(EXAMPLE_PNG.read_bytes()).decode()

# Response documents as worker-comfyui's docs record them.
UPSTREAM_BASE64 = {
    "id": "sync-uuid",
    "status": "COMPLETED",
    "output": {"images": [{"filename": "ComfyUI_00001_.png", "type": "base64", "data": TINY_PNG}]},
    "delayTime": 123,
    "executionTime": 4567,
}
UPSTREAM_S3 = {
    "id": "sync-uuid",
    "status": "COMPLETED",
    "output": {
        "images": [
            {
                "filename": "ComfyUI_00001_.png",
                "type": "s3_url",
                "data": "https://bucket.s3.us-east-1.amazonaws.com/sync-uuid/ComfyUI_00001_.png",
            }
        ]
    },
    "delayTime": 123,
    "executionTime": 4567,
}
UPSTREAM_FAILED = {"id": "sync-uuid", "status": "FAILED", "error": "Workflow validation failed", "delayTime": 1}


# --------------------------------------------------------------------------- a worker-comfyui 5.x client


class JobFailed(Exception):
    pass


def upstream_client(endpoint: str, body: dict, out_dir: Path) -> list[Path]:
    """POST /runsync and save the images, the way worker-comfyui 5.x users' scripts do."""
    result = requests.post(f"{endpoint}/runsync", json=body, timeout=120).json()
    return save_images(result, out_dir)


def save_images(result: dict, out_dir: Path) -> list[Path]:
    if result["status"] != "COMPLETED":
        raise JobFailed("Job failed: " + result["error"])
    saved = []
    for item in result["output"]["images"]:
        path = out_dir / item["filename"]
        if item["type"] == "base64":
            path.write_bytes(base64.b64decode(item["data"]))
        elif item["type"] == "s3_url":
            download = requests.get(item["data"], timeout=60)
            download.raise_for_status()
            path.write_bytes(download.content)
        else:
            raise ValueError(f"unknown output type {item['type']}")
        saved.append(path)
    return saved


def assert_upstream_shape(ours: Any, upstream: Any, where: str = "response") -> None:
    """Every key of the upstream document is in ours with a value of the same type (extras allowed)."""
    if isinstance(upstream, dict):
        assert isinstance(ours, dict), f"{where}: {ours!r} is not an object"
        for key, value in upstream.items():
            if where == "response" and key in PLATFORM_KEYS:
                continue
            assert key in ours, f"{where}: no {key!r} in {sorted(ours)}"
            assert_upstream_shape(ours[key], value, f"{where}.{key}")
    elif isinstance(upstream, list):
        assert isinstance(ours, list) and ours, f"{where}: {ours!r} is not a non-empty list"
        for index, item in enumerate(ours):
            assert_upstream_shape(item, upstream[0], f"{where}[{index}]")
    else:
        assert type(ours) is type(upstream), f"{where}: {ours!r} is not a {type(upstream).__name__}"


def request_body(name: str) -> dict:
    return json.loads((REQUESTS_DIR / name).read_text(encoding="utf-8"))


def png(path: Path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG", path
    return image.convert("RGB")


# --------------------------------------------------------------------------- fixtures


def with_example_input(rig: Rig) -> None:
    shutil.copy(EXAMPLE_PNG, rig.comfy_dir / "input")  # ComfyUI ships it in input/


@pytest.fixture(scope="module")
def rig_shape() -> RigShape:
    return RigShape(handler_env=None, prepare=with_example_input)  # each test starts its handler


_handler_env: dict[int, dict[str, str]] = {}  # id(rig) -> the extra settings of its running handler


def handler_with(rig: Rig, env: dict[str, str] | None = None) -> Rig:
    """The rig with a handler started with these extra settings (restarted only when they differ)."""
    env = env or {}
    if rig.handler is None or not rig.handler.alive() or _handler_env.get(id(rig)) != env:
        rig.start_handler(env)
        _handler_env[id(rig)] = env
    return rig


@pytest.fixture
def base64_rig(rig: Rig) -> Rig:
    return handler_with(rig)


# --------------------------------------------------------------------------- the upstream client, unchanged


def test_upstream_client_gets_the_empty_image_request(base64_rig: Rig, tmp_path: Path) -> None:
    [saved] = upstream_client(base64_rig.api_url, request_body("empty-image.json"), tmp_path)
    assert saved.name.startswith("request-empty_") and saved.suffix == ".png"
    image = png(saved)
    assert image.size == (512, 512)
    assert image.getpixel((0, 0)) == (0x33, 0x66, 0x99)


def test_upstream_client_uploads_and_gets_the_inverted_image(base64_rig: Rig, tmp_path: Path) -> None:
    body = request_body("invert-upload.json")
    source = Image.open(io.BytesIO(base64.b64decode(body["input"]["images"][0]["image"]))).convert("RGB")
    [saved] = upstream_client(base64_rig.api_url, body, tmp_path)
    image = png(saved)
    assert image.size == source.size
    r, g, b = source.getpixel((3, 5))
    assert image.getpixel((3, 5)) == (255 - r, 255 - g, 255 - b)


def test_upstream_client_gets_s3_urls(rig: Rig, moto: MotoServer, tmp_path: Path) -> None:
    handler_with(rig, s3_env(moto.url, BUCKET))
    [empty] = upstream_client(rig.api_url, request_body("empty-image.json"), tmp_path)
    [inverted] = upstream_client(rig.api_url, request_body("invert-upload.json"), tmp_path)
    assert png(empty).getpixel((0, 0)) == (0x33, 0x66, 0x99)
    assert png(inverted).size == (32, 32)
    keys = [item["Key"] for item in moto.client().list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert any(key.endswith("/" + empty.name) for key in keys), keys


def test_upstream_client_reads_a_failure_as_a_string(base64_rig: Rig, tmp_path: Path) -> None:
    body = request_body("empty-image.json")
    body["input"]["workflow"]["2"]["inputs"]["images"] = ["9", 0]  # links to no node
    with pytest.raises(JobFailed, match=r"^Job failed: .*9"):
        upstream_client(base64_rig.api_url, body, tmp_path)


def test_upstream_client_handles_upstream_documents(tmp_path: Path) -> None:
    [saved] = save_images(UPSTREAM_BASE64, tmp_path)
    assert saved.name == "ComfyUI_00001_.png" and png(saved).size == (64, 64)
    server = FileServer({"/sync-uuid/ComfyUI_00001_.png": EXAMPLE_PNG.read_bytes()})
    try:
        document = json.loads(json.dumps(UPSTREAM_S3))
        document["output"]["images"][0]["data"] = server.url + "/sync-uuid/ComfyUI_00001_.png?X-Amz-Signature=x"
        (tmp_path / "s3").mkdir()
        [saved] = save_images(document, tmp_path / "s3")
    finally:
        server.close()
    assert saved.read_bytes() == EXAMPLE_PNG.read_bytes()
    with pytest.raises(JobFailed, match="Workflow validation failed"):
        save_images(UPSTREAM_FAILED, tmp_path)


def runsync_raw(rig: Rig, body: dict) -> dict:
    """The whole /runsync response document, as the client sees it."""
    response = requests.post(f"{rig.api_url}/runsync", json=body, timeout=120)
    response.raise_for_status()
    return response.json()


def test_our_responses_have_upstream_shape(rig: Rig, moto: MotoServer) -> None:
    handler_with(rig, {})
    ours = runsync_raw(rig, request_body("empty-image.json"))
    assert_upstream_shape(ours, UPSTREAM_BASE64)
    assert ours["output"]["images"][0]["type"] == "base64"
    broken = request_body("empty-image.json")
    broken["input"]["workflow"]["2"]["inputs"]["images"] = ["9", 0]
    failed = runsync_raw(rig, broken)
    assert failed["status"] == "FAILED"
    assert_upstream_shape(failed, UPSTREAM_FAILED)
    handler_with(rig, s3_env(moto.url, BUCKET))
    ours = runsync_raw(rig, request_body("invert-upload.json"))
    assert_upstream_shape(ours, UPSTREAM_S3)
    assert ours["output"]["images"][0]["type"] == "s3_url"


# --------------------------------------------------------------------------- the model-free examples


def expected_outputs(workflow: dict) -> tuple[int, int]:
    """(images, text outputs) a model-free workflow implies: SaveImage's batch, PreviewAny's text."""
    images = texts = 0
    for node in workflow.values():
        if node["class_type"] == "SaveImage":
            source = workflow[node["inputs"]["images"][0]]
            while "batch_size" not in source["inputs"] and source["class_type"] != "LoadImage":
                source = workflow[source["inputs"]["image"][0]]
            images += source["inputs"].get("batch_size", 1)
        elif node["class_type"] == "PreviewAny":
            texts += 1
    return images, texts


@pytest.mark.parametrize("path", model_free_workflows(), ids=lambda p: p.name)
def test_model_free_example_runs(base64_rig: Rig, path: Path) -> None:
    workflow = json.loads(path.read_text(encoding="utf-8"))
    images, texts = expected_outputs(workflow)
    assert images or texts, f"{path.name} implies no output"
    result = base64_rig.runsync({"workflow": workflow})
    assert result["status"] == "COMPLETED", result
    output = result["output"]
    assert len(output["images"]) == images, output
    for item in output["images"]:
        assert item["type"] == "base64" and item["mime"] == "image/png"
        Image.open(io.BytesIO(base64.b64decode(item["data"]))).verify()
    assert len(output.get("text", [])) == texts, output
    if path.name == "standin-text.json":
        assert output["text"][0]["text"] == "Hello from the comfy worker"


# --------------------------------------------------------------------------- python -m handler --test_input


def run_test_input(rig: Rig, value: str) -> subprocess.CompletedProcess:
    env = rig.handler_env(_handler_env[id(rig)])
    command = [PYTHON, "-m", "handler", "--test_input", value]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_test_input_file_runs_one_job(base64_rig: Rig) -> None:
    done = run_test_input(base64_rig, "test_input.json")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"job local_test succeeded in [\d.]+ s", output), output
    assert "completed successfully" in output


def test_test_input_with_a_broken_workflow_fails(base64_rig: Rig) -> None:
    body = json.loads((REPO / "test_input.json").read_text())
    body["input"]["workflow"]["2"]["inputs"]["images"] = ["9", 0]
    done = run_test_input(base64_rig, json.dumps(body))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert re.search(r"job local_test failed \(\w+\)", output), output
    assert "failed with error" in output and "9" in output


# --------------------------------------------------------------------------- upstream settings (supervised stack)

LEGACY_ENV = {
    "COMFY_API_AVAILABLE_INTERVAL_MS": "50",
    "COMFY_API_AVAILABLE_MAX_RETRIES": "500",
    "COMFY_LOG_LEVEL": "DEBUG",
    "NETWORK_VOLUME_DEBUG": "true",
    "SERVE_API_LOCALLY": "true",
    "BUCKET_NAME": BUCKET,
    "BUCKET_ACCESS_KEY_ID": "test",
    "BUCKET_SECRET_ACCESS_KEY": "legacy-secret",
}
MODEL_FILE = "compat-model.safetensors"


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("legacy"), {**LEGACY_ENV, "BUCKET_ENDPOINT_URL": moto.url})
    (stack.comfyui_dir / "models" / "checkpoints" / MODEL_FILE).write_bytes(b"\0" * 2048)
    stack.start().wait_accepting_jobs()
    yield stack
    stack.kill_everything()


def test_polling_settings_are_named_once_with_their_replacements(legacy: Stack) -> None:
    legacy.wait_line("accepting jobs")
    lines = [ln for ln in legacy.lines if "COMFY_API_AVAILABLE_" in ln]
    assert len(lines) == 1, lines
    [line] = lines
    assert line.startswith("[handler] ")
    for name in ("COMFY_API_AVAILABLE_INTERVAL_MS", "COMFY_API_AVAILABLE_MAX_RETRIES"):
        assert name in line
    for replacement in ("COMFY_READY_TIMEOUT_S", "JOB_READY_WAIT_S"):
        assert replacement in line


def test_bucket_settings_send_outputs_to_s3(legacy: Stack, moto: MotoServer, tmp_path: Path) -> None:
    result = legacy.runsync(request_body("empty-image.json")["input"])
    assert result["status"] == "COMPLETED", result
    [item] = result["output"]["images"]
    assert item["type"] == "s3_url" and item["data"].startswith(moto.url + f"/{BUCKET}/")
    [saved] = upstream_client(legacy.api_url, request_body("invert-upload.json"), tmp_path)
    assert png(saved).size == (32, 32)
    assert "legacy-secret" not in "\n".join(legacy.lines)


def test_comfy_log_level_reaches_comfyui_as_verbose(legacy: Stack) -> None:
    argv = requests.get(f"{legacy.comfy_url}/system_stats", timeout=10).json()["system"]["argv"]
    assert "--verbose" in argv, argv
    assert argv[argv.index("--verbose") + 1] == "DEBUG", argv


def test_serve_api_locally_listens_on_all_interfaces(legacy: Stack, rig: Rig) -> None:
    def listening(pid: int) -> set[tuple[str, int]]:
        conns = psutil.Process(pid).net_connections(kind="inet")
        return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}

    assert ("0.0.0.0", legacy.api_port) in listening(legacy.pid_of("handler"))
    handler_with(rig, {})
    assert rig.handler is not None
    assert listening(rig.handler.pid) == {("127.0.0.1", rig.api_port)}, "without it: loopback only"


REPORT_LINE = re.compile(
    r"\[entrypoint\] (volume report for |models/\w+: |  \S.* \([\d.]+ [KMGT]?B\)$|  pyvenv\.cfg |venv |volume space: )"
)


def volume_report(stack: Stack) -> list[str]:
    return [ln for ln in stack.lines if REPORT_LINE.match(ln)]


def test_network_volume_debug_reports_once_per_container_start(legacy: Stack) -> None:
    """Runs last in this module: it restarts ComfyUI."""
    legacy.wait_line("[comfyui] starting ComfyUI from")
    report = volume_report(legacy)
    assert "[entrypoint] models/checkpoints: 1 files, 2.0 KB" in report, report
    assert f"[entrypoint]   {MODEL_FILE} (2.0 KB)" in report, report
    assert any(ln.startswith("[entrypoint] venv ") for ln in report), report
    assert any(ln.startswith("[entrypoint] volume space: ") for ln in report), report
    restart = legacy.supervisorctl("restart", "comfyui")
    assert "comfyui: started" in restart.stdout, restart.stdout + restart.stderr
    legacy.wait_for(
        lambda: sum("[comfyui] starting ComfyUI from" in ln for ln in legacy.lines) == 2, 30, what="a second start"
    )
    assert volume_report(legacy) == report, "the report is printed again after a restart of ComfyUI"
    result = legacy.runsync(request_body("empty-image.json")["input"])
    assert result["status"] == "COMPLETED", result


# --------------------------------------------------------------------------- docker-compose.yml


def seconds(value: str | int) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value))
    assert parts and "".join(n + u for n, u in parts) == str(value), f"not a compose duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def supervisord_stop_waits() -> dict[str, float]:
    """Each program's and listener's stopwaitsecs: supervisord stops them one after another."""
    conf = configparser.RawConfigParser()
    conf.read(REPO / "supervisord.conf")
    env = {"HANDLER_STOP_WAIT_S": "30"}  # the entrypoint's default
    waits = {}
    for section in conf.sections():
        if section.startswith(("program:", "eventlistener:")):
            raw = conf.get(section, "stopwaitsecs", fallback="10")  # supervisord's default
            waits[section] = float(re.sub(r"%\(ENV_(\w+)\)s", lambda m: env[m.group(1)], raw))
    return waits


def test_docker_compose_file() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    [service] = compose["services"].values()
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device.get("capabilities", []) for device in devices), devices
    assert any(str(port).split(":")[-1] == "8000" for port in service["ports"]), service["ports"]
    environment = service["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    assert str(environment["SERVE_API_LOCALLY"]).lower() == "true"
    assert any(str(volume).split(":")[1] == "/runpod-volume" for volume in service["volumes"]), service["volumes"]
    waits = supervisord_stop_waits()
    assert {"program:comfyui", "program:sidecar", "program:handler"} <= set(waits)
    grace = seconds(service["stop_grace_period"])
    assert grace >= sum(waits.values()), f"stop_grace_period {grace:g} s < the stop waits in a row: {waits}"
