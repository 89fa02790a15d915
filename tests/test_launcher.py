"""The launcher without a stack: flag tables, COMFY_EXTRA_ARGS as argparse reads it, version, user, folders."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import pwd
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher import prefetch
from launcher.arguments import ADDRESS_FLAGS, FOLDER_FLAGS, comfyui_args, resolve
from launcher.background import whole_lines
from launcher.config import LauncherConfig
from launcher.config import load as load_launcher_config
from launcher.flags import TABLES, table_for
from launcher.install import LaunchError, check_install
from launcher.launch import SECRETS, comfyui_environment
from launcher.prepare import check_reachable
from launcher.user import ComfyUser, comfyui_user, hand_over
from launcher.version import ComfyVersion
from tests.stack import traversable_tmp
from worker_common.layout import Layout
from worker_common.settings import ConfigError
from worker_common.volume_report import report

REPO = Path(__file__).resolve().parent.parent

V0_3_64, V0_38_1 = TABLES[(0, 3, 64)], TABLES[(0, 38, 1)]
KNOWN = {"0.3.64": ComfyVersion("0.3.64", "comfyui_version.py"), "0.38.1": ComfyVersion("0.38.1", "comfyui_version.py")}
TABLE_OF = {"0.3.64": V0_3_64, "0.38.1": V0_38_1}
VENV_PYTHON = Path(sys.prefix) / "bin" / "python"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root; this test runs as a user")


def layout_in(tmp_path: Path, comfyui_dir: Path | None = None) -> Layout:
    return Layout(comfyui_dir or tmp_path / "ComfyUI", Path(sys.prefix), tmp_path / "worker", "w1")


def launcher_config(port: int = 8188) -> LauncherConfig:
    """The launcher's settings from the (monkeypatched) environment, with ComfyUI on `port`."""
    return dataclasses.replace(load_launcher_config(), comfy_port=port)


def parser_of(table) -> argparse.ArgumentParser:
    """An argparse parser with the table's flags, each taking an optional value."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    for flag in table.flags:
        parser.add_argument(flag, nargs="?", const="", dest=flag)
    return parser


def argparse_reads(parser: argparse.ArgumentParser, token: str) -> str | None:
    """The flag `parser` reads `token` as; None when it refuses it (unknown, ambiguous)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parsed = vars(parser.parse_args([token]))
    except (argparse.ArgumentError, SystemExit):
        return None
    return next(flag for flag, value in parsed.items() if value is not None)


def prefixes(flag: str) -> list[str]:
    return [flag[:end] for end in range(3, len(flag) + 1)]


# -- the flag tables ---------------------------------------------------------------------


def test_tables_hold_what_changed_between_the_releases() -> None:
    assert V0_3_64.flags - V0_38_1.flags == {"--normalvram", "--disable-ipex-optimize"}
    assert {"--disable-assets", "--enable-assets", "--database-url", "--cache-ram"} <= V0_38_1.flags
    assert "--disable-assets" not in V0_3_64.flags and "--database-url" in V0_3_64.flags


@pytest.mark.parametrize(
    ("release", "name"),
    [
        (None, "the flags of 0.3.64"),
        ((0, 3, 40), "the flags of 0.3.64"),
        ((0, 3, 64), "the flags of 0.3.64"),
        ((0, 20, 0), "the flags both 0.3.64 and 0.38.1 know"),
        ((0, 38, 1), "the flags of 0.38.1"),
        ((0, 39, 0), "the flags of 0.38.1"),
        ((1, 0, 0), "the flags of 0.38.1"),
    ],
)
def test_a_release_is_mapped_to_a_table(release, name: str) -> None:
    assert table_for(release).name == name


def test_a_release_between_two_tables_gets_only_flags_both_know() -> None:
    between = table_for((0, 20, 0))
    assert between.flags == V0_3_64.flags & V0_38_1.flags
    assert "--normalvram" not in between.flags and "--disable-assets" not in between.flags


