"""Jobs through runpod's local API (POST /runsync) against the stand-in ComfyUI, default settings."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from tests.handler_harness import FileServer, Rig, RigShape
from tests.images import b64, decoded, noise_png
from tests.releases import RELEASES


@pytest.fixture(scope="module", params=RELEASES)
def rig_shape(request: pytest.FixtureRequest) -> RigShape:
    """The handler against the stand-in playing each supported ComfyUI release (docs/comfyui-versions.md)."""
    return RigShape(comfy_env={"STANDIN_COMFYUI_VERSION": request.param})


def invert_job(name: str = "in.png", data: bytes | None = None) -> dict:
    return {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}},
        },
        "images": [{"name": name, "image": b64(data or noise_png())}],
    }


def failed(result: dict) -> str:
    assert result["status"] == "FAILED", result
    assert isinstance(result["error"], str)
    return result["error"]


def test_an_input_image_comes_back_inverted_pixel_exact(rig: Rig) -> None:
    source = noise_png()
    result = rig.runsync(invert_job(data=source))
    assert result["status"] == "COMPLETED", result
    output = result["output"]
    [item] = output["images"]
    assert item["filename"].startswith("inv_") and item["filename"].endswith(".png")
    assert (item["mime"], item["node_id"]) == ("image/png", "3")
    expected = ImageOps.invert(Image.open(io.BytesIO(source)).convert("RGB"))
    assert decoded(item).convert("RGB").tobytes() == expected.tobytes()
    assert output["prompt_id"]


def test_a_batch_and_several_inputs_all_come_back(rig: Rig) -> None:
    job = {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 4, "color": 0x00FF00}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "batch"}},
            "3": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
            "4": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
            "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "a"}},
            "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "b"}},
        },
        "images": [
            {"name": "a.png", "image": b64(noise_png(seed=2))},
            {"name": "b.png", "image": b64(noise_png(seed=3))},
        ],
    }
    result = rig.runsync(job)
    assert result["status"] == "COMPLETED", result
    images = result["output"]["images"]
    by_node: dict[str, list[dict]] = {}
    for item in images:
        by_node.setdefault(item["node_id"], []).append(item)
    assert len(by_node["2"]) == 4
    assert {decoded(item).convert("RGB").getpixel((0, 0)) for item in by_node["2"]} == {(0, 255, 0)}
    for node, seed in (("5", 2), ("6", 3)):
        [item] = by_node[node]
        expected = Image.open(io.BytesIO(noise_png(seed=seed))).convert("RGB").tobytes()
        assert decoded(item).convert("RGB").tobytes() == expected


def test_text_audio_and_animated_outputs_are_returned_with_their_types(rig: Rig) -> None:
    job = {
        "workflow": {
            "1": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
            "2": {
                "class_type": "StringConcatenate",
                "inputs": {"string_a": ["1", 0], "string_b": "world", "delimiter": " "},
            },
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
            "4": {"class_type": "EmptyAudio", "inputs": {"duration": 0.1, "sample_rate": 8000, "channels": 1}},
            "5": {"class_type": "SaveAudio", "inputs": {"audio": ["4", 0], "filename_prefix": "audio/clip"}},
            "6": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
            "7": {
                "class_type": "SaveAnimatedWEBP",
                "inputs": {
                    "images": ["6", 0],
                    "filename_prefix": "anim",
                    "fps": 6.0,
                    "lossless": True,
                    "quality": 80,
                    "method": "default",
                },
            },
        }
    }
    result = rig.runsync(job)
    assert result["status"] == "COMPLETED", result
    output = result["output"]
    assert output["text"] == [{"node_id": "3", "text": "hello world"}]
    [audio] = output["audio"]
    assert (audio["mime"], audio["subfolder"], audio["type"]) == ("audio/flac", "audio", "base64")
    assert base64.b64decode(audio["data"])[:4] == b"fLaC"
    [animated] = output["images"]
    assert animated["mime"] == "image/webp"
    assert decoded(animated).format == "WEBP"


def test_temp_outputs_are_left_out_by_default(rig: Rig) -> None:
    job = {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
    }
    result = rig.runsync(job)
    assert result["status"] == "COMPLETED", result
    assert result["output"]["images"] == []


def test_inputs_outputs_and_history_are_cleaned_up(rig: Rig) -> None:
    result = rig.runsync(invert_job(name="cleanme.png"))
    assert result["status"] == "COMPLETED", result
    [item] = result["output"]["images"]
    prompt_id = result["output"]["prompt_id"]

    def cleaned() -> bool:  # clean-up runs just after the result is returned
        gone = "cleanme.png" not in rig.files("input") and item["filename"] not in rig.files("output")
        return gone and rig.comfy_get(f"/history/{prompt_id}") == {}

    rig.wait_for(cleaned, 5, what="the job's files and history to be removed")


def test_an_identical_job_sent_again_returns_its_images_again(rig: Rig) -> None:
    job = invert_job(name="again.png", data=noise_png(seed=7))
    first = rig.runsync(job)
    second = rig.runsync(job)
    assert first["status"] == second["status"] == "COMPLETED", (first, second)
    assert decoded(first["output"]["images"][0]).tobytes() == decoded(second["output"]["images"][0]).tobytes()


def test_an_input_that_existed_before_is_not_deleted(rig: Rig) -> None:
    kept = rig.comfy_dir / "input" / "kept.png"
    kept.write_bytes(noise_png(seed=9))
    result = rig.runsync(invert_job(name="kept.png", data=noise_png(seed=9)))
    assert result["status"] == "COMPLETED", result
    assert kept.exists()


@pytest.mark.parametrize(
    ("job_input", "expected"),
    [
        ({"workflow": {"nodes": [], "links": []}}, "Export (API)"),
        ({"workflow": {"1": {"inputs": {}}}}, "input.workflow node '1' has no 'class_type'"),
        ({"workflow": "not json"}, "input.workflow is a string but not valid JSON"),
        ({}, "input.workflow is missing"),
        (invert_job(name="../up.png"), "input.images[0].name '../up.png' must be a plain file name"),
        (
            {**invert_job(), "images": [{"name": "x.png", "image": "%%%"}]},
            "input.images[0].image ('x.png') is not valid base64",
        ),
        ({**invert_job(), "images": [{"name": "x.png", "image": b64(b"GIF89a-but-not")}]}, "is not an image"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message_and_nothing_uploaded(rig: Rig, job_input, expected: str) -> None:
    before = rig.files("input")
    error = failed(rig.runsync(job_input))
    assert expected in error
    assert error.startswith("Invalid input:")
    assert set(rig.files("input")) <= set(before), "nothing of the refused job was written"


def test_a_validation_error_lists_the_values_comfyui_accepts(rig: Rig) -> None:
    for name in ("a.safetensors", "b.safetensors"):
        (rig.comfy_dir / "models" / "checkpoints" / name).write_bytes(b"x")
    job = {
        "workflow": {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
            "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "v"}},
        }
    }
    error = failed(rig.runsync(job))
    assert error.startswith("ComfyUI rejected the workflow:")
    assert (
        "node 4 (CheckpointLoaderSimple): ckpt_name 'x.safetensors' not found; available: a.safetensors, b.safetensors"
        in error
    )
    assert "node 9 (SaveImage): required input 'images' is missing" in error


def test_a_missing_input_file_lists_the_volumes_input_folder(rig: Rig) -> None:
    (rig.comfy_dir / "input" / "on-the-volume.png").write_bytes(noise_png())
    job = {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        }
    }
    error = failed(rig.runsync(job))
    assert error.startswith("Invalid input: input.workflow node 1 (LoadImage) input 'image': 'nope.png'"), error
    assert "on-the-volume.png" in error


def test_an_execution_error_names_node_class_exception_and_traceback(rig: Rig) -> None:
    job = {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "StandinFail", "inputs": {"message": "the model exploded", "image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}},
        }
    }
    error = failed(rig.runsync(job))
    assert error.startswith("ComfyUI failed at node 2 (StandinFail): RuntimeError: the model exploded")
    assert "Traceback (last lines):" in error


def test_url_images_are_downloaded_and_bad_urls_name_the_field(rig: Rig) -> None:
    source = noise_png(seed=5)
    server = FileServer({"/in.png": source})
    try:
        job = invert_job()
        job["images"] = [{"name": "in.png", "image": f"{server.url}/in.png?token=secret"}]
        result = rig.runsync(job)
        assert result["status"] == "COMPLETED", result
        expected = ImageOps.invert(Image.open(io.BytesIO(source)).convert("RGB")).tobytes()
        assert decoded(result["output"]["images"][0]).convert("RGB").tobytes() == expected
        job["images"] = [{"name": "in.png", "image": f"{server.url}/missing.png?token=secret"}]
        error = failed(rig.runsync(job))
        assert f"input.images[0].image: downloading {server.url}/missing.png?… answered HTTP 404" in error
        assert "secret" not in error
    finally:
        server.close()


def test_the_handler_never_logs_secrets_or_base64(rig: Rig, tmp_path: Path) -> None:
    job = invert_job()
    job["comfy_org_api_key"] = "comfyui-very-secret-key"
    result = rig.runsync(job)
    assert result["status"] == "COMPLETED", result
    assert rig.handler is not None
    log = "\n".join(rig.handler.lines)
    assert "comfyui-very-secret-key" not in log
    assert job["images"][0]["image"][:40] not in log
    assert result["output"]["images"][0]["data"][:40] not in log


def test_3d_outputs_come_back_with_their_mime_type(rig: Rig) -> None:
    job = {"workflow": {"1": {"class_type": "StandinSave3D", "inputs": {"filename_prefix": "mesh/cube"}}}}
    result = rig.runsync(job)
    assert result["status"] == "COMPLETED", result
    [mesh] = result["output"]["3d"]
    assert (mesh["mime"], mesh["subfolder"]) == ("model/gltf-binary", "mesh"), mesh
    assert base64.b64decode(mesh["data"])[:4] == b"glTF"


def test_an_intermediate_nodes_preview_is_never_an_output_even_when_cached(rig: Rig) -> None:
    rig.start_handler({"INCLUDE_TEMP_OUTPUTS": "true"})
    job = {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF}},
            "2": {"class_type": "StandinIntermediatePreview", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "after"}},
        }
    }
    try:
        for _ in range(2):  # the second time node 2 is cached: 0.38.1 replays its `executed` frame
            result = rig.runsync(job)
            assert result["status"] == "COMPLETED", result
            assert [item["node_id"] for item in result["output"]["images"]] == ["3"], result["output"]["images"]
    finally:
        rig.start_handler()
