"""Step 1: check the job's input and decode its images, before anything reaches ComfyUI.

The input is worker-comfyui 5.x's: {"workflow": {...} | "<json>", "images": [{"name",
"image"}], "comfy_org_api_key"? (or "api_key_comfy_org")}. Every problem found is reported at once, each naming the
field and what was expected. Base64 images are decoded here, once; URL images are only
checked for form (stage.py downloads them).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import JobError, Reason

API_FORMAT_HINT = "export it with 'Export (API)' in ComfyUI's workflow menu"
IMAGE_FORMS = "base64 data, a data URI or an http(s) URL"
MAX_NAME_BYTES = 255
_URL = re.compile(r"^https?://", re.IGNORECASE)
_DATA_URI = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*)(;base64)?,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_UNSENDABLE = re.compile(r'[\x00-\x1f\x7f"]')  # multipart file names escape these (RFC 7578)


@dataclass
class InputImage:
    """One image for ComfyUI's input folder: decoded bytes, or a URL stage.py downloads."""

    name: str
    field: str
    data: bytes | None = None
    url: str | None = None
    mime: str = "application/octet-stream"


@dataclass
class JobInput:
    workflow: dict[str, Any]
    images: list[InputImage]
    api_key: str | None


def parse(raw: Any, image_max_bytes: int) -> JobInput:
    """The checked input; raises JobError(invalid_input) listing every problem found."""
    if not isinstance(raw, dict):
        raise _invalid([f"input must be a JSON object with a 'workflow' field; got {_kind(raw)}"])
    problems: list[str] = []
    workflow = _workflow(raw.get("workflow"), problems)
    images = _images(raw.get("images"), image_max_bytes, problems)
    key_field = "comfy_org_api_key" if "comfy_org_api_key" in raw else "api_key_comfy_org"
    api_key = raw.get(key_field)
    if api_key is not None and not isinstance(api_key, str):
        problems.append(f"input.{key_field} must be a string; got {_kind(api_key)}")
    if problems:
        raise _invalid(problems)
    return JobInput(workflow=workflow, images=images, api_key=api_key or None)


def check_image(field: str, name: str, data: bytes, max_bytes: int) -> str:
    """The MIME type of `data`; raises JobError unless it is a non-empty image within the limit."""
    try:
        return _sniff(data, max_bytes)
    except _Problem as problem:
        raise _invalid([f"{field} ({name!r}) {problem}"]) from None


class _Problem(ValueError):
    """What is wrong with one value, phrased to follow the field's name."""


# -- workflow ----------------------------------------------------------------------


def _workflow(value: Any, problems: list[str]) -> dict[str, Any]:
    if value is None:
        problems.append(f"input.workflow is missing: send the workflow in ComfyUI's API format ({API_FORMAT_HINT})")
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
    problem = _json_problem(value)
    if problem:
        problems.append(problem)
    for node_id, node in value.items():
        problem = _node_problem(node_id, node)
        if problem:
            problems.append(problem)
    return value


def _json_problem(workflow: dict[str, Any]) -> str | None:
    """ComfyUI only takes strict JSON: NaN and Infinity (which Python's parser lets through) are refused."""
    try:
        json.dumps(workflow, allow_nan=False)
    except ValueError:
        return "input.workflow contains NaN or Infinity, which JSON does not allow: send a number instead"
    except RecursionError:
        return "input.workflow is nested too deeply to be a workflow"
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


def _images(value: Any, max_bytes: int, problems: list[str]) -> list[InputImage]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f'input.images must be a list of {{"name", "image"}} objects; got {_kind(value)}')
        return []
    images: list[InputImage] = []
    first_field: dict[str, str] = {}
    for index, item in enumerate(value):
        field = f"input.images[{index}]"
        image = _image(field, item, max_bytes, problems)
        if image is None:
            continue
        if image.name in first_field:
            problems.append(f"{field}.name {image.name!r} repeats {first_field[image.name]}.name; names must be unique")
            continue
        first_field[image.name] = field
        images.append(image)
    return images


def _image(field: str, item: Any, max_bytes: int, problems: list[str]) -> InputImage | None:
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
        data = _decode(source, max_bytes)
        mime = _sniff(data, max_bytes)
    except _Problem as problem:
        problems.append(f"{field}.image ({name!r}) {problem}")
        return None
    return InputImage(name=name, field=f"{field}.image", data=data, mime=mime)


def _name_problem(name: Any) -> str | None:
    """Why `name` cannot be a file name in ComfyUI's input folder, or None."""
    if name is None or name == "":
        return "is missing: give a file name such as 'input.png'"
    if not isinstance(name, str):
        return f"must be a file name (a string); got {_kind(name)}"
    if "\0" in name:
        return f"{name!r} contains a NUL character"
    if _UNSENDABLE.search(name):
        return f"{name!r} contains a control character or a double quote, which a file upload cannot carry"
    if "/" in name or "\\" in name:
        return f"{name!r} must be a plain file name, without '/' or '\\' (no folders, no absolute paths)"
    if name in (".", "..") or name.strip() != name:
        return f"{name!r} is not a usable file name"
    if len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


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
    try:  # line-wrapped base64 is common: accept it, at the cost of one copy
        return base64.b64decode(_WHITESPACE.sub("", source), validate=True)
    except (binascii.Error, ValueError) as error:
        raise _Problem(f"is not valid base64 ({error}); send {IMAGE_FORMS}") from None


def _sniff(data: bytes, max_bytes: int) -> str:
    """The image's MIME type, after checking it is a non-empty image within the size limit."""
    if not data:
        raise _Problem("is empty (0 bytes)")
    if len(data) > max_bytes:
        raise _Problem(f"is {_mb(len(data))}; {_limit(max_bytes)}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            image_format = image.format or ""
    except UnidentifiedImageError:
        raise _Problem(f"is not an image: no image format starts with {data[:8]!r}") from None
    except Exception as error:  # Pillow raises many types for a damaged image
        raise _Problem(f"is not a readable image ({type(error).__name__}: {error})") from None
    return Image.MIME.get(image_format, "application/octet-stream")


def _limit(max_bytes: int) -> str:
    return f"the limit is {_mb(max_bytes)} (IMAGE_MAX_BYTES)"


def _invalid(problems: list[str]) -> JobError:
    message = problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems)
    return JobError(Reason.INVALID_INPUT, f"Invalid input: {message}", {"problems": problems})


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
