"""The stand-in ComfyUI (standin/ComfyUI) answers as docs/comfyui-protocol.md records a real one.

Most tests share one stand-in process (module fixture, playing 0.3.64); tests that need their
own knobs or kill the process start their own. Each starts on a free loopback port with
temporary input/output/temp/user folders. tests/test_standin_v038.py covers what 0.38.1
changes; tests here that take `release` run against both versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from tests.processes import first_line_with, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
COMFY_DIR = REPO / "standin" / "ComfyUI"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


RELEASES = ("0.3.64", "0.38.1")


def standin_env(version: str = "0.3.64", env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without STANDIN_* knobs, playing `version`, plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STANDIN_")}
    return {**full_env, "STANDIN_COMFYUI_VERSION": version, **(env or {})}


def run_main(*args: str, version: str = "0.3.64", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """main.py run to its end (flags that stop start-up, --quick-test-for-ci)."""
    return subprocess.run(
        [PYTHON, "-u", "main.py", *args],
        cwd=COMFY_DIR,
        env=standin_env(version, env),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Standin:
    """One stand-in process with its own folders; output lines are collected as they come."""

    def __init__(
        self,
        root: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        version: str = "0.3.64",
        port: int | None = None,
        cwd: Path = COMFY_DIR,
        user: int | None = None,
    ) -> None:
        self.root = root
        self.version = version
        self.port = port or free_port()
        self.input = root / "input"
        self.output = root / "output"
        self.temp_parent = root / "tmp"
        self.user = root / "user"
        for path in (self.input, self.output, self.temp_parent, self.user):
            path.mkdir(parents=True, exist_ok=True)
        shutil.copy(COMFY_DIR / "input" / "example.png", self.input / "example.png")
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        command = [PYTHON, "-u", "main.py", "--listen", "127.0.0.1", "--port", str(self.port)]
        command += ["--disable-auto-launch", "--cpu", "--input-directory", str(self.input)]
        command += ["--output-directory", str(self.output), "--temp-directory", str(self.temp_parent)]
        command += ["--user-directory", str(self.user), *args]
        if user is not None:  # run as that uid (and gid), without root's groups
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
        self.proc = subprocess.Popen(
            command, cwd=cwd, env=standin_env(version, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def temp(self) -> Path:
        return self.temp_parent / "temp"  # ComfyUI appends "temp" to --temp-directory

    def wait_ready(self, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"stand-in exited with {self.proc.returncode}: {self.stdout} {self.stderr}")
            try:
                if requests.get(self.url + "/system_stats", timeout=0.5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise AssertionError("stand-in did not come up")

    def wait_exit(self, timeout_s: float = 5) -> int:
        code = self.proc.wait(timeout=timeout_s)
        for reader in self.readers:  # every line read: the pipes are at their end
            reader.join(timeout=timeout_s)
        return code

    def wait_line(self, text: str, timeout_s: float = 10) -> None:
        def exited() -> str | None:
            return None if self.proc.poll() is None else "the stand-in exited"

        def context() -> str:
            return str(self.stdout)

        wait_until(lambda: first_line_with(self.stdout, text), timeout_s, repr(text), ended=exited, context=context)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def ws(self, client_id: str | None = None) -> websocket.WebSocket:
        query = f"?clientId={client_id}" if client_id else ""
        return websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws{query}", timeout=10)

    def post_prompt(self, prompt: Any, **extra: Any) -> requests.Response:
        return requests.post(self.url + "/prompt", json={"prompt": prompt, **extra}, timeout=10)

    def history(self, prompt_id: str) -> dict[str, Any]:
        return requests.get(f"{self.url}/history/{prompt_id}", timeout=10).json()

    def wait_history(self, prompt_id: str, timeout_s: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry:
                return entry[prompt_id]
            time.sleep(0.02)
        raise AssertionError(f"no history for {prompt_id}")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    standin = Standin(tmp_path_factory.mktemp("standin"))
    try:
        standin.wait_ready()
        yield standin
    finally:
        standin.kill()


@contextlib.contextmanager
def standin_starter(tmp_path: Path) -> Iterator[Any]:
    """A function that starts private stand-ins (with knobs) under tmp_path; all are killed at the end."""
    started: list[Standin] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = (), **options: Any) -> Standin:
        standin = Standin(options.pop("root", None) or tmp_path / f"s{len(started)}", env, args, **options)
        started.append(standin)
        return standin

    try:
        yield start
    finally:
        for standin in started:
            standin.kill()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Any]:
    with standin_starter(tmp_path) as start:
        yield start


def frames_until_done(ws: websocket.WebSocket, prompt_id: str, skip: tuple[str, ...] = ()) -> list[dict]:
    """Every JSON frame up to and including `executing` with node null for this prompt."""
    frames = []
    while True:
        raw = ws.recv()
        if isinstance(raw, bytes):
            frames.append({"type": "binary", "data": raw})
            continue
        frame = json.loads(raw)
        if frame["type"] not in skip:
            frames.append(frame)
        if frame["type"] == "executing" and frame["data"]["node"] is None and frame["data"]["prompt_id"] == prompt_id:
            return frames


def wait_frame(ws: websocket.WebSocket, frame_type: str) -> dict:
    while True:
        raw = ws.recv()
        if isinstance(raw, str):
            frame = json.loads(raw)
            if frame["type"] == frame_type:
                return frame


def empty_invert_save(prefix: str, color: int = 0xFF0000, width: int = 64, height: int = 48) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": color},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def sleep_prompt(seconds: float, steps: int, prefix: str = "slept") -> dict:
    color = uuid.uuid4().int & 0xFFFFFF  # never cached from an earlier test
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "StandinSleep", "inputs": {"seconds": seconds, "steps": steps, "image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


# -- HTTP basics ---------------------------------------------------------------------------


def test_system_stats_shape(comfy: Standin) -> None:
    stats = requests.get(comfy.url + "/system_stats", timeout=5).json()
    system = stats["system"]
    assert system["comfyui_version"] == "0.3.64"
    assert system["os"] == "posix"
    assert system["embedded_python"] is False
    assert system["pytorch_version"] == "standin"
    assert system["python_version"].startswith(sys.version.split()[0][:3])
    assert "--cpu" in system["argv"]
    assert system["ram_total"] >= system["ram_free"] > 0
    (device,) = stats["devices"]
    assert device["name"] == "cpu" and device["type"] == "cpu" and device["index"] is None
    assert device["vram_total"] == device["torch_vram_total"] == system["ram_total"]
    # Every route is served under /api too, as ComfyUI does.
    assert requests.get(comfy.url + "/api/system_stats", timeout=5).json()["system"]["comfyui_version"] == "0.3.64"
    assert requests.get(comfy.url + "/prompt", timeout=5).json() == {"exec_info": {"queue_remaining": 0}}
    # 0.3.64 has none of 0.38.1's additions.
    assert "comfy_package_versions" not in system and "deploy_environment" not in system
    features = requests.get(comfy.url + "/features", timeout=5).json()
    assert features == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    assert requests.get(comfy.url + "/api/jobs", timeout=5).status_code == 404
    assert requests.post(comfy.url + "/api/jobs/cancel", json={"job_ids": []}, timeout=5).status_code == 404


def test_object_info_lists_the_nodes(comfy: Standin) -> None:
    info = requests.get(comfy.url + "/object_info", timeout=5).json()
    expected = {
        "EmptyImage",
        "LoadImage",
        "ImageInvert",
        "ImageBlur",
        "SaveImage",
        "PreviewImage",
        "SaveAnimatedWEBP",
        "SaveImageWebsocket",
        "PrimitiveString",
        "StringConcatenate",
        "PreviewAny",
        "EmptyAudio",
        "SaveAudio",
        "CheckpointLoaderSimple",
        "StandinSleep",
        "StandinFail",
        "StandinDropWebSockets",
        "StandinExit",
        "StandinBigImages",
        "StandinUninterruptible",
        "StandinFreeze",
        "StandinIntermediatePreview",
        "StandinSave3D",
    }
    assert expected <= set(info)
    outputs = {"SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveImageWebsocket", "PreviewAny", "SaveAudio"}
    assert {name for name, node in info.items() if node["output_node"]} == outputs | {"StandinSave3D"}
    assert all("has_intermediate_output" not in node and "is_input_list" not in node for node in info.values())
    save = info["SaveImage"]
    assert set(save) >= {"input", "input_order", "output", "output_is_list", "output_name", "name"}
    assert set(save) >= {"display_name", "description", "python_module", "category", "output_node"}
    assert save["output_node"] is True and save["output"] == [] and save["category"] == "image"
    assert save["input_order"] == {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]}
    assert info["ImageInvert"]["output_node"] is False and info["ImageInvert"]["output"] == ["IMAGE"]
    assert info["LoadImage"]["output"] == ["IMAGE", "MASK"]
    files, options = info["LoadImage"]["input"]["required"]["image"]
    assert "example.png" in files and options == {"image_upload": True}
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == []
    assert info["StandinSleep"]["input"]["optional"] == {"image": ["IMAGE"]}
    single = requests.get(comfy.url + "/object_info/EmptyImage", timeout=5).json()
    assert single == {"EmptyImage": info["EmptyImage"]}
    assert requests.get(comfy.url + "/object_info/NoSuchNode", timeout=5).json() == {}


# -- a run, its frames, its file and its history ------------------------------------------------


def test_invert_run_frames_file_and_history(comfy: Standin) -> None:
    client_id = "client-" + uuid.uuid4().hex[:8]
    prefix = "inv" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    first = json.loads(ws.recv())
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}

    reply = comfy.post_prompt(empty_invert_save(prefix), client_id=client_id)
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
    prompt_id = body["prompt_id"]
    frames = frames_until_done(ws, prompt_id)
    kinds = [(f["type"], f["data"].get("node")) for f in frames]
    assert kinds == [
        ("status", None),
        ("status", None),
        ("execution_start", None),
        ("execution_cached", None),
        ("progress_state", None),
        ("executing", "1"),
        ("progress_state", None),
        ("progress_state", None),
        ("executing", "3"),
        ("progress_state", None),
        ("progress_state", None),
        ("executing", "2"),
        ("executed", "2"),
        ("progress_state", None),
        ("execution_success", None),
        ("status", None),
        ("executing", None),
    ]
    assert [f["data"]["status"]["exec_info"]["queue_remaining"] for f in frames if f["type"] == "status"] == [1, 1, 0]
    assert frames[2]["data"]["prompt_id"] == prompt_id and isinstance(frames[2]["data"]["timestamp"], int)
    assert frames[3]["data"]["nodes"] == []
    assert frames[4]["data"]["nodes"]["1"] == {
        "value": 0.0,
        "max": 1.0,
        "state": "running",
        "node_id": "1",
        "prompt_id": prompt_id,
        "display_node_id": "1",
        "parent_node_id": None,
        "real_node_id": "1",
    }
    assert frames[5]["data"] == {"node": "1", "display_node": "1", "prompt_id": prompt_id}
    last_state = frames[13]["data"]["nodes"]
    assert set(last_state) == {"1", "3", "2"} and {s["state"] for s in last_state.values()} == {"finished"}
    output = {"images": [{"filename": f"{prefix}_00001_.png", "subfolder": "", "type": "output"}]}
    assert frames[12]["data"] == {"node": "2", "display_node": "2", "output": output, "prompt_id": prompt_id}
    assert frames[-1]["data"] == {"node": None, "prompt_id": prompt_id}

    with Image.open(comfy.output / f"{prefix}_00001_.png") as png:
        assert png.format == "PNG" and png.size == (64, 48)
        assert png.convert("RGB").getpixel((10, 10)) == (0, 255, 255)  # 0xFF0000 inverted
        assert json.loads(png.text["prompt"])["3"]["class_type"] == "ImageInvert"

    entry = comfy.history(prompt_id)[prompt_id]
    assert set(entry) == {"prompt", "outputs", "status", "meta"}
    number, pid, prompt, extra, outputs = entry["prompt"]
    assert (pid, extra, outputs) == (prompt_id, {"client_id": client_id}, ["2"])
    assert number == body["number"] and prompt["3"]["class_type"] == "ImageInvert"
    assert entry["outputs"] == {"2": output}
    assert entry["meta"] == {"2": {"node_id": "2", "display_node": "2", "parent_node": None, "real_node_id": "2"}}
    status = entry["status"]
    assert status["status_str"] == "success" and status["completed"] is True
    assert [m[0] for m in status["messages"]] == ["execution_start", "execution_cached", "execution_success"]

    # The same prompt again is fully cached: no executing frames, the same file reported.
    prompt_id2 = comfy.post_prompt(empty_invert_save(prefix), client_id=client_id).json()["prompt_id"]
    frames = frames_until_done(ws, prompt_id2)
    kinds = [f["type"] for f in frames]
    assert kinds == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert sorted(frames[3]["data"]["nodes"]) == ["1", "2", "3"]
    assert frames[4]["data"]["output"] == output
    assert comfy.history(prompt_id2)[prompt_id2]["outputs"] == {"2": output}
    assert sorted(p.name for p in comfy.output.glob(f"{prefix}_*")) == [f"{prefix}_00001_.png"]
    ws.close()


def test_intermediate_output_node_is_not_replayed_by_0_3_64(comfy: Standin) -> None:
    """A non-output node with a ui sends `executed` when it runs; cached, 0.3.64 stays silent
    about it (0.38.1 replays it), though its history still lists it (from the ui cache)."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0x33}},
        "2": {"class_type": "StandinIntermediatePreview", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mid"}},
    }
    client_id = "mid-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    for expected in (["2", "3"], ["3"]):
        prompt_id = comfy.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
        frames = frames_until_done(ws, prompt_id)
        assert [f["data"]["node"] for f in frames if f["type"] == "executed"] == expected
        assert sorted(comfy.history(prompt_id)[prompt_id]["outputs"]) == ["2", "3"]
    ws.close()


