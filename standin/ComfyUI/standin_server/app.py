"""Start-up and shutdown, as ComfyUI's main.py behaves from the outside.

- STANDIN_COMFYUI_VERSION picks the release played (version.py); an unknown one, a flag that
  release does not have, or an unreadable knob ends the process with exit 2 before serving.
- Start-up logs ComfyUI-like lines, wipes temp/, reports custom nodes, opens 0.38.1's asset
  database (exit 1 if another process holds its lock), and only then opens HTTP; "To see the
  GUI go to: http://HOST:PORT" appears once the port accepts connections.
- SIGINT is graceful: "Stopped server", temp/ wiped, exit 0 (at once, even mid-node).
- SIGTERM keeps its default action: the process dies at once, no log line (rc -15).
- The STANDIN_* knobs (knobs.py) bend this for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.util
import logging
import os
import signal
import sys
import time
import traceback

from aiohttp import web

from . import PYTORCH_VERSION, assets, cli, logs, paths, ram_pressure
from .executor import prompt_worker
from .graph import CachePolicy
from .knobs import KnobError, Knobs
from .nodes import NODE_CLASS_MAPPINGS
from .nodes import image as image_nodes
from .server import PromptServer
from .system import memory
from .version import Release

log = logging.getLogger("standin")

# Where ComfyUI's nodes.py calls exec_module on a custom node pack (0.3.64, a125cd84).
LOAD_CUSTOM_NODE_LINE = 2131


def _startup_lines(comfyui_dir: str, release: Release) -> None:
    total_mb = memory()[0] // (1024 * 1024)
    log.info("[ComfyUI stand-in] not ComfyUI: a protocol stand-in with small CPU-only nodes")
    log.info("Checkpoint files will always be loaded safely.")
    log.info(f"Total VRAM {total_mb} MB, total RAM {total_mb} MB")
    log.info(f"pytorch version: {PYTORCH_VERSION}")
    log.info("Set vram state to: DISABLED")
    log.info("Device: cpu")
    log.info(f"Python version: {sys.version}")
    log.info(f"ComfyUI version: {release.version}")
    log.info(f"ComfyUI frontend version: {release.frontend_version}")
    log.info(f"[Prompt Server] web root: {os.path.join(comfyui_dir, 'web')}")
    log.info(f"[ComfyUI stand-in] {len(NODE_CLASS_MAPPINGS)} node classes loaded")


def _deprecations(args: argparse.Namespace, release: Release) -> None:
    """The warnings 0.38.1's main.py gives for deprecated flags."""
    if release.flag_set != "0.38":
        return
    if args.disable_api_nodes:
        log.warning(
            "--disable-api-nodes is deprecated and will be removed in a future version. It currently behaves like "
            "--offline. Use --offline to keep the frontend offline, or --disable-partner-nodes to only disable "
            "partner nodes."
        )
    if args.enable_assets:
        log.warning(
            "--enable-assets is deprecated and does nothing: the assets system is on unless ComfyUI is started "
            "with --disable-assets."
        )


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


def _import_packs(custom_nodes: str, failed: set[str]) -> list[tuple[float, str, bool]]:
    """nodes.load_custom_node for each pack folder: imported for real, its NODE_CLASS_MAPPINGS registered."""
    imports = []
    names = sorted(os.listdir(custom_nodes)) if os.path.isdir(custom_nodes) else []
    for name in names:
        module_path = os.path.join(custom_nodes, name)
        if name in failed or not os.path.isfile(os.path.join(module_path, "__init__.py")):
            continue
        started = time.perf_counter()
        try:
            spec = importlib.util.spec_from_file_location(name, os.path.join(module_path, "__init__.py"))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            NODE_CLASS_MAPPINGS.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
            imports.append((time.perf_counter() - started, module_path, True))
        except Exception:
            log.warning(traceback.format_exc())
            log.warning(f"Cannot import {module_path} module for custom nodes")
            imports.append((time.perf_counter() - started, module_path, False))
    return imports


