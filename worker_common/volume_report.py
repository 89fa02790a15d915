"""The boot diagnostic of the network volume: what ComfyUI will find in its model folders.

Printed once per container start by services/comfyui. By default one line per model
folder (file count and total size); with NETWORK_VOLUME_DEBUG=true every model file with
its size, the venv's interpreter, and free space on the volume, as worker-comfyui's
network-volume diagnostics did (but once at boot, not on every job).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from worker_common import settings

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


def report(comfyui_dir: Path, venv: Path, detailed: bool) -> list[str]:
    lines = [f"volume report for {comfyui_dir}"]
    lines += folder_lines(comfyui_dir / "models", detailed)
    if detailed:
        python = venv / "bin" / "python"
        lines.append(f"venv {venv}: python -> {python.resolve() if python.exists() else 'missing'}")
        cfg = venv / "pyvenv.cfg"
        if cfg.is_file():
            lines += [f"  pyvenv.cfg {line}" for line in cfg.read_text().splitlines() if line.strip()]
        usage = shutil.disk_usage(comfyui_dir)
        lines.append(f"volume space: {human_size(usage.free)} free of {human_size(usage.total)}")
    return lines


def main() -> None:
    comfyui_dir, venv = Path(sys.argv[1]), Path(sys.argv[2])
    detailed = settings.env_bool("NETWORK_VOLUME_DEBUG", False)
    print("\n".join(report(comfyui_dir, venv, detailed)), flush=True)


if __name__ == "__main__":
    main()
