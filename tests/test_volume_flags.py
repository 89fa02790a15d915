"""The model-storage flag the launcher passes for models on a network volume (launcher/volume_flags.py)."""

from __future__ import annotations

from pathlib import Path

from launcher.cli_args_reader import read_declared_flags
from launcher.flags import FlagTable
from launcher.volume_flags import model_storage_args

NEWER = FlagTable("newer", frozenset({"--listen", "--fast-disk", "--disable-fast-disk", "--disable-mmap"}))
OLDER = FlagTable("older", frozenset({"--listen", "--disable-mmap"}))


def test_disk_backed_weights_are_turned_off_for_models_on_a_slow_volume_where_declared() -> None:
    assert model_storage_args(NEWER, ["main.py"], models_on_slow_volume=True) == ["--disable-fast-disk"]
    assert model_storage_args(NEWER, ["main.py"], models_on_slow_volume=False) == [], "a local disk: ComfyUI decides"
    assert model_storage_args(OLDER, ["main.py"], models_on_slow_volume=True) == [], "a release without the flag"
    assert model_storage_args(NEWER, ["main.py", "--fast-disk"], models_on_slow_volume=True) == [], "the user chose"


def test_the_flag_is_read_from_an_installed_cli_args(tmp_path: Path) -> None:
    cli_args = tmp_path / "cli_args.py"
    cli_args.write_text(
        "import argparse\nparser = argparse.ArgumentParser()\n"
        'parser.add_argument("--listen", type=str)\n'
        'parser.add_argument("--fast-disk", action="store_true", help="Force disk-backed dynamic loading.")\n'
        'parser.add_argument("--disable-fast-disk", action="store_true", help="Overrides --fast-disk.")\n'
    )
    assert "--disable-fast-disk" in read_declared_flags(cli_args).certain