def _custom_nodes(folders: paths.Folders, knobs: Knobs, args: argparse.Namespace) -> None:
    """nodes.init_external_custom_nodes' report, with STANDIN_FAILED_CUSTOM_NODES' failed packs."""
    if args.disable_all_custom_nodes and not args.whitelist_custom_nodes:
        log.info("Skipping loading of custom nodes")
        return
    custom_nodes = os.path.join(folders.base, "custom_nodes")
    nodes_py = os.path.join(folders.install, "nodes.py")
    imports = [(0.0, os.path.join(custom_nodes, "websocket_image_save.py"), True)]
    imports += _import_packs(custom_nodes, {pack for pack, _ in knobs.failed_custom_nodes})
    for pack, error_line in knobs.failed_custom_nodes:
        module_path = os.path.join(custom_nodes, pack)
        kind, sep, message = error_line.partition(": ")
        if not sep or not kind.replace(".", "").replace("_", "").isalnum():
            error_line, message = f"Exception: {error_line}", error_line
        traceback_text = "\n".join(
            [
                "Traceback (most recent call last):",
                f'  File "{nodes_py}", line {LOAD_CUSTOM_NODE_LINE}, in load_custom_node',
                "    module_spec.loader.exec_module(module)",
                '  File "<frozen importlib._bootstrap_external>", line 940, in exec_module',
                '  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed',
                f'  File "{os.path.join(module_path, "__init__.py")}", line 1, in <module>',
                "    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS",
                error_line,
                "",
            ]
        )
        log.warning(traceback_text)  # traceback.format_exc() ends with a newline: ComfyUI logs a blank line
        log.warning(f"Cannot import {module_path} module for custom nodes: {message}")
        imports.append((0.0, module_path, False))
    log.info("\nImport times for custom nodes:")
    for seconds, module_path, success in sorted(imports):
        log.info("{:6.1f} seconds{}: {}".format(seconds, "" if success else " (IMPORT FAILED)", module_path))
    log.info("")


def _configure_folders(comfyui_dir: str, args: argparse.Namespace) -> paths.Folders:
    """main.apply_custom_paths and start_comfyui's folder set-up, with their log lines."""
    folders = paths.configure(
        comfyui_dir,
        args.base_directory,
        input_dir=args.input_directory,
        output_dir=args.output_directory,
        temp_dir=args.temp_directory,
        user_dir=args.user_directory,
        models_dir=args.models_directory,
    )
    default_extra = os.path.join(comfyui_dir, "extra_model_paths.yaml")
    if os.path.isfile(default_extra):
        paths.load_extra_model_paths(default_extra)
    for config_list in args.extra_model_paths_config or []:
        for config_path in config_list:
            paths.load_extra_model_paths(config_path)
    if args.base_directory:
        log.info(f"Setting base directory to: {folders.base}")
    if args.models_directory:
        log.info(f"Setting models directory to: {folders.models_root}")
    for flag, path in (("output", args.output_directory), ("input", args.input_directory)):
        if path:
            log.info(f"Setting {flag} directory to: {os.path.abspath(path)}")
    if args.user_directory:
        log.info(f"Setting user directory to: {folders.user}")
    if args.temp_directory:
        log.info(f"Setting temp directory to: {folders.temp}")
    return folders


def cache_policy(args: argparse.Namespace, release: Release, knobs: Knobs) -> CachePolicy:
    """main.prompt_worker's choice of cache (0.38.1's default is RAM pressure)."""
    if args.cache_lru > 0:
        return CachePolicy("lru", lru_size=args.cache_lru)
    if args.cache_none:
        return CachePolicy("none")
    if args.cache_classic or not release.ram_pressure_cache_default:
        return CachePolicy("classic")
    return CachePolicy("ram", ram_headroom=ram_pressure.headroom(args.cache_ram), drops_after_prompt=knobs.cache_drops)


def _hang_forever() -> None:
    """STANDIN_HANG_AFTER_S: block the event loop; the port still accepts, nothing answers."""
    log.warning("[ComfyUI stand-in] STANDIN_HANG_AFTER_S reached: the event loop blocks from now on")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


