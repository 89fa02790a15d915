"""supervisord's XML-RPC interface over its unix control socket."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from worker_common import settings


class _TimedUnixConnection(UnixStreamHTTPConnection):
    """supervisor's unix-socket connection, with the socket timeout HTTPConnection keeps but it ignores."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.timeout)


def supervisor_proxy(socket_path: Path | None = None, timeout_s: float | None = None) -> xmlrpc.client.ServerProxy:
    """A proxy whose `.supervisor` namespace is supervisord's RPC API (getProcessInfo, shutdown…).

    `timeout_s` bounds every call, so a stuck supervisord cannot stall a loop that asks it
    (the sidecar's probe); without it a call waits as long as supervisord takes.
    """
    path = str(socket_path or settings.supervisor_socket())
    transport = SupervisorTransport(None, None, serverurl=f"unix://{path}")
    if timeout_s is not None:

        def connect() -> _TimedUnixConnection:
            connection = _TimedUnixConnection("localhost", timeout=timeout_s)
            connection.socketfile = path
            return connection

        transport._get_connection = connect  # supervisor's transport offers no other hook for it
    # The host part is ignored by the unix-socket transport; it only has to parse.
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
