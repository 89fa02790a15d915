"""`python -m launcher`: start ComfyUI (the comfyui program). `python -m launcher prepare`: the entrypoint's step."""

from __future__ import annotations

import sys

from launcher.launch import launch
from launcher.prepare import prepare
from worker_common.contract import ExitCode
from worker_common.settings import ConfigError


def main(argv: list[str]) -> int:
    if not argv:
        return launch()
    if argv == ["prepare"]:
        try:
            prepare()
        except ConfigError as error:
            print(error, file=sys.stderr, flush=True)
            return ExitCode.CONFIG
        return ExitCode.OK
    print("usage: python -m launcher [prepare]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