def _exit(code: int) -> None:
    """Wipe temp/ and end the process (ComfyUI's cleanup_temp / asset shutdown)."""
    paths.wipe_temp()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a node may still be running in a worker thread, and real ComfyUI does not
    # wait for it either (its prompt worker is a daemon thread).
    os._exit(code)


async def _listen(runner: web.AppRunner, args: argparse.Namespace, release: Release) -> None:
    """server.start_multi_address: bind every --listen address, saying where the GUI is."""
    if not args.dont_print_server:
        log.info("Starting server\n")
    for address in args.listen.split(","):
        site = web.TCPSite(runner, address, args.port)
        try:
            await site.start()
        except OSError as err:
            if err.errno == errno.EADDRINUSE and release.port_in_use_message:
                log.error(
                    f"Port {args.port} is already in use on address {address}. Please close the other "
                    "application or use a different port with --port."
                )
                _exit(1)
            raise
        if not args.dont_print_server:
            shown = f"[{address}]" if ":" in address else address
            log.info(f"To see the GUI go to: http://{shown}:{args.port}")


async def serve(args: argparse.Namespace, knobs: Knobs, release: Release, store: assets.AssetStore) -> None:
    loop = asyncio.get_running_loop()
    server = PromptServer(
        loop,
        knobs,
        max_upload_mb=args.max_upload_size,
        cache=cache_policy(args, release, knobs),
        assets=store,
        feature_flags=args.feature_flag,
    )
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    publisher = asyncio.create_task(server.publish_loop())
    worker = asyncio.create_task(prompt_worker(server.prompt_queue, server.executor, server))
    logs.print_startup_warnings()
    await _listen(runner, args, release)
    server.start_asset_scan(("models", "input"))
    if knobs.hang_after_s is not None:
        loop.call_later(knobs.hang_after_s, _hang_forever)

    await stop.wait()
    publisher.cancel()
    worker.cancel()
    log.info("\nStopped server")
    _exit(0)


def _asset_settings(args: argparse.Namespace) -> assets.AssetSettings:
    return assets.AssetSettings(
        disabled=args.disable_assets,
        database_url=args.database_url,
        hashing=args.enable_asset_hashing,
    )


def main(main_py: str, args: argparse.Namespace, release: Release) -> int:
    """Everything after the command line (main.py parses it first, with cli.parse)."""
    try:
        knobs = Knobs.from_env()
    except KnobError as err:
        sys.stderr.write(f"[ComfyUI stand-in] {err}\n")
        return 2
    logs.setup(cli.console_level(args), cli.file_log_outputs(args))
    _deprecations(args, release)
    # Validation recurses once per node of a chain (up to validation.MAX_VALIDATION_DEPTH).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    comfyui_dir = os.path.dirname(os.path.abspath(main_py))
    _startup_lines(comfyui_dir, release)
    if knobs.boot_delay_s > 0:
        time.sleep(knobs.boot_delay_s)
    if knobs.crash_on_start:
        return _crash(knobs.crash_on_start, os.path.abspath(main_py))

    folders = _configure_folders(comfyui_dir, args)
    image_nodes.settings["disable_metadata"] = args.disable_metadata
    settings = _asset_settings(args)
    if settings.disabled:
        paths.wipe_temp()
    _custom_nodes(folders, knobs, args)
    # 0.38.1's setup_database: exits 1 when the database cannot be had.
    store = assets.start(settings) if release.asset_system else assets.disabled()
    if store.enabled:
        paths.wipe_temp()  # 0.38.1 wipes temp in run_asset_startup, after the database is open

    if args.quick_test_for_ci:
        return 0  # main.py exits here, after the database and before serving
    if knobs.never_ready:
        log.warning("[ComfyUI stand-in] STANDIN_NEVER_READY: HTTP will never come up")
        while True:
            time.sleep(3600)

    asyncio.run(serve(args, knobs, release, store))
    return 0