def test_frames_go_only_to_the_prompts_client(comfy: Standin) -> None:
    owner, other = comfy.ws("owner-" + uuid.uuid4().hex[:6]), comfy.ws("other-" + uuid.uuid4().hex[:6])
    owner_id = json.loads(owner.recv())["data"]["sid"]
    json.loads(other.recv())
    prompt_id = comfy.post_prompt(empty_invert_save("route", color=0x123456), client_id=owner_id).json()["prompt_id"]
    frames_until_done(owner, prompt_id)
    other.settimeout(0.3)
    seen = []
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            seen.append(json.loads(other.recv())["type"])
    assert seen and set(seen) == {"status"}
    owner.close()
    other.close()


def test_performance_512_empty_to_save(comfy: Standin) -> None:
    client_id = "perf-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "perf"}},
    }
    durations = []
    for color in range(5):
        prompt["1"]["inputs"]["color"] = color + 1
        started = time.perf_counter()
        prompt_id = comfy.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
        frames_until_done(ws, prompt_id)
        durations.append(time.perf_counter() - started)
    assert min(durations) < 0.1, durations
    ws.close()


# -- validation --------------------------------------------------------------------------------


def test_validation_errors_have_comfyuis_shapes(comfy: Standin) -> None:
    def rejected(prompt: Any) -> dict:
        reply = comfy.post_prompt(prompt)
        assert reply.status_code == 400, reply.text
        return reply.json()

    body = rejected({"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}})
    assert body == {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "Required input is missing: images",
            "extra_info": {},
        },
        "node_errors": {
            "1": {
                "errors": [
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": "images",
                        "extra_info": {"input_name": "images"},
                    }
                ],
                "dependent_outputs": ["1"],
                "class_type": "SaveImage",
            }
        },
    }

    body = rejected(
        {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }
    )
    (error,) = body["node_errors"]["1"]["errors"]
    assert error["type"] == "value_not_in_list" and error["message"] == "Value not in list"
    assert error["details"] == "ckpt_name: 'missing.safetensors' not in []"
    assert error["extra_info"]["received_value"] == "missing.safetensors"
    assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]

    assert rejected({"1": {"class_type": "NoSuchNode", "inputs": {}}}) == {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNode does not exist.",
            "details": "Node ID '#1'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    assert rejected({"1": {"inputs": {}}})["error"]["type"] == "invalid_prompt"
    no_outputs = {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
    assert rejected({}) == {"error": no_outputs, "node_errors": {}}
    lone = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    assert rejected(lone)["error"] == no_outputs
    reply = requests.post(comfy.url + "/prompt", json={"client_id": "x"}, timeout=5)
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "no_prompt" and reply.json()["error"]["message"] == "No prompt provided"

    small = empty_invert_save("v")
    small["1"]["inputs"]["width"] = 0
    (error,) = rejected(small)["node_errors"]["1"]["errors"]
    assert error["type"] == "value_smaller_than_min" and error["message"] == "Value 0 smaller than min of 1"
    big = empty_invert_save("v")
    big["1"]["inputs"]["height"] = 99999
    assert rejected(big)["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    wrong = empty_invert_save("v")
    wrong["1"]["inputs"]["width"] = "wide"
    assert rejected(wrong)["node_errors"]["1"]["errors"][0]["type"] == "invalid_input_type"

    mismatch = {
        "1": {"class_type": "EmptyAudio", "inputs": {"duration": 1.0, "sample_rate": 8000, "channels": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    (error,) = rejected(mismatch)["node_errors"]["2"]["errors"]
    assert error["type"] == "return_type_mismatch" and error["extra_info"]["received_type"] == "AUDIO"

    dangling = {"2": {"class_type": "SaveImage", "inputs": {"images": ["99", 0], "filename_prefix": "x"}}}
    (error,) = rejected(dangling)["node_errors"]["2"]["errors"]
    assert error["type"] == "exception_during_validation" and error["details"] == "'99'"
    assert error["extra_info"]["exception_type"] == "KeyError"

    missing_file = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "does_not_exist.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert rejected(missing_file)["node_errors"]["1"]["errors"] == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": "image - Invalid image file: does_not_exist.png",
            "extra_info": {"input_name": "image"},
        }
    ]


def test_number_counts_rejected_prompts_too(comfy: Standin) -> None:
    first = comfy.post_prompt(empty_invert_save("n", color=0x010101)).json()["number"]
    assert comfy.post_prompt({"1": {"class_type": "NoSuchNode", "inputs": {}}}).status_code == 400
    second = comfy.post_prompt(empty_invert_save("n", color=0x020202)).json()
    assert second["number"] == first + 2
    comfy.wait_history(second["prompt_id"])
    assert requests.post(comfy.url + "/prompt", json={"prompt": {}, "number": -1000}, timeout=5).status_code == 400


def test_cycles_and_deep_chains(comfy: Standin) -> None:
    cycle = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cyc"}},
    }
    reply = comfy.post_prompt(cycle)
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"1", "3"}
    error = body["node_errors"]["1"]["errors"][0]
    assert error["type"] == "dependency_cycle" and "1 (ImageInvert) -> 3 (ImageInvert)" in error["details"]

    def chain(total_nodes: int) -> dict:
        prompt: dict[str, Any] = {
            "0": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}}
        }
        for i in range(1, total_nodes - 1):
            prompt[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
        prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": [str(total_nodes - 2), 0]}}
        return prompt

    too_deep = comfy.post_prompt(chain(990))
    assert too_deep.status_code == 400
    (errors,) = [e["errors"] for e in too_deep.json()["node_errors"].values()]
    assert errors[0]["type"] == "exception_during_inner_validation"
    assert errors[0]["extra_info"]["exception_type"] == "RecursionError"
    accepted = comfy.post_prompt(chain(976))
    assert accepted.status_code == 200, accepted.text[:500]
    entry = comfy.wait_history(accepted.json()["prompt_id"], timeout_s=60)
    assert entry["status"]["status_str"] == "success"


def test_malformed_bodies_are_500(comfy: Standin) -> None:
    for body in (b"not json", json.dumps({"prompt": "a string"}).encode(), json.dumps({"prompt": [1, 2]}).encode()):
        reply = requests.post(comfy.url + "/prompt", data=body, timeout=5)
        assert reply.status_code == 500
        assert reply.headers["Content-Type"].startswith("text/plain")
        assert reply.text.startswith("500 Internal Server Error")
    assert requests.post(comfy.url + "/free", timeout=5).status_code == 500
    reply = requests.post(comfy.url + "/free", json={"unload_models": True, "free_memory": True}, timeout=5)
    assert reply.status_code == 200 and reply.content == b""


# -- files: /view and /upload/image --------------------------------------------------------------


def test_view_status_codes(comfy: Standin) -> None:
    (comfy.output / "sub").mkdir(exist_ok=True)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(comfy.output / "sub" / "v_00001_.png")
    (comfy.output / "a.flac").write_bytes(b"fLaC")
    (comfy.output / "x.latent").write_bytes(b"latent")

    def view(**params: str) -> requests.Response:
        return requests.get(comfy.url + "/view", params=params, timeout=5)

    ok = view(filename="v_00001_.png", subfolder="sub", type="output")
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "image/png"
    assert ok.headers["Content-Disposition"] == 'filename="v_00001_.png"'
    assert "X-Content-Type-Options" not in ok.headers  # 0.38.1 adds nosniff
    assert Image.open(io.BytesIO(ok.content)).getpixel((0, 0)) == (1, 2, 3)
    assert view(filename="a.flac").headers["Content-Type"] == "audio/flac"
    assert view(filename="x.latent").headers["Content-Type"] == "application/octet-stream"
    preview = view(filename="v_00001_.png", subfolder="sub", preview="jpeg;80")
    assert preview.status_code == 200 and preview.headers["Content-Type"] == "image/jpeg"

    missing = view(filename="nope.png")
    assert missing.status_code == 404 and missing.content == b""
    assert requests.get(comfy.url + "/view", timeout=5).status_code == 404
    assert view(filename="../secret.png").status_code == 400
    assert view(filename="v_00001_.png", type="bogus").status_code == 400
    assert view(filename="v_00001_.png", subfolder="../..").status_code == 403


def test_upload_image_name_clashes(comfy: Standin) -> None:
    name = "up_" + uuid.uuid4().hex[:6] + ".png"
    stem = name[:-4]

    def upload(content: bytes, filename: str = name, **fields: str) -> requests.Response:
        return requests.post(
            comfy.url + "/upload/image", files={"image": (filename, content, "image/png")}, data=fields, timeout=5
        )

    assert upload(b"one").json() == {"name": name, "subfolder": "", "type": "input"}
    assert upload(b"one").json()["name"] == name  # identical bytes: the same file
    assert upload(b"two").json()["name"] == f"{stem} (1).png"
    assert upload(b"three").json()["name"] == f"{stem} (2).png"
    assert upload(b"four", overwrite="true").json()["name"] == name
    assert (comfy.input / name).read_bytes() == b"four"
    assert upload(b"sub", subfolder="mysub").json() == {"name": name, "subfolder": "mysub", "type": "input"}
    assert (comfy.input / "mysub" / name).read_bytes() == b"sub"
    assert upload(b"t", type="temp").json()["type"] == "temp"
    assert (comfy.temp / name).exists()

    evil = upload(b"evil", filename="../evil.png")
    assert evil.status_code == 400 and evil.content == b""
    assert not (comfy.root / "evil.png").exists()
    assert upload(b"x", subfolder="../../out").status_code == 400
    no_image = requests.post(comfy.url + "/upload/image", data={"type": "input"}, timeout=5)
    assert no_image.status_code == 400 and no_image.content == b""


# -- nodes --------------------------------------------------------------------------------------


def test_save_image_naming_rules(comfy: Standin) -> None:
    tag = uuid.uuid4().hex[:6]
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0x00FF00}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"sub{tag}/b"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": f"bn{tag}_%batch_num%"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    entry = comfy.wait_history(comfy.post_prompt(prompt).json()["prompt_id"])
    outputs = entry["outputs"]
    assert outputs["2"]["images"] == [
        {"filename": "b_00001_.png", "subfolder": f"sub{tag}", "type": "output"},
        {"filename": "b_00002_.png", "subfolder": f"sub{tag}", "type": "output"},
    ]
    assert [i["filename"] for i in outputs["3"]["images"]] == [f"bn{tag}_0_00001_.png", f"bn{tag}_1_00002_.png"]
    previews = outputs["4"]["images"]
    assert all(re.fullmatch(r"ComfyUI_temp_[a-z]{5}_0000[12]_\.png", p["filename"]) for p in previews)
    assert {p["type"] for p in previews} == {"temp"} and (comfy.temp / previews[0]["filename"]).exists()

    # The counter is 1 + the highest in the folder, rescanned on every save: a file another
    # process wrote in between counts (names of other prefixes do not).
    (comfy.output / f"sub{tag}" / "b_00007_.png").write_bytes(b"written by someone else")
    (comfy.output / f"sub{tag}" / "bb_00050_.png").write_bytes(b"another prefix")
    prompt["1"]["inputs"]["color"] = 0x0000FF
    entry = comfy.wait_history(comfy.post_prompt(prompt).json()["prompt_id"])
    assert [i["filename"] for i in entry["outputs"]["2"]["images"]] == ["b_00008_.png", "b_00009_.png"]

    outside = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../x"}},
    }
    entry = comfy.wait_history(comfy.post_prompt(outside).json()["prompt_id"])
    kind, error = entry["status"]["messages"][-1]
    assert kind == "execution_error" and error["exception_type"] == "Exception"
    assert error["exception_message"].startswith("**** ERROR: Saving image outside the output folder is not allowed.")


