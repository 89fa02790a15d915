"""The stand-in playing ComfyUI 0.38.1 (STANDIN_COMFYUI_VERSION=0.38.1): what section 8 of the
protocol notes says changed since 0.3.64, as far as a worker meets it.

Most tests share one 0.38.1 stand-in (module fixture, assets on, its database in a temporary
user folder); tests that need their own knobs, flags or a lock start their own.
"""

from __future__ import annotations

import fcntl
import json
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from tests.test_standin import (
    Standin,
    empty_invert_save,
    frames_until_done,
    load_and_save,
    sleep_prompt,
    standin_starter,
    wait_frame,
)

VERSION = "0.38.1"


@pytest.fixture(scope="module")
def comfy38(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    standin = Standin(tmp_path_factory.mktemp("standin038"), version=VERSION)
    try:
        standin.wait_ready()
        wait_out_the_start_up_scan(standin)
        yield standin
    finally:
        standin.kill()


def wait_out_the_start_up_scan(comfy: Standin, timeout_s: float = 20) -> None:
    """Return once a scan /object_info started has completed, so the one ComfyUI starts beside its
    start-up is over: it broadcasts to every socket, and while it runs no other scan starts."""
    ws = comfy.ws("settle-" + uuid.uuid4().hex[:6])
    ws.settimeout(2)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            requests.get(comfy.url + "/object_info", timeout=5)
            try:
                roots = wait_frame(ws, "assets.seed.fast_complete")["data"]["roots"]
                wait_frame(ws, "assets.seed.completed")
            except websocket.WebSocketTimeoutException:  # no scan started: the start-up one was ending
                continue
            if "output" in roots:
                return
        raise AssertionError(f"no asset scan of /object_info's completed in {timeout_s} s")
    finally:
        ws.close()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Any]:
    with standin_starter(tmp_path) as start:
        yield start


def fresh(prefix: str) -> dict:
    """empty_invert_save with a colour no earlier prompt used (so nothing is cached)."""
    return empty_invert_save(prefix, color=uuid.uuid4().int & 0xFFFFFF)


def rejected(comfy: Standin, prompt: Any, **extra: Any) -> dict:
    reply = comfy.post_prompt(prompt, **extra)
    assert reply.status_code == 400, reply.text
    return reply.json()


# -- what a worker reads to tell the versions apart ----------------------------------------------


def test_system_stats_features_and_view_headers(comfy38: Standin) -> None:
    system = requests.get(comfy38.url + "/system_stats", timeout=5).json()["system"]
    assert system["comfyui_version"] == VERSION and system["os"] == sys.platform == "linux"
    assert system["deploy_environment"] == "local-git"
    packages = {p["name"]: p for p in system["comfy_package_versions"]}
    assert set(packages["comfyui-frontend-package"]) == {"name", "installed", "required"}
    features = requests.get(comfy38.url + "/features", timeout=5).json()
    assert features == {
        "supports_preview_metadata": True,
        "supports_model_type_tags": True,
        "max_upload_size": 104857600,
        "extension": {"manager": {"supports_v4": True}},
        "node_replacements": True,
        "assets": True,
    }
    ws = comfy38.ws("flags-" + uuid.uuid4().hex[:6])
    ws.recv()
    ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
    # Past any assets.seed.* frame: asset scans broadcast to every socket.
    assert wait_frame(ws, "feature_flags") == {"type": "feature_flags", "data": features}
    ws.close()
    Image.new("RGB", (2, 2)).save(comfy38.output / "nosniff.png")
    view = requests.get(comfy38.url + "/view", params={"filename": "nosniff.png"}, timeout=5)
    assert view.status_code == 200 and view.headers["X-Content-Type-Options"] == "nosniff"


