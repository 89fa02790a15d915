"""Settings that change what a job returns or leaves behind, progress reports, metrics, and
`python -m handler --test_input`. Real processes on loopback; the handler is restarted per setting."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from tests.handler_harness import PYTHON, FileServer, Process, Recorder, Rig, RigShape


@pytest.fixture(scope="module")
def rig_shape(tmp_path_factory: pytest.TempPathFactory) -> RigShape:
    metrics = tmp_path_factory.mktemp("metrics")
    return RigShape(shared_env={"PROMETHEUS_MULTIPROC_DIR": str(metrics)}, handler_env=None)


def save_job(prefix: str = "set", side: int = 8) -> dict:
    return {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": side, "height": side, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
        }
    }


def preview_job() -> dict:
    return {
        "workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
    }


def test_temp_outputs_are_returned_when_asked_for(rig: Rig) -> None:
    rig.start_handler({"INCLUDE_TEMP_OUTPUTS": "true"})
    result = rig.runsync(preview_job())
    assert result["status"] == "COMPLETED", result
    [item] = result["output"]["images"]
    assert item["filename"].startswith("ComfyUI_temp_")
    assert item["type"] == "base64"


def test_with_clean_up_off_inputs_outputs_and_history_stay(rig: Rig) -> None:
    rig.start_handler({"CLEANUP_INPUTS": "false", "CLEANUP_OUTPUTS": "false", "CLEANUP_HISTORY": "false"})
    job = save_job("kept")
    job["workflow"]["3"] = {"class_type": "LoadImage", "inputs": {"image": "kept-in.png"}}
    job["workflow"]["4"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}
    job["images"] = [{"name": "kept-in.png", "image": tiny_png_b64()}]
    result = rig.runsync(job)
    assert result["status"] == "COMPLETED", result
    time.sleep(0.3)
    assert [name for name in rig.files("input") if name.endswith("-kept-in.png")]  # under the job's own name
    [output] = [name for name in rig.files("output") if name.endswith(result["output"]["images"][0]["filename"])]
    assert "/" in output  # in the job's own folder
    prompt_id = result["output"]["prompt_id"]
    assert prompt_id in rig.comfy_get(f"/history/{prompt_id}")


def tiny_png_b64() -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (1, 2, 3)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_response_over_the_limit_without_s3_fails_naming_files_sizes_and_the_fix(rig: Rig) -> None:
    rig.start_handler({"RESPONSE_SIZE_LIMIT_BYTES": "20000"})
    job = {
        "workflow": {
            "1": {"class_type": "StandinBigImages", "inputs": {"count": 2, "width": 64, "height": 64, "seed": 1}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "toobig"}},
        }
    }
    result = rig.runsync(job)
    assert result["status"] == "FAILED", result
    error = result["error"]
    assert "over the response limit of 0.0 MB (RESPONSE_SIZE_LIMIT_BYTES)" in error
    assert re.search(r"toobig_\d+_\.png \(0\.0 MB\), toobig_\d+_\.png", error), error
    assert "S3_BUCKET_NAME" in error


def test_progress_reaches_runpods_url_at_most_twice_a_second(rig: Rig) -> None:
    recorder = Recorder()
    try:
        rig.start_handler({"RUNPOD_WEBHOOK_POST_OUTPUT": f"{recorder.url}/done/$ID?x=1"})
        job = save_job("slow")
        sleep = {"seconds": 2.0, "steps": 20, "image": ["1", 0]}
        job["workflow"]["3"] = {"class_type": "StandinSleep", "inputs": sleep}
        job["workflow"]["2"]["inputs"]["images"] = ["3", 0]
        started = time.monotonic()
        result = rig.runsync(job)
        duration = time.monotonic() - started
        assert result["status"] == "COMPLETED", result
        rig.wait_for(lambda: len(recorder.posts) >= 2, 5, what="progress posts")
        time.sleep(0.3)  # progress_update posts from threads of its own
        posts = list(recorder.posts)
        assert all(path.startswith(f"/done/{result['id']}?x=1") for path, _ in posts), posts
        bodies = [body for _, body in posts]
        assert all(body["status"] == "IN_PROGRESS" for body in bodies), bodies
        assert len(bodies) <= 2 * duration + 1
        steps = [body["output"] for body in bodies if "step" in body["output"]]
        assert steps, bodies
        assert steps[-1]["class_type"] == "StandinSleep"
        assert re.fullmatch(r"node \d of 3 \(StandinSleep\), step \d+ of 20", steps[-1]["message"])
    finally:
        recorder.close()


def test_metrics_reach_the_sidecar(rig: Rig) -> None:
    rig.start_handler()
    assert rig.runsync(save_job("metrics"))["status"] == "COMPLETED"
    assert rig.runsync({"workflow": "not json"})["status"] == "FAILED"
    text = requests.get(f"http://127.0.0.1:{rig.sidecar_port}/metrics", timeout=5).text
    assert re.search(r'^comfy_worker_jobs_total\{outcome="success",reason="none"\} [1-9]', text, re.M), text
    assert re.search(r'^comfy_worker_jobs_total\{outcome="failed",reason="invalid_input"\} 1\.0', text, re.M)
    assert re.search(r'^comfy_worker_job_duration_seconds_count\{outcome="success"\} [1-9]', text, re.M)
    assert re.search(r"^comfy_worker_job_ready_wait_seconds_count [1-9]", text, re.M)
    assert re.search(r'^comfy_worker_output_bytes_total\{delivery="base64"\} [1-9]', text, re.M)
    assert re.search(r"^comfy_worker_jobs_in_progress 0\.0", text, re.M)


def test_a_comfy_org_key_is_accepted_and_never_logged(rig: Rig) -> None:
    """ComfyUI keeps the key out of /history and /queue, so its way into extra_data is checked
    in test_handler_units; here, that a job with keys works and no log line shows them."""
    rig.start_handler({"COMFY_ORG_API_KEY": "env-key-123"})
    job = save_job("key")
    assert rig.runsync(job)["status"] == "COMPLETED"
    assert rig.runsync({**job, "comfy_org_api_key": "input-key-456"})["status"] == "COMPLETED"
    log = "\n".join(rig.handler.lines)
    assert "env-key-123" not in log and "input-key-456" not in log


def test_a_download_over_its_limit_is_refused_naming_the_field(rig: Rig) -> None:
    rig.start_handler({"IMAGE_DOWNLOAD_MAX_BYTES": "1000"})
    server = FileServer({"/big.png": b"\x89PNG" + bytes(5000)})
    try:
        job = save_job("dl")
        job["images"] = [{"name": "big.png", "image": f"{server.url}/big.png"}]
        result = rig.runsync(job)
        assert result["status"] == "FAILED", result
        assert "input.images[0].image:" in result["error"]
        assert "the limit is 1000 bytes (IMAGE_DOWNLOAD_MAX_BYTES)" in result["error"]
    finally:
        server.close()


def run_test_input(rig: Rig, value: str, **env: str) -> Process:
    process = Process("handler --test_input", [PYTHON, "-m", "handler", "--test_input", value], rig.handler_env(env))
    process.popen.wait(60)
    process.stop()
    return process


def test_test_input_runs_one_job_from_a_file_and_refresh_worker_stops_the_pod(rig: Rig, tmp_path: Path) -> None:
    path = tmp_path / "test_input.json"
    path.write_text(json.dumps({"input": save_job("file")}))
    process = run_test_input(rig, str(path), REFRESH_WORKER="true")
    assert process.popen.returncode == 0, process.output()
    assert any("'stopPod': True" in line for line in process.lines), process.output()


def test_test_input_exits_1_when_its_job_fails(rig: Rig) -> None:
    process = run_test_input(rig, json.dumps({"input": {"workflow": {}}}))
    assert process.popen.returncode == 1, process.output()
    assert any("input.workflow is empty" in line for line in process.lines), process.output()


def test_a_bad_setting_stops_the_handler_with_exit_78_and_one_clear_line(rig: Rig) -> None:
    process = run_test_input(rig, "{}", JOB_TIMEOUT_S="soon")
    assert process.popen.returncode == 78
    assert any("configuration error: JOB_TIMEOUT_S='soon' is not a number" in line for line in process.lines)


def test_a_long_job_logs_where_it_is_at_a_modest_rate(rig: Rig) -> None:
    rig.start_handler()
    job = {
        "workflow": {
            "1": {"class_type": "StandinSleep", "inputs": {"seconds": 5.6, "steps": 56}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
    }
    assert rig.runsync(job)["status"] == "COMPLETED"
    progress = [
        line for line in rig.handler.lines if re.search(r"INFO .*: job \S+: node \d+ of 2 \(StandinSleep\)", line)
    ]
    assert len(progress) == 1, rig.handler.output()  # one line per 5 s of work
    assert re.search(r"step \d+ of 56", progress[0]), progress
