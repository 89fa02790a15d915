"""The supervisor event listeners' pure parts (line joining), and the volume report."""

from __future__ import annotations

import io
from pathlib import Path

from listeners.log_forwarder import LineJoiner
from worker_common.layout import Layout
from worker_common.volume_report import report


def test_chunks_are_joined_into_whole_prefixed_lines() -> None:
    out = io.StringIO()
    joiner = LineJoiner(out)
    joiner.feed("comfyui", "Starting ser")
    joiner.feed("handler", "job 1 done\n")
    joiner.feed("comfyui", "ver\r\nTo see the GUI\ngo")
    assert out.getvalue().splitlines() == [
        "[handler] job 1 done",
        "[comfyui] Starting server",
        "[comfyui] To see the GUI",
    ]
    joiner.feed("comfyui", "\n")
    assert out.getvalue().splitlines()[-1] == "[comfyui] go"


def test_volume_report_counts_model_files_with_sizes(tmp_path: Path) -> None:
    checkpoints = tmp_path / "ComfyUI" / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "sd_xl_base_1.0.safetensors").write_bytes(b"\0" * 2048)
    (checkpoints / "notes.txt").write_text("not a model")
    layout = Layout(tmp_path / "ComfyUI", tmp_path / "venv", tmp_path / "worker", "w1")
    lines = report(layout, "ComfyUI 0.3.64", detailed=True)
    assert "models/checkpoints: 1 files, 2.0 KB" in lines
    assert "  sd_xl_base_1.0.safetensors (2.0 KB)" in lines
    assert "models/loras: missing" in lines