def test_object_info_keys_and_the_asset_scan_it_starts(comfy38: Standin) -> None:
    ws = comfy38.ws("scan-" + uuid.uuid4().hex[:6])
    ws.recv()
    info = requests.get(comfy38.url + "/object_info", timeout=5).json()
    assert all({"is_input_list", "has_intermediate_output", "search_aliases"} <= set(node) for node in info.values())
    intermediate = info["StandinIntermediatePreview"]
    assert intermediate["has_intermediate_output"] is True and intermediate["output_node"] is False
    outputs = {"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveImageWebsocket", "PreviewAny", "SaveAudio"}
    assert {name for name, node in info.items() if node["output_node"]} == outputs | {"StandinSave3D"}
    assert [name for name, node in info.items() if node["has_intermediate_output"]] == ["StandinIntermediatePreview"]
    # The scan /object_info starts reports to every socket, whoever asked.
    started = wait_frame(ws, "assets.seed.started")["data"]
    assert started["roots"] == ["models", "input", "output"] and started["phase"] == "fast"
    completed = wait_frame(ws, "assets.seed.completed")["data"]
    assert completed["total"] == started["total"] and completed["created"] + completed["skipped"] == started["total"]
    ws.close()


# -- POST /prompt ------------------------------------------------------------------------------


def test_prompt_ids_must_be_canonical_uuids(comfy38: Standin) -> None:
    first = comfy38.post_prompt(fresh("pid")).json()["number"]
    good = str(uuid.uuid4())
    for bad in ("job-1", good.upper(), good.replace("-", ""), "{" + good + "}", 12345):
        body = rejected(comfy38, fresh("pid"), prompt_id=bad)
        assert body == {
            "error": {
                "type": "invalid_prompt_id",
                "message": "prompt_id must be a valid UUID",
                "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to let "
                "the server generate one",
                "extra_info": {},
            },
            "node_errors": {},
        }
    chosen = comfy38.post_prompt(fresh("pid"), prompt_id=good).json()
    assert chosen["prompt_id"] == good and chosen["number"] == first + 6  # rejected ones count too
    minted = comfy38.post_prompt(fresh("pid"), prompt_id=None).json()["prompt_id"]
    assert str(uuid.UUID(minted)) == minted != good
    entry = comfy38.wait_history(good)
    assert isinstance(entry["prompt"][3]["create_time"], int)


def test_unknown_classes_are_missing_node_type(comfy38: Standin) -> None:
    body = rejected(comfy38, {"7": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "My upscaler"}}})
    assert body == {
        "error": {
            "type": "missing_node_type",
            "message": "Node 'My upscaler' not found. The custom node may not be installed.",
            "details": "Node ID '#7'",
            "extra_info": {"node_id": "7", "class_type": "NoSuchNode", "node_title": "My upscaler"},
        },
        "node_errors": {},
    }
    untitled = rejected(comfy38, {"1": {"class_type": "NoSuchNode", "inputs": {}}})["error"]
    assert untitled["message"] == "Node 'NoSuchNode' not found. The custom node may not be installed."
    assert untitled["extra_info"]["node_title"] == "NoSuchNode"
    classless = rejected(comfy38, {"3": {"inputs": {}}})["error"]
    assert classless["type"] == "missing_node_type" and classless["extra_info"] == {
        "node_id": "3",
        "class_type": None,
        "node_title": None,
    }
    assert classless["message"].startswith("Node 'ID #3' has no class_type.")


# -- outputs -----------------------------------------------------------------------------------


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """The JSON and BIN chunks of a binary glTF, checking the header and chunk framing."""
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, json_type = struct.unpack("<II", data[12:20])
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    document = json.loads(data[20 : 20 + json_length])
    bin_length, bin_type = struct.unpack("<II", data[20 + json_length : 28 + json_length])
    assert bin_type == 0x004E4942 and 28 + json_length + bin_length == len(data)
    return document, data[28 + json_length :]