def test_text_webp_big_images_and_blur(comfy: Standin) -> None:
    prompt = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "2": {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": ["1", 0], "string_b": "world", "delimiter": " "},
        },
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        "4": {"class_type": "StandinBigImages", "inputs": {"count": 2, "width": 128, "height": 96, "seed": 7}},
        "5": {"class_type": "ImageBlur", "inputs": {"image": ["4", 0], "blur_radius": 3, "sigma": 2.0}},
        "6": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["5", 0],
                "filename_prefix": "anim",
                "fps": 6.0,
                "lossless": False,
                "quality": 80,
                "method": "fastest",
            },
        },
        "7": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "noise"}},
    }
    entry = comfy.wait_history(comfy.post_prompt(prompt).json()["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["3"] == {"text": ["hello world"]}
    webp = entry["outputs"]["6"]
    assert webp["animated"] == [True] and webp["images"][0]["filename"].endswith("_.webp")
    with Image.open(comfy.output / webp["images"][0]["filename"]) as img:
        assert img.n_frames == 2
    noise = [comfy.output / i["filename"] for i in entry["outputs"]["7"]["images"]]
    assert len(noise) == 2 and all(p.stat().st_size > 128 * 96 * 3 * 0.9 for p in noise)


def test_save_image_websocket_sends_binary_frames(comfy: Standin) -> None:
    client_id = "bin-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": 0xABCDEF}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    prompt_id = comfy.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
    frames = frames_until_done(ws, prompt_id, skip=("progress_state", "status"))
    kinds = [f["type"] for f in frames]
    assert kinds[-4:] == ["progress", "binary", "execution_success", "executing"]
    assert kinds.count("binary") == 2 and "executed" not in kinds
    payload = next(f["data"] for f in frames if f["type"] == "binary")
    assert payload[:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02" and payload[8:16] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(payload[8:])).getpixel((0, 0)) == (0xAB, 0xCD, 0xEF)
    assert comfy.history(prompt_id)[prompt_id]["outputs"] == {}
    ws.close()


def test_audio_is_a_valid_flac(comfy: Standin) -> None:
    prompt = {
        "1": {"class_type": "EmptyAudio", "inputs": {"duration": 1.5, "sample_rate": 44100, "channels": 2}},
        "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "audio/ComfyUI"}},
    }
    entry = comfy.wait_history(comfy.post_prompt(prompt).json()["prompt_id"])
    (item,) = entry["outputs"]["2"]["audio"]
    assert item["subfolder"] == "audio" and re.fullmatch(r"ComfyUI_\d{5}_\.flac", item["filename"])
    data = (comfy.output / "audio" / item["filename"]).read_bytes()
    info = decode_flac(data)
    assert (info["sample_rate"], info["channels"], info["total"]) == (44100, 2, 66150)
    assert all(set(channel) == {0} for channel in info["samples"])
    view = requests.get(comfy.url + "/view", params={"filename": item["filename"], "subfolder": "audio"}, timeout=5)
    assert view.headers["Content-Type"] == "audio/flac" and view.content == data


def test_flac_encoder_verbatim_round_trip() -> None:
    sys.path.insert(0, str(COMFY_DIR))
    try:
        from array import array

        from standin_server import flac
    finally:
        sys.path.remove(str(COMFY_DIR))
    left = array("h", [(i * 37) % 65536 - 32768 for i in range(5000)])
    right = array("h", [7] * 5000)
    info = decode_flac(flac.encode([left, right], 22050))
    assert info["samples"] == [list(left), list(right)]
    assert info["subframe_kinds"] == {"verbatim", "constant"}


def test_load_image_from_input_and_subfolder(comfy: Standin) -> None:
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (10, 20, 30, 0))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    requests.post(
        comfy.url + "/upload/image",
        files={"image": ("alpha.png", buffer.getvalue(), "image/png")},
        data={"subfolder": "sub", "overwrite": "1"},
        timeout=5,
    ).raise_for_status()
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "loaded"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "sub/alpha.png"}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "alpha"}},
    }
    entry = comfy.wait_history(comfy.post_prompt(prompt).json()["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    with Image.open(comfy.input / "example.png") as src, Image.open(comfy.output / "loaded_00001_.png") as out:
        assert out.size == src.size
        r, g, b = src.convert("RGB").getpixel((3, 5))
        assert out.getpixel((3, 5)) == (255 - r, 255 - g, 255 - b)
    with Image.open(comfy.output / "alpha_00001_.png") as out:
        assert out.mode == "RGB" and out.getpixel((1, 1)) == (10, 20, 30)
    assert "PIL.Image.Image image mode=L size=5x4" in entry["outputs"]["5"]["text"][0]


def load_and_save(image: str, prefix: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def test_load_image_names_are_as_lax_as_comfyui_0_3_64(comfy: Standin) -> None:
    """0.3.64's folder_paths joins an annotated name to its folder and reads whatever that is:
    "../x.png" and absolute names load, "x.png [output]" reads from output. The worker must
    defend against this itself."""
    secret = comfy.root / "outside.png"
    Image.new("RGB", (3, 2), (9, 8, 7)).save(secret)
    Image.new("RGB", (5, 1), (1, 1, 1)).save(comfy.output / "made_earlier.png")
    for image, size in (("../outside.png", (3, 2)), (str(secret), (3, 2)), ("made_earlier.png [output]", (5, 1))):
        prefix = "lax" + uuid.uuid4().hex[:6]
        reply = comfy.post_prompt(load_and_save(image, prefix))
        assert reply.status_code == 200, (image, reply.text)
        entry = comfy.wait_history(reply.json()["prompt_id"])
        assert entry["status"]["status_str"] == "success", (image, entry["status"])
        with Image.open(comfy.output / f"{prefix}_00001_.png") as out:
            assert out.size == size


def test_checkpoint_loader_lists_models_but_cannot_run(own: Any, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "checkpoints" / "sd").mkdir(parents=True)
    (models / "checkpoints" / "sd" / "tiny.safetensors").write_bytes(b"")
    (models / "checkpoints" / "notes.txt").write_text("not a model")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"test:\n  base_path: {models}\n  checkpoints: checkpoints/\n")
    standin = own(args=("--extra-model-paths-config", str(config)))
    standin.wait_ready()
    info = requests.get(standin.url + "/object_info/CheckpointLoaderSimple", timeout=5).json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["sd/tiny.safetensors"]
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd/tiny.safetensors"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    entry = standin.wait_history(standin.post_prompt(prompt).json()["prompt_id"])
    kind, error = entry["status"]["messages"][-1]
    assert kind == "execution_error" and error["exception_type"] == "RuntimeError"
    assert "no model support" in error["exception_message"]


def test_corrupt_image_fails_at_run_time(comfy: Standin) -> None:
    requests.post(
        comfy.url + "/upload/image", files={"image": ("corrupt.png", b"not a png", "image/png")}, timeout=5
    ).raise_for_status()
    client_id = "corrupt-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "corrupt.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}},
    }
    prompt_id = comfy.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
    frames = frames_until_done(ws, prompt_id, skip=("progress_state",))
    assert [f["type"] for f in frames] == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executing",
        "execution_error",
        "status",
        "executing",
    ]
    error = next(f["data"] for f in frames if f["type"] == "execution_error")
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert (
        error["exception_message"].startswith("cannot identify image file") and error["exception_message"][-1] == "\n"
    )
    assert error["current_inputs"] == {"image": ["corrupt.png"]}
    assert sorted(error["current_outputs"]) == ["1", "2"]
    ws.close()


