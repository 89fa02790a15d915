"""ComfyUI stand-in: speaks ComfyUI 0.3.64's (or 0.38.1's, 0.47.1's) HTTP/WebSocket protocol with small CPU-only nodes.

Run it as ComfyUI is run: `python main.py --listen 127.0.0.1 --port 8188`. See ../README.md.
As ComfyUI's main.py, it reads its command line before importing anything heavy, so a bad
flag ends it (exit 2) at once.
"""

import sys

from standin_server import cli, version

release = version.select(version.requested())
args = cli.parse(release)

from standin_server.app import main  # noqa: E402 - after the command line, as in ComfyUI

if __name__ == "__main__":
    sys.exit(main(__file__, args, release))
