"""Step 6: put the outputs into the job's result, as base64 in the response or as S3 URLs.

Items keep worker-comfyui's shape {"filename", "type": "base64"|"s3_url", "data"} (plus
"mime" and "node_id"), grouped by what they are: images, videos, audio, files; text goes
under "text". The response size is computed from the file sizes before anything is
encoded (base64 of n bytes is 4*ceil(n/3)). A response over RESPONSE_SIZE_LIMIT_BYTES goes
to S3 when a bucket is configured, else fails naming the files; nothing is deleted then.
"""

from __future__ import annotations

import binascii
import os
from pathlib import Path
from typing import Any

from . import metrics
from .collect import Collected, OutputFile
from .context import JobContext
from .errors import JobError, Reason
from .runtime import Runtime
from .s3 import S3Uploader, Upload

ITEM_OVERHEAD_BYTES = 200  # JSON keys, filename, mime and node id around each item's data
ENCODE_CHUNK_BYTES = 3 << 20  # a multiple of 3, so chunks encode without padding in between
KEPT = "The files are removed with the job (CLEANUP_OUTPUTS=false keeps them on this worker)."
S3_SETTINGS = "S3_BUCKET_NAME, S3_ENDPOINT_URL, S3_BUCKET_CREDS_ACCESS_KEY_ID, S3_BUCKET_CREDS_SECRET_ACCESS_KEY"


def deliver(rt: Runtime, ctx: JobContext, collected: Collected, own: S3Uploader | None = None) -> dict[str, Any]:
    """The result's items; to the job's `own` destination (input.s3) when it has one, whatever the size."""
    if own is not None:
        return _to_s3(own, ctx, collected)
    size = response_size(collected)
    limit = rt.config.response_size_limit_bytes
    if rt.s3 is not None and (rt.s3.upload_mode == "always" or size > limit):
        return _to_s3(rt.s3, ctx, collected)
    if size > limit:
        raise _too_large(collected, size, limit)
    return _inline(collected)


def encoded_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def response_size(collected: Collected) -> int:
    files = sum(encoded_size(item.size) + ITEM_OVERHEAD_BYTES for item in collected.files)
    return files + sum(len(text["text"]) + ITEM_OVERHEAD_BYTES for text in collected.texts)


def encode_file(path: Path) -> str:
    """The file as base64, encoded chunk by chunk into one buffer of the final size.

    Holds one encoded copy plus one chunk, instead of the raw file, its encoding and the
    decoded string all at once.
    """
    with open(path, "rb") as file:
        encoded = bytearray(encoded_size(os.fstat(file.fileno()).st_size))
        position = 0
        while chunk := file.read(ENCODE_CHUNK_BYTES):
            piece = binascii.b2a_base64(chunk, newline=False)
            encoded[position : position + len(piece)] = piece
            position += len(piece)
    del encoded[position:]  # the file shrank while being read
    return encoded.decode("ascii")


def _inline(collected: Collected) -> dict[str, Any]:
    result = _empty_result(collected)
    sent = 0
    for item in collected.files:
        data = encode_file(item.path)
        sent += len(data)
        result[item.category].append(_item(item, "base64", data))
    metrics.OUTPUT_BYTES.labels("base64").inc(sent)
    return result


def _to_s3(s3: S3Uploader, ctx: JobContext, collected: Collected) -> dict[str, Any]:
    wait_s = max(ctx.left_s(), 0.0)
    uploads = [
        Upload(item.path, s3.key(ctx.job_id, item.subfolder, item.filename), item.mime) for item in collected.files
    ]
    result = _empty_result(collected)
    failed = []
    for item, outcome in zip(collected.files, s3.upload_all(uploads, wait_s), strict=True):
        if outcome.url is None:
            failed.append(
                {"filename": item.display_name, "node_id": item.node_id, "size": item.size, "error": outcome.error}
            )
            continue
        result[item.category].append(_item(item, "s3_url" if s3.config.presign_expires_s else "s3_uri", outcome.url))
        metrics.OUTPUT_BYTES.labels("s3").inc(item.size)
    if failed:
        raise _upload_failed(failed, len(collected.files), result)
    return result


def _empty_result(collected: Collected) -> dict[str, Any]:
    result: dict[str, Any] = {"images": []}
    for item in collected.files:
        result.setdefault(item.category, [])
    if collected.texts:
        result["text"] = collected.texts
    return result


def _item(item: OutputFile, kind: str, data: str) -> dict[str, Any]:
    entry = {"filename": item.filename, "type": kind, "data": data, "mime": item.mime, "node_id": item.node_id}
    if item.subfolder:
        entry["subfolder"] = item.subfolder
    return entry


def _too_large(collected: Collected, size: int, limit: int) -> JobError:
    files = ", ".join(f"{item.display_name} ({_mb(encoded_size(item.size))})" for item in collected.files)
    message = (
        f"The outputs come to {_mb(size)} as base64, over the response limit of {_mb(limit)} "
        f"(RESPONSE_SIZE_LIMIT_BYTES): {files}. Configure S3 ({S3_SETTINGS}) to receive large "
        f"outputs as URLs. {KEPT}"
    )
    details = {"response_bytes": size, "limit_bytes": limit, "files": [_file_fact(item) for item in collected.files]}
    return JobError(Reason.OUTPUT_TOO_LARGE, message, details)


def _upload_failed(failed: list[dict[str, Any]], total: int, uploaded: dict[str, Any]) -> JobError:
    listing = "; ".join(f"{entry['filename']} ({_mb(entry['size'])}): {entry['error']}" for entry in failed)
    message = f"S3 upload failed for {len(failed)} of {total} outputs: {listing}. {KEPT}"
    return JobError(Reason.UPLOAD, message, {"failed_uploads": failed, "uploaded": uploaded})


def _file_fact(item: OutputFile) -> dict[str, Any]:
    return {
        "filename": item.display_name,
        "node_id": item.node_id,
        "size": item.size,
        "base64_size": encoded_size(item.size),
    }


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
