"""`make run` as a person runs it in a terminal, in a private copy of the project.

The copy (tests/stack.copy_project, with `.venv` linked to this checkout's) has its own
`.run/`, control socket and stand-in folders; free loopback ports keep it apart from any
other stack. The command leads its own process group, as a terminal's foreground job
does, with SIGINT's default disposition, so `interrupt()` is Ctrl-C: SIGINT to the whole group.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import psutil

from tests.processes import first_line_with, free_port, wait_until
from tests.stack import REPO, VENV, copy_project

README = REPO / "README.md"


def prepare_checkout(tmp_path: Path) -> Path:
    home = copy_project(tmp_path)
    (home / ".venv").symlink_to(VENV)
    return home


class MakeRun:
    """One `make run` (or another command) in a checkout, its stdout and stderr lines kept apart."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, command: tuple[str, ...] = ("make", "run")):
        self.home = home
        self.command = command
        # Not MAKE*: under `make test` a nested make would print "Entering directory" lines of its own.
        scrubbed = ("RUNPOD_", "COMFY", "S3_", "BUCKET_", "MAKE", "MFLAGS")
        base = {k: v for k, v in os.environ.items() if not k.startswith(scrubbed)}
        ports = {name: str(free_port()) for name in ("COMFY_PORT", "SIDECAR_PORT", "LOCAL_API_PORT")}
        self.env = base | ports | {"HANDLER_STOP_WAIT_S": "10"} | (env or {})
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.popen: subprocess.Popen | None = None
        self._readers: list[threading.Thread] = []

    def start(self) -> MakeRun:
        self.popen = subprocess.Popen(
            list(self.command),
            cwd=self.home,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        for stream, lines in ((self.popen.stdout, self.lines), (self.popen.stderr, self.errors)):
            reader = threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_line(self, text: str, timeout_s: float = 240) -> str:
        popen = self.popen
        assert popen

        def exited() -> str | None:
            return None if popen.poll() is None else f"make exited ({popen.returncode})"

        return wait_until(
            lambda: first_line_with(self.lines, text),
            timeout_s,
            f"a line with {text!r}",
            interval_s=0.05,
            ended=exited,
            context=self.output,
        )

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to every process of the terminal's foreground group."""
        assert self.popen
        os.killpg(self.popen.pid, signal.SIGINT)

    def wait(self, timeout_s: float = 180) -> int:
        assert self.popen
        try:
            code = self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            command = " ".join(self.command)
            raise AssertionError(f"{command} still running after {timeout_s}s:\n{self.output()}") from None
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill_everything(self) -> None:
        """After a test: no process it started may outlive it (programs lead groups of their own)."""
        if not self.alive():
            return
        assert self.popen
        try:
            family = [psutil.Process(self.popen.pid), *psutil.Process(self.popen.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        self.popen.wait(timeout=10)

    def output(self) -> str:
        return "\n".join([*self.lines[-150:], "--- stderr ---", *self.errors[-20:]])


def _default_sigint() -> None:
    """Ctrl-C's default disposition for the command, whatever started the tests.

    A command started with `&` from a script ignores SIGINT, its children inherit that, and a
    shell cannot trap a signal ignored at its entry: the command would never see Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# -- the README's examples ------------------------------------------------------------


def readme_example(command: str) -> list[str]:
    """The lines of the README's ```console block that starts with `$ command`."""
    for block in re.findall(r"```console\n(.*?)```", README.read_text(), re.S):
        first, *rest = block.rstrip("\n").split("\n")
        if first == f"$ {command}":
            return rest
    raise AssertionError(f"the README shows no `$ {command}` example")


def _pattern(example: str) -> re.Pattern[str]:
    """An example line as a pattern: `...` stands for anything, every number for any number."""
    escaped = re.escape(example).replace(r"\.\.\.", ".*")
    return re.compile(re.sub(r"\d+(?:\\\.\d+)?", r"\\d+(?:\\.\\d+)?", escaped) + "$")


def assert_follows(example: list[str], lines: list[str]) -> None:
    """Each concrete example line matches a later line than the one before; `...` lines skip any."""
    position = 0
    for line in example:
        if line in ("...", "^C"):
            continue
        pattern = _pattern(line)
        while position < len(lines) and not pattern.match(lines[position]):
            position += 1
        assert position < len(lines), f"the README's line\n  {line}\nis not in what was printed:\n" + "\n".join(lines)
        position += 1


def split_example(example: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(stdout before Ctrl-C, stdout after it, make's own stderr lines) of an example."""
    stdout = [line for line in example if not line.startswith("make: ")]
    stderr = [line for line in example if line.startswith("make: ")]
    if "^C" in stdout:
        cut = stdout.index("^C")
        return stdout[:cut], stdout[cut + 1 :], stderr
    return stdout, [], stderr


def matches(example_line: str, line: str) -> bool:
    return bool(_pattern(example_line).match(line))
