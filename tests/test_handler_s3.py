"""Outputs delivered to S3: moto's S3-compatible server on loopback, checked through the presigned URLs."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

from tests.handler_harness import MotoServer, Rig, RigShape, free_port, s3_env

BUCKET = "outputs"
PREFIX = "runs/"
COLOR = 0x112233


@pytest.fixture(scope="module")
def rig_shape() -> RigShape:
    return RigShape(handler_env=None)  # each test starts the handler with its S3 settings


def image_and_audio_job() -> dict:
    return {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": COLOR}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s3"}},
            "3": {"class_type": "EmptyAudio", "inputs": {"duration": 0.1, "sample_rate": 8000, "channels": 1}},
            "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": "audio/s3"}},
        }
    }


def noise_job(side: int) -> dict:
    return {
        "workflow": {
            "1": {"class_type": "StandinBigImages", "inputs": {"count": 1, "width": side, "height": side, "seed": 4}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "big"}},
        }
    }


def test_outputs_are_uploaded_and_served_through_presigned_urls(rig: Rig, moto: MotoServer) -> None:
    rig.start_handler(s3_env(moto.url, BUCKET, S3_PREFIX=PREFIX))
    result = rig.runsync(image_and_audio_job())
    assert result["status"] == "COMPLETED", result
    output = result["output"]
    [image], [audio] = output["images"], output["audio"]
    assert image["type"] == audio["type"] == "s3_url"
    got = requests.get(image["data"], timeout=10)
    assert got.status_code == 200
    assert got.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(got.content)).convert("RGB").getpixel((0, 0)) == (0x11, 0x22, 0x33)
    got = requests.get(audio["data"], timeout=10)
    assert (got.headers["Content-Type"], got.content[:4]) == ("audio/flac", b"fLaC")
    keys = sorted(item["Key"] for item in moto.client().list_objects_v2(Bucket=BUCKET)["Contents"])
    job_id = result["id"]
    assert f"runs/{job_id}/{image['filename']}" in keys
    assert f"runs/{job_id}/audio/{audio['filename']}" in keys
    rig.wait_for(lambda: rig.files("output") == [], 5, what="uploaded outputs to be removed")
    assert "test-secret-key" not in "\n".join(rig.handler.lines)


def test_with_oversize_mode_only_a_response_over_the_limit_goes_to_s3(rig: Rig, moto: MotoServer) -> None:
    oversize = {"S3_UPLOAD_MODE": "oversize", "RESPONSE_SIZE_LIMIT_BYTES": "100000"}
    rig.start_handler(s3_env(moto.url, BUCKET, S3_PREFIX=PREFIX, **oversize))
    small = rig.runsync(image_and_audio_job())
    assert small["status"] == "COMPLETED", small
    assert {item["type"] for item in small["output"]["images"]} == {"base64"}
    big = rig.runsync(noise_job(256))
    assert big["status"] == "COMPLETED", big
    [item] = big["output"]["images"]
    assert item["type"] == "s3_url"
    assert Image.open(io.BytesIO(requests.get(item["data"], timeout=10).content)).size == (256, 256)


def test_a_failed_upload_is_reported_per_file_and_its_files_go_with_the_job(rig: Rig, moto: MotoServer) -> None:
    rig.start_handler(s3_env(moto.url, BUCKET, S3_PREFIX=PREFIX, S3_BUCKET_NAME="no-such-bucket"))
    result = rig.runsync(image_and_audio_job())
    assert result["status"] == "FAILED", result
    error = result["error"]
    assert error.startswith("S3 upload failed for 2 of 2 outputs:")
    assert "NoSuchBucket" in error
    assert "The files are removed with the job (CLEANUP_OUTPUTS=false keeps them on this worker)" in error
    rig.wait_for(lambda: rig.files("output") == [], 5, what="the job's outputs to be removed")


def test_an_unreachable_endpoint_is_retried_then_reported(rig: Rig, moto: MotoServer) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    rig.start_handler(s3_env(moto.url, BUCKET, S3_PREFIX=PREFIX, S3_ENDPOINT_URL=down, S3_MAX_ATTEMPTS="2"))
    result = rig.runsync(image_and_audio_job())
    assert result["status"] == "FAILED", result
    assert "S3 upload failed for 2 of 2 outputs:" in result["error"]
    assert "Could not connect to the endpoint URL" in result["error"]
