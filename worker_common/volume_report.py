"""The boot diagnostic of the network volume: which ComfyUI, which folders, what is in its model folders.

Printed once per container start by the entrypoint (python -m launcher prepare): the ComfyUI
release, which folders are the shared volume's and which this worker's own, and one line per
model folder (file count and total size); with NETWORK_VOLUME_DEBUG=true also every model file
with its size, the venv's interpreter, and free space on the volume, as worker-comfyui's
network-volume diagnostics did (but once at boot, not on every job).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from worker_common.layout import Layout

MODEL_FOLDERS = (
    "checkpoints",
    "diffusion_models",
    "unet",
    "text_encoders",
    "clip",
    "vae",
    "loras",
    "upscale_models",
    "controlnet",
    "embeddings",
)
MODEL_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx"}


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def model_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)


def folder_lines(models_dir: Path, detailed: bool) -> list[str]:
    lines = []
    for name in MODEL_FOLDERS:
        files = model_files(models_dir / name)
        if not (models_dir / name).is_dir():
            lines.append(f"models/{name}: missing")
            continue
        total = sum(f.stat().st_size for f in files)
        lines.append(f"models/{name}: {len(files)} files, {human_size(total)}")
        if detailed:
            lines.extend(f"  {f.relative_to(models_dir / name)} ({human_size(f.stat().st_size)})" for f in files)
    return lines


def report(layout: Layout, comfyui: str, detailed: bool) -> list[str]:
    """The report's lines; `comfyui` says which ComfyUI release is installed ("ComfyUI 0.38.1 ...")."""
    lines = [f"volume report for {layout.comfyui_dir}: {comfyui}", *layout.describe()]
    lines += folder_lines(layout.comfyui_dir / "models", detailed)
    if detailed:
        python = layout.venv / "bin" / "python"
        lines.append(f"venv {layout.venv}: python -> {python.resolve() if python.exists() else 'missing'}")
        cfg = layout.venv / "pyvenv.cfg"
        if cfg.is_file():
            lines += [f"  pyvenv.cfg {line}" for line in cfg.read_text().splitlines() if line.strip()]
        usage = shutil.disk_usage(layout.comfyui_dir)
        lines.append(f"volume space: {human_size(usage.free)} free of {human_size(usage.total)}")
    return lines
