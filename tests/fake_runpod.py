"""A fake RunPod job server on loopback: what the runpod SDK (1.12) asks of RunPod, recorded.

The worker runs the real SDK loop against it (RUNPOD_WEBHOOK_GET_JOB set, as on RunPod); `env()`
gives the variables. The URLs and what the SDK sends (rp_job.py, rp_http.py, rp_ping.py):

    GET  /job-take/<worker>?gpu=fake&job_in_progress=0|1             one job {"id", "input"}, or 204
    GET  /job-take-batch/<worker>?gpu=fake&batch_size=N&job_in_progress=0|1   a list of up to N jobs, or 204
    POST /job-done/<worker>/<job id>?gpu=fake&isStream=false         the result ({"output"} or {"error"}),
         or a progress update ({"status": "IN_PROGRESS", "output": ...}) on the same URL
    GET  /job-stop/<worker>?gpu=fake                                 {"jobsToStop": [...]}, or 204
    GET  /ping/<worker>?job_id=...&runpod_version=...                200 (only sent with RUNPOD_AI_API_KEY set)

Like RunPod's, the job-take and stop requests are long polls: with nothing to hand out they are
held (up to `take_hold_s` / `stop_hold_s`) and answered the moment a job is added or a stop is
asked for, then 204. Every request waits `rtt_s` in all (half before the server acts on it,
half before the answer goes back), standing for the round trip to RunPod. Every request is
recorded with the monotonic time at which the server acted on it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GPU_QUERY = "gpu=fake"  # RunPod's URLs carry a query string; the SDK appends "&..." to them


@dataclass(frozen=True)
class Request:
    """One request the worker made, as the server saw it."""

    kind: str  # take, take-batch, result, progress, stop, ping, other
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    body: Any  # the parsed JSON body of a POST, else None
    at: float  # time.monotonic() when the server acted on it
    job_ids: tuple[str, ...] = ()  # the jobs handed out (take), or the job posted for (result, progress)


class FakeRunPod:
    """RunPod's job server for one worker: a backlog of jobs to hand out, and a record of everything."""

    def __init__(
        self,
        jobs: Iterable[dict[str, Any]] = (),
        rtt_s: float = 0.05,
        take_hold_s: float = 5.0,
        stop_hold_s: float = 5.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.rtt_s = rtt_s
        self.take_hold_s = take_hold_s
        self.stop_hold_s = stop_hold_s
        self.requests: list[Request] = []
        self.added_at: dict[str, float] = {}  # job id -> when it joined the backlog
        self._backlog: deque[dict[str, Any]] = deque()
        self._to_stop: list[str] = []
        self._closed = False
        self._held: dict[str, int] = {"take": 0, "stop": 0}  # polls being held now, by channel
        self._changed = threading.Condition()
        self.add(*jobs)
        self.server = ThreadingHTTPServer((host, 0), _handler_class(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fake-runpod", daemon=True).start()
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"

    # -- what the test or benchmark does ---------------------------------------------

    def env(self, pod_id: str = "pod-1", host_name: str | None = None) -> dict[str, str]:
        """The variables RunPod sets for a worker, pointing at this server (as `host_name` when given)."""
        url = f"http://{host_name}:{self.port}" if host_name else self.url
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{url}/job-take/$ID?{GPU_QUERY}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{url}/job-done/$RUNPOD_POD_ID/$ID?{GPU_QUERY}",
            "RUNPOD_WEBHOOK_PING": f"{url}/ping/$RUNPOD_POD_ID",
            "RUNPOD_POD_ID": pod_id,
        }

    def add(self, *jobs: dict[str, Any]) -> None:
        """Put jobs in the backlog, in order; a held job-take gets the first at once."""
        with self._changed:
            now = time.monotonic()
            for job in jobs:
                self.added_at[job["id"]] = now
                self._backlog.append(job)
            self._changed.notify_all()

    def stop_job(self, job_id: str) -> None:
        """Ask the worker to stop a job (cancellation or timeout): the next stop poll answers it."""
        with self._changed:
            self._to_stop.append(job_id)
            self._changed.notify_all()

    def backlog(self) -> int:
        with self._changed:
            return len(self._backlog)

    def of_kind(self, *kinds: str) -> list[Request]:
        with self._changed:
            return [request for request in self.requests if request.kind in kinds]

    def results(self) -> list[Request]:
        """The job results received, in order of arrival."""
        return self.of_kind("result")

    def result(self, job_id: str) -> Request | None:
        return next((request for request in self.results() if job_id in request.job_ids), None)

    def progress(self, job_id: str | None = None) -> list[Request]:
        return [request for request in self.of_kind("progress") if job_id is None or job_id in request.job_ids]

    def handed_out_at(self, job_id: str) -> float | None:
        """When the job was handed out to the worker (monotonic), or None."""
        take = next((request for request in self.of_kind("take", "take-batch") if job_id in request.job_ids), None)
        return take.at if take else None

    def wait_results(self, count: int, timeout_s: float) -> list[Request]:
        """Block until `count` results have arrived (all results so far); TimeoutError after `timeout_s`."""

        def results() -> list[Request] | None:
            arrived = [request for request in self.requests if request.kind == "result"]
            return arrived if len(arrived) >= count else None

        return self._wait(results, timeout_s, f"{count} job results")

    def wait_for(self, kind: str, timeout_s: float) -> Request:
        """Block until a request of this kind has arrived (the first one); TimeoutError after `timeout_s`."""
        return self._wait(lambda: next((r for r in self.requests if r.kind == kind), None), timeout_s, f"a {kind}")

    def wait_held(self, channel: str, timeout_s: float) -> None:
        """Block until a poll of this channel ("take" or "stop") is being held: the worker is waiting on it."""
        self._wait(lambda: self._held[channel], timeout_s, f"a held {channel} poll")

    def _wait(self, found: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """What `found` returns once it is truthy (asked whenever a request arrives); TimeoutError after `timeout_s`."""
        with self._changed:
            result = self._changed.wait_for(found, timeout_s)
        if not result:
            raise TimeoutError(f"no {what} within {timeout_s:g} s")
        return result

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- what the server does ----------------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def _take(self, count: int) -> list[dict[str, Any]]:
        """Up to `count` jobs from the backlog, waiting up to take_hold_s for one."""
        with self._changed:
            self._hold("take", self.take_hold_s, lambda: bool(self._backlog))
            return [self._backlog.popleft() for _ in range(min(count, len(self._backlog)))]

    def _stops(self) -> list[str]:
        with self._changed:
            self._hold("stop", self.stop_hold_s, lambda: bool(self._to_stop))
            stops, self._to_stop = self._to_stop, []
            return stops

    def _hold(self, channel: str, hold_s: float, ready: Callable[[], bool]) -> None:
        """With the lock held: wait up to `hold_s` until `ready()` (a long poll), counted in _held meanwhile."""
        deadline = time.monotonic() + hold_s
        if ready() or self._closed:
            return
        self._held[channel] += 1
        self._changed.notify_all()
        try:
            while not ready() and not self._closed and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
        finally:
            self._held[channel] -= 1


def _handler_class(fake: FakeRunPod) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's aiohttp session expects of RunPod

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            time.sleep(fake.rtt_s / 2)
            head = parts.path.split("/")[1]
            if head in ("job-take", "job-take-batch"):
                self._take(head, parts.path, query)
            elif head == "job-stop":
                stops = fake._stops()
                fake._record(Request("stop", "GET", parts.path, query, None, time.monotonic(), tuple(stops)))
                self._reply(200 if stops else 204, {"jobsToStop": stops} if stops else None)
            else:
                kind = "ping" if head == "ping" else "other"
                fake._record(Request(kind, "GET", parts.path, query, None, time.monotonic()))
                self._reply(200 if kind == "ping" else 404)

        def _take(self, head: str, path: str, query: dict[str, list[str]]) -> None:
            batch = head == "job-take-batch"
            count = int(query.get("batch_size", ["1"])[0]) if batch else 1
            jobs = fake._take(count)
            ids = tuple(job["id"] for job in jobs)
            fake._record(Request("take-batch" if batch else "take", "GET", path, query, None, time.monotonic(), ids))
            if not jobs:
                self._reply(204)
            else:
                self._reply(200, jobs if batch else jobs[0])

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(fake.rtt_s / 2)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            segments = parts.path.split("/")
            if len(segments) == 4 and segments[1] == "job-done":
                progress = isinstance(body, dict) and body.get("status") == "IN_PROGRESS"
                kind, ids = ("progress" if progress else "result"), (segments[3],)
            else:
                kind, ids = "other", ()
            fake._record(Request(kind, "POST", parts.path, parse_qs(parts.query), body, time.monotonic(), ids))
            self._reply(200 if kind != "other" else 404)

        def _reply(self, status: int, payload: Any = None) -> None:
            body = b"" if payload is None else json.dumps(payload).encode()
            time.sleep(fake.rtt_s / 2)
            self.send_response(status)
            if body:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler
