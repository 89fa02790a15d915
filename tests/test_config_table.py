"""README's configuration table and the code's settings stay in step.

Every environment variable the worker's code reads is a row of the table (or is named among
those set for you, by the entrypoint or RunPod); every row is read by the code; where both give
a plain default, they agree.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import re
from typing import Any

from tests.stack import REPO

README = (REPO / "README.md").read_text()
CODE_FOLDERS = ("handler", "healthcheck", "launcher", "listeners", "worker_common", "worker_cli")
# Shell that reads settings with `${NAME:-default}`: the container's own (scripts/ sets a checkout's defaults).
SHELL_WITH_DEFAULTS = ("services/*",)
SHELL_NAMES_ONLY = ("scripts/run-local", "bin/*")
READERS = {"env_str", "env_bool", "env_int", "env_float", "env_path", "_choice", "_raw", "first_env", "getenv"}
SETTING = re.compile(r"^[A-Z][A-Z0-9_]+$")
NOT_NUMBERS = re.compile(r"[^0-9.]")
NO_DEFAULT = object()  # a default the code computes (not a plain value)


def python_settings() -> dict[str, Any]:
    """{name: default} for every variable the Python code reads (NO_DEFAULT where it is not a plain value)."""
    found: dict[str, Any] = {}
    for folder in CODE_FOLDERS:
        for path in sorted((REPO / folder).glob("*.py")):
            module = f"{folder}.{path.stem}" if path.stem != "__init__" else folder
            for node in ast.walk(ast.parse(path.read_text())):
                for name, default in _reads(node, module):
                    if found.get(name, NO_DEFAULT) is NO_DEFAULT:
                        found[name] = default
    return found


def _reads(node: ast.AST, module: str) -> list[tuple[str, Any]]:
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        return [(node.slice.value, NO_DEFAULT)] if _setting(node.slice) else []
    if not isinstance(node, ast.Call) or not node.args:
        return []
    func = node.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    first = node.args[0]
    if called == "get" and isinstance(func, ast.Attribute) and _is_environ(func.value) and _setting(first):
        return [(first.value, NO_DEFAULT)]
    if called not in READERS:
        return []
    if isinstance(first, ast.Tuple):
        return [(item.value, NO_DEFAULT) for item in first.elts if _setting(item)]
    if not _setting(first):
        return []
    default = _default(node, called, module)
    return [(first.value, default)]


def _default(node: ast.Call, called: str, module: str) -> Any:
    if len(node.args) < 2:
        return {"env_str": "", "env_bool": False}.get(called, NO_DEFAULT)
    try:
        return eval(ast.unparse(node.args[1]), vars(importlib.import_module(module)))  # our own code's expressions
    except Exception:
        return NO_DEFAULT  # computed from other settings


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _setting(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and bool(SETTING.match(node.value))


def shell_settings() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pattern in SHELL_WITH_DEFAULTS + SHELL_NAMES_ONLY:
        for path in sorted(REPO.glob(pattern)):
            for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]+):-([^}]*)\}", path.read_text()):
                plain = pattern in SHELL_WITH_DEFAULTS and default and "$" not in default
                found.setdefault(name, default if plain else NO_DEFAULT)
    for name in re.findall(r"%\(ENV_([A-Z][A-Z0-9_]+)\)s", (REPO / "supervisord.conf").read_text()):
        found.setdefault(name, NO_DEFAULT)
    return found


def table_rows() -> dict[str, str]:
    """{name: default cell} of the README's configuration table (legacy names in brackets included)."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def set_for_you() -> list[str]:
    """The names (patterns) of the README's "Set for you, not by you" paragraph."""
    paragraph = README.split("Set for you, not by you", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"`([A-Z][A-Z0-9_*]+)`", paragraph)


def code_settings() -> dict[str, Any]:
    return shell_settings() | python_settings()


def test_every_setting_the_code_reads_has_a_row() -> None:
    automatic = set_for_you()
    rows = table_rows()
    missing = [
        name
        for name in code_settings()
        if name not in rows and not any(fnmatch.fnmatch(name, pattern) for pattern in automatic)
    ]
    assert missing == [], "read by the code, not in README's configuration table"


def test_every_row_is_a_setting_the_code_reads() -> None:
    read = code_settings()
    assert [name for name in table_rows() if name not in read] == [], "in the table, never read"


def comparable_defaults() -> list[tuple[str, Any, str]]:
    """(name, the code's default, the README's cell) where both are one plain value."""
    rows = table_rows()
    pairs = []
    for name, default in code_settings().items():
        cell = rows.get(name)
        if cell is not None and default is not NO_DEFAULT and _documented(cell) is not None:
            pairs.append((name, default, cell))
    return pairs


def test_defaults_agree_where_both_are_plain_values() -> None:
    disagree = [
        f"{name}: code {default!r}, README {cell}"
        for name, default, cell in comparable_defaults()
        if _documented(cell) != _plain(default)
    ]
    assert disagree == []


def _documented(cell: str) -> str | None:
    """A cell's default as a comparable text, or None when it is not one plain value."""
    if cell in ("unset", "empty"):
        return ""
    match = re.fullmatch(r"`([^`]*)`", cell)
    if match is None:
        return None
    value = match[1]
    if not NOT_NUMBERS.search(value) and value.count(".") <= 1:
        return repr(float(value))
    return value


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, str) and not NOT_NUMBERS.search(value) and value and value.count(".") <= 1:
        return repr(float(value))
    return str(value)


def test_the_checks_see_what_they_check() -> None:
    """The parsers find the settings they are meant to (so the tests above cannot pass on nothing)."""
    read = code_settings()
    assert read["JOB_TIMEOUT_S"] == 600.0 and read["HANDLER_STOP_WAIT_S"] == "30"
    assert read["WEBSOCKET_TRACE"] is False and "BUCKET_NAME" in read and "LOG_DIR" in read
    assert table_rows()["JOB_TIMEOUT_S"] == "`600`" and "RUNPOD_POD_*" in set_for_you()
    assert len(comparable_defaults()) >= 40
