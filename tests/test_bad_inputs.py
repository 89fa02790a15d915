"""Every malformed request of tests/bad_inputs/ through ONE real stack, one after another.

Each case must fail cleanly: a clear 4xx from runpod's local API for a body it cannot take, else a FAILED job
whose error names the problem (the case's `expect` substrings), counted under the expected `reason`. Between
cases the worker must keep serving (a good job after every 10 cases, the handler's pid unchanged), nothing may
be uploaded to ComfyUI's input folder for a job the handler refused, and at the end no file may have landed
outside the folders the worker owns. Legitimate but unusual names (café.png) must work.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import random
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.images import b64, many_frame_gif, png_bytes, png_header, square_png
from tests.processes import QuietHandler
from tests.stack import Stack, free_port

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
DOWNLOAD_TIMEOUT_S = 1.0
DOWNLOAD_MAX_BYTES = 5_000_000
GOOD_JOB_EVERY = 10
SLOW_SERVER_HOLD_S = 30.0  # /slow and /trickle would take this long: 30x the download timeout
TRICKLE_BYTES = 300
TRICKLE_INTERVAL_S = SLOW_SERVER_HOLD_S / TRICKLE_BYTES
GOOD_JOB = {
    "workflow": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0x00FF00}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "good"}},
    }
}
# What the corpus's path tricks would leave on disk: under the stack's home any name holding these...
ESCAPE_MARKERS = ("passwd", "abs")
# ...and in the shared /tmp (where other tests create files too) these exact names.
ESCAPE_NAMES = {"passwd", "path.png", "b.png", "..\\..\\abs.png"}
# Downloads refuse loopback; the file server is reached through the seam for private image stores.
ALLOWED_HOST = "localhost"
SECRET_TEXT = b"s3cr3t: what a private service would answer"
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def load_cases() -> list[dict[str, Any]]:
    cases = [case for path in sorted(CORPUS.glob("*.json")) for case in json.loads(path.read_text("utf-8"))]
    ids = [case["id"] for case in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    for case in cases:
        assert ("raw" in case) != ("input" in case), case["id"]
        assert case["expect"] and ("reason" in case) != ("http_status" in case), case["id"]
        assert set(case) <= {"id", "input", "raw", "expect", "forbid", "reason", "http_status"}, case["id"]
    return cases


CASES = load_cases()


# -- a loopback file server whose paths misbehave ------------------------------------------------


class FileServer:
    """/slow never answers in time, /trickle sends 1 byte at a time, and so on (see bad_inputs/README.md).

    For /slow and /trickle it records whether the client hung up before the server was done, which is how
    the test sees that the handler gave up at IMAGE_DOWNLOAD_TIMEOUT_S rather than waiting for the end.
    """

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.hung_up_early: dict[str, bool] = {}
        self.comfy_port = 0  # set once the stack is up: /redirect-comfy points there
        server = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                route = {
                    "/slow": server._slow,
                    "/trickle": server._trickle,
                    "/text": server._text,
                    "/huge-declared": server._huge_declared,
                    "/huge-chunked": server._huge_chunked,
                    "/redirect-file": server._redirect_file,
                    "/redirect-comfy": server._redirect_comfy,
                    "/redirect-metadata": server._redirect_metadata,
                    "/redirect-loop": server._redirect_loop,
                    "/huge-png": server._huge_png,
                    "/eps": server._eps,
                    "/secret-text": server._secret_text,
                    "/ok.png": server._ok,
                }.get(path)
                if route is None:
                    self.answer(404, b"not found", "text/plain")
                else:
                    route(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{ALLOWED_HOST}:{self.port}{path}"

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # -- routes ------------------------------------------------------------------------------

    @staticmethod
    def _client_gone(connection: socket.socket, wait_s: float) -> bool:
        readable, _, _ = select.select([connection], [], [], wait_s)
        if not readable:
            return False
        try:
            return connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _slow(self, handler: BaseHTTPRequestHandler) -> None:
        """Headers only after SLOW_SERVER_HOLD_S; records whether the client left before."""
        deadline = time.monotonic() + SLOW_SERVER_HOLD_S
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self._client_gone(handler.connection, 0.05):
                self.hung_up_early["/slow"] = True
                return
        self.hung_up_early["/slow"] = False
        handler.answer(200, png_bytes(), "image/png")

    def _trickle(self, handler: BaseHTTPRequestHandler) -> None:
        """A declared TRICKLE_BYTES-byte body sent one byte per TRICKLE_INTERVAL_S (each read is quick)."""
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(TRICKLE_BYTES))
        handler.end_headers()
        handler.wfile.flush()
        for _ in range(TRICKLE_BYTES):
            if self.stopping.is_set() or self._client_gone(handler.connection, TRICKLE_INTERVAL_S):
                self.hung_up_early["/trickle"] = True
                return
            try:
                handler.wfile.write(b"\0")
                handler.wfile.flush()
            except OSError:
                self.hung_up_early["/trickle"] = True
                return
        self.hung_up_early["/trickle"] = False

    @staticmethod
    def _text(handler: Any) -> None:
        handler.answer(200, b"<html>this is not an image</html>", "image/png")

    @staticmethod
    def _ok(handler: Any) -> None:
        handler.answer(200, png_bytes(), "image/png")

    @staticmethod
    def _huge_declared(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(DOWNLOAD_MAX_BYTES * 10))
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(png_bytes())
        handler.close_connection = True

    @staticmethod
    def _huge_chunked(handler: Any) -> None:
        """More than IMAGE_DOWNLOAD_MAX_BYTES, chunked, with no Content-Length to refuse it by."""
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = png_bytes()[:8] + random.Random(1).randbytes(64 * 1024 - 8)
        try:
            for _ in range(DOWNLOAD_MAX_BYTES // len(chunk) + 4):
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                chunk = chunk[8:] + chunk[:8]
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        handler.close_connection = True

    @staticmethod
    def _redirect_file(handler: Any) -> None:
        handler.answer(302, b"", "text/plain", Location="file:///etc/passwd")

    def _redirect_comfy(self, handler: Any) -> None:
        """To ComfyUI's /view by its loopback address: the server-side request forgery of issue 12."""
        view = f"http://127.0.0.1:{self.comfy_port}/view?filename=example.png&type=input"
        handler.answer(302, b"", "text/plain", Location=view)

    @staticmethod
    def _redirect_metadata(handler: Any) -> None:
        handler.answer(301, b"", "text/plain", Location="http://169.254.169.254/latest/meta-data/")

    @staticmethod
    def _redirect_loop(handler: Any) -> None:
        handler.answer(307, b"", "text/plain", Location="/redirect-loop?again")

    @staticmethod
    def _huge_png(handler: Any) -> None:
        handler.answer(200, square_png(12000), "image/png")

    @staticmethod
    def _eps(handler: Any) -> None:
        handler.answer(200, EPS, "image/png")

    @staticmethod
    def _secret_text(handler: Any) -> None:
        handler.answer(200, SECRET_TEXT, "image/png")


