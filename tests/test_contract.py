"""The shell files and supervisord.conf agree with worker_common/contract.py.

They cannot import Python, so they spell a few of its values out: the entrypoint and
bin/comfy-worker as named `readonly` variables, supervisord.conf as section names, exit codes
and socket paths. Each test here fails when one of those differs from contract.py, or when a
value is written as a bare literal instead of through its name.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from worker_common import contract
from worker_common.contract import ExitCode

ROOT = Path(__file__).resolve().parent.parent
SHELL_FILES = sorted([*(ROOT / "services").iterdir(), *(ROOT / "bin").iterdir()])
# The contract's names each shell file must define (and so use instead of a literal).
DEFINED = {
    "services/entrypoint": {
        "EXIT_SUPERVISOR_DIED",
        "EXIT_ALREADY_RUNNING",
        "EXIT_CONFIG",
        "EXIT_CODE_FILE",
        "EXIT_REASON_FILE",
        "CONFIG_ERROR_SUFFIX",
    },
    "bin/comfy-worker": {"EXIT_CONFIG"},
}
# The exit codes supervisord.conf counts as expected, by meaning.
EXPECTED_EXITS = {
    contract.PROGRAM_HANDLER: {ExitCode.OK, ExitCode.NOT_READY, ExitCode.CONFIG},
    contract.PROGRAM_SIDECAR: {ExitCode.CONFIG},
}
ASSIGNMENT = re.compile(r"\b([A-Z][A-Z_]*)=(\S+)")
RUN_DIR_FILES = (contract.EXIT_CODE_FILE, contract.EXIT_REASON_FILE, contract.CONFIG_ERROR_SUFFIX)


def contract_value(name: str) -> object:
    """What contract.py says the shell variable `name` holds."""
    if hasattr(contract, name):
        return getattr(contract, name)
    return ExitCode[name.removeprefix("EXIT_")]


def definitions(text: str) -> dict[str, str]:
    """The `readonly NAME=value ...` definitions of a shell file."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("readonly "):
            found.update(ASSIGNMENT.findall(line.partition("#")[0]))
    return found


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shell_values_are_the_contracts(path: Path) -> None:
    text = path.read_text()
    defined = definitions(text)
    assert set(defined) == DEFINED.get(f"{path.parent.name}/{path.name}", set())
    for name, value in defined.items():
        assert value == str(contract_value(name)), f"{path.name}: {name}={value}, contract.py says otherwise"
    body = "\n".join(line for line in text.splitlines() if not line.startswith("readonly "))
    assert not re.findall(r"\b(?:exit|finish) [1-9][0-9]*\b", body), "an exit code written as a number"
    for name in RUN_DIR_FILES:
        assert name not in body, f"{path.name} spells {name!r} out instead of using its variable"


def read_conf() -> configparser.RawConfigParser:
    conf = configparser.RawConfigParser()
    conf.read(ROOT / "supervisord.conf")
    return conf


def test_supervisord_programs_are_the_contracts() -> None:
    sections = read_conf().sections()
    programs = [s.partition(":")[2] for s in sections if s.startswith("program:")]
    listeners = [s.partition(":")[2] for s in sections if s.startswith("eventlistener:")]
    assert sorted(programs) == sorted(contract.CRITICAL_PROGRAMS)
    assert sorted(listeners) == sorted(contract.LISTENERS)


def test_supervisord_exit_codes_are_the_contracts() -> None:
    conf = read_conf()
    for program in contract.CRITICAL_PROGRAMS:
        section = conf[f"program:{program}"]
        logfile = section.get("stdout_logfile")
        assert logfile == f"%(ENV_LOG_DIR)s/{program}.log"
        if program in EXPECTED_EXITS:
            codes = {int(code) for code in section["exitcodes"].split(",")}
            assert codes == {int(code) for code in EXPECTED_EXITS[program]}, program


def test_supervisord_socket_is_the_contracts() -> None:
    conf = read_conf()
    socket = f"%(here)s/.run/{contract.SUPERVISOR_SOCKET_FILE}"
    assert conf["unix_http_server"]["file"] == socket
    assert conf["supervisorctl"]["serverurl"] == f"unix://{socket}"