def test_execution_error_from_standin_fail(comfy: Standin) -> None:
    client_id = "fail-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StandinFail", "inputs": {"message": "boom", "image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}},
    }
    prompt_id = comfy.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
    frames = frames_until_done(ws, prompt_id, skip=("progress_state",))
    assert [f["type"] for f in frames] == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "execution_error",
        "status",
        "executing",
    ]
    error = frames[6]["data"]
    assert set(error) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "StandinFail", ["1"])
    assert (error["exception_type"], error["exception_message"]) == ("RuntimeError", "boom\n")
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert error["current_inputs"]["message"] == ["boom"]
    entry = comfy.history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error" and entry["outputs"] == {}
    ws.close()


# -- queue, interrupt, reconnect -----------------------------------------------------------------


def test_interrupt_stops_a_sleeping_node(comfy: Standin) -> None:
    client_id = "int-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    prompt_id = comfy.post_prompt(sleep_prompt(10, 100), client_id=client_id).json()["prompt_id"]
    progress = wait_frame(ws, "progress")
    assert progress["data"] == {"value": 1, "max": 100, "prompt_id": prompt_id, "node": "2"}

    started = time.monotonic()
    stats = requests.get(comfy.url + "/system_stats", timeout=5)  # the server answers while a node runs
    assert stats.status_code == 200 and time.monotonic() - started < 0.5
    queue = requests.get(comfy.url + "/queue", timeout=5).json()
    assert [item[1] for item in queue["queue_running"]] == [prompt_id] and queue["queue_pending"] == []
    assert requests.get(comfy.url + "/prompt", timeout=5).json() == {"exec_info": {"queue_remaining": 1}}

    # An interrupt aimed at another prompt does nothing.
    assert requests.post(comfy.url + "/interrupt", json={"prompt_id": "not-running"}, timeout=5).status_code == 200
    assert wait_frame(ws, "progress")["data"]["value"] >= 2
    started = time.monotonic()
    reply = requests.post(comfy.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=5)
    assert reply.status_code == 200 and reply.content == b""
    frames = frames_until_done(ws, prompt_id, skip=("progress_state", "progress"))
    assert time.monotonic() - started < 1.0
    assert [f["type"] for f in frames] == ["execution_interrupted", "status", "executing"]
    data = frames[0]["data"]
    assert set(data) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert (data["node_id"], data["node_type"], data["executed"]) == ("2", "StandinSleep", ["1"])
    entry = comfy.history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    ws.close()