@pytest.mark.parametrize("release", ["0.3.64", "0.38.1"])
def test_the_launchers_own_flags_exist_in_every_release(tmp_path: Path, monkeypatch, release: str) -> None:
    for variable in ("COMFY_EXTRA_ARGS", "COMFY_LOG_LEVEL", "COMFY_ENABLE_ASSETS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("COMFY_LOG_LEVEL", "debug")
    args = comfyui_args(layout_in(tmp_path), launcher_config(), TABLE_OF[release], KNOWN[release])
    flags = [arg for arg in args if arg.startswith("-")]
    assert set(flags) <= TABLE_OF[release].flags
    assert args[args.index("--verbose") + 1] == "DEBUG"
    assert TABLE_OF[release].has(prefetch.CONFIG_FLAG), "the copies of the first jobs' models are found through it"


# -- ComfyUI's command line ----------------------------------------------------------------


def test_comfyui_gets_the_worker_folders_and_assets_off_where_it_has_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("COMFY_EXTRA_ARGS", raising=False)
    monkeypatch.delenv("COMFY_ENABLE_ASSETS", raising=False)
    layout = layout_in(tmp_path)
    new = comfyui_args(layout, launcher_config(port=8190), V0_38_1, KNOWN["0.38.1"])
    old = comfyui_args(layout, launcher_config(port=8190), V0_3_64, KNOWN["0.3.64"])
    assert new[:7] == [
        "main.py",
        "--listen",
        "127.0.0.1",
        "--port",
        "8190",
        "--disable-auto-launch",
        "--input-directory",
    ]
    for args in (new, old):
        assert args[args.index("--input-directory") + 1] == str(layout.input)
        assert args[args.index("--output-directory") + 1] == str(layout.output)
        assert args[args.index("--user-directory") + 1] == str(layout.user)
        assert Path(args[args.index("--temp-directory") + 1]) / "temp" == layout.temp
    assert "--disable-assets" in new and "--disable-assets" not in old
    monkeypatch.setenv("COMFY_ENABLE_ASSETS", "true")
    assert "--disable-assets" not in comfyui_args(layout, launcher_config(port=8190), V0_38_1, KNOWN["0.38.1"])


def test_extra_flags_pass_under_their_full_names(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--highv --preview-method none --reserve-vram -1 --cache-lru=4")
    args = comfyui_args(layout_in(tmp_path), launcher_config(), V0_3_64, KNOWN["0.3.64"])
    assert args[-6:] == ["--highvram", "--preview-method", "none", "--reserve-vram", "-1", "--cache-lru=4"]
    assert "--highv" not in args


def test_a_bad_log_level_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COMFY_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="COMFY_LOG_LEVEL='loud' is not one of DEBUG, INFO"):
        comfyui_args(layout_in(tmp_path), launcher_config(), V0_3_64, KNOWN["0.3.64"])


@pytest.mark.parametrize("release", ["0.3.64", "0.38.1"])
def test_flags_resolve_as_argparse_reads_them(release: str) -> None:
    """Every prefix of every flag, plain and with =value: the resolver agrees with argparse itself."""
    table, parser = TABLE_OF[release], parser_of(TABLE_OF[release])
    for flag in sorted(table.flags - {"-h"}):
        for token in [token for prefix in prefixes(flag) for token in (prefix, f"{prefix}=1")]:
            try:
                resolved = resolve(token, table.flags)
            except ConfigError:
                resolved = None
            assert resolved == argparse_reads(parser, token), token


@pytest.mark.parametrize("release", ["0.3.64", "0.38.1"])
@pytest.mark.parametrize("flag", [*ADDRESS_FLAGS, *FOLDER_FLAGS])
def test_every_abbreviation_of_the_address_and_folder_flags_is_refused(
    tmp_path: Path, monkeypatch, release: str, flag: str
) -> None:
    """Every prefix argparse would read as the flag, or could not tell from another, is refused naming it."""
    for prefix in prefixes(flag):
        for token in (f"{prefix} 0.0.0.0", f"{prefix}=0.0.0.0"):
            monkeypatch.setenv("COMFY_EXTRA_ARGS", token)
            with pytest.raises(ConfigError) as refusal:
                comfyui_args(layout_in(tmp_path), launcher_config(), TABLE_OF[release], KNOWN[release])
            message = str(refusal.value)
            assert message.startswith(f"COMFY_EXTRA_ARGS may not contain {token.split()[0]}") or (
                "could read as any of" in message and flag in message
            ), message


def test_refusals_say_why_and_what_to_set_instead(tmp_path: Path, monkeypatch) -> None:
    layout = layout_in(tmp_path)
    cases = {
        "--liste 127.0.0.2": "may not contain --liste (ComfyUI reads it as --listen): ComfyUI always listens on",
        "--port 9000": "set COMFY_PORT to change its port",
        "--output-directory /x": f"folders of its own under WORKER_DATA_DIR ({layout.data_dir})",
        "--he": "--he (ComfyUI reads it as --help): it makes ComfyUI exit",
        "--tls-keyfile k.pem": "plain HTTP",
    }
    for extra, expected in cases.items():
        monkeypatch.setenv("COMFY_EXTRA_ARGS", extra)
        with pytest.raises(ConfigError, match="COMFY_EXTRA_ARGS") as refusal:
            comfyui_args(layout, launcher_config(), V0_3_64, KNOWN["0.3.64"])
        assert expected in str(refusal.value)


def test_lis_is_listen_on_0_3_64_and_ambiguous_on_0_38_1() -> None:
    assert resolve("--lis", V0_3_64.flags) == "--listen"
    assert resolve("--li=0.0.0.0", V0_3_64.flags) == "--listen"
    with pytest.raises(ConfigError):
        resolve("--lis", V0_38_1.flags)  # --listen or --list-feature-flags


@pytest.mark.parametrize("token", ["-1", "-0.5", "value", "DEBUG"])
def test_values_are_not_flags(token: str) -> None:
    assert resolve(token, V0_38_1.flags) is None


def test_a_flag_the_release_does_not_know_names_the_flag_and_the_version(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--highvram --normalvram")
    with pytest.raises(ConfigError) as refusal:
        comfyui_args(layout_in(tmp_path), launcher_config(), V0_38_1, KNOWN["0.38.1"])
    assert str(refusal.value).startswith("COMFY_EXTRA_ARGS has --normalvram, a flag ComfyUI 0.38.1 does not know:")
    unknown = ComfyVersion(None, "no comfyui_version.py, no version in pyproject.toml")
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--disable-assets")
    with pytest.raises(ConfigError) as refusal:
        comfyui_args(layout_in(tmp_path), launcher_config(), table_for(None), unknown)
    assert str(refusal.value).startswith(
        "COMFY_EXTRA_ARGS has --disable-assets, a flag ComfyUI of unknown version (no comfyui_version.py, no version "
        "in pyproject.toml; checked against the flags of 0.3.64) does not know:"
    )
    for token in ("-x", "--", "-", "--no-such-flag"):
        monkeypatch.setenv("COMFY_EXTRA_ARGS", token)
        with pytest.raises(ConfigError, match=f"has {token},"):
            comfyui_args(layout_in(tmp_path), launcher_config(), V0_38_1, KNOWN["0.38.1"])


# -- the installed version -----------------------------------------------------------------


def install_at(tmp_path: Path, files: dict[str, str]) -> Path:
    comfyui_dir = tmp_path / "ComfyUI"
    comfyui_dir.mkdir()
    (comfyui_dir / "main.py").write_text("")
    for name, text in files.items():
        (comfyui_dir / name).write_text(text)
    return comfyui_dir


def checked(tmp_path: Path, comfyui_dir: Path, monkeypatch, **env: str) -> ComfyVersion:
    monkeypatch.setenv("COMFYUI_DIR", str(comfyui_dir))
    monkeypatch.setenv("COMFY_VENV_REQUIRED_MODULES", "json")
    monkeypatch.delenv("COMFYUI_USER", raising=False)
    user = comfyui_user("")
    config = launcher_config()
    return check_install(layout_in(tmp_path, comfyui_dir), user, {**os.environ, **env}, config).version


def test_the_version_is_imported_from_comfyui_version_py_with_the_volume_python(tmp_path: Path, monkeypatch) -> None:
    computed = 'import os\n__version__ = os.environ.get("STANDIN_COMFYUI_VERSION", "0.3.64")\n'
    comfyui_dir = install_at(
        tmp_path, {"comfyui_version.py": computed, "pyproject.toml": '[project]\nversion = "9.9"\n'}
    )
    version = checked(tmp_path, comfyui_dir, monkeypatch, STANDIN_COMFYUI_VERSION="0.38.1")
    assert version == ComfyVersion("0.38.1", "comfyui_version.py")
    assert version.release == (0, 38, 1)


def test_without_comfyui_version_py_pyproject_toml_says(tmp_path: Path, monkeypatch) -> None:
    comfyui_dir = install_at(tmp_path, {"pyproject.toml": '[project]\nname = "comfyui"\nversion = "0.3.64"\n'})
    assert checked(tmp_path, comfyui_dir, monkeypatch) == ComfyVersion("0.3.64", "pyproject.toml")


def test_without_either_the_version_is_unknown(tmp_path: Path, monkeypatch) -> None:
    comfyui_dir = install_at(tmp_path, {"pyproject.toml": "not toml ["})
    version = checked(tmp_path, comfyui_dir, monkeypatch)
    assert version.text is None and version.release is None
    assert version.describe() == "ComfyUI of unknown version (no comfyui_version.py, no version in pyproject.toml)"
    assert table_for(version.release).release == "0.3.64"


def test_missing_modules_are_named_with_the_venv_python(tmp_path: Path, monkeypatch) -> None:
    comfyui_dir = install_at(tmp_path, {})
    monkeypatch.setenv("COMFYUI_DIR", str(comfyui_dir))
    monkeypatch.setenv("COMFY_VENV_REQUIRED_MODULES", "json no_such_module_x")
    monkeypatch.delenv("COMFYUI_USER", raising=False)
    with pytest.raises(LaunchError, match=r"cannot import: no_such_module_x\. Install ComfyUI's requirements"):
        check_install(layout_in(tmp_path, comfyui_dir), comfyui_user(""), dict(os.environ), launcher_config())


# -- ComfyUI's user and environment ----------------------------------------------------------


def test_comfyui_user_unset_is_whoever_runs_the_stack(monkeypatch) -> None:
    monkeypatch.delenv("COMFYUI_USER", raising=False)
    user = comfyui_user(launcher_config().comfyui_user)
    assert user.uid == os.geteuid() and user.is_current


def test_an_unknown_comfyui_user_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setenv("COMFYUI_USER", "no-such-user-here")
    with pytest.raises(ConfigError, match="COMFYUI_USER='no-such-user-here': no such user in this container"):
        comfyui_user(launcher_config().comfyui_user)


def test_comfyui_gets_no_secret_and_a_home_of_its_own(tmp_path: Path, monkeypatch) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, "secret")
    layout = layout_in(tmp_path)
    other = ComfyUser("nobody", 65534, 65534, (65534,))
    env = comfyui_environment(other, layout)
    assert not set(SECRETS) & set(env)
    assert env["HOME"] == str(layout.home) and env["USER"] == "nobody"
    monkeypatch.delenv("COMFYUI_USER", raising=False)
    user = comfyui_user(launcher_config().comfyui_user)
    assert comfyui_environment(user, layout).get("HOME") == os.environ.get("HOME"), "a developer's HOME"


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    with traversable_tmp() as folder:
        yield folder


@root_only
def test_prepare_hands_the_worker_folders_to_comfyuis_user(open_tmp: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    user = ComfyUser("nobody", nobody.pw_uid, nobody.pw_gid, (nobody.pw_gid,))
    comfyui_dir = open_tmp / "ComfyUI"
    (comfyui_dir / "user" / "default").mkdir(parents=True)
    (comfyui_dir / "user" / "default" / "comfy.settings.json").write_text("{}")
    (comfyui_dir / "user" / "comfyui.db").write_text("the volume's asset database")
    layout = layout_in(open_tmp, comfyui_dir)
    layout.prepare()
    (layout.input / "left-over.png").write_text("an earlier run's")
    layout.prepare()
    hand_over(user, layout.comfyui_folders())
    check_reachable(user, layout)
    assert not (layout.input / "left-over.png").exists()
    assert (layout.user / "default" / "comfy.settings.json").is_file()
    assert not (layout.user / "comfyui.db").exists(), "the asset database is never copied"
    for folder in layout.comfyui_folders():
        info = folder.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (nobody.pw_uid, 0o700), folder
    assert (layout.user / "default" / "comfy.settings.json").stat().st_uid == nobody.pw_uid
    writes = subprocess.run(["touch", str(layout.temp / "x")], user="nobody", check=False)
    assert writes.returncode == 0


@root_only
def test_a_data_dir_comfyuis_user_cannot_reach_is_a_config_error(open_tmp: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    user = ComfyUser("nobody", nobody.pw_uid, nobody.pw_gid, (nobody.pw_gid,))
    closed = open_tmp / "closed"
    closed.mkdir(mode=0o700)
    layout = Layout(open_tmp / "ComfyUI", Path(sys.prefix), closed / "worker", "w1")
    layout.prepare()
    hand_over(user, layout.comfyui_folders())
    with pytest.raises(ConfigError) as refusal:
        check_reachable(user, layout)
    assert f"COMFYUI_USER=nobody cannot write to {layout.input}: {closed} is closed to it (mode 0700" in str(
        refusal.value
    )
    assert "Set WORKER_DATA_DIR" in str(refusal.value)


# -- the volume report -----------------------------------------------------------------------


def test_the_volume_report_is_written_beside_the_start_in_whole_lines(tmp_path: Path) -> None:
    """The entrypoint reads `launcher prepare`'s stderr to its end: the report's process must not hold it."""
    flag = tmp_path / "go"
    work = (
        "import os, time\n"
        "from launcher.background import in_background\n"
        f"def report():\n    while not os.path.exists({str(flag)!r}):\n        time.sleep(0.01)\n"
        "    return '\\n'.join(f'[entrypoint] line {n} ' + 'x' * 200 for n in range(100))\n"
        "in_background(report)\n"
    )
    prepare = subprocess.Popen(
        [sys.executable, "-c", work], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert prepare.stderr.read() == "", "stderr ends while the report still waits"
    assert prepare.wait(timeout=30) == 0
    flag.touch()
    lines = prepare.stdout.read().splitlines()
    assert lines == [f"[entrypoint] line {n} " + "x" * 200 for n in range(100)]
    assert all(len(chunk) <= select.PIPE_BUF for chunk in whole_lines("\n".join(lines).encode()))


def test_the_volume_report_names_the_release_and_whose_folders_are_whose(tmp_path: Path) -> None:
    layout = layout_in(tmp_path)
    (layout.comfyui_dir / "models" / "loras").mkdir(parents=True)
    (layout.comfyui_dir / "models" / "loras" / "a.safetensors").write_bytes(b"\0" * 1024)
    lines = report(layout, "ComfyUI 0.38.1 (from comfyui_version.py), venv Python 3.11.9", detailed=False)
    assert (
        lines[0]
        == f"volume report for {layout.comfyui_dir}: ComfyUI 0.38.1 (from comfyui_version.py), venv Python 3.11.9"
    )
    assert lines[1].startswith(f"volume (shared, read-only for jobs): ComfyUI {layout.comfyui_dir}, venv ")
    assert lines[2] == (
        f"worker w1 (its own, on the container's disk): input {layout.input}, output {layout.output}, "
        f"temp {layout.temp}, user {layout.user}, home {layout.home}"
    )
    assert "models/loras: 1 files, 1.0 KB" in lines


def test_a_model_cache_inside_the_install_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    from worker_common.layout import load

    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    monkeypatch.setenv("COMFYUI_DIR", str(comfy))
    monkeypatch.setenv("WORKER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(comfy / "models" / "cache"))
    with pytest.raises(ConfigError, match=r"MODEL_CACHE_DIR=.* is inside the ComfyUI install"):
        load()
    monkeypatch.delenv("MODEL_CACHE_DIR")
    assert load().model_cache == tmp_path / "data" / "model-cache"