# -- building a case's request -------------------------------------------------------------------


@dataclass
class RawJSON:
    text: str


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def chain_workflow(length: int) -> dict[str, Any]:
    workflow: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    }
    for index in range(2, length + 2):
        workflow[str(index)] = {"class_type": "ImageInvert", "inputs": {"image": [str(index - 1), 0]}}
    workflow[str(length + 2)] = {
        "class_type": "SaveImage",
        "inputs": {"images": [str(length + 1), 0], "filename_prefix": "chain"},
    }
    return workflow


def wide_workflow(nodes: int, mode: str) -> dict[str, Any]:
    empty = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    if mode == "unknown_last":
        workflow = {str(index): empty for index in range(1, nodes)}
        workflow[str(nodes)] = {"class_type": "NoSuchNodeClass", "inputs": {}}
        return workflow
    assert mode == "all_invalid", mode
    workflow = {}
    for index in range(1, nodes, 2):
        workflow[str(index)] = {**empty, "inputs": {**empty["inputs"], "width": 0}}
        save = {"images": [str(index), 0], "filename_prefix": "wide"}
        workflow[str(index + 1)] = {"class_type": "SaveImage", "inputs": save}
    return workflow


class Builder:
    """Turns a case into the exact bytes POSTed to /runsync, expanding its {"$gen": ...} values."""

    def __init__(self, files: FileServer, closed_port: int, comfy_port: int) -> None:
        self.files = files
        self.closed_port = closed_port
        self.comfy_port = comfy_port

    def body(self, case: dict[str, Any]) -> bytes:
        if "raw" in case:
            return case["raw"].encode("utf-8")
        raws: dict[str, str] = {}

        def expand(value: Any) -> Any:
            if isinstance(value, dict) and "$gen" in value:
                produced = self.generate(value)
                if isinstance(produced, RawJSON):
                    key = f"@@raw-json-{len(raws)}@@"
                    raws[key] = produced.text
                    return key
                return produced
            if isinstance(value, dict):
                return {key: expand(item) for key, item in value.items()}
            if isinstance(value, list):
                return [expand(item) for item in value]
            return value

        text = json.dumps({"input": expand(case["input"])})
        for key, raw in raws.items():
            text = text.replace(json.dumps(key), raw)
        return text.encode("utf-8")

    def generate(self, spec: dict[str, Any]) -> Any:
        kind = spec["$gen"]
        if kind == "png":
            return b64(png_bytes(spec.get("side", 8)))
        if kind == "base64_of":
            data = spec["text"].encode("utf-8") if "text" in spec else png_bytes(64)[: spec["head_bytes"]]
            return b64(data)
        if kind == "padded_png":
            signature = png_bytes()[:16]
            return b64(signature + bytes(spec["bytes"] - len(signature)))
        if kind == "url":
            return self.files.url(spec["path"])
        if kind == "closed_url":
            return f"http://{ALLOWED_HOST}:{self.closed_port}/x.png"
        if kind == "comfy_url":
            return f"http://{spec['host']}:{self.comfy_port}{spec['path']}"
        if kind == "big_png":
            return b64(square_png(spec["side"]))
        if kind == "png_header":
            return b64(png_header(spec["width"], spec["height"]))
        if kind == "gif":
            return b64(many_frame_gif(spec["side"], spec["frames"]))
        if kind == "encoded":
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, spec["format"])
            return b64(buffer.getvalue())
        if kind == "cut_base64":
            return b64(png_bytes(spec["side"]))[: spec["chars"]]
        if kind == "chain":
            return chain_workflow(spec["length"])
        if kind == "wide":
            return wide_workflow(spec["nodes"], spec["mode"])
        if kind == "nested":
            return RawJSON(nested_lists(spec["depth"]))
        if kind == "nested_string":
            return nested_lists(spec["depth"])
        raise AssertionError(f"unknown generator {kind!r}")


# -- the shared stack and what is watched across cases -------------------------------------------


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Every file and folder under `root` (relative path -> size, -1 for folders)."""
    found: dict[str, int] = {}
    for directory, folders, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        folders[:] = [f for f in folders if os.path.normpath(os.path.join(relative, f)) not in skip]
        for name in folders:
            found[os.path.normpath(os.path.join(relative, name))] = -1
        for name in files:
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                found[os.path.normpath(os.path.join(relative, name))] = os.lstat(path).st_size
    return found


def listing(folder: Path) -> dict[str, bytes]:
    """Every file (relative path -> bytes) and subfolder (-> b"/") under `folder`."""
    found: dict[str, bytes] = {}
    for path in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # removed by clean-up while listed
            found[str(path.relative_to(folder))] = b"/" if path.is_dir() else path.read_bytes()
    return found


def jobs_total(stack: Stack) -> dict[tuple[str, str], float]:
    text = requests.get(f"{stack.sidecar_url}/metrics", timeout=10).text
    counts = {}
    for outcome, reason, value in re.findall(
        r'^comfy_worker_jobs_total\{outcome="(\w+)",reason="(\w+)"\} (\S+)$', text, re.M
    ):
        counts[(outcome, reason)] = float(value)
    return counts


def names(message: str, expected: str | list[str]) -> bool:
    """Whether `message` holds `expected` (any one of them, for a list), ignoring case."""
    options = [expected] if isinstance(expected, str) else expected
    return any(option.lower() in message.lower() for option in options)


def post(stack: Stack, body: bytes, timeout_s: float = 180) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{stack.api_url}/runsync", data=body, headers=headers, timeout=timeout_s)


def run_good_job(stack: Stack) -> None:
    result = stack.runsync(GOOD_JOB)
    assert result["status"] == "COMPLETED", result
    [item] = result["output"]["images"]
    image = Image.open(io.BytesIO(base64.b64decode(item["data"])))
    assert image.convert("RGB").getpixel((0, 0)) == (0, 255, 0)


@dataclass
class World:
    stack: Stack
    files: FileServer
    builder: Builder
    private_tmp: Path
    handler_pid: int
    home_before: dict[str, int]
    tmp_before: set[str]
    input_before: dict[str, bytes]
    output_before: dict[str, bytes]
    cases_run: int = 0
    good_jobs: int = 0

    @property
    def input_dir(self) -> Path:
        return self.stack.layout.input

    @property
    def output_dir(self) -> Path:
        return self.stack.layout.output

    def before_case(self) -> None:
        """The previous case's clean-up done; after every GOOD_JOB_EVERY cases, a good job must succeed."""
        self.wait_folders_back()
        self.files.hung_up_early = {}
        if self.cases_run and self.cases_run % GOOD_JOB_EVERY == 0:
            run_good_job(self.stack)
            self.good_jobs += 1
            self.wait_folders_back()
            assert self.stack.pid_of("handler") == self.handler_pid, "the handler restarted"
        self.cases_run += 1

    def wait_folders_back(self) -> None:
        """Until clean-up has put input/ and output/ back as they were (it runs after the response)."""
        self.stack.wait_for(
            lambda: listing(self.input_dir) == self.input_before and listing(self.output_dir) == self.output_before,
            30,
            what="ComfyUI's input/ and output/ to be as before the job",
        )


