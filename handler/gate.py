"""Readiness: ask the sidecar whether ComfyUI can take work, long-polling `/readyz?wait=S`.

The sidecar owns the truth about ComfyUI (supervisor state, pid, probes); the handler never
polls ComfyUI itself to find out. With `wait`, the sidecar answers the moment ComfyUI
becomes ready, so readiness reaches the handler without a polling delay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests

# The longest single long-poll; the loop re-asks until its own deadline.
MAX_POLL_S = 30.0
# Pause before asking again when the sidecar itself does not answer (not started yet).
RETRY_PAUSE_S = 0.05
# Time the sidecar gets on top of `wait` to answer.
ANSWER_SLACK_S = 5.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    state: str
    reason: str
    pid: int | None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Readiness:
        comfyui = body.get("comfyui") or {}
        return cls(
            ready=bool(body.get("ready")),
            state=str(body.get("state", "unknown")),
            reason=str(body.get("reason") or ""),
            pid=comfyui.get("pid"),
        )

    @property
    def failed(self) -> bool:
        """The sidecar gave up on ComfyUI: waiting cannot help."""
        return self.state == "failed"

    def describe(self) -> str:
        return self.reason or f"ComfyUI is {self.state}"


class Gate:
    """The sidecar's readiness, asked over one keep-alive connection."""

    def __init__(self, sidecar_url: str) -> None:
        self.url = f"{sidecar_url}/readyz"
        self._session = requests.Session()

    def status(self, wait_s: float = 0.0) -> Readiness:
        """One answer from the sidecar; `wait_s` > 0 holds it until ready or that many seconds."""
        params = {"wait": f"{wait_s:.3f}"} if wait_s > 0 else None
        try:
            response = self._session.get(self.url, params=params, timeout=wait_s + ANSWER_SLACK_S)
            return Readiness.from_body(response.json())
        except (requests.RequestException, ValueError) as error:
            return Readiness(False, "unreachable", f"the sidecar at {self.url} did not answer: {error}", None)

    def wait_ready(self, until: float) -> Readiness:
        """Long-poll until ComfyUI is ready or the Unix time `until`; returns the last answer."""
        while True:
            asked_at = time.time()
            wait_s = min(max(until - asked_at, 0.0), MAX_POLL_S)
            status = self.status(wait_s)
            if status.ready or status.failed or time.time() >= until:
                return status
            if time.time() - asked_at < wait_s:
                # Answered early without being ready (sidecar not up yet): do not spin.
                time.sleep(min(RETRY_PAUSE_S, max(until - time.time(), 0.0)))

    def close(self) -> None:
        self._session.close()
