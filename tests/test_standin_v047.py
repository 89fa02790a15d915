"""The stand-in playing ComfyUI 0.47.1 (STANDIN_COMFYUI_VERSION=0.47.1): what docs/comfyui-0.47.md
says changed since 0.38.1, as far as a worker meets it. Everything 0.38.1 does, 0.47.1 does too
(the handler and shared-volume tests run on all three releases).

One 0.47.1 stand-in serves every test (module fixture, assets off so no database is involved).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket

from handler.ws import ComfySocket
from tests.test_standin import Standin, empty_invert_save, frames_until_done, sleep_prompt, wait_frame
from worker_common.comfy_client import ComfyClient, ComfyHTTPError
from worker_common.comfy_protocol import is_duplicate_prompt

VERSION = "0.47.1"
CREDENTIALS_FEATURE = {"version": 1, "endpoint": "/api/credentials", "websocket_auth_message": "credential_auth"}


@pytest.fixture(scope="module")
def comfy47(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    standin = Standin(tmp_path_factory.mktemp("standin047"), version=VERSION, args=("--disable-assets",))
    try:
        standin.wait_ready()
        yield standin
    finally:
        standin.kill()


def fresh(prefix: str) -> dict:
    return empty_invert_save(prefix, color=uuid.uuid4().int & 0xFFFFFF)


def first_status(ws: websocket.WebSocket) -> dict[str, Any]:
    frame = json.loads(ws.recv())
    assert frame["type"] == "status"
    return frame["data"]


def auth(key: str) -> str:
    return json.dumps({"type": "credential_auth", "data": {"credential_key": key}})


# -- /system_stats and /features ----------------------------------------------------------------


def test_system_stats_redacts_path_values_and_features_offer_credentials(comfy47: Standin) -> None:
    system = requests.get(comfy47.url + "/system_stats", timeout=5).json()["system"]
    assert system["comfyui_version"] == VERSION
    argv = system["argv"]
    # Standin passes --input/--output/--temp/--user-directory with paths: only their values go.
    for flag in ("--input-directory", "--output-directory", "--temp-directory", "--user-directory"):
        assert argv[argv.index(flag) + 1] == "*"
    assert argv[argv.index("--port") + 1] == str(comfy47.port) and "--disable-assets" in argv
    assert not any(str(comfy47.root) in arg for arg in argv)
    features = requests.get(comfy47.url + "/features", timeout=5).json()
    assert list(features) == [
        "supports_preview_metadata",
        "supports_model_type_tags",
        "comfy_api_credentials",
        "max_upload_size",
        "extension",
        "node_replacements",
        "assets",
    ]
    assert features["comfy_api_credentials"] == CREDENTIALS_FEATURE and features["assets"] is False
    ws = comfy47.ws("flags-" + uuid.uuid4().hex[:6])
    first_status(ws)
    ws.send(json.dumps({"type": "feature_flags", "data": {}}))
    assert json.loads(ws.recv()) == {"type": "feature_flags", "data": features}
    ws.close()


# -- the WebSocket's credential key --------------------------------------------------------------


def test_first_status_carries_a_credential_key(comfy47: Standin) -> None:
    client_id = "key-" + uuid.uuid4().hex[:6]
    ws = comfy47.ws(client_id)
    data = first_status(ws)
    assert list(data) == ["status", "sid", "credential_key"] and data["sid"] == client_id
    assert len(data["credential_key"]) >= 40  # secrets.token_urlsafe(32)
    other = comfy47.ws()
    assert first_status(other)["credential_key"] != data["credential_key"]
    ws.close()
    other.close()


def test_replacing_a_live_socket_needs_its_key(comfy47: Standin) -> None:
    client_id = "replace-" + uuid.uuid4().hex[:6]
    old = comfy47.ws(client_id)
    key = first_status(old)["credential_key"]
    intruder = comfy47.ws(client_id)  # no credential_auth: closed after the first message
    intruder.send(json.dumps({"type": "feature_flags", "data": {}}))
    opcode, frame = intruder.recv_data_frame(True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert frame.data[:2] == (1008).to_bytes(2, "big") and frame.data[2:] == b"Invalid client credentials"
    wrong = comfy47.ws(client_id)
    wrong.send(auth("not-the-key"))
    assert wrong.recv_data_frame(True)[0] == websocket.ABNF.OPCODE_CLOSE
    new = comfy47.ws(client_id)
    new.send(auth(key))
    data = first_status(new)
    assert data["sid"] == client_id and data["credential_key"] == key  # the same key carries over
    old.close()  # the old socket's teardown leaves its replacement registered
    prompt_id = comfy47.post_prompt(fresh("replaced"), client_id=client_id).json()["prompt_id"]
    types = [f["type"] for f in frames_until_done(new, prompt_id, skip=("progress_state", "status"))]
    assert types[0] == "execution_start" and "execution_success" in types
    new.close()


def test_a_closed_socket_leaves_no_key_and_a_first_credential_auth_is_skipped(comfy47: Standin) -> None:
    client_id = "again-" + uuid.uuid4().hex[:6]
    ws = comfy47.ws(client_id)
    key = first_status(ws)["credential_key"]
    ws.close()
    requests.get(comfy47.url + "/system_stats", timeout=5)  # a round trip: the server has seen the close
    again = comfy47.ws(client_id)
    again.send(auth(key))  # accepted and skipped as a prelude; a new key is issued
    assert first_status(again)["credential_key"] != key
    again.send(json.dumps({"type": "feature_flags", "data": {}}))
    assert wait_frame(again, "feature_flags")["data"]["comfy_api_credentials"] == CREDENTIALS_FEATURE
    again.close()


def test_the_handlers_socket_takes_over_its_half_open_predecessor(comfy47: Standin) -> None:
    """handler/ws.py learns the key from the first status frame and presents it when it reconnects
    while ComfyUI still holds the old socket (half-open: ComfyUI has not seen it go)."""
    client = ComfyClient("127.0.0.1", comfy47.port, timeout_s=10)
    sock = ComfySocket(client, "worker-" + uuid.uuid4().hex)
    sock.open()
    assert sock.receive(5)["type"] == "status" and sock.credential_key
    held = sock._ws  # ComfyUI keeps this one registered: it is never closed
    sock._ws = None
    started = time.monotonic()
    sock.open()
    assert sock.receive(5)["type"] == "status"  # not a close after ComfyUI's 5 s wait for the key
    assert time.monotonic() - started < 2
    without_key = client.connect_websocket(sock.client_id)
    without_key.send(json.dumps({"type": "feature_flags", "data": {}}))  # not the key: refused at once
    assert without_key.recv_data_frame(True)[0] == websocket.ABNF.OPCODE_CLOSE
    for ws in (held, without_key):
        ws.close()
    sock.close()


# -- POST /credentials and the credential headers on POST /prompt ---------------------------------


def test_credentials_route_and_prompt_headers(comfy47: Standin) -> None:
    client_id = "cred-" + uuid.uuid4().hex[:6]
    ws = comfy47.ws(client_id)
    key = first_status(ws)["credential_key"]
    headers = {"X-Comfy-Client-Id": client_id, "X-Comfy-Credential-Key": key}

    def credentials(body: Any, sent: dict[str, str] | None = None) -> tuple[int, Any]:
        reply = requests.post(comfy47.url + "/api/credentials", data=body, headers=sent, timeout=5)
        return reply.status_code, reply.json()

    assert credentials("{}") == (403, {"error": "Invalid client credentials"})
    assert credentials("x", {**headers, "X-Comfy-Credential-Key": "wrong"})[0] == 403
    assert credentials("not json", headers) == (400, {"error": "Request body must be valid JSON"})
    assert credentials("{}", headers) == (400, {"error": "auth_token_comfy_org is required"})
    bad_token = {"error": "auth_token_comfy_org must be a non-empty string or null"}
    assert credentials(json.dumps({"auth_token_comfy_org": ""}), headers) == (400, bad_token)
    token = json.dumps({"auth_token_comfy_org": "tok-1"})
    assert credentials(token, headers) == (200, {"generation": 1})
    assert credentials(token, headers) == (200, {"generation": 1})  # the same token: the same generation
    assert credentials(json.dumps({"auth_token_comfy_org": None}), headers) == (200, {"generation": 2})

    def prompt(sent: dict[str, str], **extra: Any) -> requests.Response:
        body = {"prompt": fresh("cred"), **extra}
        return requests.post(comfy47.url + "/prompt", json=body, headers=sent, timeout=5)

    wrong = prompt({**headers, "X-Comfy-Credential-Key": "wrong"}, client_id=client_id)
    assert (wrong.status_code, wrong.json()) == (403, {"error": "Invalid client credentials"})
    other = prompt(headers, client_id="someone-else")
    assert (other.status_code, other.json()) == (403, {"error": "client_id does not match authenticated client"})
    accepted = prompt(headers, client_id=client_id)
    assert accepted.status_code == 200
    comfy47.wait_history(accepted.json()["prompt_id"])
    ws.close()


# -- POST /prompt refuses an id it already has ---------------------------------------------------


def test_a_known_prompt_id_is_409_whether_queued_running_or_done(comfy47: Standin) -> None:
    client_id = "dup-" + uuid.uuid4().hex[:6]
    ws = comfy47.ws(client_id)
    first_status(ws)
    running = str(uuid.uuid4())
    assert comfy47.post_prompt(sleep_prompt(20, 200), client_id=client_id, prompt_id=running).status_code == 200
    wait_frame(ws, "progress")
    pending = str(uuid.uuid4())
    number = comfy47.post_prompt(fresh("dup"), client_id=client_id, prompt_id=pending).json()["number"]
    for prompt_id in (running, pending):
        again = comfy47.post_prompt(fresh("dup"), client_id=client_id, prompt_id=prompt_id)
        assert (again.status_code, again.json()) == (409, {"error": "prompt_id already exists"})
    # A rejected workflow is still answered 400 (validation comes first); each POST used a number.
    invalid = comfy47.post_prompt({"1": {"class_type": "Nope", "inputs": {}}}, prompt_id=pending)
    assert invalid.status_code == 400 and invalid.json()["error"]["type"] == "missing_node_type"
    assert comfy47.post_prompt(fresh("dup"), client_id=client_id).json()["number"] == number + 4
    requests.post(comfy47.url + "/interrupt", json={"prompt_id": running}, timeout=5)
    comfy47.wait_history(pending)
    done = comfy47.post_prompt(fresh("dup"), prompt_id=pending)
    assert (done.status_code, done.json()) == (409, {"error": "prompt_id already exists"})
    # What the handler's client makes of it (handler/submit.py: the prompt is ComfyUI's already).
    with pytest.raises(ComfyHTTPError) as raised:
        ComfyClient("127.0.0.1", comfy47.port).queue_prompt(fresh("dup"), client_id, pending)
    assert is_duplicate_prompt(raised.value.status, raised.value.json())
    ws.close()


# -- /api/jobs: completion and error summary ------------------------------------------------------


def test_jobs_gain_completion_status_and_error_counts(comfy47: Standin) -> None:
    def job(prompt_id: str) -> dict[str, Any]:
        comfy47.wait_history(prompt_id)
        return requests.get(f"{comfy47.url}/api/jobs/{prompt_id}", timeout=5).json()

    ok = job(comfy47.post_prompt(fresh("jobok")).json()["prompt_id"])
    assert list(ok)[:10] == [
        "id",
        "status",
        "priority",
        "create_time",
        "execution_start_time",
        "execution_end_time",
        "completion_status",
        "has_errors",
        "execution_error_count",
        "outputs_count",
    ]
    assert (ok["status"], ok["completion_status"], ok["has_errors"], ok["execution_error_count"]) == (
        "completed",
        "success",
        False,
        0,
    )
    assert list(ok)[-4:] == ["outputs", "execution_status", "execution_errors", "workflow"]
    assert ok["execution_errors"] == []
    failing = {
        "1": {"class_type": "StandinFail", "inputs": {"message": "boom"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "f"}},
    }
    failed = job(comfy47.post_prompt(failing).json()["prompt_id"])
    assert failed["status"] == "failed" and "completion_status" not in failed
    assert (failed["has_errors"], failed["execution_error_count"]) == (True, 1)
    listing = requests.get(comfy47.url + "/api/jobs", params={"status": "completed"}, timeout=5).json()["jobs"]
    assert all(j["completion_status"] == "success" and "execution_errors" not in j for j in listing)
