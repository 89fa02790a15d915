"""A job's outputs PUT to presigned upload URLs the caller gives (`"upload_urls"` in its input).

    "upload_urls": {"9": ["https://bucket.s3...&X-Amz-Signature=...", ...]}

Keys are output node ids; each file the node saves goes to its next URL, in the order ComfyUI
lists them. Every output file needs a URL: a file without one fails the job (after the prompt
ran, naming the node), as does a failed upload. Uploads obey the download address rules
(download.py): no loopback, private or metadata address unless IMAGE_DOWNLOAD_ALLOWED_HOSTS names
the host. The result names each file's URL without its query (the signature) as `"upload_url"`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from . import metrics
from .collect import Collected
from .config import DownloadPolicy
from .deliver import KEPT, _empty_result, _item
from .download import put_file, redact
from .errors import JobError, Reason, invalid_input

MAX_URLS = 1000
PARALLEL_UPLOADS = 4


@dataclass(frozen=True)
class UrlUploads:
    urls: dict[str, list[str]]
    policy: DownloadPolicy

    def deliver(self, collected: Collected, wait_s: float) -> dict[str, Any]:
        """The result, every file PUT to its URL; raises JobError(upload) naming what could not be sent."""
        used: dict[str, int] = {}
        planned = []
        for item in collected.files:
            index = used.get(item.node_id, 0)
            used[item.node_id] = index + 1
            urls = self.urls.get(item.node_id, [])
            planned.append((item, urls[index] if index < len(urls) else None))
        missing = [item.display_name + f" (node {item.node_id})" for item, url in planned if url is None]
        if missing:
            raise JobError(
                Reason.UPLOAD,
                f"input.upload_urls has no URL for {', '.join(missing)}: give one URL per file each output "
                f"node saves. {KEPT}",
            )
        result = _empty_result(collected)
        deadline = time.monotonic() + wait_s
        pool = ThreadPoolExecutor(PARALLEL_UPLOADS)
        futures = [
            pool.submit(put_file, url, str(item.path), item.mime, self.policy, max(deadline - time.monotonic(), 0.1))
            for item, url in planned
        ]
        wait(futures, timeout=wait_s)
        pool.shutdown(wait=False, cancel_futures=True)  # the job waits until its deadline, not a stalled PUT's end
        failed = []
        for (item, url), future in zip(planned, futures, strict=True):
            finished = future.done() and not future.cancelled()
            error = future.exception() if finished else TimeoutError("did not finish within the job's time")
            if error is not None:
                failed.append(f"{item.display_name}: {error}")
                continue
            result[item.category].append(_item(item, "upload_url", redact(str(url))))
            metrics.OUTPUT_BYTES.labels("s3").inc(item.size)
        if failed:
            raise JobError(
                Reason.UPLOAD, f"Upload failed for {len(failed)} of {len(planned)} outputs: {'; '.join(failed)}. {KEPT}"
            )
        return result


def parse(raw: Any, policy: DownloadPolicy) -> UrlUploads | None:
    """The job's upload URLs, or None; raises JobError(invalid_input) saying what is wrong."""
    if raw is None:
        return None
    shape = 'input.upload_urls must be an object of output node id -> list of http(s) URLs ({"9": ["https://…"]})'
    if not isinstance(raw, dict) or not raw:
        raise invalid_input(shape)
    urls: dict[str, list[str]] = {}
    for node_id, listed in raw.items():
        listed = [listed] if isinstance(listed, str) else listed
        if not isinstance(listed, list) or not all(isinstance(url, str) for url in listed):
            raise invalid_input(shape)
        bad = [redact(url) for url in listed if not url.lower().startswith(("http://", "https://"))]
        if bad:
            raise invalid_input(f"input.upload_urls[{node_id!r}]: {', '.join(bad)} is not an http(s) URL")
        urls[str(node_id)] = listed
    if sum(len(listed) for listed in urls.values()) > MAX_URLS:
        raise invalid_input(f"input.upload_urls lists more than {MAX_URLS} URLs")
    return UrlUploads(urls, policy)
