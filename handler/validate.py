"""Step 1: check the job's input and decode its images, before anything reaches ComfyUI.

The input is worker-comfyui 5.x's: {"workflow": {...} | "<json>", "images": [{"name",
"image"}], "comfy_org_api_key"? (or "api_key_comfy_org")}. Every problem found is reported at once, each naming the
field and what was expected. Base64 images are decoded here, once; URL images are only
checked for form here, and in full by check_download once stage.py has downloaded them.

Budgets (InputBudgets, docs/handler.md "Budgets") keep a request of a few kilobytes from making
ComfyUI allocate gigabytes: decoded pixels x frames per image and per job, read from the image's
header without decoding it, and nodes per workflow. Only formats ComfyUI loads and Pillow reads
in-process are accepted (no EPS: Pillow runs Ghostscript for it). Errors describe an image by its
format and size, never by its bytes, which may come from a download.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from .config import InputBudgets
from .errors import JobError, Reason

API_FORMAT_HINT = "export it with 'Export (API)' in ComfyUI's workflow menu"
IMAGE_FORMS = "base64 data, a data URI or an http(s) URL"
MAX_NAME_BYTES = 255
MAX_LISTED = 10  # images named in an error about all of them
_URL = re.compile(r"^https?://", re.IGNORECASE)
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*)(;base64)?,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_UNSENDABLE = re.compile(r'[\x00-\x1f\x7f"]')  # multipart file names escape these (RFC 7578)
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")
_BYTES_REPR = re.compile(r"b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\"")  # b'...' in a message
# What ComfyUI's LoadImage reads (through Pillow, or PyAV from 0.21) and Pillow decodes in-process.
# JPEG includes MPO (multi-picture JPEG). Left out: EPS (Pillow runs Ghostscript), AVIF and ICO
# (whether ComfyUI's Pillow reads them depends on its version), and rare or scientific formats.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
EXTERNAL_PROGRAMS = {"EPS": "Ghostscript"}
# ComfyUI gives every frame without alpha a 64x64 mask: no frame costs less than that many pixels.
MIN_FRAME_PIXELS = 64 * 64


@dataclass
class InputImage:
    """One image for ComfyUI's input folder: decoded bytes, or a URL stage.py downloads.

    Mutable on purpose, within the staging step only: check_download gives a downloaded image
    its bytes (the job's pixel budget counts every image already checked), and stage.py drops
    the bytes once they are on disk, so a job does not hold every input image until it ends.
    No later step reads them.
    """

    name: str
    field: str
    data: bytes | None = None
    url: str | None = None
    mime: str = "application/octet-stream"
    pixels: int = 0  # decoded pixels x frames, as ComfyUI will hold them; 0 until the bytes are checked


@dataclass
class JobInput:
    workflow: dict[str, Any]
    images: list[InputImage]
    api_key: str | None

    @property
    def pixels(self) -> int:
        """What the images checked so far count against JOB_MAX_IMAGE_PIXELS."""
        return sum(image.pixels for image in self.images)


def parse(raw: Any, budgets: InputBudgets) -> JobInput:
    """The checked input; raises JobError(invalid_input) listing every problem found."""
    if not isinstance(raw, dict):
        raise _invalid([f"input must be a JSON object with a 'workflow' field; got {_kind(raw)}"])
    problems: list[str] = []
    workflow = _workflow(raw.get("workflow"), budgets.workflow_max_nodes, problems)
    images = _images(raw.get("images"), budgets, problems)
    key_field = "comfy_org_api_key" if "comfy_org_api_key" in raw else "api_key_comfy_org"
    api_key = raw.get(key_field)
    if api_key is not None and not isinstance(api_key, str):
        problems.append(f"input.{key_field} must be a string; got {_kind(api_key)}")
    elif api_key and _surrogate(api_key):
        problems.append(f"input.{key_field} contains a lone surrogate, which is not a character: send it as UTF-8")
    if problems:
        raise _invalid(problems)
    return JobInput(workflow=workflow, images=images, api_key=api_key or None)


def check_download(job_input: JobInput, image: InputImage, data: bytes, budgets: InputBudgets) -> None:
    """Check a downloaded URL image as a base64 one is checked, then give `image` its bytes.

    stage.py calls this after each download. The image's pixels count toward the job's budget
    together with every image already checked (base64 ones and earlier downloads). On success
    `image.data`, `.mime` and `.pixels` are set; raises JobError(invalid_input) naming the field.
    """
    try:
        mime, pixels = _inspect(data, budgets)
    except _Problem as problem:
        raise _invalid([f"{image.field} ({image.name!r}) {problem}"]) from None
    total = job_input.pixels - image.pixels + pixels
    if total > budgets.job_max_image_pixels:
        raise _invalid(
            [
                f"{image.field} ({image.name!r}) brings the job's images to {total:,} pixels, "
                f"over the budget of {_job_budget(budgets)}"
            ]
        )
    image.data, image.mime, image.pixels = data, mime, pixels


class _Problem(ValueError):
    """What is wrong with one value, phrased to follow the field's name."""


# -- workflow ----------------------------------------------------------------------


def _workflow(value: Any, max_nodes: int, problems: list[str]) -> dict[str, Any]:
    if value is None:
        problems.append(
            f"input.workflow is missing: send the workflow in ComfyUI's API format ({API_FORMAT_HINT}), "
            "or name one stored on the volume in input.workflow_name"
        )
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            problems.append(f"input.workflow is a string but not valid JSON: {error}")
            return {}
        except RecursionError:
            problems.append("input.workflow is a string holding JSON nested too deeply to be a workflow")
            return {}
    if not isinstance(value, dict):
        problems.append(f"input.workflow must be a JSON object mapping node ids to nodes; got {_kind(value)}")
        return {}
    if "nodes" in value and "links" in value:
        problems.append(
            "input.workflow is in ComfyUI's UI format (it has 'nodes' and 'links'); the worker needs "
            f"the API format: {API_FORMAT_HINT}"
        )
        return {}
    if not value:
        problems.append("input.workflow is empty: it has no nodes")
    if len(value) > max_nodes:
        problems.append(
            f"input.workflow has {len(value):,} nodes, over the budget of {max_nodes:,} nodes per workflow "
            "(WORKFLOW_MAX_NODES)"
        )
        return value
    problem = _json_problem(value)
    if problem:
        problems.append(problem)
    for node_id, node in value.items():
        problem = _node_problem(node_id, node)
        if problem:
            problems.append(problem)
    return value


def _json_problem(workflow: dict[str, Any]) -> str | None:
    """ComfyUI only takes strict JSON of real text: NaN, Infinity and lone surrogates (which Python's
    parser lets through, from "\\udc80") are refused."""
    try:
        text = json.dumps(workflow, allow_nan=False, ensure_ascii=False)
    except ValueError:
        return "input.workflow contains NaN or Infinity, which JSON does not allow: send a number instead"
    except RecursionError:
        return "input.workflow is nested too deeply to be a workflow"
    if not _surrogate(text):
        return None
    try:
        where = _surrogate_path(workflow, "input.workflow") or "input.workflow"
    except RecursionError:
        where = "input.workflow"
    return f"{where} contains a lone surrogate, which is not a character: send the text as UTF-8"


def _surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_path(value: Any, path: str) -> str | None:
    """Where in `value` a string or a key holds a lone surrogate, or None."""
    if isinstance(value, str):
        return path if _surrogate(value) else None
    if isinstance(value, dict):
        items = [(f"{path}[{key!r}]", key, item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{index}]", "", item) for index, item in enumerate(value)]
    else:
        return None
    for inner, key, item in items:
        found = inner if _surrogate(str(key)) else _surrogate_path(item, inner)
        if found:
            return found
    return None


def _node_problem(node_id: str, node: Any) -> str | None:
    where = f"input.workflow node {node_id!r}"
    if not isinstance(node, dict):
        return f"{where} must be an object with 'class_type' and 'inputs'; got {_kind(node)}"
    class_type = node.get("class_type")
    if class_type is None or class_type == "":
        return f"{where} has no 'class_type' (is the workflow in API format? {API_FORMAT_HINT})"
    if not isinstance(class_type, str):
        return f"{where}: 'class_type' must be a node class name (a string); got {_kind(class_type)}"
    if not isinstance(node.get("inputs", {}), dict):
        return f"{where} ({node['class_type']}): 'inputs' must be an object; got {_kind(node['inputs'])}"
    return None


# -- images --------------------------------------------------------------------------


def _images(value: Any, budgets: InputBudgets, problems: list[str]) -> list[InputImage]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f'input.images must be a list of {{"name", "image"}} objects; got {_kind(value)}')
        return []
    images: list[InputImage] = []
    first_field: dict[str, str] = {}
    for index, item in enumerate(value):
        field = f"input.images[{index}]"
        image = _image(field, item, budgets, problems)
        if image is None:
            continue
        if image.name in first_field:
            problems.append(f"{field}.name {image.name!r} repeats {first_field[image.name]}.name; names must be unique")
            continue
        first_field[image.name] = field
        images.append(image)
    decoded = [image for image in images if image.pixels]
    total = sum(image.pixels for image in decoded)
    if total > budgets.job_max_image_pixels:
        problems.append(
            f"input.images hold {total:,} pixels together, over the budget of {_job_budget(budgets)}: "
            + ", ".join(f"{image.name!r} {image.pixels:,}" for image in decoded[:MAX_LISTED])
            + (", …" if len(decoded) > MAX_LISTED else "")
        )
    return images


def _image(field: str, item: Any, budgets: InputBudgets, problems: list[str]) -> InputImage | None:
    if not isinstance(item, dict):
        problems.append(f"{field} must be an object with 'name' and 'image'; got {_kind(item)}")
        return None
    name_problem = _name_problem(item.get("name"))
    if name_problem:
        problems.append(f"{field}.name {name_problem}")
        return None
    name, source = item["name"], item.get("image")
    if source is None or source == "":
        problems.append(f"{field}.image is missing: give {IMAGE_FORMS}")
        return None
    if not isinstance(source, str):
        problems.append(
            f"{field}.image must be base64 data, a data URI or an http(s) URL (a string); got {_kind(source)}"
        )
        return None
    if _URL.match(source):
        return InputImage(name=name, field=f"{field}.image", url=source)
    try:
        data = _decode(source, budgets.image_max_bytes)
        mime, pixels = _inspect(data, budgets)
    except _Problem as problem:
        problems.append(f"{field}.image ({name!r}) {problem}")
        return None
    return InputImage(name=name, field=f"{field}.image", data=data, mime=mime, pixels=pixels)


def _name_problem(name: Any) -> str | None:
    """Why `name` cannot be a file name in ComfyUI's input folder, or None."""
    if name is None or name == "":
        return "is missing: give a file name such as 'input.png'"
    if not isinstance(name, str):
        return f"must be a file name (a string); got {_kind(name)}"
    if "\0" in name:
        return f"{name!r} contains a NUL character"
    if _surrogate(name):
        return f"{name!r} contains a lone surrogate, which is not a character: send the name as UTF-8"
    if _UNSENDABLE.search(name):
        return f"{name!r} contains a control character or a double quote, which a file upload cannot carry"
    if "/" in name or "\\" in name:
        return f"{name!r} must be a plain file name, without '/' or '\\' (no folders, no absolute paths)"
    if name in (".", "..") or name.strip() != name:
        return f"{name!r} is not a usable file name"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


# -- base64 --------------------------------------------------------------------------


def _decode(source: str, max_bytes: int) -> bytes:
    """The decoded bytes of base64 or a base64 data URI."""
    if "://" in source[:16]:
        raise _Problem(f"must be {IMAGE_FORMS}; other URL schemes are not fetched")
    if source[:5].lower() == "data:":
        match = _DATA_URI.match(source)
        if not match or not match.group(3):
            raise _Problem("is a data URI but not a base64 one: use data:<type>;base64,<data>")
        source = source[match.end() :]
    if len(source) * 3 // 4 > max_bytes + 2:
        raise _Problem(f"is about {_mb(len(source) * 3 // 4)} decoded; {_limit(max_bytes)}")
    try:
        return base64.b64decode(source, validate=True)
    except (binascii.Error, ValueError):
        pass
    compact = _WHITESPACE.sub("", source)  # line-wrapped base64 is common: accept it, at the cost of one copy
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _Problem(_base64_problem(compact)) from None


def _base64_problem(text: str) -> str:
    """What is wrong with base64 that does not decode, in words (binascii's are terse)."""
    bad = _NOT_BASE64.search(text)
    if bad:
        where = f"character {bad.start() + 1} is {bad.group()!r}"
        if bad.group() in "-_":
            return f"is not valid base64: {where}, from URL-safe base64; send standard base64 (with '+' and '/')"
        return (
            f"is not valid base64: {where}, which base64 does not use (A-Z, a-z, 0-9, '+', '/', and '=' "
            f"only at the end; line breaks are allowed); send {IMAGE_FORMS}"
        )
    padding = text.find("=")
    if 0 <= padding < len(text.rstrip("=")):
        return f"is not valid base64: '=' padding at character {padding + 1} comes before the end of the data"
    if len(text) % 4 == 1:
        return (
            f"looks truncated: its {len(text):,} base64 characters are one more than a multiple of 4, which "
            "complete base64 never is; was it cut off while being copied or sent?"
        )
    return (
        f"looks truncated, or lost its '=' padding: its {len(text):,} base64 characters are not a multiple of 4 "
        "as complete base64 is"
    )


# -- image bytes ---------------------------------------------------------------------


def _inspect(data: bytes, budgets: InputBudgets) -> tuple[str, int]:
    """(MIME type, pixels x frames) of an image within the budgets, read from its header (no pixel is decoded)."""
    if not data:
        raise _Problem("is empty (0 bytes)")
    if len(data) > budgets.image_max_bytes:
        raise _Problem(f"is {_mb(len(data))}; {_limit(budgets.image_max_bytes)}")
    image_format, size, frames = _header(data, budgets)
    pixels = max(size[0] * size[1], MIN_FRAME_PIXELS) * frames
    if pixels > budgets.image_max_pixels:
        shape = f"{size[0]}x{size[1]} pixels" + (f" x {frames:,} frames" if frames > 1 else "")
        raise _Problem(
            f"is a {image_format} of {shape} = {pixels:,} pixels decoded, over the budget of "
            f"{budgets.image_max_pixels:,} pixels per image (IMAGE_MAX_PIXELS): send a smaller image"
            + (", or fewer frames" if frames > 1 else "")
        )
    try:
        with _bomb_warning_ignored(), Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            image.verify()
    except Exception as error:  # Pillow raises many types for a damaged image
        raise _Problem(f"is a damaged {image_format} ({type(error).__name__}: {_pillow_words(error)})") from None
    return Image.MIME.get(image_format, "application/octet-stream"), pixels


def _header(data: bytes, budgets: InputBudgets) -> tuple[str, tuple[int, int], int]:
    """(format, size, frames) from the image's header, in a format the worker accepts."""
    try:
        with _bomb_warning_ignored(), Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            return image.format or "image", image.size, getattr(image, "n_frames", 1)
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise _Problem(
            f"has more than {limit:,} pixels in one frame, which Pillow (here and in ComfyUI) refuses as a likely "
            f"decompression bomb; the budget is {budgets.image_max_pixels:,} pixels per image (IMAGE_MAX_PIXELS)"
        ) from None
    except UnidentifiedImageError:
        raise _Problem(_unaccepted(data)) from None
    except Exception as error:  # a header Pillow recognised but could not read
        raise _Problem(f"is not a readable image ({type(error).__name__}: {_pillow_words(error)})") from None


@contextlib.contextmanager
def _bomb_warning_ignored() -> Iterator[None]:
    """Pillow warns past MAX_IMAGE_PIXELS (and raises past twice that): the budgets decide instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _unaccepted(data: bytes) -> str:
    """Why bytes in no accepted format are refused: the format they are in, if Pillow can name it."""
    accepted = ", ".join(ACCEPTED_FORMATS)
    prefix = data[:16]
    Image.init()
    for name in ACCEPTED_FORMATS:
        accept = Image.OPEN[name][1]
        if accept is not None and accept(prefix) is True:
            return f"is not an image: it starts like a {name}, but its header cannot be read (damaged or cut short?)"
    for name, (factory, accept) in _other_formats():
        if accept is not None and accept(prefix) is True:
            description = getattr(factory, "format_description", None) or name
            program = EXTERNAL_PROGRAMS.get(name)
            why = f": reading it makes Pillow run {program}" if program else ""
            return f"is {description} ({name}), a format the worker does not accept{why}; send {accepted}"
    hint = " It looks like text (HTML or XML?): is the URL a web page rather than the image?"
    looks_like_text = data[:512].lstrip()[:1] in (b"<", b"{", b"[")
    return f"is not an image in a format the worker accepts ({accepted}).{hint if looks_like_text else ''}"


def _other_formats() -> list[tuple[str, Any]]:
    return [(name, opener) for name, opener in Image.OPEN.items() if name not in ACCEPTED_FORMATS]


def _pillow_words(error: Exception) -> str:
    """Pillow's message without the image's own bytes (chunk names, markers) and at most a line long."""
    words = _BYTES_REPR.sub("…", str(error))
    words = "".join(c if c.isprintable() else " " for c in words)
    return words[:160] or "no details"


def _limit(max_bytes: int) -> str:
    return f"the limit is {_mb(max_bytes)} (IMAGE_MAX_BYTES)"


def _job_budget(budgets: InputBudgets) -> str:
    return f"{budgets.job_max_image_pixels:,} pixels per job (JOB_MAX_IMAGE_PIXELS)"


def _invalid(problems: list[str]) -> JobError:
    message = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
    return JobError(Reason.INVALID_INPUT, f"Invalid input: {message}", {"problems": problems})


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
