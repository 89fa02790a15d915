"""The README and docs say what the project does: codes, pointers, commands, examples.

What needs a running `make run` (its example output, the Pod commands run against a stack)
is checked in test_make_run.py; here are the checks that need at most a short-lived stack.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.make_run import matches
from tests.stack import REPO
from worker_common.contract import ExitCode

README = (REPO / "README.md").read_text()
DOCUMENTED_FILES = ("*.md", "**/*.md", "**/*.py", "**/*.yml", "supervisord.conf", "services/*", "scripts/*")


def table_codes(text: str, heading: str) -> set[int]:
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    return {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)}


def entrypoint_codes() -> set[int]:
    return {int(code) for code in re.findall(r"\bexit (\d+)\b", (REPO / "services" / "entrypoint").read_text())}


def test_exit_code_tables_list_every_code_the_container_can_exit_with() -> None:
    codes = {int(code) for code in ExitCode} | entrypoint_codes()
    assert table_codes(README, "### Exit codes of the container") == codes
    assert table_codes((REPO / "docs" / "design.md").read_text(), "## Exit codes") == codes


def test_config_errors_of_every_program_are_documented_as_78() -> None:
    for text in (README, (REPO / "docs" / "design.md").read_text()):
        [row] = [line for line in text.splitlines() if line.startswith("| 78 |")]
        assert "launch check" in row and "handler" in row and "sidecar" in row, row


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", *DOCUMENTED_FILES], cwd=REPO, capture_output=True, text=True).stdout
    return [REPO / name for name in names.split() if (REPO / name).is_file()]


def test_every_pointer_to_a_doc_names_a_file_that_exists() -> None:
    files = tracked_text_files()
    names = {path.name for path in files}
    missing = []
    for path in files:
        for pointer in set(re.findall(r"[\w./-]*[\w-]+\.md\b", path.read_text(errors="replace"))):
            if pointer.startswith(("shared/", "../shared/")):
                continue  # the project's notes beside the checkout, not part of it
            if "/" not in pointer and pointer in names:
                continue  # a bare name: code joins it to its folder (REPO / "docs" / "design.md")
            if not ((path.parent / pointer).exists() or (REPO / pointer).exists()):
                missing.append(f"{path.relative_to(REPO)}: {pointer}")
    assert missing == []


def pod_block() -> list[str]:
    section = README.split("## Debugging in a Pod", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_pod_commands_are_tools_the_image_puts_on_path() -> None:
    tools = {path.name for path in (REPO / "bin").iterdir()}  # the image's PATH has /opt/comfy-worker/bin
    help_text = subprocess.run(
        [str(REPO / "bin" / "comfy-worker"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    subcommands = set(re.findall(r"^    (\S+)", help_text, re.M))
    for command in pod_block():
        program, subcommand, *_ = command.split()
        assert program in tools, f"`{command}`: no {program} in the image"
        if program == "comfy-worker":
            assert subcommand in subcommands, f"`{command}`: comfy-worker has no {subcommand}"
    assert not re.search(r"^\s*(python|curl) ", "\n".join(pod_block()), re.M)


def test_requests_are_shown_with_their_input_wrapper() -> None:
    section = README.split("## Requests and responses", 1)[1].split("\n## ", 1)[0]
    request = json.loads(re.search(r"```json\n(.*?)```", section, re.S)[1])
    assert list(request) == ["input"]
    sent = re.search(r"-d @(\S+)`", section)[1]
    assert list(json.loads((REPO / sent).read_text())) == ["input"]


def test_the_dangling_venv_example_is_what_the_container_prints(make_stack, tmp_path: Path) -> None:
    example = re.search(r"`(\[entrypoint\] exiting with code 78: [^`]*)`", README)[1]
    example = " ".join(example.split())
    venv, target = tmp_path / "com_venv", tmp_path / "python3.12"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(target)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
    stack = make_stack(COMFYUI_VENV=str(venv))
    assert stack.start().wait_exit(timeout_s=90) == 78, stack.output()
    expected = example.replace("/runpod-volume/ComfyUI/com_venv", str(venv)).replace("/usr/bin/python3.12", str(target))
    assert matches(expected, stack.lines[-1]), f"README: {expected}\nprinted: {stack.lines[-1]}"
