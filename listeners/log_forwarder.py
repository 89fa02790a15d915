"""Copies every supervised program's output to the container's stdout as "[program] line".

supervisord hands program output to this listener as PROCESS_LOG events (programs set
`stdout_events_enabled`). A chunk may end mid-line, so each program's unfinished line is
held until its newline arrives; blank lines (ComfyUI prints a few) are left out, as a
"[comfyui] " with nothing after it says nothing. State changes are reported as
"[supervisord] ..." lines, since supervisord's own log stays in its file. Output goes to
stderr: stdout is the event protocol's channel.
"""

from __future__ import annotations

import sys
from typing import TextIO

from supervisor import childutils

from worker_common.contract import LISTENERS

_STATE_PREFIX = "PROCESS_STATE_"


class LineJoiner:
    """Turns chunks of one program's output into whole prefixed lines."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._partial: dict[str, str] = {}

    def feed(self, program: str, chunk: str) -> None:
        text = self._partial.pop(program, "") + chunk
        *lines, rest = text.split("\n")
        for line in lines:
            if line.strip():
                self._out.write(f"[{program}] {line.rstrip(chr(13))}\n")
        if rest:
            self._partial[program] = rest
        self._out.flush()

    def state_change(self, program: str, from_state: str, to_state: str) -> None:
        self._out.write(f"[supervisord] {program}: {from_state} -> {to_state}\n")
        self._out.flush()


def handle(joiner: LineJoiner, headers: dict, payload: str) -> None:
    event = headers["eventname"]
    if event.startswith("PROCESS_LOG"):
        header_line, _, data = payload.partition("\n")
        fields = childutils.get_headers(header_line)
        joiner.feed(fields["processname"], data)
    elif event.startswith(_STATE_PREFIX):
        header_line, _, _ = payload.partition("\n")
        fields = childutils.get_headers(header_line)
        if fields["processname"] in LISTENERS:
            return
        joiner.state_change(fields["processname"], fields["from_state"], event[len(_STATE_PREFIX) :])


def main() -> None:
    joiner = LineJoiner(sys.stderr)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        handle(joiner, headers, payload)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
