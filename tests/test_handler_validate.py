"""handler.validate on well-formed and malformed job inputs (pure, no ComfyUI): fields, names, base64,
image formats and the input budgets."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image

from handler.config import InputBudgets
from handler.errors import JobError, Reason
from handler.validate import JobInput, check_download, parse
from tests.images import b64, encoded, png_bytes, png_header

LIMIT = 1_000_000
BUDGETS = InputBudgets(
    image_max_bytes=LIMIT, image_max_pixels=10_000, job_max_image_pixels=30_000, workflow_max_nodes=8
)
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


SMALL_PNG = png_bytes((4, 3), (10, 20, 30))
PNG_B64 = b64(SMALL_PNG)


def problem(raw: object) -> str:
    with pytest.raises(JobError) as caught:
        parse(raw, BUDGETS)
    assert caught.value.reason is Reason.INVALID_INPUT
    return caught.value.message


def test_a_valid_input_is_parsed_and_its_image_decoded_once() -> None:
    job = parse({"workflow": WORKFLOW, "images": [{"name": "in.png", "image": PNG_B64}]}, BUDGETS)
    assert isinstance(job, JobInput)
    assert job.workflow == WORKFLOW
    [image] = job.images
    assert (image.name, image.data, image.mime, image.url) == ("in.png", SMALL_PNG, "image/png", None)
    assert job.api_key is None


def test_workflow_may_be_a_json_string_and_the_api_key_is_kept() -> None:
    job = parse({"workflow": json.dumps(WORKFLOW), "comfy_org_api_key": "k"}, BUDGETS)
    assert job.workflow == WORKFLOW
    assert job.api_key == "k"


def test_the_api_key_may_use_comfyuis_own_field_name() -> None:
    assert parse({"workflow": WORKFLOW, "api_key_comfy_org": "k2"}, BUDGETS).api_key == "k2"


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
        BUDGETS,
    )
    assert [image.data for image in job.images] == [SMALL_PNG, SMALL_PNG]


def test_url_images_are_left_for_download() -> None:
    job = parse(
        {"workflow": WORKFLOW, "images": [{"name": "u.png", "image": "https://example.com/x.png?sig=1"}]}, BUDGETS
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
        ([{"name": "a.png", "image": b64(b"hello world")}], "is not an image"),
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


def test_a_truncated_image_is_named_as_such() -> None:
    broken = b64(SMALL_PNG[:40])
    message = images_problem([{"name": "a.png", "image": broken}])
    assert "input.images[0].image ('a.png') is not an image: it starts like a PNG, but its header" in message
    assert "damaged or cut short" in message


def test_an_image_over_the_size_limit_is_refused_before_decoding() -> None:
    big = b64(png_bytes((800, 800), (10, 20, 30)))
    message = problem_with_limit({"workflow": WORKFLOW, "images": [{"name": "big.png", "image": big}]}, 100)
    assert "IMAGE_MAX_BYTES" in message
    assert "big.png" in message


def problem_with_limit(raw: object, limit: int) -> str:
    with pytest.raises(JobError) as caught:
        parse(raw, InputBudgets(limit, 10_000, 30_000, 8))
    return caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(JobError) as caught:
        parse({"workflow": {"1": {}}, "images": [{"name": "../x"}]}, BUDGETS)
    assert caught.value.message.startswith("Invalid input: 2 problems:")
    assert len(caught.value.details["problems"]) == 2


def test_nan_in_a_workflow_is_an_input_error() -> None:
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": float("nan")}}}
    with pytest.raises(JobError, match="NaN or Infinity"):
        parse({"workflow": workflow}, BUDGETS)


# -- names and text that are not Unicode ---------------------------------------------


def test_a_lone_surrogate_in_an_image_name_is_an_input_error() -> None:
    """json.loads('"\\udc80.png"') gives a str no file system or upload can carry (issue 11)."""
    name = json.loads(r'"\udc80.png"')
    message = images_problem([{"name": name, "image": PNG_B64}])
    assert "input.images[0].name '\\udc80.png' contains a lone surrogate" in message


def test_a_lone_surrogate_in_the_workflow_is_named_where_it_is() -> None:
    workflow = {"1": {"class_type": "PrimitiveString", "inputs": {"value": json.loads(r'"a\ud800b"')}}}
    assert "input.workflow['1']['inputs']['value'] contains a lone surrogate" in problem({"workflow": workflow})


def test_a_lone_surrogate_in_the_api_key_is_an_input_error() -> None:
    raw = {"workflow": WORKFLOW, "comfy_org_api_key": json.loads(r'"k\udfff"')}
    assert "input.comfy_org_api_key contains a lone surrogate" in problem(raw)


# -- base64 messages -----------------------------------------------------------------


N = len(PNG_B64)  # 104, the last one '=' padding


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PNG_B64[:-3], f"looks truncated: its {N - 3} base64 characters are one more than a multiple of 4"),
        (PNG_B64[:-5], f"looks truncated, or lost its '=' padding: its {N - 5} base64 characters"),
        (PNG_B64[:20] + "-" + PNG_B64[21:], "character 21 is '-', from URL-safe base64; send standard base64"),
        (PNG_B64[:20] + "!" + PNG_B64[21:], "character 21 is '!', which base64 does not use"),
        (PNG_B64[:20] + "é" + PNG_B64[21:], "character 21 is 'é', which base64 does not use"),
        (PNG_B64 + PNG_B64, f"'=' padding at character {N} comes before the end of the data"),
    ],
)
def test_base64_problems_say_what_is_wrong_in_words(text: str, expected: str) -> None:
    message = images_problem([{"name": "a.png", "image": text}])
    assert f"input.images[0].image ('a.png') {expected}" in message or f"is not valid base64: {expected}" in message
    assert "binascii" not in message and "Incorrect padding" not in message


def test_truncated_base64_from_issue_14_says_it_looks_truncated() -> None:
    text = b64(bytes(8300))[:11041]
    message = images_problem([{"name": "a.png", "image": text}])
    assert "looks truncated: its 11,041 base64 characters are one more than a multiple of 4" in message


# -- formats -------------------------------------------------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"


@pytest.mark.parametrize(
    ("image_format", "mime"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
        ("MPO", "image/mpo"),
    ],
)
def test_the_formats_comfyui_loads_are_accepted(image_format: str, mime: str) -> None:
    frames = [Image.new("RGB", (16, 16), (0, 0, 0)), Image.new("RGB", (16, 16), (255, 255, 255))]
    single = image_format in ("BMP", "JPEG")
    options = {} if single else {"save_all": True, "append_images": frames[1:]}
    data = encoded(frames[0], image_format, **options)
    [image] = parse({"workflow": WORKFLOW, "images": b64_images(data)}, BUDGETS).images
    assert (image.mime, image.pixels) == (mime, (1 if single else 2) * 64 * 64)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            EPS,
            "is Encapsulated Postscript (EPS), a format the worker does not accept: reading it makes Pillow run "
            "Ghostscript; send PNG, JPEG, WEBP, GIF, BMP, TIFF",
        ),
        (b"\xc5\xd0\xd3\xc6" + bytes(28) + EPS, "(EPS), a format the worker does not accept"),
        (encoded(Image.new("RGB", (8, 8)), "ICO"), "is Windows Icon (ICO), a format the worker does not accept"),
        (encoded(Image.new("RGB", (8, 8)), "PCX"), "is Paintbrush (PCX), a format the worker does not accept"),
    ],
)
def test_other_formats_are_refused_by_name(data: bytes, expected: str) -> None:
    assert expected in images_problem([{"name": "a.png", "image": b64(data)}])


@pytest.fixture
def fake_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `gs` first on PATH that only leaves a mark: Pillow's EPS plugin runs whatever `gs` it finds."""
    marker = tmp_path / "ghostscript-ran"
    script = tmp_path / "bin" / "gs"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow caches where it found gs
    return marker


