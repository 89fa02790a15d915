"""Step 2: download URL images, then upload every input image to ComfyUI's input folder.

Nothing is uploaded until every image is downloaded and checked, so a bad URL leaves
ComfyUI untouched. Only files the job created are listed for clean-up: an upload that
replaces a file already on the volume is not deleted afterwards.
"""

from __future__ import annotations

import io

from worker_common.comfy_client import ComfyError

from .context import JobContext
from .download import fetch
from .runtime import Runtime
from .validate import InputImage, JobInput, check_image


def stage_inputs(rt: Runtime, ctx: JobContext, job_input: JobInput) -> None:
    for image in job_input.images:
        if image.url is not None:
            _download(rt, image)
            ctx.check()
    for image in job_input.images:
        _upload(rt, ctx, image)
        image.data = None  # the bytes are in ComfyUI's folder now; free them


def _download(rt: Runtime, image: InputImage) -> None:
    limits = rt.config
    assert image.url is not None
    data = fetch(rt.downloads, image.url, image.field, limits.image_download_max_bytes, limits.image_download_timeout_s)
    image.mime = check_image(
        image.field, image.name, data, min(limits.image_max_bytes, limits.image_download_max_bytes)
    )
    image.data = data


def _upload(rt: Runtime, ctx: JobContext, image: InputImage) -> None:
    assert image.data is not None
    path = rt.folders.resolve("input", "", image.name)
    existed = path is not None and path.exists()
    try:
        answer = rt.comfy.upload_image(image.name, io.BytesIO(image.data), image.mime)
    except ComfyError as error:
        raise rt.comfy_failure(error, f"uploading {image.field} ({image.name!r})") from error
    stored = rt.folders.resolve("input", answer.get("subfolder", ""), answer.get("name", image.name))
    if stored is not None and not (existed and stored == path):
        ctx.created_inputs.append(stored)
