"""The first job's likely models read ahead while ComfyUI starts (launcher/prefetch.py): copied to the
container's disk (worker_common/model_cache.py) or read into memory; and the record of recent jobs'
models workers keep on the volume (worker_common/recent_models.py).

Through the emulated volume: after a read into memory, the loader's read is served from memory
where the client keeps file data across opens (close-to-open), and costs the volume every byte
again where it drops it (the pessimistic end); a copy on the disk costs the volume nothing again
at either end.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from launcher import prefetch
from worker_common import model_cache, recent_models
from worker_common.layout import Layout

MODEL_BYTES = 6 << 20
ODD_BYTES = (5 << 20) + 12345


def make_volume(root: Path) -> Path:
    comfy = root / "ComfyUI"
    for folder, name, size in (
        ("checkpoints", "base.safetensors", MODEL_BYTES),
        ("loras", "style.safetensors", MODEL_BYTES),
        ("vae", "v.pt", ODD_BYTES),  # not a multiple of a disk block: the copy's last write is padded, then cut
    ):
        (comfy / "models" / folder).mkdir(parents=True, exist_ok=True)
        (comfy / "models" / folder / name).write_bytes(os.urandom(size))
    return comfy


def layout_of(comfy: Path, worker: str = "worker-a") -> Layout:
    return Layout(comfyui_dir=comfy, venv=comfy / "venv", data_dir=comfy.parent / "data", worker_id=worker)


def settings_of(cache: Path, **changes: object) -> prefetch.Settings:
    values: dict[str, object] = {
        "enabled": True,
        "memory_bytes": 10**12,
        "streams": 3,
        "timeout_s": 60.0,
        "warmup_workflow": None,
        "cache_dir": cache,
        "disk_bytes": 0,
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
    warmup, recent = prefetch.workflow_models(workflow), recent_models.endpoint_recent(comfy)
    found = prefetch.likely_models(layout_of(comfy), warmup, recent)
    models = comfy / "models"
    assert found == {
        "checkpoints/base.safetensors": models / "checkpoints" / "base.safetensors",
        "vae/v.pt": models / "vae" / "v.pt",
    }
    # Before ComfyUI starts, only the folders, no model looked up; never one out of the cache.
    assert prefetch.likely_folders(layout_of(comfy), [], recent) == {"vae", "checkpoints", "loras"}
    assert prefetch.likely_folders(layout_of(comfy), warmup, []) == {"checkpoints", "loras", "vae"}


def test_the_prefetch_is_a_start_up_phase_in_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from healthcheck.collectors import StartupPhasesCollector

    comfy = make_volume(tmp_path)
    recent_models.RecentModels(comfy, "worker-b").loaded(["vae/v.pt"])
    monkeypatch.setenv("WORKER_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("WORKER_STARTED_AT", str(time.time() - 7))
    (tmp_path / "run").mkdir()
    settings = settings_of(tmp_path / "cache")
    prefetch.run(settings, prefetch.likely_models(layout_of(comfy), [], recent_models.endpoint_recent(comfy)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StartupPhasesCollector(tmp_path / "run", 0.5))
    text = generate_latest(registry).decode()
    assert 'comfy_worker_startup_phase_seconds{phase="supervisord_up"} 0.5' in text
    line = next(line for line in text.splitlines() if 'phase="models_prefetched"' in line)
    assert 7 <= float(line.split()[-1]) < 600
    read = next(line for line in text.splitlines() if line.startswith("comfy_worker_startup_prefetch_bytes "))
    assert float(read.split()[-1]) == ODD_BYTES
    assert "comfy_worker_startup_prefetch_files 1.0" in text
    assert "comfy_worker_startup_prefetch_kept_files 0.0" in text, "nothing on the disk from a last start"
    assert 'phase="first_job_done"' not in text, "not reached yet"


def all_models(comfy: Path) -> dict[str, Path]:
    return {path.relative_to(comfy / "models").as_posix(): path for path in sorted((comfy / "models").rglob("*.*"))}


def read_ahead(likely: dict[str, Path], settings: prefetch.Settings) -> tuple[list[prefetch.Planned], int]:
    """(what was planned, bytes read)."""
    kept = prefetch.keep_whole(settings.cache_dir, likely)
    planned = prefetch.plan(likely, kept, settings)
    return planned, prefetch.prefetch(planned, settings, kept)[1]


def test_reads_within_the_disk_and_memory_budgets(tmp_path: Path) -> None:
    likely = all_models(make_volume(tmp_path))
    memory_only = settings_of(tmp_path / "cache", memory_bytes=MODEL_BYTES + 1000)
    planned, read = read_ahead(likely, memory_only)
    assert [(item.to_disk, item.size) for item in planned] == [(False, MODEL_BYTES), (False, 1000)]
    assert read == MODEL_BYTES + 1000
    assert read_ahead(likely, settings_of(tmp_path / "cache", timeout_s=0.0))[1] == 0
    both = settings_of(tmp_path / "cache", disk_bytes=2 * MODEL_BYTES, memory_bytes=MODEL_BYTES)
    planned, read = read_ahead(likely, both)
    assert [item.to_disk for item in planned] == [True, True, False]
    assert read == 2 * MODEL_BYTES + ODD_BYTES
    index = model_cache.read_index(tmp_path / "cache")
    assert sorted(index.files) == ["checkpoints/base.safetensors", "loras/style.safetensors"]
    assert not index.pending and index.writer_pid is None


def test_a_copy_is_whole_kept_while_unchanged_and_never_served_stale(tmp_path: Path) -> None:
    comfy = make_volume(tmp_path)
    cache = tmp_path / "cache"
    likely = all_models(comfy)
    settings = settings_of(cache, disk_bytes=10**12)
    said = prefetch.run(settings, likely)
    assert said.startswith("3 model file(s), 18 MB read"), said
    assert "copied to the container's disk: checkpoints/base.safetensors, loras/style.safetensors, vae/v.pt" in said
    volume_file, copy = likely["checkpoints/base.safetensors"], cache / "checkpoints" / "base.safetensors"
    assert copy.read_bytes() == volume_file.read_bytes()
    assert (cache / "vae" / "v.pt").read_bytes() == likely["vae/v.pt"].read_bytes()
    assert copy.stat().st_mtime_ns == volume_file.stat().st_mtime_ns
    assert oct(copy.stat().st_mode & 0o777) == "0o644" and oct(copy.parent.stat().st_mode & 0o777) == "0o755"
    assert model_cache.copy_of(cache, model_cache.Source.of(volume_file)) == copy

    said = prefetch.run(settings, likely)  # the container's next start: nothing read again
    assert said.startswith("0 model file(s), 0 MB read") and "kept from the last start" in said, said

    volume_file.write_bytes(os.urandom(MODEL_BYTES))  # the operator replaced it
    assert model_cache.copy_of(cache, model_cache.Source.of(volume_file)) is None, "never hashed from a stale copy"
    waited, dropped = model_cache.ready_for(cache, {"checkpoints//base.safetensors": volume_file}, 10)
    assert dropped == ["checkpoints/base.safetensors"] and not copy.exists(), "the job reads the volume's file"
    assert waited < 5, "nothing was being copied"
    (cache / "vae" / ".stray.partial").write_bytes(b"x")
    del likely["loras/style.safetensors"]  # no longer likely
    said = prefetch.run(settings, likely)
    assert "copied to the container's disk: checkpoints/base.safetensors" in said
    assert copy.read_bytes() == volume_file.read_bytes()
    left = sorted(path.relative_to(cache).as_posix() for path in cache.rglob("*") if path.is_file())
    assert left == [".read-ahead.lock", "checkpoints/base.safetensors", "index.json", "vae/v.pt"]
    assert sorted(model_cache.read_index(cache).files) == ["checkpoints/base.safetensors", "vae/v.pt"], "as on disk"


def test_comfyui_searches_the_copies_first(tmp_path: Path) -> None:
    from standin.ComfyUI.standin_server import paths

    comfy = make_volume(tmp_path)
    cache = tmp_path / "cache"
    likely = {"checkpoints/base.safetensors": comfy / "models" / "checkpoints" / "base.safetensors"}
    args = prefetch.cache_args(settings_of(cache, disk_bytes=10**12), {"checkpoints"})
    assert args == ["--extra-model-paths-config", str(cache / "extra_model_paths.yaml")]
    assert prefetch.cache_args(settings_of(cache), {"checkpoints"}) == [], "MODEL_CACHE_DISK_MB=0: no copies"
    paths.configure(str(comfy))
    paths.load_extra_model_paths(args[1])
    assert paths.folders().models["checkpoints"] == [str(cache / "checkpoints"), str(comfy / "models" / "checkpoints")]
    assert paths.get_full_path_or_raise("checkpoints", "base.safetensors").startswith(str(comfy)), "not copied yet"
    prefetch.run(settings_of(cache, disk_bytes=10**12), likely)
    copy = cache / "checkpoints" / "base.safetensors"
    assert paths.get_full_path_or_raise("checkpoints", "base.safetensors") == str(copy)


def test_a_job_waits_for_its_models_while_they_are_copied(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    source = model_cache.Source("/v/a.safetensors", 1, 1)
    busy = model_cache.Index({}, frozenset({"checkpoints/a.safetensors"}), os.getpid())
    model_cache.write_index(cache, busy)
    # Each wait that must not happen is given 60 s: returning well before that is the behaviour.
    assert model_cache.wait_for(cache, ["checkpoints/other.safetensors"], 60) < 30, "not its model: no wait"
    assert 0.3 <= model_cache.wait_for(cache, ["checkpoints/a.safetensors"], 0.3) < 30, "its model: bounded"
    model_cache.write_index(cache, model_cache.Index({"checkpoints/a.safetensors": source}, frozenset(), None))
    assert model_cache.wait_for(cache, ["checkpoints/a.safetensors"], 60) < 30, "copied"
    gone = model_cache.Index({}, frozenset({"checkpoints/a.safetensors"}), 2**22 + 12345)  # above any pid_max
    model_cache.write_index(cache, gone)
    assert model_cache.wait_for(cache, ["checkpoints/a.safetensors"], 60) < 30, "the read-ahead died: no wait"


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse and root")
def test_through_the_emulated_volume_the_loader_reads_nothing_from_it_again(tmp_path: Path) -> None:
    from bench.netvol import CLOSE_TO_OPEN, PESSIMISTIC, mounted

    comfy = make_volume(tmp_path / "volume")
    recent_models.RecentModels(comfy, "worker-b").loaded(["checkpoints/base.safetensors"])
    mnt = tmp_path / "mnt"
    loads = {}
    said = {}
    for name, volume_settings in (("close-to-open", CLOSE_TO_OPEN), ("pessimistic", PESSIMISTIC)):
        with mounted(comfy.parent, mnt, volume_settings) as volume:
            model = mnt / "ComfyUI" / "models" / "checkpoints" / "base.safetensors"
            in_memory = settings_of(tmp_path / f"cache-{name}")
            recent = recent_models.endpoint_recent(mnt / "ComfyUI")
            said[name] = prefetch.run(in_memory, prefetch.likely_models(layout_of(mnt / "ComfyUI"), [], recent))
            volume.reset()
            model.read_bytes()  # the loader
            loads[name] = volume.stats()["bytes_read"]
            volume.reset()
            planned = [prefetch.Planned("m", model_cache.Source.of(model), False, MODEL_BYTES)]
            prefetch.prefetch(planned, in_memory, {})
            model.read_bytes()  # read into memory regardless: what it would have cost
            both = volume.stats()["bytes_read"]
            on_disk = settings_of(tmp_path / f"disk-{name}", disk_bytes=10**12)
            prefetch.run(on_disk, {"checkpoints/base.safetensors": model})
            volume.reset()
            copy = (on_disk.cache_dir / "checkpoints" / "base.safetensors").read_bytes()  # the loader
            assert volume.stats()["bytes_read"] == 0, "the copy costs the volume nothing again"
            assert copy == (comfy / "models" / "checkpoints" / "base.safetensors").read_bytes()
            odd = mnt / "ComfyUI" / "models" / "vae" / "v.pt"
            prefetch.run(on_disk, {"vae/v.pt": odd})
            pieces = volume.stats()["calls"]["read"]
            assert (on_disk.cache_dir / "vae" / "v.pt").read_bytes() == (comfy / "models" / "vae" / "v.pt").read_bytes()
            # Around the client's page cache: 1 MiB requests, not the page cache's 128 KiB pieces (and a probe per run).
            assert pieces <= ODD_BYTES // (1 << 20) + 1 + 2 * on_disk.streams, pieces
        if name == "pessimistic":
            assert both >= 2 * MODEL_BYTES, "a client that drops data at open pays the bytes twice"
    assert said["close-to-open"].startswith("1 model file(s), 6 MB read"), said
    assert "read into memory: checkpoints/base.safetensors" in said["close-to-open"]
    assert said["pessimistic"].startswith("not read ahead: no copy fits MODEL_CACHE_DISK_MB"), said
    assert loads == {"close-to-open": 0, "pessimistic": MODEL_BYTES}


def test_a_client_that_refuses_to_read_around_its_cache_is_read_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    likely = all_models(make_volume(tmp_path))
    real_open, real_preadv = os.open, os.preadv

    def refusing_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_DIRECT and "models" in str(path):
            raise OSError(errno.EINVAL, "O_DIRECT refused", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def refusing_read(fd: int, buffers: list, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT read refused")
        return real_preadv(fd, buffers, offset)

    for name, patch in (("open", refusing_open), ("preadv", refusing_read)):
        with monkeypatch.context() as patched:
            patched.setattr(os, name, patch)
            settings = settings_of(tmp_path / f"cache-{name}", disk_bytes=10**12)
            said = prefetch.run(settings, likely)
        assert said.startswith("3 model file(s), 18 MB read"), said
        for model, volume_file in likely.items():
            assert (settings.cache_dir / model).read_bytes() == volume_file.read_bytes(), (name, model)


def test_the_handler_hashes_a_model_from_its_copy(tmp_path: Path) -> None:
    from handler.model_hashes import ModelHashes

    comfy = make_volume(tmp_path)
    cache = tmp_path / "cache"
    volume_file = comfy / "models" / "vae" / "v.pt"
    prefetch.run(settings_of(cache, disk_bytes=10**12), {"vae/v.pt": volume_file})
    copy = cache / "vae" / "v.pt"
    marked = b"copy" + copy.read_bytes()[4:]  # the copy told apart from its source, size and mtime kept
    copy.write_bytes(marked)
    os.utime(copy, ns=(volume_file.stat().st_mtime_ns, volume_file.stat().st_mtime_ns))
    hashes = ModelHashes(functools.partial(model_cache.copy_of, cache))
    assert hashes.sha256(volume_file) == (ODD_BYTES, hashlib.sha256(marked).hexdigest())
    volume_file.write_bytes(b"new")
    assert hashes.sha256(volume_file) == (3, hashlib.sha256(b"new").hexdigest()), "a changed source: the volume's"