def test_queue_listing_and_deleting_pending(comfy: Standin) -> None:
    client_id = "q-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    running = comfy.post_prompt(sleep_prompt(10, 100), client_id=client_id).json()["prompt_id"]
    wait_frame(ws, "progress")
    pending = [
        comfy.post_prompt(empty_invert_save("pend", color=c), client_id=client_id).json()["prompt_id"]
        for c in (1, 2, 3)
    ]
    queue = requests.get(comfy.url + "/queue", timeout=5).json()
    (item,) = queue["queue_running"]
    assert len(item) == 5 and item[1] == running and item[3] == {"client_id": client_id} and item[4] == ["3"]
    assert sorted(i[1] for i in queue["queue_pending"]) == sorted(pending)

    reply = requests.post(comfy.url + "/queue", json={"delete": [pending[0]]}, timeout=5)
    assert reply.status_code == 200 and reply.content == b""
    queue = requests.get(comfy.url + "/queue", timeout=5).json()
    assert sorted(i[1] for i in queue["queue_pending"]) == sorted(pending[1:])
    requests.post(comfy.url + "/queue", json={"clear": True}, timeout=5).raise_for_status()
    assert requests.get(comfy.url + "/queue", timeout=5).json()["queue_pending"] == []
    requests.post(comfy.url + "/interrupt", timeout=5).raise_for_status()  # no body: global
    frames_until_done(ws, running)
    assert all(comfy.history(p) == {} for p in pending)

    listing = requests.get(comfy.url + "/history", params={"max_items": 1}, timeout=5).json()
    assert list(listing) == [running]
    requests.post(comfy.url + "/history", json={"delete": [running]}, timeout=5).raise_for_status()
    assert comfy.history(running) == {}
    ws.close()