def test_outputs_gain_metadata_and_asset_ids_and_audio_loses_its_underscore(comfy38: Standin) -> None:
    tag = uuid.uuid4().hex[:6]
    (comfy38.output / "audio").mkdir(exist_ok=True)
    (comfy38.output / "audio" / f"a{tag}_00003.flac").write_bytes(b"0.38.1 naming")
    (comfy38.output / "audio" / f"a{tag}_00005_.flac").write_bytes(b"0.3.64 naming")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 4, "batch_size": 1, "color": 0x10}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"img{tag}"}},
        "3": {"class_type": "EmptyAudio", "inputs": {"duration": 0.1, "sample_rate": 8000, "channels": 1}},
        "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": f"audio/a{tag}"}},
        "5": {"class_type": "StandinSave3D", "inputs": {"filename_prefix": f"mesh/m{tag}"}},
    }
    client_id = "out-" + tag
    ws = comfy38.ws(client_id)
    ws.recv()
    prompt_id = comfy38.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
    frames = frames_until_done(ws, prompt_id)
    ws.close()
    executed = {f["data"]["node"]: f["data"]["output"] for f in frames if f["type"] == "executed"}
    # Every socket first sees the scan of the output folder that each prompt starts.
    kinds = [f["type"] for f in frames]
    assert kinds.index("assets.seed.completed") < kinds.index("execution_start")

    (image,) = executed["2"]["images"]
    assert image["filename"] == f"img{tag}_00001_.png" and image["metadata"] == {
        "kind": "image",
        "width": 6,
        "height": 4,
    }
    assert str(uuid.UUID(image["id"])) == image["id"] and image["preview_id"] == image["id"]
    (audio,) = executed["4"]["audio"]
    assert audio["filename"] == f"a{tag}_00006.flac"  # no trailing underscore; the counter reads both forms
    assert "metadata" not in audio and "preview_id" not in audio and audio["id"] != image["id"]
    assert (comfy38.output / "audio" / audio["filename"]).read_bytes()[:4] == b"fLaC"
    (mesh,) = executed["5"]["3d"]
    assert {k: mesh[k] for k in ("filename", "subfolder", "type")} == {
        "filename": f"m{tag}_00001_.glb",
        "subfolder": "mesh",
        "type": "output",
    }
    assert executed["5"]["result"] == [f"mesh/m{tag}_00001_.glb [output]", None, None]
    view = requests.get(comfy38.url + "/view", params={"filename": mesh["filename"], "subfolder": "mesh"}, timeout=5)
    assert view.headers["Content-Type"] == "model/gltf-binary"
    document, binary = read_glb(view.content)
    (accessor,) = document["accessors"]
    assert document["asset"]["version"] == "2.0" and len(binary) == accessor["count"] * 12
    assert json.loads(document["asset"]["extras"]["prompt"])["5"]["class_type"] == "StandinSave3D"

    history = comfy38.history(prompt_id)[prompt_id]
    assert history["outputs"] == executed
    job = requests.get(f"{comfy38.url}/api/jobs/{prompt_id}", timeout=5).json()
    assert job["status"] == "completed" and job["outputs_count"] == 3
    assert job["outputs"]["5"]["result"] == [f"mesh/m{tag}_00001_.glb [output]"]  # nulls dropped
    assert job["preview_output"]["nodeId"] in {"2", "4", "5"} and job["preview_output"]["type"] == "output"