def test_eps_is_refused_without_running_ghostscript(fake_ghostscript: Path) -> None:
    message = images_problem([{"name": "a.png", "image": b64(EPS)}])
    assert "Ghostscript" in message
    assert not fake_ghostscript.exists()
    # The fake is what Pillow would run: reading the EPS's pixels does run it.
    with pytest.raises(Exception), Image.open(io.BytesIO(EPS)) as image:  # noqa: B017 (any failure of the fake gs)
        image.load()
    assert fake_ghostscript.exists()


def test_errors_about_bytes_never_quote_them() -> None:
    """Bytes may come from a download (another job's output, a private service): errors give format facts only."""
    png = SMALL_PNG
    iend = png.rindex(b"IEND") - 4
    corrupt = png[:iend] + struct.pack(">I", 4) + b"sEcR" + b"data" + b"\0\0\0\0" + png[iend:]
    text = b"SECRET-OUTPUT-OF-ANOTHER-JOB " * 4
    for data, expected in [(corrupt, "is a damaged PNG"), (text, "is not an image in a format the worker accepts")]:
        message = images_problem([{"name": "a.png", "image": b64(data)}])
        assert expected in message
        assert "sEcR" not in message and "SECRET" not in message and "b'" not in message, message


def test_a_web_page_instead_of_an_image_gets_a_hint() -> None:
    page = b64(b"<!doctype html><html><body>sign in</body></html>")
    message = images_problem([{"name": "a.png", "image": page}])
    assert "It looks like text (HTML or XML?)" in message and "sign in" not in message


# -- budgets -------------------------------------------------------------------------


