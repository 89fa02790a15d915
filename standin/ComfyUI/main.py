"""ComfyUI stand-in: speaks ComfyUI 0.3.64's HTTP/WebSocket protocol with small CPU-only nodes.

Run it as ComfyUI is run: `python main.py --listen 127.0.0.1 --port 8188`. See ../README.md.
"""

import sys

from standin_server.app import main

if __name__ == "__main__":
    sys.exit(main(__file__, sys.argv[1:]))
