"""The launcher reads the installed ComfyUI's flags from its comfy/cli_args.py, as argparse sees them.

Every file here is the tests' own, in ComfyUI's style (tests/cli_args_files.py): one per release
the notes describe, one of odd but legal argparse forms, one of a release nobody has seen. The
reference is argparse itself: each file is also run, and the parser it builds is asked.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from launcher.arguments import comfyui_args, resolve
from launcher.cli_args_reader import UnreadableFlags, read_declared_flags
from launcher.installed_flags import installed_flags
from launcher.version import ComfyVersion
from tests.cli_args_files import ODD_FORMS, RELEASE_9_0_0, RELEASES, argparse_parser, write_install
from tests.test_launcher import launcher_config, layout_in
from worker_common.settings import ConfigError


def written(tmp_path: Path, source: str, name: str = "cli_args.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def argparse_reads(parser: argparse.ArgumentParser, token: str) -> str | None:
    """The option string argparse reads `token` as; None for a value, an unknown or an ambiguous flag."""
    if not token or token[0] not in parser.prefix_chars:
        return None
    with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
        found = parser._parse_optional(token)  # argparse's own resolution of one token
        if found and found[0] is not None:
            return found[1]
    return None


def prefixes(flag: str) -> list[str]:
    return [flag[:end] for end in range(2, len(flag) + 1)]


def the_launcher_reads(token: str, declared) -> str | None:
    try:
        return resolve(token, declared.flags, declared.allow_abbrev)
    except ConfigError:
        return None


# -- the reader against argparse -------------------------------------------------------------


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_each_releases_flags_are_read_as_argparse_builds_them(tmp_path: Path, release: str) -> None:
    path = written(tmp_path, RELEASES[release])
    declared, parser = read_declared_flags(path), argparse_parser(path)
    assert declared.flags == declared.certain == set(parser._option_string_actions)
    assert declared.allow_abbrev and not declared.tolerates_unknown
    for action in parser._actions:
        option = declared.option(action.option_strings[0])
        assert option is not None, action
        assert option.dest == action.dest
        assert option.takes_value == (action.nargs != 0), action
        if action.choices is not None and option.action != "EnumAction":
            assert option.choices == tuple(action.choices)


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_every_prefix_of_every_flag_resolves_as_argparse_resolves_it(tmp_path: Path, release: str) -> None:
    path = written(tmp_path, RELEASES[release])
    declared, parser = read_declared_flags(path), argparse_parser(path)
    for flag in sorted(declared.flags):
        for token in [t for prefix in prefixes(flag) for t in (prefix, f"{prefix}=1")]:
            assert the_launcher_reads(token, declared) == argparse_reads(parser, token), (release, token)


def test_what_changed_between_the_releases_is_read_from_the_files(tmp_path: Path) -> None:
    flags = {
        release: read_declared_flags(written(tmp_path, source, f"{release}.py")).flags
        for release, source in RELEASES.items()
    }
    assert flags["0.3.64"] - flags["0.38.1"] == {"--normalvram", "--disable-ipex-optimize"}
    assert {"--disable-assets", "--cache-ram", "--high-ram", "--list-feature-flags"} <= flags["0.38.1"] - flags[
        "0.3.64"
    ]
    assert flags["0.38.1"] == flags["0.46.0"] == flags["0.47.1"], "redaction lists are no flags"
    lis = {
        release: the_launcher_reads("--lis", read_declared_flags(written(tmp_path, s, "x.py")))
        for release, s in RELEASES.items()
    }
    assert lis == {"0.3.64": "--listen", "0.38.1": None, "0.46.0": None, "0.47.1": None}


def test_odd_but_legal_forms_are_followed(tmp_path: Path) -> None:
    path = written(tmp_path, ODD_FORMS)
    declared, parser = read_declared_flags(path), argparse_parser(path)
    real = set(parser._option_string_actions)
    assert declared.certain <= real <= declared.flags
    assert declared.flags - real == {"--windows-only", "--in-handler"}, "declared under a condition argparse skipped"
    assert declared.certain == real
    assert {
        "--from-parent",
        "-p",
        "--port-number",
        "--chained",
        "--inner-a",
        "--loop-b",
        "--pair-b",
        "--star-b",
        "--odd-fstring",
        "--joined",
        "--no-toggle",
        "++plus",
        "--user-directory",
        "--in-try",
    } <= real
    assert declared.prefix_chars == "-+"
    port = declared.option("--port-number")
    assert port is not None and port.strings == ("-p", "--port", "--port-number") and port.dest == "port"
    assert declared.option("--odd-fstring").choices == ("quiet", "loud")
    for flag, takes in {
        "--chained": False,
        "--inner-a": False,
        "--pair-a": True,
        "--joined": False,
        "--toggle": False,
        "--star-a": True,
        "--listen": True,
    }.items():
        assert declared.option(flag).takes_value is takes, flag
        assert (parser._option_string_actions[flag].nargs != 0) is takes, flag
    for token in ("--chai", "--inner", "--pair-b=x", "--no-t", "--odd", "--from"):
        assert the_launcher_reads(token, declared) == argparse_reads(parser, token), token


@pytest.mark.parametrize(
    ("setting", "abbreviations"),
    [
        ("parser = argparse.ArgumentParser(allow_abbrev=False)", False),
        ("parser = argparse.ArgumentParser()\nparser.allow_abbrev = False", False),
        ("NO = False\nparser = argparse.ArgumentParser(allow_abbrev=not NO)", True),
    ],
)
def test_allow_abbrev_is_read_as_argparse_sees_it(tmp_path: Path, setting: str, abbreviations: bool) -> None:
    source = RELEASES["0.38.1"].replace("parser = argparse.ArgumentParser()", setting, 1)
    path = written(tmp_path, source)
    declared, parser = read_declared_flags(path), argparse_parser(path)
    assert declared.allow_abbrev is abbreviations is parser.allow_abbrev
    for token in ("--liste", "--listen", "--port=1", "--disable-a", "--cache-r"):
        assert the_launcher_reads(token, declared) == argparse_reads(parser, token), token


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (
            "import os\nimport argparse\np = argparse.ArgumentParser()\np.add_argument(os.environ['F'])\n",
            "flag name computed at run time",
        ),
        ("def broken(:\n", "not Python"),
        ("import argparse\n", "no argparse.ArgumentParser"),
        ("import argparse\na = argparse.ArgumentParser()\nb = argparse.ArgumentParser()\n", "2 parsers"),
    ],
)
def test_what_the_reader_cannot_follow_is_said(tmp_path: Path, source: str, why: str) -> None:
    with pytest.raises(UnreadableFlags, match=why):
        read_declared_flags(written(tmp_path, source))
    with pytest.raises(UnreadableFlags, match="cannot read it"):
        read_declared_flags(tmp_path / "missing.py")


def test_parse_known_args_is_noted(tmp_path: Path) -> None:
    source = RELEASES["0.38.1"].replace("parser.parse_args()", "parser.parse_known_args()[0]")
    assert read_declared_flags(written(tmp_path, source)).tolerates_unknown


# -- the launcher: flags from the install, the tables as the fallback -------------------------


def version(text: str) -> ComfyVersion:
    return ComfyVersion(text, "comfyui_version.py")


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_comfyui_gets_only_flags_its_file_declares(tmp_path: Path, monkeypatch, release: str) -> None:
    monkeypatch.delenv("COMFY_ENABLE_ASSETS", raising=False)
    monkeypatch.setenv("COMFY_LOG_LEVEL", "debug")
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--highv --cache-l 4")
    install = write_install(tmp_path / "ComfyUI", release, RELEASES[release])
    flags = installed_flags(install, version(release))
    assert flags.log_line.startswith(f"ComfyUI's flags: read from {install / 'comfy' / 'cli_args.py'} (")
    argv = comfyui_args(layout_in(tmp_path), launcher_config(), flags.table, version(release))
    argparse_parser(install / "comfy" / "cli_args.py").parse_args(argv[1:])  # exit 2 would fail the test
    assert ("--disable-assets" in argv) is (release != "0.3.64")
    assert argv[-3:] == ["--highvram", "--cache-lru", "4"]


def test_a_release_never_seen_starts_with_exactly_what_it_accepts(tmp_path: Path, monkeypatch) -> None:
    """9.0.0 dropped --disable-auto-launch, renamed --disable-assets, added --gpu-budget."""
    monkeypatch.delenv("COMFY_ENABLE_ASSETS", raising=False)
    monkeypatch.setenv("COMFY_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--gpu-bud 12 --assets=off")
    install = write_install(tmp_path / "ComfyUI", "9.0.0", RELEASE_9_0_0)
    parser = argparse_parser(install / "comfy" / "cli_args.py")
    flags = installed_flags(install, version("9.0.0"))
    argv = comfyui_args(layout_in(tmp_path), launcher_config(), flags.table, version("9.0.0"))
    parsed = parser.parse_args(argv[1:])
    assert (parsed.listen, parsed.port, parsed.gpu_budget, parsed.assets, parsed.verbose) == (
        "127.0.0.1",
        8188,
        12.0,
        "off",
        "WARNING",
    )
    assert "--disable-auto-launch" not in argv and "--disable-assets" not in argv
    assert argv[-3:] == ["--gpu-budget", "12", "--assets=off"]

    for refused, why in {
        "--disable-assets": "a flag ComfyUI 9.0.0 does not know",
        "--lis 0.0.0.0": "--listen",
        "--output-dir /x": "WORKER_DATA_DIR",
    }.items():
        monkeypatch.setenv("COMFY_EXTRA_ARGS", refused)
        with pytest.raises(ConfigError, match=why):
            comfyui_args(layout_in(tmp_path), launcher_config(), flags.table, version("9.0.0"))
    monkeypatch.setenv("COMFY_LOG_LEVEL", "CRITICAL")
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "")
    with pytest.raises(ConfigError, match=r"COMFY_LOG_LEVEL='CRITICAL' is not one of DEBUG, INFO, WARNING, ERROR$"):
        comfyui_args(layout_in(tmp_path), launcher_config(), flags.table, version("9.0.0"))

    # The tables alone would have passed what 9.0.0 dropped, and refused what it added.
    (install / "comfy" / "cli_args.py").unlink()
    fallback = installed_flags(install, version("9.0.0"))
    assert fallback.log_line.startswith(f"ComfyUI's flags: {install / 'comfy' / 'cli_args.py'} could not be read")
    assert fallback.log_line.endswith("using the worker's table, the flags of 0.38.1")
    monkeypatch.setenv("COMFY_LOG_LEVEL", "")
    argv = comfyui_args(layout_in(tmp_path), launcher_config(), fallback.table, version("9.0.0"))
    assert "--disable-auto-launch" in argv
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--gpu-budget 12")
    with pytest.raises(ConfigError, match=r"--gpu-budget, a flag ComfyUI 9\.0\.0 \(checked against the flags of"):
        comfyui_args(layout_in(tmp_path), launcher_config(), fallback.table, version("9.0.0"))


def test_a_flag_declared_under_a_condition_counts_for_prefixes_and_is_never_chosen(tmp_path: Path, monkeypatch) -> None:
    extra = 'if os.name == "nt":\n    parser.add_argument("--high-ram-mode", action="store_true")\n'
    extra += '    parser.add_argument("--disable-assets", action="store_true")\n'
    source = RELEASES["0.38.1"].replace('parser.add_argument("--disable-assets", action="store_true")\n', "")
    install = write_install(tmp_path / "ComfyUI", "9.1.0", source.replace(TAIL_MARK, extra + TAIL_MARK))
    flags = installed_flags(install, version("9.1.0"))
    assert (
        "declared only under a condition, never passed by the worker: --disable-assets --high-ram-mode"
        in flags.log_line
    )
    assert not flags.table.has("--high-ram-mode") and "--high-ram-mode" in flags.table.flags
    monkeypatch.delenv("COMFY_ENABLE_ASSETS", raising=False)
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "")
    assert "--disable-assets" not in comfyui_args(layout_in(tmp_path), launcher_config(), flags.table, version("9.1.0"))
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--high-r")  # argparse where the condition holds: ambiguous, exit 2
    with pytest.raises(ConfigError, match="could read as any of --high-ram, --high-ram-mode"):
        comfyui_args(layout_in(tmp_path), launcher_config(), flags.table, version("9.1.0"))
    monkeypatch.setenv("COMFY_EXTRA_ARGS", "--high-ram-mode")  # named in full by the user: theirs to know
    assert comfyui_args(layout_in(tmp_path), launcher_config(), flags.table, version("9.1.0"))[-1] == "--high-ram-mode"


def test_a_file_without_the_flags_the_worker_needs_falls_back_to_the_tables(tmp_path: Path) -> None:
    source = RELEASES["0.38.1"].replace('parser.add_argument("--user-directory", type=str, default=None)\n', "")
    install = write_install(tmp_path / "ComfyUI", "0.38.1", source)
    flags = installed_flags(install, version("0.38.1"))
    assert "declares no --user-directory that the reader could find" in flags.log_line
    assert flags.table.name == "the flags of 0.38.1"


TAIL_MARK = "\nif comfy.options.args_parsing:"
