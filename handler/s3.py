"""Uploads to an S3-compatible bucket, streamed from disk, and presigned GET URLs.

One client is built at start-up (clients are thread-safe and keep their connections). Each
job's files go through one boto3 transfer manager: managed uploads read the file in parts
from disk, so no whole file is held in memory, and several files upload at once. Failed
requests are retried by botocore's own retry policy (S3_MAX_ATTEMPTS, "standard" mode).
The job waits for its uploads only until its deadline: a stalled endpoint fails the files
still in flight, and their transfers are cancelled in the background.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import S3Config

MB = 1 << 20
TRANSFER = {
    "multipart_threshold": 16 * MB,
    "multipart_chunksize": 8 * MB,
    "max_concurrency": 4,
    "use_threads": True,
}
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
LATE = "did not finish within the job's time limit (JOB_TIMEOUT_S)"


@dataclass(frozen=True)
class Upload:
    """One file to upload: where it is, its object key and content type."""

    path: Path
    key: str
    content_type: str


@dataclass(frozen=True)
class Uploaded:
    upload: Upload
    url: str | None
    error: str | None


class S3Uploader:
    def __init__(self, config: S3Config) -> None:
        # boto3 costs about 0.2 s and 20 MB to import: only a worker with a bucket pays it.
        import boto3
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from botocore.config import Config

        self.config = config
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            aws_session_token=config.session_token,
            config=Config(
                signature_version="s3v4",
                # total_max_attempts counts the first try; botocore's max_attempts would not.
                retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
                s3={"addressing_style": config.addressing_style},
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                max_pool_connections=2 * TRANSFER["max_concurrency"],
            ),
        )
        self.transfer_config = TransferConfig(**TRANSFER)
        self._transfer_manager = create_transfer_manager

    @property
    def upload_mode(self) -> str:
        return self.config.upload_mode

    def key(self, job_id: str, subfolder: str, filename: str) -> str:
        """{prefix}/{job_id}/{subfolder}/{filename}, without empty parts."""
        parts = (self.config.prefix, job_id, subfolder.strip("/"), filename)
        return "/".join(part for part in parts if part)

    def upload_all(self, uploads: Sequence[Upload], wait_s: float) -> list[Uploaded]:
        """Upload every file, waiting at most `wait_s`; each result has a presigned URL or why it failed."""
        manager = self._transfer_manager(self.client, self.transfer_config)
        finished: queue.SimpleQueue[None] = queue.SimpleQueue()
        futures = [
            manager.upload(
                str(upload.path),
                self.config.bucket,
                upload.key,
                {"ContentType": upload.content_type},
                subscribers=[_done_signal()(finished)],
            )
            for upload in uploads
        ]
        all_done = _wait_for(finished, len(futures), time.monotonic() + wait_s)
        results = [self._outcome(upload, future) for upload, future in zip(uploads, futures, strict=True)]
        if all_done:
            manager.shutdown()
        else:  # threads blocked on a silent endpoint end at its read timeout, not the job's
            threading.Thread(target=manager.shutdown, kwargs={"cancel": True}, daemon=True).start()
        return results

    def _outcome(self, upload: Upload, future: Any) -> Uploaded:
        if not future.done():
            return Uploaded(upload, None, LATE)
        try:
            future.result()
        except Exception as error:  # botocore/s3transfer raise many types; each is reported
            return Uploaded(upload, None, describe(error))
        return Uploaded(upload, self.presign(upload.key), None)

    def presign(self, key: str) -> str:
        """A presigned GET URL; for a job's own bucket (no expiry set) its s3:// URI, which carries no key id."""
        if not self.config.presign_expires_s:
            return f"s3://{self.config.bucket}/{key}"
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.config.bucket, "Key": key},
            ExpiresIn=self.config.presign_expires_s,
        )


@functools.cache
def _done_signal() -> type:
    """An s3transfer subscriber that signals a queue when its transfer ends (s3transfer is imported late)."""
    from s3transfer.subscribers import BaseSubscriber

    class DoneSignal(BaseSubscriber):
        def __init__(self, signal: queue.SimpleQueue) -> None:
            self.signal = signal

        def on_done(self, future: Any, **kwargs: Any) -> None:
            self.signal.put(None)

    return DoneSignal


def _wait_for(finished: queue.SimpleQueue, count: int, deadline: float) -> bool:
    """Whether `count` transfers signalled they finished before `deadline`."""
    for _ in range(count):
        try:
            finished.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            return False
    return True


def describe(error: Exception) -> str:
    """A short reason: S3's error code and message, or the exception's own text."""
    response = getattr(error, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        info = response["Error"]
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".strip()
    return f"{type(error).__name__}: {error}"
