"""Start-up and shutdown, as ComfyUI's main.py behaves from the outside.

- Start-up logs ComfyUI-like lines, wipes temp/, and only then opens HTTP; "To see the GUI go
  to: http://HOST:PORT" appears once the port accepts connections.
- SIGINT is graceful: "Stopped server", temp/ wiped, exit 0 (at once, even mid-node).
- SIGTERM keeps its default action: the process dies at once, no log line (rc -15).
- The STANDIN_* knobs (knobs.py) bend this for tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

from aiohttp import web

from . import COMFYUI_VERSION, FRONTEND_VERSION, PYTORCH_VERSION, cli, logs, paths
from .executor import prompt_worker
from .knobs import Knobs
from .nodes import NODE_CLASS_MAPPINGS
from .nodes import image as image_nodes
from .server import PromptServer
from .system import memory

log = logging.getLogger("standin")


def _startup_lines(comfyui_dir: str) -> None:
    total_mb = memory()[0] // (1024 * 1024)
    log.info("[ComfyUI stand-in] not ComfyUI: a protocol stand-in with small CPU-only nodes")
    log.info("Checkpoint files will always be loaded safely.")
    log.info(f"Total VRAM {total_mb} MB, total RAM {total_mb} MB")
    log.info(f"pytorch version: {PYTORCH_VERSION}")
    log.info("Set vram state to: DISABLED")
    log.info("Device: cpu")
    log.info(f"Python version: {sys.version}")
    log.info(f"ComfyUI version: {COMFYUI_VERSION}")
    log.info(f"ComfyUI frontend version: {FRONTEND_VERSION}")
    log.info(f"[Prompt Server] web root: {os.path.join(comfyui_dir, 'web')}")


def _crash(message: str, main_py: str) -> int:
    """STANDIN_CRASH_ON_START: die during start-up the way a broken install does."""
    base = os.path.dirname(main_py)
    lines = [
        "Traceback (most recent call last):",
        f'  File "{main_py}", line 147, in <module>',
        "    import execution",
        f'  File "{os.path.join(base, "execution.py")}", line 15, in <module>',
        "    import comfy.model_management",
        f'  File "{os.path.join(base, "comfy", "model_management.py")}", line 20, in <module>',
        "    import comfy.samplers",
        message,
    ]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    return 1


def _hang_forever() -> None:
    """STANDIN_HANG_AFTER_S: block the event loop; the port still accepts, nothing answers."""
    log.warning("[ComfyUI stand-in] STANDIN_HANG_AFTER_S reached: the event loop blocks from now on")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


def _stop(code: int = 0) -> None:
    log.info("\nStopped server")
    paths.wipe_temp()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a node may still be running in a worker thread, and real ComfyUI does not
    # wait for it either (its prompt worker is a daemon thread).
    os._exit(code)


async def serve(args, knobs: Knobs) -> None:
    loop = asyncio.get_running_loop()
    server = PromptServer(
        loop,
        knobs,
        max_upload_size=round(args.max_upload_size * 1024 * 1024),
        cache=not args.cache_none,
    )
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    publisher = asyncio.create_task(server.publish_loop())
    worker = asyncio.create_task(prompt_worker(server.prompt_queue, server.executor, server))
    for address in args.listen.split(","):
        site = web.TCPSite(runner, address, args.port)
        await site.start()
        if not args.dont_print_server:
            shown = f"[{address}]" if ":" in address else address
            log.info("Starting server\n")
            log.info(f"To see the GUI go to: http://{shown}:{args.port}")
    if knobs.hang_after_s is not None:
        loop.call_later(knobs.hang_after_s, _hang_forever)

    await stop.wait()
    publisher.cancel()
    worker.cancel()
    _stop(0)


def main(main_py: str, argv: list[str]) -> int:
    args, unknown = cli.parse(argv)
    logs.setup(args.verbose)
    if unknown:
        log.warning(f"[ComfyUI stand-in] ignoring unknown arguments: {' '.join(unknown)}")
    knobs = Knobs.from_env()
    # Validation recurses once per node of a chain (up to validation.MAX_VALIDATION_DEPTH).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    comfyui_dir = os.path.dirname(os.path.abspath(main_py))
    _startup_lines(comfyui_dir)
    if knobs.boot_delay_s > 0:
        time.sleep(knobs.boot_delay_s)
    if knobs.crash_on_start:
        return _crash(knobs.crash_on_start, os.path.abspath(main_py))

    paths.configure(
        args.base_directory or comfyui_dir,
        input_dir=args.input_directory,
        output_dir=args.output_directory,
        temp_dir=args.temp_directory,
        user_dir=args.user_directory,
    )
    default_extra = os.path.join(comfyui_dir, "extra_model_paths.yaml")
    if os.path.isfile(default_extra):
        paths.load_extra_model_paths(default_extra)
    for config_list in args.extra_model_paths_config or []:
        for config_path in config_list:
            paths.load_extra_model_paths(config_path)
    image_nodes.settings["disable_metadata"] = args.disable_metadata
    paths.wipe_temp()

    log.info("\nImport times for custom nodes:")
    log.info(f"   0.0 seconds: {os.path.join(comfyui_dir, 'custom_nodes', 'websocket_image_save.py')}")
    log.info(f"[ComfyUI stand-in] {len(NODE_CLASS_MAPPINGS)} node classes loaded\n")

    if knobs.never_ready:
        log.warning("[ComfyUI stand-in] STANDIN_NEVER_READY: HTTP will never come up")
        while True:
            time.sleep(3600)

    asyncio.run(serve(args, knobs))
    return 0
