"""Sends the sample job of `make run` through the local API and saves what comes back.

Waits until the handler accepts jobs, posts examples/requests/empty-image.json to
POST /runsync, writes each returned image under .run/demo-output/ and prints the paths.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
REQUEST = ROOT / "examples" / "requests" / "empty-image.json"
OUTPUT_DIR = ROOT / ".run" / "demo-output"
API = f"http://127.0.0.1:{os.environ.get('LOCAL_API_PORT', '8000')}"


def wait_for_api(timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(API + "/", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    sys.exit(f"[demo] the handler did not accept jobs within {timeout_s:.0f} s; see the log lines above")


def save_outputs(output: dict) -> list[Path]:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    saved = []
    for item in output.get("images", []):
        if item["type"] == "base64":
            path = OUTPUT_DIR / Path(item["filename"]).name
            path.write_bytes(base64.b64decode(item["data"]))
            saved.append(path)
        else:
            print(f"[demo] {item['filename']} was uploaded: {item['data']}")
    return saved


def main() -> None:
    wait_for_api(float(os.environ.get("COMFY_READY_TIMEOUT_S", "300")) + 10)
    print(f"[demo] sending {REQUEST.relative_to(ROOT)} to {API}/runsync", flush=True)
    body = json.loads(REQUEST.read_text())
    started = time.monotonic()
    result = requests.post(API + "/runsync", json=body, timeout=600).json()
    if result.get("status") != "COMPLETED":
        sys.exit(f"[demo] job {result.get('id')} {result.get('status')}: {result.get('error')}")
    for path in save_outputs(result["output"]):
        print(f"[demo] job done in {time.monotonic() - started:.2f} s; output image: {path}", flush=True)


if __name__ == "__main__":
    main()
