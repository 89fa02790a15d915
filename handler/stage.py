"""Step 2: download URL images, then put the job's input files in place under its own names.

The handler shares the container's disk with ComfyUI, so input files are written straight into
the worker's input folder (no upload over HTTP). Each file is created new (never over an
existing one, never through a symbolic link) under the job's name `<key>-<name>`; a failed
write (disk full) removes what it wrote. Files users placed in the volume's input folder that
the workflow names are linked under the job's names; the links are removed with the job, the
volume's files are never written. Nothing is written until every image is downloaded and checked.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from .context import JobContext
from .download import fetch
from .errors import JobError, Reason
from .namespace import JobSpace, PreparedWorkflow
from .runtime import Runtime
from .validate import InputImage, JobInput, check_download

FILE_MODE = 0o644  # ComfyUI runs as its own user: it must read what the handler (root) writes
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def stage_inputs(
    rt: Runtime, ctx: JobContext, job_input: JobInput, space: JobSpace, prepared: PreparedWorkflow
) -> None:
    for image in job_input.images:
        if image.url is not None:
            _download(rt, ctx, job_input, image)
            ctx.check()
    for image in job_input.images:
        assert image.data is not None
        write_input(space.input_path(image.name), image.data, image.field)
        image.data = None  # the bytes are on disk now; free them
    for job_name, target in prepared.shared_links.items():
        link_input(rt.config.layout.input, job_name, target)


def _download(rt: Runtime, ctx: JobContext, job_input: JobInput, image: InputImage) -> None:
    assert image.url is not None
    try:
        data = fetch(image.url, image.field, rt.config.download_policy, ctx.left_s())
    except JobError:
        ctx.check()  # the job's own deadline (or a cancellation) cut the download short: say that
        raise
    check_download(job_input, image, data, rt.config.budgets)


def write_input(path: Path, data: bytes, field: str) -> None:
    """Create `path` with `data`; raises JobError naming the field when it cannot."""
    try:
        descriptor = os.open(path, WRITE_FLAGS, FILE_MODE)
    except OSError as error:
        raise _not_written(field, path, error) from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
    except OSError as error:
        with contextlib.suppress(OSError):
            path.unlink()
        raise _not_written(field, path, error) from None


def link_input(input_dir: Path, job_name: str, target: Path) -> None:
    """A link under the job's name to a file on the volume (`target` is already a checked real path).

    The folders of a nested name (`<key>-masks/m.png`) are created new: ComfyUI's user owns the
    input folder, and a folder it placed there could lead the link elsewhere.
    """
    path = input_dir / job_name
    try:
        for depth in range(1, len(Path(job_name).parts)):
            _new_folder(input_dir.joinpath(*Path(job_name).parts[:depth]))
        os.symlink(target, path)
    except OSError as error:
        raise _not_written(f"the volume's input file {target.name!r}", path, error) from None


def _new_folder(path: Path) -> None:
    """Create a folder of the job's; one made already for an earlier file of the job is fine, a link is not."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise


def _not_written(field: str, path: Path, error: OSError) -> JobError:
    if error.errno == errno.ENOSPC:
        return JobError(
            Reason.INTERNAL,
            f"The worker's disk is full: {field} could not be written to {path.parent} (No space left on device)",
        )
    return JobError(Reason.INTERNAL, f"{field} could not be written to {path.parent}: {error.strerror or error}")