def test_cached_intermediate_output_node_replays_its_executed_frame(comfy38: Standin) -> None:
    tag = uuid.uuid4().hex[:6]
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0x22}},
        "2": {"class_type": "StandinIntermediatePreview", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"mid{tag}"}},
    }
    client_id = "mid-" + tag
    ws = comfy38.ws(client_id)
    ws.recv()
    skip = ("progress_state", "status", "assets.seed.started", "assets.seed.progress")
    skip += ("assets.seed.fast_complete", "assets.seed.completed")
    first = frames_until_done(ws, comfy38.post_prompt(prompt, client_id=client_id).json()["prompt_id"], skip)
    assert [(f["type"], f["data"].get("node")) for f in first if f["type"] in ("executing", "executed")] == [
        ("executing", "1"),
        ("executing", "2"),
        ("executed", "2"),
        ("executing", "3"),
        ("executed", "3"),
        ("executing", None),
    ]
    again = comfy38.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
    frames = frames_until_done(ws, again, skip)
    ws.close()
    assert [(f["type"], f["data"].get("node")) for f in frames] == [
        ("execution_start", None),
        ("execution_cached", None),
        ("executed", "3"),  # the cached output node
        ("executed", "2"),  # not an output node: replayed after the run, before success
        ("execution_success", None),
        ("executing", None),
    ]
    preview = frames[3]["data"]["output"]["images"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    assert sorted(comfy38.history(again)[again]["outputs"]) == ["2", "3"]
    assert sorted(p.name for p in comfy38.output.glob(f"mid{tag}_*")) == [f"mid{tag}_00001_.png"]


def test_load_image_refuses_names_that_leave_their_folder(comfy38: Standin) -> None:
    Image.new("RGB", (3, 2)).save(comfy38.root / "outside.png")
    Image.new("RGB", (5, 1)).save(comfy38.output / "earlier.png")
    for name in ("../outside.png", str(comfy38.root / "outside.png")):
        (error,) = rejected(comfy38, load_and_save(name, "no"))["node_errors"]["1"]["errors"]
        assert error["type"] == "custom_validation_failed" and error["details"] == f"image - Invalid image file: {name}"
    prefix = "ann" + uuid.uuid4().hex[:6]
    entry = comfy38.wait_history(comfy38.post_prompt(load_and_save("earlier.png [output]", prefix)).json()["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    # A symlinked folder inside output that points elsewhere is outside too (realpath).
    (comfy38.output / "elsewhere").symlink_to(comfy38.root, target_is_directory=True)
    broken = comfy38.post_prompt(fresh("elsewhere/x")).json()["prompt_id"]
    kind, error = comfy38.wait_history(broken)["status"]["messages"][-1]
    assert kind == "execution_error"
    assert error["exception_message"].startswith("**** ERROR: Saving image outside the output folder is not allowed.")


def test_upload_reply_gains_an_asset(comfy38: Standin) -> None:
    name = "asset_" + uuid.uuid4().hex[:6] + ".png"

    def upload(content: bytes, **fields: str) -> dict:
        files = {"image": (name, content, "image/png")}
        return requests.post(comfy38.url + "/upload/image", files=files, data=fields, timeout=5).json()

    first = upload(b"png bytes")
    asset = first.pop("asset")
    assert first == {"name": name, "subfolder": "", "type": "input"}
    assert set(asset) == {"id", "name", "asset_hash", "size", "mime_type", "tags"}
    assert (asset["name"], asset["size"], asset["mime_type"], asset["tags"]) == (name, 9, "image/png", ["input"])
    assert asset["asset_hash"].startswith("blake3:") and len(asset["asset_hash"]) == 7 + 64
    assert upload(b"png bytes")["asset"]["id"] == asset["id"]  # the same file: the same asset
    assert upload(b"other", subfolder="sub")["asset"]["tags"] == ["input", "sub"]
    by_hash = requests.get(comfy38.url + "/view", params={"filename": asset["asset_hash"]}, timeout=5)
    assert by_hash.status_code == 200 and by_hash.content == b"png bytes"


# -- jobs ----------------------------------------------------------------------------------------


def test_jobs_routes(comfy38: Standin) -> None:
    client_id = "jobs-" + uuid.uuid4().hex[:6]
    ws = comfy38.ws(client_id)
    ws.recv()
    running = comfy38.post_prompt(sleep_prompt(20, 200), client_id=client_id).json()["prompt_id"]
    wait_frame(ws, "progress")
    pending = comfy38.post_prompt(fresh("pending"), client_id=client_id).json()["prompt_id"]
    waiting = comfy38.post_prompt(fresh("waiting"), client_id=client_id).json()["prompt_id"]

    def get(path: str, **params: Any) -> requests.Response:
        return requests.get(comfy38.url + path, params=params, timeout=5)

    listing = get("/api/jobs", status="pending,in_progress", sort_order="asc").json()
    assert [(j["id"], j["status"]) for j in listing["jobs"]] == [
        (running, "in_progress"),
        (pending, "pending"),
        (waiting, "pending"),
    ]
    assert listing["pagination"] == {"offset": 0, "limit": None, "total": 3, "has_more": False}
    page = get("/api/jobs", status="pending", limit=1, offset=-3).json()
    assert len(page["jobs"]) == 1 and page["pagination"] == {"offset": 0, "limit": 1, "total": 2, "has_more": True}
    job = get(f"/api/jobs/{running}").json()
    assert set(job) == {
        "id",
        "status",
        "priority",
        "create_time",
        "outputs_count",
        "previewable_outputs_count",
        "workflow",
    }
    assert job["workflow"]["prompt"]["2"]["class_type"] == "StandinSleep"
    valid = "pending, in_progress, completed, failed, cancelled"
    for params, error in (
        ({"status": "done"}, f"Invalid status value(s): done. Valid values: {valid}"),
        ({"sort_by": "name"}, "sort_by must be 'created_at' or 'execution_duration'"),
        ({"sort_order": "up"}, "sort_order must be 'asc' or 'desc'"),
        ({"limit": "0"}, "limit must be a positive integer"),
        ({"limit": "x"}, "limit must be an integer"),
        ({"offset": "x"}, "offset must be an integer"),
    ):
        reply = get("/api/jobs", **params)
        assert (reply.status_code, reply.json()) == (400, {"error": error})
    missing = get(f"/api/jobs/{uuid.uuid4()}")
    assert (missing.status_code, missing.json()) == (404, {"error": "Job not found"})

    def cancel(job_id: str) -> bool:
        return requests.post(f"{comfy38.url}/api/jobs/{job_id}/cancel", timeout=5).json()["cancelled"]

    assert cancel(pending) is True and cancel(pending) is False  # dequeued, then nothing to cancel
    assert cancel("not-a-job") is False
    invalid_ids = "job_ids contains invalid id(s)"
    for body, error in (
        ("not json", {"error": "Request body must be valid JSON"}),
        (json.dumps({"job_ids": "x"}), {"error": "job_ids must be a list"}),
        (json.dumps({"job_ids": ["nope", 5, running]}), {"error": invalid_ids, "invalid_ids": ["nope", "5"]}),
    ):
        reply = requests.post(comfy38.url + "/api/jobs/cancel", data=body, timeout=5)
        assert (reply.status_code, reply.json()) == (400, error)
    batch = requests.post(comfy38.url + "/api/jobs/cancel", json={"job_ids": [running, str(uuid.uuid4())]}, timeout=5)
    assert batch.json() == {"cancelled": True}
    frames = frames_until_done(ws, running, skip=("progress_state", "progress", "status"))
    assert frames[0]["type"] == "execution_interrupted"
    cancelled = get(f"/api/jobs/{running}").json()
    assert cancelled["status"] == "cancelled" and cancelled["execution_end_time"] >= cancelled["execution_start_time"]
    assert cancelled["execution_status"]["status_str"] == "error"
    done = comfy38.wait_history(waiting)
    assert done["status"]["status_str"] == "success" and comfy38.history(pending) == {}
    completed = get(f"/api/jobs/{waiting}").json()
    assert completed["status"] == "completed" and completed["outputs_count"] == 1
    assert completed["preview_output"]["nodeId"] == "2" and completed["preview_output"]["mediaType"] == "images"
    failing = {
        "1": {"class_type": "StandinFail", "inputs": {"message": "boom"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "f"}},
    }
    failed_id = comfy38.post_prompt(failing).json()["prompt_id"]
    comfy38.wait_history(failed_id)
    failed = get(f"/api/jobs/{failed_id}").json()
    assert failed["status"] == "failed" and failed["execution_error"]["exception_message"] == "boom\n"
    statuses = {j["id"]: j["status"] for j in get("/api/jobs", status="failed,cancelled").json()["jobs"]}
    assert statuses[failed_id] == "failed" and statuses[running] == "cancelled" and waiting not in statuses
    ws.close()


# -- start-up: the asset database, its lock, the port ----------------------------------------------


def hold_lock(path: Path) -> Any:
    """Hold `path` as ComfyUI's filelock.FileLock does on Linux (flock), as another process would."""
    stream = open(path, "a")  # noqa: SIM115 - closed by the caller
    fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return stream


def test_a_held_database_lock_stops_start_up_before_the_port_opens(own: Any, tmp_path: Path) -> None:
    shared_user = tmp_path / "shared-user"
    shared_user.mkdir()
    holder = hold_lock(shared_user / "comfyui.db.lock")
    try:
        blocked = own(version=VERSION, args=("--user-directory", str(shared_user)))
        assert blocked.wait_exit(30) == 1
        out = blocked.stdout
        assert "Database lock is held; waiting up to 5s for it to be released" in out
        failure = out.index("ASSETS_STARTUP_FAILED: in_use")
        assert out[failure:] == [
            "ASSETS_STARTUP_FAILED: in_use",
            f"Another ComfyUI is already using this database: '{shared_user / 'comfyui.db'}'.",
            "Close the other ComfyUI and start this one again.",
            "Or give this ComfyUI its own database: --database-url sqlite:///path/to/another.db",
            "Or start ComfyUI without the assets system: --disable-assets",
        ]
        assert not any("Starting server" in line or "To see the GUI" in line for line in out)

        without = own(version=VERSION, args=("--user-directory", str(shared_user), "--disable-assets"))
        memory = own(
            version=VERSION, args=("--user-directory", str(shared_user), "--database-url", "sqlite:///:memory:")
        )
        without.wait_ready()
        memory.wait_ready()
        banner = "Another ComfyUI is already using this install's asset database:"
        assert without.stdout.count(banner) == 2  # logged at once, and again just before serving
        assert requests.get(without.url + "/features", timeout=5).json()["assets"] is False
        assert (
            "asset"
            not in requests.post(
                without.url + "/upload/image", files={"image": ("a.png", b"x", "image/png")}, timeout=5
            ).json()
        )
        assert requests.get(memory.url + "/features", timeout=5).json()["assets"] is True
        assert sorted(p.name for p in shared_user.iterdir()) == ["comfyui.db.lock"]  # neither made a database
    finally:
        holder.close()

    owner = own(version=VERSION, args=("--user-directory", str(shared_user)))
    owner.wait_ready()
    assert {"comfyui.db", "comfyui.db.lock"} <= {p.name for p in shared_user.iterdir()}
    with pytest.raises(BlockingIOError):
        hold_lock(shared_user / "comfyui.db.lock")
    owner.proc.send_signal(signal.SIGKILL)  # the OS frees the lock of a process that dies
    owner.wait_exit(5)
    hold_lock(shared_user / "comfyui.db.lock").close()


def test_port_in_use_is_one_line_and_exit_1(own: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        clash = own(version=VERSION, port=port)
        assert clash.wait_exit(30) == 1
    assert clash.stdout[-1] == (
        f"Port {port} is already in use on address 127.0.0.1. Please close the other application or use a "
        "different port with --port."
    )
    assert not clash.stderr


def test_cache_drops_knob_reruns_and_cache_classic_keeps(own: Any) -> None:
    dropping = own({"STANDIN_CACHE_DROPS": "1"}, version=VERSION, args=("--disable-assets",))
    classic = own({"STANDIN_CACHE_DROPS": "1"}, version=VERSION, args=("--disable-assets", "--cache-classic"))
    for standin, files in ((dropping, ["again_00001_.png", "again_00002_.png"]), (classic, ["again_00001_.png"])):
        standin.wait_ready()
        for _ in range(2):
            prompt_id = standin.post_prompt(empty_invert_save("again")).json()["prompt_id"]
            assert standin.wait_history(prompt_id)["status"]["status_str"] == "success"
        assert sorted(p.name for p in standin.output.iterdir()) == files
    assert "Using RAM pressure cache." in dropping.stdout and "Using RAM pressure cache." not in classic.stdout


def test_deprecated_and_extra_flags(own: Any, tmp_path: Path) -> None:
    log_file = tmp_path / "comfy.log"
    standin = own(
        version=VERSION, args=("--enable-assets", "--verbose", "DEBUG", str(log_file), "--verbose", "WARNING")
    )
    standin.wait_ready()
    assert any(line.startswith("--enable-assets is deprecated and does nothing") for line in standin.stdout)
    assert "ComfyUI version: 0.38.1" not in standin.stdout  # the console is at WARNING
    assert "ComfyUI version: 0.38.1" in log_file.read_text().splitlines()  # the file is at DEBUG
    models = own(version=VERSION, args=("--models-directory", str(tmp_path / "nope")))
    assert models.wait_exit(10) == 2 and "argument --models-directory" in models.stderr[-1]


def test_sigterm_still_kills_at_once(own: Any) -> None:
    standin = own(version=VERSION)
    standin.wait_ready()
    (standin.temp / "left.png").write_bytes(b"x")
    standin.proc.send_signal(signal.SIGTERM)
    assert standin.wait_exit(5) == -signal.SIGTERM
    assert (standin.temp / "left.png").exists()  # no shutdown ran: temp is not wiped
