"""The log-format rules of the container's stdout (and of `make run`'s), in one place.

Every line starts with `[program] `; each program's lines follow that program's one format.
ComfyUI's lines are ComfyUI's own (the worker does not reformat them), but never empty.
"""

from __future__ import annotations

import re

PYTHON_LOGGING = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S")
FORMATS = {
    "handler": PYTHON_LOGGING,
    "sidecar": PYTHON_LOGGING,
    "supervisord": re.compile(r"[\w-]+: [A-Z]+ -> [A-Z]+$"),
    "comfyui": re.compile(r".*\S"),  # ComfyUI's own text, indented or not
    "entrypoint": re.compile(r"\S"),
    "watchdog": re.compile(r"\S"),
    "run-local": re.compile(r"\S"),
    "demo": re.compile(r"\S"),
}
_PREFIX = re.compile(r"\[([\w-]+)\] (.*)$")


def violations(lines: list[str]) -> list[str]:
    """Lines that name no known program, or do not follow their program's format."""
    bad = []
    for line in lines:
        match = _PREFIX.match(line)
        if not match or match[1] not in FORMATS or not FORMATS[match[1]].match(match[2]):
            bad.append(line)
    return bad
