"""`comfy-worker SUBCOMMAND`: one command for the worker's tools, from any shell.

The image has neither `python` nor `curl` on PATH, so this command (bin/comfy-worker, run
with the worker's venv) is how a person in a Pod shell asks the worker anything:

  status                 readiness and why, programs, VRAM, queue, last errors
  probe                  exit 0 when ready, else 1 with one line why (Docker's HEALTHCHECK)
  test-input FILE|JSON   run one job through the running ComfyUI and exit 0 when it succeeded
  readyz, livez, ping, metrics
                         print what the sidecar serves on that path (exit 1 unless 2xx)
  supervisorctl ARGS     supervisorctl for this worker's supervisord

`status` and `probe` are `python -m healthcheck status|probe`; `test-input` is
`python -m handler --test_input`, which takes a request with or without its {"input": ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

HOME = Path(__file__).resolve().parent.parent
ENDPOINTS = ("readyz", "livez", "ping", "metrics")


def _healthcheck(command: str, rest: list[str]) -> int:
    from healthcheck.__main__ import main as healthcheck_main

    return healthcheck_main([command, *rest])


def _test_input(value: str) -> int:
    # The start-up window of a shell's job counts from now, not from the container's start.
    os.environ.setdefault("WORKER_STARTED_AT", f"{time.time():.3f}")
    with contextlib.suppress(OSError):  # inline JSON is no file name (and may be too long for one)
        if Path(value).is_file():
            value = str(Path(value).resolve())
    python = sys.executable
    os.execv(python, [python, "-P", "-m", "handler", "--test_input", value])
    return 1  # not reached


def _endpoint(path: str, url: str | None, timeout_s: float) -> int:
    from healthcheck import status

    base, _comfy_port, why = status.find_sidecar(url)
    if base is None:
        print(f"comfy-worker: {why}", file=sys.stderr)
        return 1
    try:
        code, body = status.get(base, path, timeout_s)
    except OSError as error:
        print(f"comfy-worker: the sidecar at {base} does not answer: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(body.decode("utf-8", "replace").rstrip("\n") + "\n" if body else "")
    if not 200 <= code < 300:
        print(f"comfy-worker: {path} answered {code}", file=sys.stderr)
        return 1
    return 0


def _supervisorctl(rest: list[str]) -> int:
    program = str(Path(sys.executable).parent / "supervisorctl")
    os.execv(program, [program, "-c", str(HOME / "supervisord.conf"), *rest])
    return 1  # not reached


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfy-worker",
        description="The worker's tools, from any shell in the container or a checkout.",
        epilog=__doc__.rpartition("\n\n")[2],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, text in (("status", "the worker's state, for a person"), ("probe", "exit 0 when ready, else 1")):
        sub = commands.add_parser(name, help=text, add_help=False)
        sub.add_argument("rest", nargs=argparse.REMAINDER, help="passed to python -m healthcheck " + name)
    test_input = commands.add_parser("test-input", help="run one job: a request file or inline JSON")
    test_input.add_argument("request", help='a JSON file or inline JSON, with or without {"input": ...}')
    for name in ENDPOINTS:
        sub = commands.add_parser(name, help=f"print the sidecar's /{name}")
        sub.add_argument("--url", help="the sidecar's base URL (default: this worker's sidecar)")
        sub.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    ctl = commands.add_parser("supervisorctl", help="supervisorctl for this worker", add_help=False)
    ctl.add_argument("rest", nargs=argparse.REMAINDER, help="supervisorctl's own arguments")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("status", "probe"):
        return _healthcheck(args.command, args.rest)
    if args.command == "test-input":
        return _test_input(args.request)
    if args.command == "supervisorctl":
        return _supervisorctl(args.rest)
    return _endpoint("/" + args.command, args.url, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