def gif_bytes(side: int, frames: int) -> bytes:
    images = [Image.new("RGB", (side, side), (index % 256, 0, 0)) for index in range(frames)]
    return encoded(images[0], "GIF", save_all=True, append_images=images[1:])


def b64_images(*blobs: bytes) -> list[dict[str, str]]:
    return [{"name": f"{index}.png", "image": b64(blob)} for index, blob in enumerate(blobs)]


def test_an_image_over_the_pixel_budget_is_refused_from_its_header() -> None:
    message = images_problem(b64_images(png_header(200, 100)))
    assert "input.images[0].image ('0.png') is a PNG of 200x100 pixels = 20,000 pixels decoded" in message
    assert "over the budget of 10,000 pixels per image (IMAGE_MAX_PIXELS)" in message


def test_frames_count_toward_the_pixel_budget() -> None:
    message = images_problem(b64_images(gif_bytes(40, 8)))
    assert "is a GIF of 40x40 pixels x 8 frames = 32,768 pixels decoded" in message  # 64x64 at least per frame
    assert "(IMAGE_MAX_PIXELS): send a smaller image, or fewer frames" in message


def test_each_frame_costs_at_least_comfyuis_64x64_mask() -> None:
    [image] = parse({"workflow": WORKFLOW, "images": b64_images(gif_bytes(1, 2))}, BUDGETS).images
    assert image.pixels == 2 * 64 * 64


def test_pillows_decompression_bomb_error_becomes_the_budget_error() -> None:
    side = 20_000  # 400 M pixels: past twice Image.MAX_IMAGE_PIXELS, where Pillow raises instead of warning
    message = images_problem(b64_images(png_header(side, side)))
    assert "has more than 178,956,970 pixels in one frame, which Pillow" in message
    assert "the budget is 10,000 pixels per image (IMAGE_MAX_PIXELS)" in message


def test_pillows_decompression_bomb_warning_is_not_raised(recwarn: pytest.WarningsRecorder) -> None:
    budgets = InputBudgets(LIMIT, 200_000_000, 200_000_000, 8)
    job = parse({"workflow": WORKFLOW, "images": b64_images(png_header(10_000, 10_000))}, budgets)
    assert job.images[0].pixels == 100_000_000
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_the_job_budget_counts_every_image() -> None:
    blob = encoded(Image.new("RGB", (100, 90)), "PNG")  # 9,000 pixels each: within the per-image budget
    message = images_problem(b64_images(blob, blob, blob, blob))
    assert "input.images hold 36,000 pixels together, over the budget of 30,000 pixels per job" in message
    assert "(JOB_MAX_IMAGE_PIXELS): '0.png' 9,000, '1.png' 9,000, '2.png' 9,000, '3.png' 9,000" in message
    assert parse({"workflow": WORKFLOW, "images": b64_images(blob, blob, blob)}, BUDGETS).pixels == 27_000


def test_a_workflow_over_the_node_budget_is_refused_before_its_nodes_are_read() -> None:
    workflow = {str(index): {"inputs": "not even a node"} for index in range(9)}
    with pytest.raises(JobError) as caught:
        parse({"workflow": workflow}, BUDGETS)
    assert caught.value.details["problems"] == [
        "input.workflow has 9 nodes, over the budget of 8 nodes per workflow (WORKFLOW_MAX_NODES)"
    ]


def test_a_download_is_checked_with_the_same_budgets_counting_the_other_images() -> None:
    budgets = InputBudgets(LIMIT, image_max_pixels=20_000, job_max_image_pixels=30_000, workflow_max_nodes=8)
    blob = encoded(Image.new("RGB", (100, 90)), "PNG")  # 9,000 pixels
    raw = {"workflow": WORKFLOW, "images": [*b64_images(blob, blob), {"name": "u.png", "image": "https://x.test/u"}]}
    job = parse(raw, budgets)
    downloaded = job.images[2]
    with pytest.raises(JobError) as caught:
        check_download(job, downloaded, encoded(Image.new("RGB", (100, 130)), "PNG"), budgets)
    assert caught.value.message == (
        "Invalid input: input.images[2].image ('u.png') brings the job's images to 31,000 pixels, over the "
        "budget of 30,000 pixels per job (JOB_MAX_IMAGE_PIXELS)"
    )
    assert (downloaded.data, downloaded.pixels) == (None, 0)
    for data, expected in [(EPS, "(EPS), a format the worker does not accept"), (png_header(300, 100), "30,000")]:
        with pytest.raises(JobError) as caught:
            check_download(job, downloaded, data, budgets)
        assert caught.value.message.startswith("Invalid input: input.images[2].image ('u.png') ")
        assert expected in caught.value.message
    check_download(job, downloaded, blob, budgets)
    assert (downloaded.data, downloaded.mime, downloaded.pixels, job.pixels) == (blob, "image/png", 9_000, 27_000)