def test_reconnect_mid_run_gets_the_current_node(comfy: Standin) -> None:
    client_id = "re-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    prompt_id = comfy.post_prompt(sleep_prompt(10, 100), client_id=client_id).json()["prompt_id"]
    wait_frame(ws, "progress")
    ws.close()
    again = comfy.ws(client_id)
    assert json.loads(again.recv())["type"] == "status"
    assert json.loads(again.recv()) == {"type": "executing", "data": {"node": "2"}}
    assert wait_frame(again, "progress")["data"]["prompt_id"] == prompt_id
    requests.post(comfy.url + "/interrupt", timeout=5).raise_for_status()
    frames = frames_until_done(again, prompt_id, skip=("progress_state", "progress"))
    assert frames[0]["type"] == "execution_interrupted"
    again.close()


def test_drop_websockets_node_closes_sockets(comfy: Standin) -> None:
    client_id = "drop-" + uuid.uuid4().hex[:6]
    ws = comfy.ws(client_id)
    ws.recv()
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StandinDropWebSockets", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "StandinSleep", "inputs": {"seconds": 1.0, "steps": 10, "image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "drop"}},
    }
    prompt_id = comfy.post_prompt(prompt, client_id=client_id).json()["prompt_id"]
    # The close frame, or (when the server tears the connection down first) a reset.
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionResetError)):
        while True:
            ws.recv()
    again = comfy.ws(client_id)
    assert json.loads(again.recv())["type"] == "status"
    frames = frames_until_done(again, prompt_id, skip=("progress_state", "progress"))
    assert "execution_success" in [f["type"] for f in frames]
    again.close()


# -- process behaviour and knobs -----------------------------------------------------------------


def comfyuis_own_blank_lines(lines: list[str]) -> bool:
    """Every blank line is one ComfyUI prints too: "Starting server\n", "\nStopped server", the
    ones around the custom-node import times and after a traceback."""
    for index, line in enumerate(lines):
        if line:
            continue
        before = lines[index - 1] if index > 0 else ""
        after = lines[index + 1] if index + 1 < len(lines) else ""
        if not (
            before in ("Starting server", "WARNING WARNING WARNING WARNING WARNING")
            or after in ("Stopped server", "Import times for custom nodes:")
            or re.fullmatch(r" +\d+\.\d seconds.*", before)
            or re.fullmatch(r"\w+(\.\w+)*: .*", before)  # the last line of a traceback
        ):
            return False
    return True


@pytest.mark.parametrize("release", RELEASES)
def test_temp_wiped_at_start_and_on_sigint(own: Any, tmp_path: Path, release: str) -> None:
    root = tmp_path / "s"
    (root / "tmp" / "temp" / "left").mkdir(parents=True)
    (root / "tmp" / "temp" / "left" / "over.png").write_bytes(b"from an earlier run")
    standin = own(root=root, version=release)
    standin.wait_ready()
    assert list(standin.temp.iterdir()) == []
    assert any("To see the GUI go to: http://127.0.0.1:" in line for line in standin.stdout)
    (standin.temp / "preview.png").write_bytes(b"made while running")
    started = time.monotonic()
    standin.proc.send_signal(signal.SIGINT)
    assert standin.wait_exit(5) == 0
    assert time.monotonic() - started < 2
    assert standin.stdout[-2:] == ["", "Stopped server"]  # logging.info("\nStopped server"), as ComfyUI
    assert not standin.temp.exists() or list(standin.temp.iterdir()) == []
    assert comfyuis_own_blank_lines(standin.stdout), standin.stdout


def test_sigterm_kills_at_once(own: Any) -> None:
    standin = own()
    standin.wait_ready()
    standin.proc.send_signal(signal.SIGTERM)
    assert standin.wait_exit(5) == -signal.SIGTERM
    assert "Stopped server" not in standin.stdout


