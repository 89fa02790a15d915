"""`python -m healthcheck serve | probe | status`.

Imports are deferred to each subcommand: `probe` runs as Docker's HEALTHCHECK every few
seconds and must start fast, without loading prometheus_client, requests or psutil.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading


def _serve(_args: argparse.Namespace) -> int:
    from worker_common.contract import CODE_COPY_RECORD, PROGRAM_SIDECAR
    from worker_common.settings import ConfigError, cannot_listen, record_config_error

    from .config import SidecarConfig, environ_without_multiproc

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    log = logging.getLogger("healthcheck")
    try:
        config = SidecarConfig.from_env()
    except ConfigError as error:
        log.error("configuration error: %s", error)
        return record_config_error(PROGRAM_SIDECAR, error)
    environ_without_multiproc()

    from . import run_record
    from .collectors import build_registry
    from .monitor import Monitor
    from .server import ConnectionStats, SidecarServer

    monitor = Monitor(config)
    connections = ConnectionStats()
    registry = build_registry(
        lambda: monitor.store.current, config.multiproc_dir, connections, config.run_dir / CODE_COPY_RECORD
    )
    try:
        server = SidecarServer(
            (config.host, config.port),
            monitor.store,
            registry,
            config.loop_stale_after_s,
            client_timeout_s=config.client_timeout_s,
            max_connections=config.max_connections,
            stats=connections,
        )
    except OSError as error:
        problem = cannot_listen(config.host, config.port, config.port_setting, error)
        log.error("configuration error: %s", problem)
        return record_config_error(PROGRAM_SIDECAR, problem)
    run_record.write(config.run_dir, run_record.SidecarRecord(config.local_url, os.getpid(), config.comfy_port))
    monitor.start()
    pusher = None
    if config.push is not None:
        from .push import Pusher

        pusher = Pusher(config.push, registry)
        registry.register(pusher)
        pusher.start()

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "listening on %s:%s; probing ComfyUI at %s:%s every %gs (%gs while starting), start-up window %gs",
        config.host,
        config.port,
        config.comfy_host,
        config.comfy_port,
        config.probe_interval_s,
        config.startup_probe_interval_s,
        config.ready_timeout_s,
    )
    try:
        server.serve_forever()
    finally:
        run_record.remove(config.run_dir, os.getpid())
        if pusher:
            pusher.stop()
        monitor.stop()
        server.server_close()
    return 0


def _probe(args: argparse.Namespace) -> int:
    from .status import probe

    return probe(args.url, args.timeout)


def _status(args: argparse.Namespace) -> int:
    from .status import print_status

    return print_status(args.url, args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m healthcheck", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the sidecar (health, readiness, metrics) in the foreground")
    probe = commands.add_parser("probe", help="exit 0 if the sidecar says ready, else 1 (Docker HEALTHCHECK)")
    status = commands.add_parser("status", help="a short table of the worker's state, for a person")
    for sub, timeout in ((probe, 2.0), (status, 3.0)):
        sub.add_argument("--url", help="the sidecar's base URL (default: where this stack's sidecar says it listens)")
        sub.add_argument("--timeout", type=float, default=timeout, help=f"seconds (default {timeout:g})")
    args = parser.parse_args(argv)
    handler = {"serve": _serve, "probe": _probe, "status": _status}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
