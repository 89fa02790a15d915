"""The emulated network volume (bench/netvol): a round trip per call, read caps, explicit caching, counted writes.

Needs /dev/fuse and root. Durations are checked only
as lower bounds the volume must impose, never as upper bounds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.netvol import Settings, mounted

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="the emulated volume needs /dev/fuse and root"
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "module.py").write_text("x = 1\n")
    (folder / "model.bin").write_bytes(os.urandom(4_000_000))
    return folder


def test_every_call_waits_a_round_trip_and_is_counted(source: Path, tmp_path: Path) -> None:
    with mounted(source, tmp_path / "mnt", Settings(rtt_ms=50)) as volume:
        volume.reset()
        started = time.monotonic()
        assert (tmp_path / "mnt" / "pkg" / "module.py").read_text() == "x = 1\n"
        elapsed = time.monotonic() - started
        stats = volume.stats()
    assert stats["calls"]["getattr"] >= 2  # the look-ups of pkg and module.py
    assert stats["calls"]["open"] == 1
    assert stats["bytes_read"] == 6
    assert elapsed >= 0.05 * (stats["total_calls"] - stats["calls"].get("read", 0))


def test_reads_are_capped_per_file_and_in_total(source: Path, tmp_path: Path) -> None:
    settings = Settings(rtt_ms=0, stream_mbps=20, total_mbps=1000)
    with mounted(source, tmp_path / "mnt", settings) as volume:
        started = time.monotonic()
        data = (tmp_path / "mnt" / "model.bin").read_bytes()
        one_stream = time.monotonic() - started
        assert volume.stats()["bytes_read"] == len(data) == 4_000_000
    assert data == (source / "model.bin").read_bytes()
    assert one_stream >= 4 / 20 * 0.95
    with mounted(source, tmp_path / "mnt", Settings(rtt_ms=0, stream_mbps=1000, total_mbps=20)):
        started = time.monotonic()
        (tmp_path / "mnt" / "model.bin").read_bytes()
        assert time.monotonic() - started >= 4 / 20 * 0.95


def test_caching_knobs(source: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    kept = {"rtt_ms": 0, "attr_timeout": 60, "entry_timeout": 60}
    for settings, cached in ((Settings(rtt_ms=0), False), (Settings(**kept), True)):
        with mounted(source, mnt, settings) as volume:
            (mnt / "pkg" / "module.py").stat()
            volume.reset()
            (mnt / "pkg" / "module.py").stat()
            assert (volume.stats()["total_calls"] == 0) is cached
    for negative, cached in ((0.0, False), (60.0, True)):
        with mounted(source, mnt, Settings(**kept, negative_timeout=negative)) as volume:
            assert not (mnt / "pkg" / "missing.py").exists()
            volume.reset()
            assert not (mnt / "pkg" / "missing.py").exists()
            assert (volume.stats()["calls"].get("getattr", 0) == 0) is cached


def test_writes_pass_through_and_are_counted(source: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with mounted(source, mnt, Settings(rtt_ms=0)) as volume:
        (mnt / "kept").mkdir()
        (mnt / "kept" / ".part").write_text("manifest")
        (mnt / "kept" / ".part").rename(mnt / "kept" / "worker.json")
        calls = volume.stats()["calls"]
    assert (source / "kept" / "worker.json").read_text() == "manifest"
    assert calls["mkdir"] == calls["create"] == calls["rename"] == 1
    assert calls["write"] >= 1
