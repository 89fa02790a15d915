"""handler.validate on well-formed and malformed job inputs (pure, no ComfyUI)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from handler.errors import JobError, Reason
from handler.validate import JobInput, parse

LIMIT = 1_000_000
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


def png_bytes(size: tuple[int, int] = (4, 3), color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


PNG_B64 = base64.b64encode(png_bytes()).decode()


def problem(raw: object) -> str:
    with pytest.raises(JobError) as caught:
        parse(raw, LIMIT)
    assert caught.value.reason is Reason.INVALID_INPUT
    return caught.value.message


def test_a_valid_input_is_parsed_and_its_image_decoded_once() -> None:
    job = parse({"workflow": WORKFLOW, "images": [{"name": "in.png", "image": PNG_B64}]}, LIMIT)
    assert isinstance(job, JobInput)
    assert job.workflow == WORKFLOW
    [image] = job.images
    assert (image.name, image.data, image.mime, image.url) == ("in.png", png_bytes(), "image/png", None)
    assert job.api_key is None


def test_workflow_may_be_a_json_string_and_the_api_key_is_kept() -> None:
    job = parse({"workflow": json.dumps(WORKFLOW), "comfy_org_api_key": "k"}, LIMIT)
    assert job.workflow == WORKFLOW
    assert job.api_key == "k"


def test_the_api_key_may_use_comfyuis_own_field_name() -> None:
    assert parse({"workflow": WORKFLOW, "api_key_comfy_org": "k2"}, LIMIT).api_key == "k2"


def test_data_uri_and_line_wrapped_base64_are_accepted() -> None:
    wrapped = "\n".join(PNG_B64[i : i + 60] for i in range(0, len(PNG_B64), 60))
    job = parse(
        {
            "workflow": WORKFLOW,
            "images": [
                {"name": "a.png", "image": "data:image/png;base64," + PNG_B64},
                {"name": "b.png", "image": wrapped},
            ],
        },
        LIMIT,
    )
    assert [image.data for image in job.images] == [png_bytes(), png_bytes()]


def test_url_images_are_left_for_download() -> None:
    job = parse(
        {"workflow": WORKFLOW, "images": [{"name": "u.png", "image": "https://example.com/x.png?sig=1"}]}, LIMIT
    )
    assert job.images[0].url == "https://example.com/x.png?sig=1"
    assert job.images[0].data is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], "input must be a JSON object with a 'workflow' field; got a list"),
        ({}, "input.workflow is missing"),
        ({"workflow": "{not json"}, "input.workflow is a string but not valid JSON"),
        ({"workflow": [1, 2]}, "input.workflow must be a JSON object mapping node ids to nodes; got a list"),
        ({"workflow": {}}, "input.workflow is empty"),
        ({"workflow": {"nodes": [], "links": []}}, "UI format"),
        ({"workflow": {"1": "x"}}, "input.workflow node '1' must be an object"),
        ({"workflow": {"1": {"inputs": {}}}}, "input.workflow node '1' has no 'class_type'"),
        ({"workflow": {"1": {"class_type": "X", "inputs": []}}}, "node '1' (X): 'inputs' must be an object"),
        ({"workflow": WORKFLOW, "comfy_org_api_key": 5}, "input.comfy_org_api_key must be a string"),
    ],
)
def test_workflow_problems_name_the_field(raw: object, expected: str) -> None:
    assert expected in problem(raw)


def test_ui_format_says_how_to_export_the_api_format() -> None:
    assert "Export (API)" in problem({"workflow": {"nodes": [], "links": [], "version": 0.4}})


def images_problem(images: object) -> str:
    return problem({"workflow": WORKFLOW, "images": images})


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ({"name": "a"}, "input.images must be a list"),
        (["x"], "input.images[0] must be an object with 'name' and 'image'"),
        ([{"image": PNG_B64}], "input.images[0].name is missing"),
        ([{"name": "a/b.png", "image": PNG_B64}], "must be a plain file name"),
        ([{"name": "a\\b.png", "image": PNG_B64}], "must be a plain file name"),
        ([{"name": "/etc/passwd", "image": PNG_B64}], "must be a plain file name"),
        ([{"name": "..", "image": PNG_B64}], "'..' is not a usable file name"),
        ([{"name": "a\0.png", "image": PNG_B64}], "contains a NUL character"),
        ([{"name": "a.png"}], "input.images[0].image is missing"),
        ([{"name": "a.png", "image": "!!!notbase64!!!"}], "input.images[0].image ('a.png') is not valid base64"),
        ([{"name": "a.png", "image": ""}], "input.images[0].image is missing"),
        ([{"name": "a.png", "image": "data:image/png;base64,"}], "is empty (0 bytes)"),
        ([{"name": "a.png", "image": base64.b64encode(b"hello world").decode()}], "is not an image"),
        ([{"name": "a.png", "image": "data:image/png,abc"}], "is a data URI but not a base64 one"),
        ([{"name": "a.png", "image": "file:///etc/passwd"}], "other URL schemes are not fetched"),
        (
            [{"name": "a.png", "image": PNG_B64}, {"name": "a.png", "image": PNG_B64}],
            "input.images[1].name 'a.png' repeats input.images[0].name",
        ),
    ],
)
def test_image_problems_name_the_field(images: object, expected: str) -> None:
    assert expected in images_problem(images)


def test_a_truncated_image_is_not_an_image() -> None:
    broken = base64.b64encode(png_bytes()[:40]).decode()
    assert "input.images[0].image ('a.png') is not" in images_problem([{"name": "a.png", "image": broken}])


def test_an_image_over_the_size_limit_is_refused_before_decoding() -> None:
    big = base64.b64encode(png_bytes((800, 800))).decode()
    message = problem_with_limit({"workflow": WORKFLOW, "images": [{"name": "big.png", "image": big}]}, 100)
    assert "IMAGE_MAX_BYTES" in message
    assert "big.png" in message


def problem_with_limit(raw: object, limit: int) -> str:
    with pytest.raises(JobError) as caught:
        parse(raw, limit)
    return caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(JobError) as caught:
        parse({"workflow": {"1": {}}, "images": [{"name": "../x"}]}, LIMIT)
    assert caught.value.message.startswith("Invalid input: 2 problems:")
    assert len(caught.value.details["problems"]) == 2


def test_nan_in_a_workflow_is_an_input_error() -> None:
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": float("nan")}}}
    with pytest.raises(JobError, match="NaN or Infinity"):
        parse({"workflow": workflow}, 1000)
