"""Progress of a running prompt (node k of n, step i of m): to RunPod at most twice a second, to the log every few.

Reports reach RunPod through the runpod SDK's own progress post (runpod_sdk.post_progress,
the body of `runpod.serverless.progress_update` without its thread per call), from one sender
thread per job, in order. The job closes its sender before returning its result: a report
still waiting then is dropped, and one being posted gets a moment to finish, so no report of a
job ever arrives after the job's result. The first report goes out no sooner than one interval
after queueing: a job that finishes in a few milliseconds sends none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .runpod_sdk import post_progress

INTERVAL_S = 0.5
LOG_INTERVAL_S = 5.0
CLOSE_WAIT_S = 10.0  # how long a closing job waits for a report being posted (it must land first)

Sender = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)


class Progress:
    def __init__(
        self,
        workflow: dict[str, Any],
        send: Sender | None,
        clock: Callable[[], float] = time.monotonic,
        job_id: str = "?",
    ) -> None:
        self._classes = {node_id: node.get("class_type", "?") for node_id, node in workflow.items()}
        self._send = send
        self._clock = clock
        self._job_id = job_id
        self._seen: set[str] = set()
        self._node_id: str | None = None
        self._step: tuple[int, int] | None = None
        self._last_sent = self._last_logged = clock()
        self._pending = False

    def cached(self, node_ids: list[str]) -> None:
        self._seen.update(str(node_id) for node_id in node_ids)
        self._changed()

    def node(self, node_id: str) -> None:
        node_id = str(node_id)
        self._seen.add(node_id)
        self._node_id = node_id
        self._step = None
        self._changed()

    def step(self, value: Any, maximum: Any, node_id: Any = None) -> None:
        if node_id is not None and str(node_id) != self._node_id:
            self.node(str(node_id))
        try:
            self._step = (int(value), int(maximum))
        except (TypeError, ValueError):
            return
        self._changed()

    def class_of(self, node_id: str) -> str:
        return self._classes.get(node_id, "?")

    def flush(self) -> None:
        """Report the latest state if it changed and the interval has passed."""
        if not self._pending:
            return
        now = self._clock()
        if now - self._last_logged >= LOG_INTERVAL_S:
            self._last_logged = now
            log.info("job %s: %s", self._job_id, self.payload()["message"])
        if self._send is None or now - self._last_sent < INTERVAL_S:
            return
        self._last_sent = now
        self._pending = False
        self._send(self.payload())

    def payload(self) -> dict[str, Any]:
        total = len(self._classes)
        done = min(len(self._seen), total)
        payload: dict[str, Any] = {"node": done, "nodes": total}
        message = f"node {done} of {total}"
        if self._node_id is not None:
            class_type = self.class_of(self._node_id)
            payload.update(node_id=self._node_id, class_type=class_type)
            message += f" ({class_type})"
        if self._step is not None:
            payload.update(step=self._step[0], steps=self._step[1])
            message += f", step {self._step[0]} of {self._step[1]}"
        payload["message"] = message
        return payload

    def _changed(self) -> None:
        self._pending = True
        self.flush()


class RunPodProgress:
    """One job's progress reports to RunPod, posted in order by one thread; closed before the result."""

    def __init__(self, job: dict[str, Any]) -> None:
        self._job = job
        self._latest: dict[str, Any] | None = None
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"progress-{job.get('id', '?')}", daemon=True)
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> None:
        """Queue a report; a newer one replaces one not yet posted (only the latest state matters)."""
        with self._wake:
            if not self._closed:
                self._latest = payload
                self._wake.notify()

    def close(self) -> None:
        """Drop what was not posted yet and wait (briefly) for a post in flight."""
        with self._wake:
            self._closed = True
            self._latest = None
            self._wake.notify()
        self._thread.join(CLOSE_WAIT_S)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._latest is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                payload, self._latest = self._latest, None
            try:
                post_progress(self._job, payload)
            except Exception as error:  # a lost report must not end the job's reporting
                log.warning("job %s: a progress report to RunPod failed: %s", self._job.get("id", "?"), error)
