"""S3 faults on the real stack: the endpoint down, stalled, or refusing (403); and presigned URLs
from a custom endpoint (moto on loopback). A failed upload fails the job naming each file and the
S3 problem, the error says the files go with the job, and the credentials appear nowhere."""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests
from PIL import Image

from tests.handler_harness import MotoServer, free_port, s3_env
from tests.stack import Stack
from tests.test_faults import log_files, readyz, started
from tests.workflows import failed, image_chain

BUCKET = "fault-outputs"
ACCESS_KEY = "AKIAFAULTMATRIX00001"
SECRET_KEY = "faultMatrixSecret/0123456789abcdefghijklmn"


def faults_s3_env(endpoint: str) -> dict[str, str]:
    """This matrix's S3 settings: its own keys (looked for in every log) and no retries."""
    return s3_env(endpoint, BUCKET, ACCESS_KEY, SECRET_KEY, S3_MAX_ATTEMPTS="1")


class FakeS3:
    """A loopback HTTP server standing for a broken S3 endpoint.

    It answers every request with `answer` (status, body), or with None never answers: the
    connection stays open, silent, until the server stops. Every request is recorded; its body
    is read first, as a real endpoint would.
    """

    def __init__(self, answer: tuple[int, bytes] | None) -> None:
        self.requests: list[tuple[str, str]] = []
        self.released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append((self.command, self.path))
                if answer is None:
                    fake.released.wait()
                    return
                status, body = answer
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_POST = do_GET = do_HEAD = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def fake_s3(answer: tuple[int, bytes] | None) -> Iterator[FakeS3]:
    server = FakeS3(answer)
    try:
        yield server
    finally:
        server.stop()


ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
    b"<RequestId>FAULT0001</RequestId><HostId>fault-matrix</HostId></Error>"
)


def assert_upload_failure(stack: Stack, error: str, problem: str) -> list[str]:
    """The error names every output and the S3 problem, and says the files go with the job. Returns their names."""
    assert error.startswith("S3 upload failed for 1 of 1 outputs: "), error
    names = re.findall(r"(s3fault_\d{5}_\.png) \(", error)
    assert names, error
    assert re.search(problem, error), (problem, error)
    assert "The files are removed with the job (CLEANUP_OUTPUTS=false keeps them on this worker)" in error
    return names


def assert_no_secrets(stack: Stack, *texts: str) -> None:
    # The access key id is sent in every request's Authorization header; it must not be logged either.
    for secret in (SECRET_KEY, ACCESS_KEY):
        for where, text in [("stdout", "\n".join(stack.lines)), ("log files", log_files(stack))] + [
            ("result", t) for t in texts
        ]:
            assert secret not in text, f"a credential appears in the {where}"


def test_s3_endpoint_down_fails_the_job_naming_the_file_and_keeps_it(make_stack) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    stack = started(make_stack, **faults_s3_env(closed))
    result = stack.runsync(image_chain(prefix="s3fault"))
    error = failed(result)
    assert_upload_failure(stack, error, re.escape(f'Could not connect to the endpoint URL: "{closed}/{BUCKET}/'))
    stack.wait_line("failed (upload)")
    assert readyz(stack)["ready"]
    assert_no_secrets(stack, repr(result))


def test_s3_endpoint_refusing_with_403_fails_the_job_naming_the_file_and_keeps_it(make_stack) -> None:
    with fake_s3((403, ACCESS_DENIED)) as server:
        stack = started(make_stack, **faults_s3_env(server.url))
        result = stack.runsync(image_chain(prefix="s3fault"))
        error = failed(result)
        assert_upload_failure(stack, error, r"AccessDenied: Access Denied")
        assert [method for method, _ in server.requests] == ["PUT"], "a 403 is not retried"
        stack.wait_line("failed (upload)")
        assert_no_secrets(stack, repr(result))
        assert readyz(stack)["ready"]


def test_s3_endpoint_that_never_answers_fails_the_job_within_its_deadline(make_stack) -> None:
    deadline_s = 8
    with fake_s3(None) as server:
        stack = started(make_stack, **faults_s3_env(server.url), JOB_TIMEOUT_S=str(deadline_s))
        began = time.monotonic()
        result = stack.runsync(image_chain(prefix="s3fault"), timeout_s=300)
        took = time.monotonic() - began
        error = failed(result)
        assert_upload_failure(stack, error, r"(?i)time ?out|time limit")
        problems = []
        # A stalled endpoint must not hold the job past its time limit (plus some slack).
        if took >= deadline_s + 10:
            problems.append(f"the job answered after {took:.1f} s with JOB_TIMEOUT_S={deadline_s}")
        if len(server.requests) != 1:
            problems.append(f"S3_MAX_ATTEMPTS=1, yet the endpoint got {len(server.requests)} requests")
        assert not problems, "; ".join(problems) + "\n" + error
        assert_no_secrets(stack, repr(result))
        assert readyz(stack)["ready"]


def test_presigned_urls_from_a_custom_endpoint_point_at_it_and_serve_the_bytes(make_stack, moto: MotoServer) -> None:
    stack = started(make_stack, **faults_s3_env(moto.url))
    result = stack.runsync(image_chain(prefix="s3ok", color=0x123456, side=24))
    assert result["status"] == "COMPLETED", result
    [item] = result["output"]["images"]
    assert item["type"] == "s3_url"
    url = urlsplit(item["data"])
    assert f"{url.scheme}://{url.netloc}" == moto.url, item["data"]
    assert url.path == f"/{BUCKET}/{result['id']}/{item['filename']}"
    assert "X-Amz-Signature=" in url.query
    got = requests.get(item["data"], timeout=10)
    assert got.status_code == 200
    assert Image.open(io.BytesIO(got.content)).convert("RGB").getpixel((0, 0)) == (0x12, 0x34, 0x56)
    stored = moto.client().get_object(Bucket=BUCKET, Key=f"{result['id']}/{item['filename']}")["Body"].read()
    assert stored == got.content
    output = stack.layout.output / item["filename"]
    stack.wait_for(lambda: not output.exists(), 10, what="the uploaded output to be removed")
    assert SECRET_KEY not in item["data"]
    assert_no_secrets(stack)
    assert_next_job_succeeds_on_s3(stack)


def assert_next_job_succeeds_on_s3(stack: Stack) -> None:
    result = stack.runsync(image_chain(prefix="s3next"))
    assert result["status"] == "COMPLETED", result
    assert [item["type"] for item in result["output"]["images"]] == ["s3_url"]