def escape_candidates(root: Path) -> list[str]:
    """Paths under `root` whose name looks like one of the corpus's path tricks."""
    hits = []
    for directory, _folders, files in os.walk(root):
        for name in files:
            if any(marker in name for marker in ESCAPE_MARKERS):
                hits.append(os.path.join(directory, name))
    return hits


def tmp_names() -> set[str]:
    return {os.path.join(d, n) for d, _f, files in os.walk("/tmp") for n in files}


HOME_VOLATILE = (".run/logs", ".run/metrics", "standin/ComfyUI/input", "standin/ComfyUI/output")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bad-inputs")
    private_tmp = root / "tmp"
    private_tmp.mkdir()
    files = FileServer()
    stack = Stack(
        root,
        {
            "IMAGE_DOWNLOAD_TIMEOUT_S": str(DOWNLOAD_TIMEOUT_S),
            "IMAGE_DOWNLOAD_MAX_BYTES": str(DOWNLOAD_MAX_BYTES),
            "IMAGE_DOWNLOAD_ALLOWED_HOSTS": ALLOWED_HOST,
            "TMPDIR": str(private_tmp),
        },
    )
    files.comfy_port = stack.comfy_port
    try:
        stack.start()
        stack.wait_accepting_jobs()
        run_good_job(stack)  # warm: first-job set-up is not a case's
        input_dir, output_dir = stack.layout.input, stack.layout.output
        stack.wait_for(
            lambda: not any(name.startswith("good") for name in listing(output_dir)),
            30,
            what="the warm-up job's output to be removed",
        )
        world = World(
            stack=stack,
            files=files,
            builder=Builder(files, free_port(), stack.comfy_port),
            private_tmp=private_tmp,
            handler_pid=stack.pid_of("handler"),
            home_before=tree(stack.home, HOME_VOLATILE),
            tmp_before=tmp_names(),
            input_before=listing(input_dir),
            output_before=listing(output_dir),
        )
        yield world
    finally:
        stack.kill_everything()
        files.close()


# -- the corpus ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_fails_cleanly(world: World, case: dict[str, Any]) -> None:
    stack = world.stack
    world.before_case()
    body = world.builder.body(case)
    counts_before = jobs_total(stack)
    input_mtime = world.input_dir.stat().st_mtime_ns
    response = post(stack, body)
    del body

    if "http_status" in case:
        # runpod's local API refuses the body itself: a client error, never a 5xx, and no job ran.
        assert response.status_code in case["http_status"], (response.status_code, response.text[:2000])
        message = response.text
    else:
        assert response.status_code == 200, (response.status_code, response.text[:2000])
        result = response.json()
        assert result.get("status") == "FAILED", str(result)[:2000]
        message = result.get("error")
        assert isinstance(message, str) and message, result
    missing = [text for text in case["expect"] if not names(message, text)]
    assert not missing, f"the error does not name {missing}: {message[:2000]}"
    leaked = [text for text in case.get("forbid", []) if text in message]
    assert not leaked, f"the error repeats {leaked}: {message[:2000]}"

    counts_after = jobs_total(stack)
    changed = {key: counts_after.get(key, 0) - counts_before.get(key, 0) for key in counts_after}
    changed = {key: delta for key, delta in changed.items() if delta}
    if "reason" in case:
        assert changed == {("failed", case["reason"]): 1}, (changed, message[:500])
    else:
        assert changed == {}, changed
    if case.get("reason") != "validation":
        # Refused before anything reached ComfyUI: not even a file created and removed in input/.
        assert world.input_dir.stat().st_mtime_ns == input_mtime, "a file was uploaded for a refused job"
    served, world.files.hung_up_early = world.files.hung_up_early, {}
    for path, hung_up in served.items():
        assert hung_up, f"the handler waited for all of {path} instead of giving up at IMAGE_DOWNLOAD_TIMEOUT_S"
    world.wait_folders_back()
    assert stack.pid_of("handler") == world.handler_pid, "the handler restarted"


