"""The pack of ComfyUI's code on the volume (launcher/codepack.py) as a fresh worker uses it.

A worker's copy packed onto the volume (only its own files, none when a current pack is there);
a fresh worker's copy made from the pack is the volume's code, with what changed since the pack
copied again; a pack rewritten under a reader is not trusted; through the emulated volume a fresh
worker opens a handful of files instead of one per file.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from launcher import codecopy, codepack
from tests.test_codecopy import add_schemas, layout_for, make_install, settings_for, touch_later


@pytest.fixture
def install(tmp_path: Path) -> Path:
    comfy = make_install(tmp_path / "volume")
    for index in range(40):  # enough files for several streams and blocks
        (comfy / "custom_nodes" / "pack" / f"mod{index}.py").write_text(f"X = {index}\n" + "#" * index * 997)
    return comfy


def packed_worker(install: Path, tmp_path: Path, name: str = "worker-a") -> str:
    layout, settings = layout_for(install, tmp_path / name, name), settings_for(tmp_path / name)
    assert codecopy.sync(layout, settings).copied
    return codecopy.keep_pack(layout, settings)


def scripts(install: Path) -> int:
    return sum(1 for path in (install / "com_venv" / "bin").iterdir() if not path.is_symlink())


def same_tree(copy: Path, volume: Path) -> None:
    for path in volume.rglob("*"):
        rel = path.relative_to(volume)
        if rel.parts[0] in codecopy.SKIPPED_TOP or rel.parts[:3] == ("com_venv", "bin", "tool"):
            continue
        there = copy / rel
        assert there.is_symlink() == path.is_symlink(), rel
        if path.is_file() and not path.is_symlink():
            assert filecmp.cmp(path, there, shallow=False), rel
            assert there.stat().st_mtime_ns == path.stat().st_mtime_ns, rel
            assert there.stat().st_mode == path.stat().st_mode, rel


def test_a_fresh_worker_unpacks_the_pack_and_copies_what_changed_since(install: Path, tmp_path: Path) -> None:
    said = packed_worker(install, tmp_path)
    folder = install / ".comfy-worker" / "code"
    assert said.startswith("wrote worker-a.pack")
    assert sorted(path.name for path in folder.iterdir()) == ["worker-a.json", "worker-a.pack", "worker-a.pack.json"]
    touch_later(install / "custom_nodes" / "pack" / "mod3.py", "X = 333\n")
    (install / "custom_nodes" / "pack" / "mod4.py").unlink()
    (install / "custom_nodes" / "pack" / "added.py").write_text("NEW = 1\n")

    fresh = codecopy.sync(layout_for(install, tmp_path / "b", "worker-b"), settings_for(tmp_path / "b"))
    assert "pack+check" in fresh.phases and "walk" not in fresh.phases
    assert f"{fresh.files_unpacked} from a pack" in fresh.describe()
    copy = fresh.comfyui_dir
    same_tree(copy, install)
    assert not (copy / "custom_nodes" / "pack" / "mod4.py").exists()
    assert (copy / "custom_nodes" / "pack" / "mod3.py").read_text().startswith("X = 333")
    assert fresh.files_unpacked >= 40 and fresh.removed == 1
    # copied from the volume: the edited and the added file, and the venv's scripts (never packed)
    assert fresh.files_copied == 2 + scripts(install)
    assert list((copy / "custom_nodes" / "pack" / "__pycache__").glob("mod0.*.pyc")), "unpacked code is compiled"
    tool = (copy / "com_venv" / "bin" / "tool").read_text()
    assert tool.startswith(f"#!{copy / 'com_venv' / 'bin' / 'python'}\n")


def test_one_pack_of_the_current_code_is_kept(install: Path, tmp_path: Path) -> None:
    packed_worker(install, tmp_path, "worker-a")
    assert packed_worker(install, tmp_path, "worker-b").startswith("a pack of this code is on the volume already")
    folder = install / ".comfy-worker" / "code"
    assert not (folder / "worker-b.pack").exists()
    (install / "temp-made-by-someone").mkdir()  # the install's folder changes, not its code
    assert packed_worker(install, tmp_path, "worker-c").startswith("a pack of this code is on the volume already")
    touch_later(install / "main.py", "print('changed')\n")
    assert packed_worker(install, tmp_path, "worker-b").startswith("wrote worker-b.pack")
    # worker-a's next start sees worker-b's pack of the code it has too, and drops its own
    assert packed_worker(install, tmp_path, "worker-a").startswith("a pack of this code")
    assert sorted(path.name for path in folder.glob("*.pack*")) == ["worker-b.pack", "worker-b.pack.json"]


def test_a_worker_writes_its_manifest_on_the_volume_only_for_code_not_kept_there(install: Path, tmp_path: Path) -> None:
    """Each start's write is round trips before ComfyUI starts: a worker keeps its own manifest only when its
    code differs from the one it started from (its copy's, a pack's or another worker's), all on the volume."""
    packed_worker(install, tmp_path, "worker-a")
    folder = install / ".comfy-worker" / "code"
    kept = (folder / "worker-a.json").stat()
    worker_a = layout_for(install, tmp_path / "worker-a", "worker-a"), settings_for(tmp_path / "worker-a")
    worker_b = layout_for(install, tmp_path / "b", "worker-b"), settings_for(tmp_path / "b")
    assert codecopy.sync(*worker_b).files_unpacked >= 40  # a fresh worker, from worker-a's pack: the same code
    assert codecopy.sync(*worker_a).files_copied == 0  # a restart: nothing changed
    assert not (folder / "worker-b.json").exists()
    now = (folder / "worker-a.json").stat()
    assert (now.st_ino, now.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns), "rewritten"
    touch_later(install / "main.py", "print('changed')\n")
    codecopy.sync(*worker_b)  # a restart that finds the code changed keeps its own
    entry = codecopy.read_manifest(folder / "worker-b.json", codecopy.Tree(worker_b[0]))["main.py"]
    assert entry[2:] == codecopy.entry_of(os.lstat(install / "main.py"), str)[2:]


def test_a_pack_rewritten_under_its_reader_is_not_trusted(install: Path, tmp_path: Path) -> None:
    packed_worker(install, tmp_path)
    folder = install / ".comfy-worker" / "code"
    pack = codepack.read_index(folder / "worker-a.pack.json", [str(install), str(install / "com_venv")])
    assert pack is not None and codepack.pack_is_whole(pack)
    data = (folder / "worker-a.pack").read_bytes()
    (folder / "worker-a.pack").write_bytes(data[:40] + b"0" * 10 + data[50:])  # another token, same size
    with pytest.raises(OSError, match="not the pack its index names"):
        codepack.unpack(pack, lambda rel: str(tmp_path / "x" / rel.replace("/", "_")), 2)
    fresh = codecopy.sync(layout_for(install, tmp_path / "b", "worker-b"), settings_for(tmp_path / "b"))
    same_tree(fresh.comfyui_dir, install)
    assert fresh.files_unpacked == 0, "everything copied from the volume instead"


def test_a_linked_data_folder_is_not_packed_and_an_older_pack_of_it_is_skipped(install: Path, tmp_path: Path) -> None:
    schemas = add_schemas(install)
    source = [str(install), str(install / "com_venv")]
    rel = str(schemas.relative_to(install))
    layout, linking = (
        layout_for(install, tmp_path / "a", "worker-a"),
        settings_for(tmp_path / "a", data_link_min_files=20),
    )
    assert codecopy.sync(layout, linking).linked == 1
    codecopy.keep_pack(layout, linking)
    pack = codepack.read_index(install / ".comfy-worker" / "code" / "worker-a.pack.json", source)
    assert pack and not [name for name in pack.offsets if name.startswith(rel)] and f"{rel}/s1.json" in pack.entries
    (install / ".comfy-worker").rename(tmp_path / "kept")
    packed_worker(install, tmp_path, "worker-old")  # a worker that copied everything
    older = codecopy.sync(
        layout_for(install, tmp_path / "b", "worker-b"), settings_for(tmp_path / "b", data_link_min_files=20)
    )
    assert older.linked == 1 and os.readlink(older.comfyui_dir / rel) == str(schemas)
    assert "pack+check" in older.phases and older.files_copied == scripts(install), "the rest came from the pack"


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse and root")
def test_through_the_emulated_volume_a_fresh_worker_opens_a_few_files(install: Path, tmp_path: Path) -> None:
    from bench.netvol import Settings, mounted

    mnt = tmp_path / "mnt"
    with mounted(install.parent, mnt, Settings(rtt_ms=0)) as volume:
        packed_worker(mnt / "ComfyUI", tmp_path)
        volume.reset()
        fresh = codecopy.sync(
            layout_for(mnt / "ComfyUI", tmp_path / "b", "worker-b"), settings_for(tmp_path / "b", pack_streams=3)
        )
        calls = volume.stats()["calls"]
    assert fresh.files_unpacked >= 40
    # the pack (once per stream), the index, the manifest kept, the scripts, a few probes' worth of slack
    assert calls["open"] <= 3 + scripts(install) + 6, calls