def test_standin_exit_node_ends_the_process(own: Any) -> None:
    standin = own()
    standin.wait_ready()
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StandinExit", "inputs": {"code": 3, "image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    standin.post_prompt(prompt).raise_for_status()
    assert standin.wait_exit(5) == 3


def test_boot_delay_and_crash_on_start(own: Any) -> None:
    delayed = own({"STANDIN_BOOT_DELAY_S": "1.0"})
    crashing = own({"STANDIN_CRASH_ON_START": "ModuleNotFoundError: No module named 'torchsde'"})
    never = own({"STANDIN_NEVER_READY": "1"})
    started = time.monotonic()
    delayed.wait_ready()
    assert time.monotonic() - started >= 0.9
    assert crashing.wait_exit(5) == 1
    assert crashing.stderr[0] == "Traceback (most recent call last):"
    assert crashing.stderr[-1] == "ModuleNotFoundError: No module named 'torchsde'"
    assert never.proc.poll() is None
    with pytest.raises(requests.ConnectionError):
        requests.get(never.url + "/system_stats", timeout=1)


def test_history_500_once_and_exec_delay(own: Any) -> None:
    standin = own({"STANDIN_HISTORY_500_ONCE": "1", "STANDIN_EXEC_DELAY_S": "0.2"})
    standin.wait_ready()
    started = time.monotonic()
    prompt_id = standin.post_prompt(empty_invert_save("d")).json()["prompt_id"]
    first = requests.get(f"{standin.url}/history/{prompt_id}", timeout=5)
    assert first.status_code == 500
    entry = standin.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "success" and time.monotonic() - started >= 0.6


def test_uninterruptible_node_finishes_before_the_interrupt_lands(comfy: Standin) -> None:
    ws = comfy.ws("unint")
    ws.recv()
    color = uuid.uuid4().int & 0xFFFFFF  # not cached from an earlier test
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "StandinUninterruptible", "inputs": {"seconds": 1.5, "image": ["1", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "uninterruptible"}},
    }
    prompt_id = comfy.post_prompt(prompt, client_id="unint").json()["prompt_id"]
    while wait_frame(ws, "executing")["data"]["node"] != "2":
        pass
    requests.post(comfy.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=5).raise_for_status()
    frames = frames_until_done(ws, prompt_id, skip=("progress_state", "status"))
    assert [f["type"] for f in frames] == ["executing", "execution_interrupted", "executing"], frames
    interrupted = frames[1]["data"]
    # The node ran to its end; the interrupt took effect at the next node.
    assert interrupted["node_id"] == "3" and sorted(interrupted["executed"]) == ["1", "2"]
    assert list(comfy.output.glob("uninterruptible_*")) == []
    ws.close()


def test_freeze_node_blocks_the_event_loop_then_carries_on(comfy: Standin) -> None:
    prompt = {
        "1": {"class_type": "StandinFreeze", "inputs": {"seconds": 2.0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "frozen"}},
    }
    prompt_id = comfy.post_prompt(prompt).json()["prompt_id"]
    comfy.wait_line("the event loop is blocked for 2 s (StandinFreeze)")
    with pytest.raises(requests.Timeout):
        requests.get(comfy.url + "/system_stats", timeout=0.5)
    assert comfy.wait_history(prompt_id, timeout_s=15)["status"]["status_str"] == "success"
    assert (comfy.output / "frozen_00001_.png").exists()


def test_prompt_answer_knobs_and_history_500(own: Any) -> None:
    """STANDIN_PROMPT_DELAY_S: queued at once, answered late; STANDIN_PROMPT_GARBAGE: 200 with
    a body that is not JSON; STANDIN_HISTORY_500: every GET /history/{id} fails."""
    knobs = {"STANDIN_PROMPT_DELAY_S": "2", "STANDIN_PROMPT_GARBAGE": "1", "STANDIN_HISTORY_500": "1"}
    standin = own(knobs)
    standin.wait_ready()
    prompt_id = str(uuid.uuid4())
    answers: list[requests.Response] = []
    poster = threading.Thread(
        target=lambda: answers.append(standin.post_prompt(empty_invert_save("late"), prompt_id=prompt_id))
    )
    poster.start()
    deadline = time.monotonic() + 15
    while prompt_id not in requests.get(standin.url + "/history", timeout=5).json():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not answers  # it ran while its POST was still unanswered
    poster.join(timeout=15)
    (answer,) = answers
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)
    for _ in range(2):
        reply = requests.get(f"{standin.url}/history/{prompt_id}", timeout=5)
        assert reply.status_code == 500 and reply.text.startswith("500 Internal Server Error")
    assert requests.get(standin.url + "/history", timeout=5).json()[prompt_id]["status"]["status_str"] == "success"


def test_failed_custom_node_packs_are_reported_as_comfyui_does() -> None:
    packs = "ComfyUI-Foo=ModuleNotFoundError: No module named 'foo';Bar Pack=ImportError: cannot import name 'x'"
    done = run_main("--quick-test-for-ci", env={"STANDIN_FAILED_CUSTOM_NODES": packs})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    nodes = COMFY_DIR / "custom_nodes"
    assert f"Cannot import {nodes / 'ComfyUI-Foo'} module for custom nodes: No module named 'foo'" in lines
    assert f"Cannot import {nodes / 'Bar Pack'} module for custom nodes: cannot import name 'x'" in lines
    foo = lines.index(f"Cannot import {nodes / 'ComfyUI-Foo'} module for custom nodes: No module named 'foo'")
    assert lines[foo - 2 : foo] == ["ModuleNotFoundError: No module named 'foo'", ""]  # format_exc ends with \n
    assert lines[foo - 9] == "Traceback (most recent call last):"
    report = lines.index("Import times for custom nodes:")
    assert lines[report - 1 : report + 5] == [
        "",
        "Import times for custom nodes:",
        f"   0.0 seconds (IMPORT FAILED): {nodes / 'Bar Pack'}",
        f"   0.0 seconds (IMPORT FAILED): {nodes / 'ComfyUI-Foo'}",
        f"   0.0 seconds: {nodes / 'websocket_image_save.py'}",
        "",
    ]
    assert comfyuis_own_blank_lines(lines), lines
    bad = run_main("--quick-test-for-ci", env={"STANDIN_FAILED_CUSTOM_NODES": "no equals sign"})
    assert bad.returncode == 2 and "STANDIN_FAILED_CUSTOM_NODES" in bad.stderr


