"""Sends the sample job of `make run` through the local API and saves what comes back.

`demo_job.py STACK_PID FAILURE_FILE`: waits until the handler of *this* stack (the one whose
entrypoint is STACK_PID) serves the local API, posts examples/requests/empty-image.json to
POST /runsync, writes each returned image under .run/demo-output/ and prints the paths.
Another stack of this checkout (same control socket) or of another one (same port) is never
sent the job. On failure it exits 1 and leaves one line why in FAILURE_FILE.
scripts/run-local stops it with SIGTERM when the stack ends first: it then exits quietly.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
import xmlrpc.client
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker_common import contract  # noqa: E402
from worker_common.supervisor_rpc import supervisor_proxy  # noqa: E402

REQUEST = ROOT / "examples" / "requests" / "empty-image.json"
OUTPUT_DIR = ROOT / ".run" / "demo-output"
SOCKET = ROOT / ".run" / contract.SUPERVISOR_SOCKET_FILE
PORT = int(os.environ.get("LOCAL_API_PORT", contract.DEFAULT_LOCAL_API_PORT))
API = f"http://127.0.0.1:{PORT}"


class DemoFailed(Exception):
    """Why the demo job did not complete, in one line."""


def our_handler_pid(stack_pid: int) -> int | None:
    """The handler's pid if the supervisord on this checkout's socket is the child of `stack_pid`."""
    try:
        rpc = supervisor_proxy(SOCKET, 2.0).supervisor
        if psutil.Process(rpc.getPID()).ppid() != stack_pid:
            return None  # another stack of this checkout: its entrypoint refuses to start this one
        return rpc.getProcessInfo(contract.PROGRAM_HANDLER)["pid"] or None
    except (OSError, psutil.Error, xmlrpc.client.Error):  # the socket is not up yet, or answers a fault
        return None


def serves_the_api(pid: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections()
        return any(c.laddr.port == PORT and c.status == psutil.CONN_LISTEN for c in connections)
    except psutil.Error:
        return False


def wait_for_our_api(stack_pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = our_handler_pid(stack_pid)
        if pid and serves_the_api(pid):
            return
        time.sleep(0.2)
    raise DemoFailed(f"the handler did not serve {API} within {timeout_s:.0f} s (is LOCAL_API_PORT={PORT} free?)")


def save_outputs(output: dict) -> list[Path]:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    saved = []
    for item in output.get("images", []):
        if item["type"] == "base64":
            path = OUTPUT_DIR / Path(item["filename"]).name
            path.write_bytes(base64.b64decode(item["data"]))
            saved.append(path)
        else:
            print(f"[demo] {item['filename']} was uploaded: {item['data']}", flush=True)
    return saved


def run(stack_pid: int) -> None:
    wait_for_our_api(stack_pid, float(os.environ.get("COMFY_READY_TIMEOUT_S", contract.DEFAULT_READY_TIMEOUT_S)) + 30)
    print(f"[demo] sending {REQUEST.relative_to(ROOT)} to {API}/runsync", flush=True)
    started = time.monotonic()
    try:
        result = requests.post(API + "/runsync", json=json.loads(REQUEST.read_text()), timeout=600).json()
    except (requests.RequestException, ValueError) as error:
        raise DemoFailed(f"{API}/runsync did not answer: {error}") from None
    if result.get("status") != "COMPLETED":
        raise DemoFailed(f"job {result.get('id')} {result.get('status')}: {result.get('error')}")
    for path in save_outputs(result["output"]):
        print(f"[demo] job done in {time.monotonic() - started:.2f} s; output image: {path}", flush=True)


def main() -> None:
    # Stopped because the stack ended or Ctrl-C: nothing to add to what the stack says.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    stack_pid, failure_file = int(sys.argv[1]), Path(sys.argv[2])
    try:
        run(stack_pid)
    except DemoFailed as failure:
        print(f"[demo] {failure}", flush=True)
        failure_file.write_text(f"{failure}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