# -- names that look odd but are legitimate must work ----------------------------------------------

LEGIT_NAMES = [
    "café.png",
    "日本語 画像.png",
    "\uff21\uff22-fullwidth.png",
    "e\u0301-combining.png",  # NFD: must not be normalised on the way
    "..%2Fx.png",  # a literal name: nothing may URL-decode it into a path
    "a'b;c(1).png",
]


@pytest.mark.parametrize("name", LEGIT_NAMES)
def test_a_legitimate_unusual_name_works_and_lands_in_input(world: World, name: str) -> None:
    """The file lands in input/ (and only there) under the job's name for it, `<job key>-<name>` with the name
    exactly as sent; the job reads it, clean-up removes it."""
    stack = world.stack
    data = png_bytes(8, (10, 220, 40))
    job = {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "StandinSleep", "inputs": {"seconds": 1.0, "steps": 10, "image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "legit"}},
        },
        "images": [{"name": name, "image": b64(data)}],
    }
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=stack.runsync(job)), daemon=True)
    thread.start()
    try:
        stack.wait_for(
            lambda: set(listing(world.input_dir)) - set(world.input_before) or not thread.is_alive(),
            30,
            0.01,
            what="the upload to appear in input/",
        )
        new = {key: value for key, value in listing(world.input_dir).items() if key not in world.input_before}
    finally:
        thread.join(60)
    result = outcome.get("result")
    assert result is not None and result["status"] == "COMPLETED", result
    [(stored, content)] = new.items()
    assert re.fullmatch(r"j[0-9a-f]{12}-" + re.escape(name), stored), f"expected <key>-{name!r}, found {list(new)}"
    assert content == data
    [item] = result["output"]["images"]
    pixel = Image.open(io.BytesIO(base64.b64decode(item["data"]))).convert("RGB").getpixel((0, 0))
    assert pixel == (10, 220, 40)
    world.wait_folders_back()


# -- after every case ------------------------------------------------------------------------------


def test_worker_still_serves_and_nothing_escaped(world: World) -> None:
    stack = world.stack
    run_good_job(stack)
    world.wait_folders_back()
    assert stack.pid_of("handler") == world.handler_pid, "the handler restarted"
    assert world.good_jobs == max(0, world.cases_run - 1) // GOOD_JOB_EVERY, "a scheduled good job was skipped"

    # No file appeared (or vanished) anywhere in the stack's tree but where the worker writes by design.
    home_after = tree(stack.home, HOME_VOLATILE)
    appeared = sorted(set(home_after) - set(world.home_before) - {p for p in home_after if "__pycache__" in p})
    vanished = sorted(set(world.home_before) - set(home_after))
    assert appeared == [] and vanished == [], (appeared, vanished)
    assert escape_candidates(stack.home) == []
    assert not Path("/abs").exists()
    # The stack's own temp folder holds no left-over scratch files, and /tmp got nothing from the corpus.
    assert list(world.private_tmp.iterdir()) == []
    new_in_tmp = tmp_names() - world.tmp_before
    assert [path for path in new_in_tmp if os.path.basename(path) in ESCAPE_NAMES] == []
    # Nothing the worker logged echoed a request's megabytes back (the 50 MiB image, the 100,000 nodes).
    longest = max(stack.lines, key=len)
    assert len(longest) < 1_000_000, f"a {len(longest)}-character log line: {longest[:300]}"
