"""supervisord's XML-RPC interface over its unix control socket."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from worker_common import settings


def supervisor_proxy(socket_path: Path | None = None) -> xmlrpc.client.ServerProxy:
    """A proxy whose `.supervisor` namespace is supervisord's RPC API (getProcessInfo, shutdown…)."""
    path = socket_path or settings.supervisor_socket()
    transport = SupervisorTransport(None, None, serverurl=f"unix://{path}")
    # The host part is ignored by the unix-socket transport; it only has to parse.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
