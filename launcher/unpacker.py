"""`python -m launcher.unpacker`: write a pack's files into a code copy, in a process of its own.

Run by launcher/codecopy.py (`unpack_in_process`): a fresh worker unpacks the pack
(launcher/codepack.py) while it checks the volume, and writing ~20,000 files from Python
threads would hold the interpreter's lock the check's 64 threads need between their look-ups.
Asked on stdin (JSON: the pack, the copy's folder, the streams), it answers on stdout with the
files it wrote; an error is its last line on stderr, with exit status 1.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

from launcher import codepack
from launcher.codecopy import copy_path


def main() -> int:
    job = json.load(sys.stdin)
    pack = codepack.from_index(job["index"], Path(job["folder"]))
    try:
        written = codepack.unpack(pack, functools.partial(copy_path, Path(job["copy_dir"])), job["streams"])
    except OSError as error:
        print(error, file=sys.stderr)
        return 1
    json.dump(sorted(written), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