@pytest.mark.parametrize("release", RELEASES)
def test_command_line_is_the_releases_own(release: str, tmp_path: Path) -> None:
    """Flags as argparse parses them for that release: unknown ones (the other release's too)
    end the process with exit 2; prefixes of a flag are that flag (allow_abbrev)."""
    other = {"0.3.64": "--disable-assets", "0.38.1": "--normalvram"}[release]
    for flag in ("--no-such-flag", other):
        done = run_main(flag, version=release)
        assert done.returncode == 2, (flag, done.stdout)
        assert done.stderr.startswith("usage: main.py ")
        assert done.stderr.splitlines()[-1] == f"main.py: error: unrecognized arguments: {flag}"
        assert done.stdout == ""
    missing = tmp_path / "missing"
    done = run_main("--user-directory", str(missing), version=release)
    assert done.returncode == 2
    error = f"main.py: error: argument --user-directory: The path '{missing}' does not exist."
    assert done.stderr.splitlines()[-1] == error
    quick = ("--quick-test-fo", "--temp-directory", str(tmp_path), "--user-directory", str(tmp_path))
    done = run_main(*quick, "--cpu", "--highvram", version=release)  # one vram mode only
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
    detail = run_main(*quick, "--verbose", "DETAIL", version=release)  # a level 0.38.1 added
    assert detail.returncode == (0 if release == "0.38.1" else 2), detail.stderr
    many = ("--lowvram", "--preview-method", "auto", "--fast", "--disable-xformers", "--force-fp16", "--verbose")
    done = run_main(*quick, *many, version=release)
    assert done.returncode == 0, done.stderr
    assert f"ComfyUI version: {release}" in done.stdout.splitlines()
    versions = subprocess.run(
        [PYTHON, "-c", "from comfyui_version import __version__; print(__version__)"],
        cwd=COMFY_DIR,
        env=standin_env(release),
        capture_output=True,
        text=True,
        check=True,
    )
    assert versions.stdout == f"{release}\n"


def test_version_knob_rejects_unknown_versions() -> None:
    done = run_main(version="0.99.0")
    assert done.returncode == 2 and done.stdout == ""
    assert "STANDIN_COMFYUI_VERSION='0.99.0'" in done.stderr and "0.3.64, 0.38.1" in done.stderr
    default = subprocess.run(
        [PYTHON, "-c", "from comfyui_version import __version__; print(__version__)"],
        cwd=COMFY_DIR,
        env={k: v for k, v in standin_env().items() if k != "STANDIN_COMFYUI_VERSION"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert default.stdout == "0.3.64\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the stand-in as another user")
@pytest.mark.parametrize("release", RELEASES)
def test_runs_from_a_read_only_install_as_an_unprivileged_user(own: Any, release: str) -> None:
    """The code folder read-only to it: it writes only into the folders its flags give."""
    nobody = 65534
    with tempfile.TemporaryDirectory() as scratch:
        install, data = Path(scratch) / "ComfyUI", Path(scratch) / "data"
        shutil.copytree(COMFY_DIR, install, ignore=shutil.ignore_patterns("__pycache__"))
        os.chmod(scratch, 0o755)
        for path in [install, *install.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        shipped = {p.relative_to(install) for p in install.rglob("*")}
        for folder in ("input", "output", "tmp", "user"):
            (data / folder).mkdir(parents=True)
            os.chown(data / folder, nobody, nobody)
        standin = own(root=data, version=release, cwd=install, user=nobody, args=("--dont-print-server",))
        standin.wait_ready()
        prompt_id = standin.post_prompt(empty_invert_save("ro")).json()["prompt_id"]
        assert standin.wait_history(prompt_id)["status"]["status_str"] == "success"
        assert (standin.output / "ro_00001_.png").stat().st_uid == nobody
        standin.proc.send_signal(signal.SIGINT)
        assert standin.wait_exit(10) == 0
        assert {p.relative_to(install) for p in install.rglob("*")} == shipped


def test_hang_after(own: Any) -> None:
    standin = own({"STANDIN_HANG_AFTER_S": "0.6"})
    standin.wait_ready()
    assert requests.get(standin.url + "/queue", timeout=2).status_code == 200
    time.sleep(0.8)
    with pytest.raises(requests.Timeout):
        requests.get(standin.url + "/system_stats", timeout=0.5)
    assert standin.proc.poll() is None


def test_ws_silent_after(own: Any) -> None:
    standin = own({"STANDIN_WS_SILENT_AFTER_S": "0.5"})
    standin.wait_ready()
    ws = standin.ws("silent")
    assert json.loads(ws.recv())["type"] == "status"
    ws.ping(b"early")
    assert ws.recv_data_frame(True)[1].data == b"early"  # a pong while the socket is young
    time.sleep(0.6)
    prompt_id = standin.post_prompt(empty_invert_save("s"), client_id="silent").json()["prompt_id"]
    assert standin.wait_history(prompt_id)["status"]["status_str"] == "success"  # execution continues
    ws.settimeout(0.5)
    ws.ping(b"late")
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data_frame(True)  # neither frames nor pongs
    ws.shutdown()


# -- a small FLAC reader for the checks above --------------------------------------------------------


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def decode_flac(data: bytes) -> dict[str, Any]:
    """Parse a stand-in FLAC file (16-bit, CONSTANT/VERBATIM subframes), checking every CRC and the MD5."""
    assert data[:4] == b"fLaC"
    header = data[4]
    assert header & 0x7F == 0 and int.from_bytes(data[5:8], "big") == 34
    info = data[8:42]
    packed = int.from_bytes(info[10:18], "big")
    sample_rate, channels = packed >> 44, ((packed >> 41) & 0x7) + 1
    bits, total = ((packed >> 36) & 0x1F) + 1, packed & ((1 << 36) - 1)
    assert bits == 16
    pos = 42 if header & 0x80 else None
    assert pos is not None
    samples: list[list[int]] = [[] for _ in range(channels)]
    kinds = set()
    while pos < len(data):
        start = pos
        assert data[pos : pos + 2] == b"\xff\xf8"
        assert data[pos + 2] == 0x70 and data[pos + 3] == ((channels - 1) << 4) | 0x08
        pos += 4
        first = data[pos]
        extra = 0 if first < 0x80 else bin(first).index("0", 2) - 3
        pos += 1 + extra
        size = struct.unpack(">H", data[pos : pos + 2])[0] + 1
        pos += 2
        assert data[pos] == _crc8(data[start:pos])
        pos += 1
        for channel in range(channels):
            kind = data[pos]
            pos += 1
            if kind == 0x00:
                kinds.add("constant")
                samples[channel] += [struct.unpack(">h", data[pos : pos + 2])[0]] * size
                pos += 2
            else:
                assert kind == 0x02
                kinds.add("verbatim")
                samples[channel] += list(struct.unpack(f">{size}h", data[pos : pos + 2 * size]))
                pos += 2 * size
        assert struct.unpack(">H", data[pos : pos + 2])[0] == _crc16(data[start:pos])
        pos += 2
    assert all(len(channel) == total for channel in samples)
    interleaved = b"".join(struct.pack("<" + "h" * channels, *frame) for frame in zip(*samples, strict=True))
    assert hashlib.md5(interleaved).digest() == info[18:34]
    return {
        "sample_rate": sample_rate,
        "channels": channels,
        "total": total,
        "samples": samples,
        "subframe_kinds": kinds,
    }
