"""A job's own S3 destination (input.s3) on moto, beside the worker's own bucket.

moto listens on loopback, which a request's endpoint may not reach: the worker's own configured
endpoint (S3_ENDPOINT_URL) is trusted as the operator's, so a request naming that endpoint is
allowed, while one naming any other loopback endpoint is refused by the download address rules.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.handler_harness import MotoServer, Rig, RigShape, free_port, s3_env
from tests.test_api import colour_workflow
from tests.workflows import completed, failed

BUCKET = "outputs"  # the worker's own (created by the moto fixture)
CLIENT_BUCKET = "client-bucket"
CLIENT_SECRET = "client-secret-key-never-logged"


@pytest.fixture(scope="module")
def rig_shape(moto: MotoServer) -> RigShape:
    moto.client().create_bucket(Bucket=CLIENT_BUCKET)
    return RigShape(handler_env=s3_env(moto.url, BUCKET, S3_PREFIX="runs/"))


def own_destination(moto: MotoServer, **extra: str) -> dict[str, str]:
    return {
        "bucket": CLIENT_BUCKET,
        "prefix": "app/renders",
        "endpoint_url": moto.url,
        "region": "us-east-1",
        "access_key_id": "client-key-id",
        "secret_access_key": CLIENT_SECRET,
        **extra,
    }


def test_a_jobs_own_destination_gets_its_outputs_and_the_worker_bucket_does_not(rig: Rig, moto: MotoServer) -> None:
    client = moto.client()
    result = rig.runsync({"workflow": colour_workflow(0x0A0B0C), "s3": own_destination(moto)})
    output = completed(result)
    [item] = output["images"]
    key = f"app/renders/{result['id']}/{item['filename']}"
    assert (item["type"], item["data"]) == ("s3_uri", f"s3://{CLIENT_BUCKET}/{key}")
    body = client.get_object(Bucket=CLIENT_BUCKET, Key=key)["Body"].read()
    assert Image.open(io.BytesIO(body)).convert("RGB").getpixel((0, 0)) == (0x0A, 0x0B, 0x0C)
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix=f"runs/{result['id']}")
    assert CLIENT_SECRET not in str(result) and "client-key-id" not in str(result)
    # The next job without a destination goes to the worker's own bucket again, with a presigned URL.
    plain = completed(rig.runsync({"workflow": colour_workflow(1)}))
    assert plain["images"][0]["type"] == "s3_url"
    assert rig.handler is not None
    assert CLIENT_SECRET not in "\n".join(rig.handler.lines)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"endpoint_url": "http://127.0.0.1:{port}"}, "resolves to 127.0.0.1, a loopback address"),
        ({"endpoint_url": "http://169.254.169.254"}, "a cloud metadata address"),
        ({"endpoint_url": "http://10.1.2.3:9000"}, "a private address"),
        ({"endpoint_url": "file:///etc"}, "must be an http(s) URL with a host"),
        ({"secret_access_key": ""}, "input.s3.secret_access_key is missing"),
        ({"acl": "public-read"}, "input.s3.acl is not one of"),
    ],
)
def test_a_bad_destination_is_refused_before_anything_runs(
    rig: Rig, moto: MotoServer, change: dict[str, str], expected: str
) -> None:
    change = {key: value.format(port=free_port()) for key, value in change.items()}
    error = failed(rig.runsync({"workflow": colour_workflow(2), "s3": own_destination(moto, **change)}))
    assert expected in error, error
    assert CLIENT_SECRET not in error


def test_a_wrong_secret_fails_the_upload_without_showing_it(rig: Rig, moto: MotoServer) -> None:
    error = failed(rig.runsync({"workflow": colour_workflow(3), "s3": own_destination(moto, bucket="no-such")}))
    assert "S3 upload failed for 1 of 1 outputs" in error and "NoSuchBucket" in error
    assert CLIENT_SECRET not in error


def presigned_put(moto: MotoServer, key: str, host: str = "localhost") -> str:
    """A presigned PUT URL on moto, by a host the rig lets uploads reach (IMAGE_DOWNLOAD_ALLOWED_HOSTS)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto.url.replace("127.0.0.1", host),
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    return client.generate_presigned_url("put_object", Params={"Bucket": CLIENT_BUCKET, "Key": key}, ExpiresIn=600)


def test_outputs_go_to_presigned_upload_urls(rig: Rig, moto: MotoServer) -> None:
    url = presigned_put(moto, "from-url/one.png")
    output = completed(rig.runsync({"workflow": colour_workflow(0x010203), "upload_urls": {"2": [url]}}))
    [item] = output["images"]
    assert item["type"] == "upload_url"
    assert item["data"] == url.split("?")[0] + "?…", "the signature is not returned"
    body = moto.client().get_object(Bucket=CLIENT_BUCKET, Key="from-url/one.png")["Body"].read()
    assert Image.open(io.BytesIO(body)).convert("RGB").getpixel((0, 0)) == (1, 2, 3)


def test_upload_urls_obey_the_address_rules_and_cover_every_file(rig: Rig, moto: MotoServer) -> None:
    loopback = presigned_put(moto, "never.png", host="127.0.0.1")
    error = failed(rig.runsync({"workflow": colour_workflow(4), "upload_urls": {"2": [loopback]}}))
    assert "is not fetched: 127.0.0.1 is a loopback address" in error, error
    assert "X-Amz-Signature" not in error
    error = failed(rig.runsync({"workflow": colour_workflow(4), "upload_urls": {"7": [presigned_put(moto, "x")]}}))
    assert "input.upload_urls has no URL for colour_00001_.png (node 2)" in error, error
    error = failed(rig.runsync({"workflow": colour_workflow(4), "upload_urls": "https://example.com/x"}))
    assert "input.upload_urls must be an object of output node id" in error
    both = {"workflow": colour_workflow(4), "upload_urls": {"2": [loopback]}, "s3": own_destination(moto)}
    assert "input.s3 and input.upload_urls are both given" in failed(rig.runsync(both))
