"""The first job's likely models read into memory while ComfyUI starts (launcher/prefetch.py), and the
record of recent jobs' models workers keep on the volume (worker_common/recent_models.py).

Through the emulated volume: after a prefetch, the loader's read is served from memory where the
client keeps file data across opens (close-to-open), and costs the volume every byte again where
it drops it (the pessimistic end).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from launcher import prefetch
from worker_common import recent_models
from worker_common.layout import Layout

MODEL_BYTES = 6 << 20


def make_volume(root: Path) -> Path:
    comfy = root / "ComfyUI"
    for folder, name in (("checkpoints", "base.safetensors"), ("loras", "style.safetensors"), ("vae", "v.pt")):
        (comfy / "models" / folder).mkdir(parents=True, exist_ok=True)
        (comfy / "models" / folder / name).write_bytes(os.urandom(MODEL_BYTES))
    return comfy


def layout_of(comfy: Path, worker: str = "worker-a") -> Layout:
    return Layout(comfyui_dir=comfy, venv=comfy / "venv", data_dir=comfy.parent / "data", worker_id=worker)


def settings_of(**changes: object) -> prefetch.Settings:
    values: dict[str, object] = {
        "enabled": True,
        "memory_bytes": 10**12,
        "streams": 3,
        "timeout_s": 60.0,
        "warmup_workflow": None,
    }
    return prefetch.Settings(**(values | changes))  # type: ignore[arg-type]


def test_each_worker_keeps_its_own_record_of_recent_models(tmp_path: Path) -> None:
    comfy = make_volume(tmp_path)
    mine = recent_models.RecentModels(comfy, "worker-a")
    mine.loaded(["checkpoints/base.safetensors", "vae/v.pt"])
    record = recent_models.folder(comfy) / "worker-a.json"
    written = record.stat().st_mtime_ns
    mine.loaded(["checkpoints/base.safetensors", "vae/v.pt"])
    assert record.stat().st_mtime_ns == written, "written only when the list changes"
    os.utime(record, ns=(written - 10**9, written - 10**9))  # older than worker-b's
    other = recent_models.RecentModels(comfy, "worker-b")
    other.loaded(["loras/style.safetensors"])
    mine_again = recent_models.RecentModels(comfy, "worker-a")
    assert mine_again.names == ["checkpoints/base.safetensors", "vae/v.pt"], "read back at the next start"
    mine_again.loaded([f"checkpoints/{index}.safetensors" for index in range(30)])
    assert len(mine_again.names) == recent_models.KEPT
    assert sorted(path.name for path in recent_models.folder(comfy).iterdir()) == ["worker-a.json", "worker-b.json"]
    assert recent_models.endpoint_recent(comfy)[0] == "checkpoints/0.safetensors", "the newest record first"


def test_the_warmup_workflows_models_come_first_then_recent_ones(tmp_path: Path) -> None:
    comfy = make_volume(tmp_path)
    workflow = tmp_path / "warmup.json"
    loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}}
    workflow.write_text(json.dumps({"1": loader, "2": {"class_type": "X", "inputs": {"text": "a cat", "n": 3}}}))
    record = recent_models.RecentModels(comfy, "worker-b")
    record.loaded(["vae/v.pt", "checkpoints/base.safetensors", "../../etc/passwd.pt", "loras/gone.safetensors"])
    found = prefetch.likely_models(layout_of(comfy), settings_of(warmup_workflow=workflow))
    models = comfy / "models"
    assert found == [models / "checkpoints" / "base.safetensors", models / "vae" / "v.pt"]


def test_the_prefetch_is_a_start_up_phase_in_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from healthcheck.collectors import StartupPhasesCollector

    comfy = make_volume(tmp_path)
    recent_models.RecentModels(comfy, "worker-b").loaded(["vae/v.pt"])
    monkeypatch.setenv("WORKER_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("WORKER_STARTED_AT", str(time.time() - 7))
    (tmp_path / "run").mkdir()
    prefetch.run(layout_of(comfy), settings_of())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StartupPhasesCollector(tmp_path / "run", 0.5))
    text = generate_latest(registry).decode()
    assert 'comfy_worker_startup_phase_seconds{phase="supervisord_up"} 0.5' in text
    line = next(line for line in text.splitlines() if 'phase="models_prefetched"' in line)
    assert 7 <= float(line.split()[-1]) < 600
    read = next(line for line in text.splitlines() if line.startswith("comfy_worker_startup_prefetch_bytes "))
    assert float(read.split()[-1]) == MODEL_BYTES
    assert "comfy_worker_startup_prefetch_files 1.0" in text
    assert 'phase="first_job_done"' not in text, "not reached yet"


def test_reads_within_the_memory_budget(tmp_path: Path) -> None:
    comfy = make_volume(tmp_path)
    paths = sorted((comfy / "models").rglob("*.*"))
    files, read, _ = prefetch.prefetch(paths, settings_of(memory_bytes=MODEL_BYTES + 1000))
    assert (files, read) == (2, MODEL_BYTES + 1000)
    assert prefetch.prefetch(paths, settings_of())[:2] == (3, 3 * MODEL_BYTES)
    assert prefetch.prefetch(paths, settings_of(timeout_s=0.0))[:2] == (0, 0)


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse and root")
def test_through_the_emulated_volume_the_loader_reads_from_memory_where_the_client_keeps_data(tmp_path: Path) -> None:
    from bench.netvol import CLOSE_TO_OPEN, PESSIMISTIC, mounted

    comfy = make_volume(tmp_path / "volume")
    recent_models.RecentModels(comfy, "worker-b").loaded(["checkpoints/base.safetensors"])
    mnt = tmp_path / "mnt"
    loads = {}
    said = {}
    for name, volume_settings in (("close-to-open", CLOSE_TO_OPEN), ("pessimistic", PESSIMISTIC)):
        with mounted(comfy.parent, mnt, volume_settings) as volume:
            said[name] = prefetch.run(layout_of(mnt / "ComfyUI"), settings_of())
            volume.reset()
            (mnt / "ComfyUI" / "models" / "checkpoints" / "base.safetensors").read_bytes()  # the loader
            loads[name] = volume.stats()["bytes_read"]
            model = mnt / "ComfyUI" / "models" / "checkpoints" / "base.safetensors"
            volume.reset()
            prefetch.prefetch([model], settings_of())  # read ahead regardless: what it would have cost
            model.read_bytes()
            both = volume.stats()["bytes_read"]
        if name == "pessimistic":
            assert both >= 2 * MODEL_BYTES, "a client that drops data at open pays the bytes twice"
    assert said["close-to-open"].startswith("1 model file(s), 6 MB read"), said
    assert said["pessimistic"].startswith("not read ahead: the volume's client drops"), said
    assert loads == {"close-to-open": 0, "pessimistic": MODEL_BYTES}
