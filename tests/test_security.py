"""Security properties of the running stack: read-only sidecar, loopback-only API, no secret in any output.

Covered in tests/test_stack.py and not repeated here: ComfyUI listens on loopback only; the supervisor's socket
is 0700 and there is no TCP control server. Path tricks in image names are refused in tests/test_bad_inputs.py;
here a legitimate job's uploads are followed on disk.

One stack runs every test of this module, started with recognisable secrets in every variable that can hold
one and with S3 pointed at moto on loopback, so uploads (and their failures) really happen.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.handler_harness import MotoServer
from tests.images import b64, png_bytes
from tests.stack import Stack, free_port
from tests.workflows import image_chain

BUCKET = "secure-outputs"
SECRETS = {
    "S3_BUCKET_CREDS_ACCESS_KEY_ID": "AKIASECRETTEST000001",
    "S3_BUCKET_CREDS_SECRET_ACCESS_KEY": "secret-test-key-XYZ0123456789abcdefSECRETS3",
    "BUCKET_ACCESS_KEY_ID": "AKIABUCKETTEST000002",
    "BUCKET_SECRET_ACCESS_KEY": "bucket-secret-key-QRS987654321zyxw",
    "COMFY_ORG_API_KEY": "comfy-org-secret-env-5d1c9a77e0",
    "RUNPOD_AI_API_KEY": "rp-secret-ai-key-7f3e2b19c4",
    "RUNPOD_API_KEY": "rp-secret-api-key-91aa0c5d6e",
}
INPUT_API_KEY = "comfy-org-secret-input-c0ffee4242"
URL_PASSWORD = "url-password-secret-8d8d"
URL_TOKEN = "url-query-token-secret-3b3b"
ALL_SECRETS = [*SECRETS.values(), INPUT_API_KEY, URL_PASSWORD, URL_TOKEN]
# A SigV4 presigned URL carries the access key *id* (not the secret key) in X-Amz-Credential by design.
PRESIGNED_CREDENTIAL = re.compile(r"X-Amz-Credential=[^&\"'\s]*")
METHODS = ("POST", "PUT", "DELETE", "PATCH")
SIDECAR_PATHS = ("/livez", "/readyz", "/readyz?wait=1", "/ping", "/metrics", "/", "/restart", "/shutdown", "/config")


class Secure:
    def __init__(self, stack: Stack, moto: MotoServer) -> None:
        self.stack = stack
        self.moto = moto
        self.responses: list[str] = []  # every /runsync body, and the bytes of what it delivered

    def runsync(self, job_input: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.stack.api_url}/runsync", json={"input": job_input}, timeout=120)
        self.responses.append(response.text)
        result = response.json()
        for key in ("images", "videos", "audio", "files"):
            for item in (result.get("output") or {}).get(key, []):
                if item.get("type") == "s3_url":
                    self.responses.append(requests.get(item["data"], timeout=10).content.decode("latin-1"))
                elif item.get("type") == "base64":
                    self.responses.append(base64.b64decode(item["data"]).decode("latin-1"))
        return result

    def s3(self):
        return self.moto.client()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    moto = MotoServer()
    stack = None
    try:
        moto.client().create_bucket(Bucket=BUCKET)
        env = {
            **SECRETS,
            "S3_ENDPOINT_URL": moto.url,
            "S3_BUCKET_NAME": BUCKET,
            "S3_REGION": "us-east-1",
            "S3_MAX_ATTEMPTS": "1",
        }
        stack = Stack(tmp_path_factory.mktemp("security"), env).start()
        stack.wait_accepting_jobs()
        yield Secure(stack, moto)
    finally:
        if stack is not None:
            stack.kill_everything()
        moto.stop()


# -- the sidecar is read-only -----------------------------------------------------------------------


def observed_state(stack: Stack) -> dict[str, Any]:
    readyz = requests.get(f"{stack.sidecar_url}/readyz", timeout=10).json()
    pids = {info["name"]: info["pid"] for info in stack.rpc().supervisor.getAllProcessInfo()}
    return {
        "ready": readyz["ready"],
        "state": readyz["state"],
        "comfyui": readyz["comfyui"],
        "pids": pids,
    }


def test_sidecar_answers_every_changing_method_with_404_or_405_and_nothing_changes(secure: Secure) -> None:
    stack = secure.stack
    before = observed_state(stack)
    assert before["ready"] is True, before
    answers = {}
    for path in SIDECAR_PATHS:
        for method in METHODS:
            response = requests.request(
                method, f"{stack.sidecar_url}{path}", data=b'{"ready": false, "state": "failed"}', timeout=10
            )
            answers[(method, path)] = response.status_code
            if response.status_code == 405:
                assert "GET" in response.headers.get("Allow", ""), (method, path, dict(response.headers))
    # GET on a path that sounds like an action is just unknown.
    for path in ("/restart", "/shutdown", "/config"):
        answers[("GET", path)] = requests.get(f"{stack.sidecar_url}{path}", timeout=10).status_code
    assert observed_state(stack) == before
    assert requests.get(f"{stack.sidecar_url}/metrics", timeout=10).status_code == 200
    wrong = {key: status for key, status in answers.items() if status not in (404, 405)}
    assert wrong == {}, f"expected 404 or 405, got {wrong}"


def test_the_local_api_listens_on_loopback_only(secure: Secure) -> None:
    handler = psutil.Process(secure.stack.pid_of("handler"))
    listening = [c.laddr for c in handler.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening, "the handler has no listening socket"
    assert all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_comfyui_does_not_inherit_the_workers_credentials(secure: Secure) -> None:
    """ComfyUI runs third-party custom nodes: the handler's S3 and RunPod credentials are none of theirs.

    (COMFY_ORG_API_KEY reaches ComfyUI per prompt, in extra_data, as ComfyUI expects it.)
    """
    environment = psutil.Process(secure.stack.pid_of("comfyui")).environ()
    inherited = sorted(name for name, value in environment.items() if value in ALL_SECRETS)
    assert inherited == [], f"ComfyUI's environment holds the worker's secrets: {inherited}"


# -- uploads stay in input/ ---------------------------------------------------------------------------


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if "__pycache__" not in path.parts}


def test_a_jobs_uploads_land_exactly_in_input_and_are_removed_after(secure: Secure) -> None:
    stack = secure.stack
    input_dir = stack.layout.input
    names = ["plain.png", "café.png", "..%2Fescape.png", "..png"]
    workflow: dict[str, Any] = {}
    for index, name in enumerate(names, start=1):
        workflow[f"load{index}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        workflow[f"save{index}"] = {
            "class_type": "SaveImage",
            "inputs": {"images": [f"load{index}", 0], "filename_prefix": f"up{index}"},
        }
    workflow["wait"] = {"class_type": "StandinSleep", "inputs": {"seconds": 1.5, "steps": 15}}
    workflow["waitsave"] = {"class_type": "PreviewImage", "inputs": {"images": ["wait", 0]}}
    images = [{"name": n, "image": b64(png_bytes(8, (9, 9, i)))} for i, n in enumerate(names)]
    job = {"workflow": workflow, "images": images}

    before = tree(stack.home)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=secure.runsync(job)), daemon=True)
    thread.start()

    def staged() -> list[str]:
        return sorted(path.name for path in input_dir.iterdir() if path.name.endswith(tuple(names)))

    try:
        stack.wait_for(lambda: len(staged()) == len(names) or not thread.is_alive(), 30, 0.01, what="the inputs")
        during, inputs = tree(stack.home), staged()
    finally:
        thread.join(60)
    result = outcome.get("result")
    assert result is not None and result["status"] == "COMPLETED", result
    assert len(result["output"]["images"]) == len(names)
    # Only the worker's own folders (under .run/) changed; the inputs are there under the job's names.
    assert {path for path in during - before if not path.startswith(".run/")} == set()
    [key] = {name.partition("-")[0] for name in inputs}
    assert inputs == sorted(f"{key}-{name}" for name in names)
    stack.wait_for(lambda: not any(input_dir.iterdir()), 30, what="inputs removed")
    assert not (stack.comfyui_dir / "escape.png").exists()


# -- names inside the workflow reach only the job's own files ----------------------------------------


def test_a_workflow_cannot_read_files_outside_the_jobs_reach(secure: Secure, tmp_path: Path) -> None:
    stack = secure.stack
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes(8, (1, 2, 3)))
    layout = stack.layout
    (layout.output / "other-job.png").write_bytes(outside.read_bytes())  # another job's output on this worker
    (layout.shared_input / "sneaky.png").symlink_to(outside)  # a link placed in the volume's input folder
    try:
        names = [
            str(Path("..") / ".." / ".." / outside.relative_to("/")),
            str(outside),
            "other-job.png [output]",
            f"{Path('..') / 'output' / 'other-job.png'}",
            "sneaky.png",
        ]
        for name in names:
            job = {
                "workflow": {
                    "1": {"class_type": "LoadImage", "inputs": {"image": name}},
                    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
                }
            }
            result = secure.runsync(job)
            assert result["status"] == "FAILED", (name, result)
            assert result["error"].startswith(
                f"Invalid input: input.workflow node 1 (LoadImage) input 'image': {name!r}"
            )
            assert not result.get("output"), result
    finally:
        (layout.shared_input / "sneaky.png").unlink()
        (layout.output / "other-job.png").unlink(missing_ok=True)


# -- no secret anywhere ---------------------------------------------------------------------------


def test_no_secret_in_any_log_response_or_metric(secure: Secure) -> None:
    stack = secure.stack
    # 1. Successful jobs, delivered to S3 (and fetched back through their presigned URLs).
    for index in range(3):
        result = secure.runsync(image_chain(prefix=f"ok{index}", color=0x101010 * (index + 1)))
        assert result["status"] == "COMPLETED", result
        assert result["output"]["images"][0]["type"] == "s3_url"
    # 2. A job with its own Comfy.org key: ComfyUI gets it, the caller never sees it back.
    result = secure.runsync({**image_chain(prefix="keyed"), "comfy_org_api_key": INPUT_API_KEY})
    assert result["status"] == "COMPLETED", result
    # 3. Failing jobs: an execution error, invalid input, an image URL carrying credentials, an upload failure.
    failing = {
        "workflow": {
            "1": {"class_type": "StandinFail", "inputs": {"message": "deliberate failure"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "never"}},
        },
        "comfy_org_api_key": INPUT_API_KEY,
    }
    result = secure.runsync(failing)
    assert result["status"] == "FAILED" and "deliberate failure" in result["error"], result
    result = secure.runsync({"workflow": 5, "comfy_org_api_key": INPUT_API_KEY})
    assert result["status"] == "FAILED", result
    url = f"http://alice:{URL_PASSWORD}@127.0.0.1:{free_port()}/in.png?X-Amz-Signature={URL_TOKEN}"
    result = secure.runsync({**image_chain(prefix="url"), "images": [{"name": "in.png", "image": url}]})
    assert result["status"] == "FAILED" and "in.png" in result["error"], result
    s3 = secure.s3()
    for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    s3.delete_bucket(Bucket=BUCKET)
    try:
        result = secure.runsync(image_chain(prefix="nobucket"))
        assert result["status"] == "FAILED" and "NoSuchBucket" in result["error"], result
    finally:
        s3.create_bucket(Bucket=BUCKET)
    last_job = result["id"]
    # ComfyUI's history entries are removed after each job; what is still there must not hold the key.
    history = requests.get(f"{stack.comfy_url}/history", timeout=10).text
    metrics = requests.get(f"{stack.sidecar_url}/metrics", timeout=10).text
    readyz = requests.get(f"{stack.sidecar_url}/readyz", timeout=10).text
    stack.wait_for(lambda: any(last_job in line and "failed" in line for line in stack.lines), 30, what="last job")

    # 4. Stop the stack, so every program's last lines are written, then read everything.
    assert stack.stop(timeout_s=60) == 0
    logs_dir = stack.home / ".run" / "logs"
    sources: dict[str, str] = {
        "stdout": "\n".join(stack.lines),
        "metrics": metrics,
        "readyz": readyz,
        "history": history,
    }
    for path in sorted(logs_dir.rglob("*")):
        if path.is_file():
            sources[f"log {path.relative_to(logs_dir)}"] = path.read_text("utf-8", "replace")
    for index, text in enumerate(secure.responses):
        sources[f"response {index}"] = PRESIGNED_CREDENTIAL.sub("X-Amz-Credential=<id>", text)
    assert any(name.startswith("log handler") for name in sources), sorted(sources)
    # Not a vacuous pass: the uploads were signed with the stack's key (its id is in the presigned URLs).
    assert any(SECRETS["S3_BUCKET_CREDS_ACCESS_KEY_ID"] in text for text in secure.responses)
    assert len(secure.responses) >= 8
    leaks = [
        f"{secret!r} in {where}: …{text[max(0, text.index(secret) - 120) : text.index(secret) + 60]}…"
        for where, text in sources.items()
        for secret in ALL_SECRETS
        if secret in text
    ]
    assert leaks == [], "\n".join(leaks)
