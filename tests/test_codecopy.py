"""The copy of ComfyUI's code on the container's disk (launcher/codecopy.py).

Correct (files, modes, mtimes, links, models left on the volume, venv scripts and bytecode), a
changed volume never served stale, reused after a restart, a fresh worker taking another's
manifest from the volume, budgets, two workers on one volume, and through the emulated volume:
only the worker's own manifest is written to it, and a restart's check costs one look-up per entry.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import codecopy, lookup
from worker_common.layout import Layout

CALL_ANY = 0.0  # CODE_COPY_MIN_CALL_MS that copies even from a local folder


def make_install(root: Path) -> Path:
    """A small ComfyUI install with a real venv, models and the folders never copied."""
    comfy = root / "ComfyUI"
    (comfy / "custom_nodes" / "pack").mkdir(parents=True)
    (comfy / "main.py").write_text("import pack_helper\nprint('main')\n")
    (comfy / "custom_nodes" / "pack" / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (comfy / "custom_nodes" / "pack" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (comfy / "custom_nodes" / "pack" / "run.sh").chmod(0o755)
    (comfy / "custom_nodes" / "link.py").symlink_to("pack/__init__.py")
    for folder in ("models/checkpoints", "input", "output", "user", "temp", ".git"):
        (comfy / folder).mkdir(parents=True)
    (comfy / "models" / "checkpoints" / "model.safetensors").write_bytes(b"\0" * 1000)
    (comfy / "input" / "photo.png").write_bytes(b"png")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(comfy / "com_venv")], check=True)
    site = next((comfy / "com_venv" / "lib").glob("python3*/site-packages"))
    (site / "pack_helper.py").write_text("VALUE = 1\n")
    (comfy / "com_venv" / "bin" / "tool").write_text(f"#!{comfy / 'com_venv' / 'bin' / 'python'}\nprint(1)\n")
    return comfy


def layout_for(comfy: Path, data: Path, worker: str = "worker-a") -> Layout:
    return Layout(comfyui_dir=comfy, venv=comfy / "com_venv", data_dir=data / "comfyui", worker_id=worker)


def settings_for(data: Path, **changes: object) -> codecopy.Settings:
    base = codecopy.Settings(True, data / "code", 10**12, 8, CALL_ANY)
    return dataclasses.replace(base, **changes)


@pytest.fixture
def install(tmp_path: Path) -> Path:
    return make_install(tmp_path / "volume")


def test_the_copy_is_the_code_and_runs(install: Path, tmp_path: Path) -> None:
    result = codecopy.sync(layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w"))
    copy = result.comfyui_dir
    assert result.copied and copy == tmp_path / "w" / "code" / "ComfyUI" and result.venv == copy / "com_venv"
    assert (copy / "main.py").read_text() == (install / "main.py").read_text()
    assert (copy / "main.py").stat().st_mtime_ns == (install / "main.py").stat().st_mtime_ns
    assert os.access(copy / "custom_nodes" / "pack" / "run.sh", os.X_OK)
    assert os.readlink(copy / "custom_nodes" / "link.py") == "pack/__init__.py"
    assert os.readlink(copy / "models") == str(install / "models")
    assert not any((copy / name).exists() for name in ("input", "output", "user", "temp", ".git"))
    assert (copy / "com_venv" / "bin" / "tool").read_text().startswith(f"#!{copy / 'com_venv' / 'bin' / 'python'}\n")
    assert list((copy / "__pycache__").glob("main.*.pyc")), "bytecode compiled into the copy"
    assert not (install / "__pycache__").exists(), "nothing compiled on the volume"
    done = subprocess.run(
        [
            str(copy / "com_venv" / "bin" / "python"),
            "-c",
            "import sys, pack_helper; print(sys.prefix, pack_helper.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [
        str(copy / "com_venv"),
        str(next(copy.glob("com_venv/lib/python3*/site-packages")) / "pack_helper.py"),
    ]


def touch_later(path: Path, text: str) -> None:
    """Change a file in place, same size, a later mtime (as an editor saving over it)."""
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_changed_volume_is_never_served_stale(install: Path, tmp_path: Path) -> None:
    layout, settings = layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w")
    copy = codecopy.sync(layout, settings).comfyui_dir
    touch_later(install / "main.py", "print('new')\n" + " " * (len("import pack_helper\nprint('main')\n") - 13))
    (install / "custom_nodes" / "fresh" / "sub").mkdir(parents=True)
    (install / "custom_nodes" / "fresh" / "sub" / "node.py").write_text("X = 2\n")
    (install / "custom_nodes" / "pack" / "run.sh").unlink()
    result = codecopy.sync(layout, settings)
    assert (copy / "main.py").read_text().startswith("print('new')")
    assert (copy / "custom_nodes" / "fresh" / "sub" / "node.py").read_text() == "X = 2\n"
    assert not (copy / "custom_nodes" / "pack" / "run.sh").exists()
    assert (result.files_copied, result.removed) == (2, 1)


@pytest.mark.parametrize("check", ["files", "folders"])
def test_a_folder_that_became_a_file_a_link_or_nothing_is_seen(install: Path, tmp_path: Path, check: str) -> None:
    layout, settings = layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w", check=check)
    for name in ("to_file", "to_link", "gone"):
        (install / "custom_nodes" / name / "inner").mkdir(parents=True)
        (install / "custom_nodes" / name / "inner" / "node.py").write_text("N = 1\n")
    copy = codecopy.sync(layout, settings).comfyui_dir
    for name in ("to_file", "to_link", "gone"):
        shutil.rmtree(install / "custom_nodes" / name)
    (install / "custom_nodes" / "to_file").write_text("F = 1\n")
    (install / "custom_nodes" / "to_link").symlink_to("pack")
    codecopy.sync(layout, settings)
    assert (copy / "custom_nodes" / "to_file").read_text() == "F = 1\n"
    assert os.readlink(copy / "custom_nodes" / "to_link") == "pack"
    assert not (copy / "custom_nodes" / "gone").exists()
    assert not (copy / "custom_nodes" / "pack" / "inner").exists()


def add_schemas(install: Path, files: int = 25) -> Path:
    """A package with a big folder of data below it (as botocore/data, cfnlint's schemas, torch/include)."""
    package = next(install.glob("com_venv/lib/python3*/site-packages")) / "pkg"
    (package / "schemas" / "deep").mkdir(parents=True)
    (package / "__init__.py").write_text("import json, pathlib\nHERE = pathlib.Path(__file__).parent\n")
    for index in range(files):
        (package / "schemas" / f"s{index}.json").write_text(f'{{"n": {index}}}')
    (package / "schemas" / "deep" / "d.json").write_text("{}")
    return package / "schemas"


def test_a_big_data_folder_is_read_from_the_volume_not_copied_nor_checked(install: Path, tmp_path: Path) -> None:
    schemas = add_schemas(install)
    layout, settings = layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w", data_link_min_files=20)
    first = codecopy.sync(layout, settings)
    linked = first.venv / schemas.relative_to(install / "com_venv")
    assert os.readlink(linked) == str(schemas) and first.linked == 1
    assert (linked.parent / "__init__.py").is_file() and not (linked.parent / "__init__.py").is_symlink()
    assert "1 data folders linked" in first.describe()
    touch_later(schemas / "s1.json", '{"n": 9}')  # live: what ComfyUI reads is the volume's
    again = codecopy.sync(layout, settings)
    assert (again.files_copied, again.removed, again.linked) == (0, 0, 1)
    assert (linked / "s1.json").read_text() == '{"n": 9}'
    (schemas / "loader.py").write_text("LOADED = 1\n")  # code in it now: the folder is copied after all
    third = codecopy.sync(layout, settings)
    assert third.linked == 0 and linked.is_dir() and not linked.is_symlink()
    assert (linked / "loader.py").read_text() == "LOADED = 1\n" and (linked / "deep" / "d.json").read_text() == "{}"
    assert third.files_copied == 27  # 25 schemas, deep/d.json and loader.py
    (schemas / "loader.py").unlink()
    fourth = codecopy.sync(layout, settings)
    assert fourth.linked == 1 and os.readlink(linked) == str(schemas)
    assert fourth.removed == 29  # the copied folder, all it held
    unlinked = codecopy.sync(layout, dataclasses.replace(settings, data_link_min_files=0))
    assert unlinked.linked == 0 and (linked / "deep" / "d.json").is_file() and not linked.is_symlink()


@pytest.mark.parametrize("executable", [False, True])
def test_a_folder_is_data_only_without_code(install: Path, tmp_path: Path, executable: bool) -> None:
    schemas = add_schemas(install)
    (schemas / "deep" / "tool").write_text("#!/bin/sh\n")
    (schemas / "deep" / "tool").chmod(0o755 if executable else 0o644)
    copy = codecopy.sync(layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w", data_link_min_files=20))
    assert copy.linked == (0 if executable else 1)


def test_a_restart_reuses_the_copy(install: Path, tmp_path: Path) -> None:
    layout, settings = layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w")
    first = codecopy.sync(layout, settings)
    again = codecopy.sync(layout, settings)
    assert first.files_copied > 5 and first.entries == again.entries
    assert (again.files_copied, again.bytes_copied, again.removed) == (0, 0, 0)
    assert "check" in again.phases and "walk" not in again.phases


def test_a_copy_cut_short_is_made_again_in_full(install: Path, tmp_path: Path) -> None:
    layout, settings = layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w")
    copy = codecopy.sync(layout, settings).comfyui_dir
    (settings.copy_dir / codecopy.LOCAL_MANIFEST).unlink()  # as a container killed while copying leaves it
    (copy / "custom_nodes" / "left_over.py").write_text("stale\n")
    (copy / "main.py").write_text("half")
    codecopy.sync(layout, settings)
    assert not (copy / "custom_nodes" / "left_over.py").exists()
    assert (copy / "main.py").read_text() == (install / "main.py").read_text()


def test_two_workers_share_the_volume_and_a_fresh_one_takes_a_manifest(install: Path, tmp_path: Path) -> None:
    first = codecopy.sync(layout_for(install, tmp_path / "a", "worker-a"), settings_for(tmp_path / "a"))
    assert first.phases.keys() >= {"walk"}
    manifests = install / ".comfy-worker" / "code"
    assert [path.name for path in manifests.iterdir()] == ["worker-a.json"]
    touch_later(install / "custom_nodes" / "pack" / "__init__.py", "NODE_CLASS_MAPPINGS = {1}\n")
    second = codecopy.sync(layout_for(install, tmp_path / "b", "worker-b"), settings_for(tmp_path / "b"))
    assert "check" in second.phases and "walk" not in second.phases, "a fresh worker needs no walk"
    assert (second.comfyui_dir / "custom_nodes" / "pack" / "__init__.py").read_text() == "NODE_CLASS_MAPPINGS = {1}\n"
    assert sorted(path.name for path in manifests.iterdir()) == ["worker-a.json", "worker-b.json"]
    assert not (second.comfyui_dir / ".comfy-worker").exists()


def test_budgets_and_a_fast_volume_run_comfyui_from_the_volume(install: Path, tmp_path: Path) -> None:
    layout = layout_for(install, tmp_path / "w")
    over = codecopy.sync(layout, settings_for(tmp_path / "w", disk_budget_bytes=1000))
    assert not over.copied and over.comfyui_dir == install and "CODE_COPY_DISK_BUDGET_MB" in over.reason
    assert not (tmp_path / "w" / "code" / "ComfyUI" / "main.py").exists()
    fast = codecopy.sync(layout, settings_for(tmp_path / "w", min_call_ms=1000.0))
    assert not fast.copied and "CODE_COPY_MIN_CALL_MS" in fast.reason
    off = codecopy.sync(layout, settings_for(tmp_path / "w", enabled=False))
    assert not off.copied and off.venv == install / "com_venv"


def test_a_missing_install_is_left_to_the_launch_checks(tmp_path: Path) -> None:
    result = codecopy.sync(layout_for(tmp_path / "nothing", tmp_path / "w"), settings_for(tmp_path / "w"))
    assert not result.copied and result.comfyui_dir == tmp_path / "nothing" and "the copy failed" in result.reason


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse and root")
def test_through_the_emulated_volume_only_the_manifest_is_written(install: Path, tmp_path: Path) -> None:
    from bench.netvol import Settings, mounted

    package = next(install.glob("com_venv/lib/python3*/site-packages")) / "deep"
    for folder in (package / "a" / "b" / "c" / str(n) for n in range(10)):  # as a venv's packages: deep, many files
        folder.mkdir(parents=True)
        for name in range(30):
            (folder / f"m{name}.py").write_text("")
    schemas = add_schemas(install, files=300)  # a data folder: linked, neither copied nor checked
    before = {path: path.stat().st_mtime_ns for path in install.rglob("*")}
    mnt = tmp_path / "mnt"
    with mounted(install.parent, mnt, Settings(rtt_ms=0)) as volume:
        layout, settings = layout_for(mnt / "ComfyUI", tmp_path / "w"), settings_for(tmp_path / "w")
        first = codecopy.sync(layout, settings)
        volume.reset()
        again = codecopy.sync(layout, settings)
        calls = volume.stats()["calls"]
    assert first.copied and again.files_copied == 0
    assert calls.get("open", 0) == calls.get("read", 0) == calls.get("readdir", 0) == 0, calls
    # Uncached, every look-up costs the folder's attributes (the kernel checks its permissions) and the name's;
    # no path is resolved twice: a folder is opened once, relative to its parent, and its names looked up in it.
    entries = codecopy.read_manifest(settings.copy_dir / codecopy.LOCAL_MANIFEST, codecopy.Tree(layout))
    data = f"{schemas.relative_to(install)}/"
    assert again.linked == 1 and sum(rel.startswith(data) for rel in entries) == 302
    checked = [rel for rel in entries if not rel.startswith(data)]
    folders = sum(entries[rel][0] == "d" for rel in checked)
    fixed = 10 * codecopy.PROBE_CALLS + 100  # the probes (a few calls each), the install's folder, the manifest kept
    assert calls["getattr"] <= 2 * len(checked) + fixed, "a restart's check: one look-up per entry, no reads"
    assert calls["opendir"] <= folders + 2, "each folder opened once"
    written = {path for path in install.rglob("*") if before.get(path) != path.stat().st_mtime_ns}
    kept = install / ".comfy-worker" / "code"
    assert written == {kept.parent, kept, kept / "worker-a.json"}


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse and root")
def test_a_look_ups_attributes_stand_for_a_getattr_only_on_fuse(install: Path, tmp_path: Path) -> None:
    """On FUSE the look-up's answer carries fresh attributes: one call less per entry. An NFS client may keep a
    name's attributes as long as the name, so elsewhere the client's own stat decides."""
    from bench.netvol import Settings, mounted

    assert not lookup.looked_up_attributes_are_fresh(install)
    with mounted(install.parent, tmp_path / "mnt", Settings(rtt_ms=0)) as volume:
        comfy = tmp_path / "mnt" / "ComfyUI"
        assert lookup.looked_up_attributes_are_fresh(comfy)
        fd = os.open(comfy, os.O_RDONLY | os.O_DIRECTORY)
        try:
            calls = {}
            for from_look_up in (True, False):
                volume.reset()
                attributes = lookup.lstat_at(fd, "main.py", from_look_up)
                calls[from_look_up] = volume.stats()["total_calls"]
                assert attributes.st_size == (install / "main.py").stat().st_size
                assert attributes.st_mtime_ns == (install / "main.py").stat().st_mtime_ns
        finally:
            os.close(fd)
    assert calls == {True: 2, False: 3}, "the folder's attributes (its permissions), the look-up, then a getattr"


def test_the_start_is_recorded_for_the_metrics(install: Path, tmp_path: Path) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from healthcheck.collectors import CodeCopyCollector

    result = codecopy.sync(layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w"))
    record = tmp_path / "code-copy.json"
    result.record(record, started_at=time.time() - 5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CodeCopyCollector(record))
    text = generate_latest(registry).decode()
    assert "comfy_worker_code_from_copy 1.0" in text
    assert f"comfy_worker_code_copy_files_copied {float(result.files_copied)}" in text
    assert f"comfy_worker_code_copy_bytes_copied {float(result.bytes_copied)}" in text
    ready = next(line for line in text.splitlines() if line.startswith("comfy_worker_startup_code_ready_seconds "))
    assert 5 <= float(ready.split()[1]) < 600
    record.write_text("{torn")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CodeCopyCollector(record))
    assert "code_from_copy" not in generate_latest(registry).decode()


def test_the_folder_check_sees_what_comes_and_goes_and_trusts_the_rest(install: Path, tmp_path: Path) -> None:
    layout, settings = layout_for(install, tmp_path / "w"), settings_for(tmp_path / "w", check="folders")
    copy = codecopy.sync(layout, settings).comfyui_dir
    (install / "custom_nodes" / "pack" / "added.py").write_text("A = 1\n")
    (install / "custom_nodes" / "link.py").unlink()
    result = codecopy.sync(layout, settings)
    assert (copy / "custom_nodes" / "pack" / "added.py").read_text() == "A = 1\n"
    assert not (copy / "custom_nodes" / "link.py").is_symlink()
    assert (result.files_copied, result.removed) == (1, 1)
    touch_later(install / "main.py", "print('edited in place')\n")  # the folder's mtime stays: not looked at
    assert codecopy.sync(layout, settings).files_copied == 0
    assert codecopy.sync(layout, dataclasses.replace(settings, check="files")).files_copied == 1


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse and root")
def test_a_caching_volume_is_copied_only_with_a_copy_or_a_pack_there(install: Path, tmp_path: Path) -> None:
    from bench.netvol import Settings, mounted

    mnt = tmp_path / "mnt"
    layout, settings = layout_for(mnt / "ComfyUI", tmp_path / "w"), settings_for(tmp_path / "w", min_call_ms=1.0)
    caching = Settings(rtt_ms=5, attr_timeout=60, entry_timeout=60)
    with mounted(install.parent, mnt, caching):
        first = codecopy.sync(layout, settings)
        assert not first.copied and "caches look-ups" in first.reason and first.pack_from_volume
        packed = codecopy.keep_pack(layout, settings)  # beside its start: the volume's own files, for the next
        fresh_layout = layout_for(mnt / "ComfyUI", tmp_path / "b", "worker-b")
        fresh = codecopy.sync(fresh_layout, settings_for(tmp_path / "b", min_call_ms=1.0))
    assert packed.startswith("wrote worker-a.pack") and not (tmp_path / "w" / "code").exists()
    assert fresh.copied and "pack+check" in fresh.phases and fresh.files_unpacked > 3
    assert (fresh.comfyui_dir / "main.py").read_text() == (install / "main.py").read_text()
    with mounted(install.parent, mnt, Settings(rtt_ms=5)):
        assert codecopy.sync(layout, settings).copied
    with mounted(install.parent, mnt, caching):
        kept = codecopy.sync(layout, settings)
    assert kept.copied and kept.files_copied == 0 and not kept.pack_from_volume
