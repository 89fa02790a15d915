"""The sidecar under hostile clients (issue 12): it listens on 0.0.0.0 on RunPod.

Half-sent requests and abandoned long-polls must not pile up threads or connections, and a
health check from a new client must still be answered while they are held. The checks read
the sidecar process's own threads and sockets (psutil), never a timing.
"""

from __future__ import annotations

import contextlib
import select
import socket

import psutil
import requests

from tests.sidecar_world import Sidecar, World, sample_value, wait_until

HALF_SENT = 300
LONG_POLLS = 50
CLIENT_TIMEOUT_S = "3"


def connect(sidecar: Sidecar, payload: bytes) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", sidecar.port), timeout=30)
    client.sendall(payload)
    return client


def ports(clients: list[socket.socket]) -> set[int]:
    return {client.getsockname()[1] for client in clients}


def held_from(process: psutil.Process, client_ports: set[int]) -> int:
    """How many of the clients on `client_ports` the sidecar still holds a socket for."""
    return sum(1 for conn in process.net_connections("tcp") if conn.raddr and conn.raddr.port in client_ports)


def test_half_sent_requests_and_abandoned_long_polls_are_released_and_ping_answers(world: World) -> None:
    # No ComfyUI: the worker stays "starting", so every /readyz?wait=600 really waits.
    sidecar = world.sidecar(SIDECAR_CLIENT_TIMEOUT_S=CLIENT_TIMEOUT_S)
    process = psutil.Process(sidecar.proc.popen.pid)
    assert requests.get(sidecar.url + "/metrics", timeout=30).status_code == 200  # its render threads exist
    threads = process.num_threads()

    half_sent = [connect(sidecar, b"GET /ping HTTP/1.1\r\nHost: sidecar\r\n") for _ in range(HALF_SENT)]
    long_poll = b"GET /readyz?wait=600 HTTP/1.1\r\nHost: sidecar\r\n\r\n"
    long_polls = [connect(sidecar, long_poll) for _ in range(LONG_POLLS)]
    half_sent_ports, long_poll_ports = ports(half_sent), ports(long_polls)
    try:
        wait_until(lambda: held_from(process, long_poll_ports) == LONG_POLLS, 60, "the long-polls held")
        # Health checks from new clients are answered while all of that is held.
        for _ in range(5):
            assert requests.get(sidecar.url + "/ping", timeout=30).status_code == 204
            assert requests.get(sidecar.url + "/livez", timeout=30).status_code == 200
        assert process.num_threads() <= threads, [t.id for t in process.threads()]
        # The long-polls are waiting, not answered: nothing to read on any of them.
        assert not select.select(long_polls, [], [], 0)[0]
        # At the connection limit (256) the longest-waiting half-sent requests made room.
        text = sidecar.metrics()
        assert sample_value(text, "comfy_worker_sidecar_connections_dropped_total", reason="evicted") >= (
            HALF_SENT + LONG_POLLS - 256
        )

        for client in long_polls:  # the clients go away, 600 s before their wait ends
            client.close()
        wait_until(lambda: held_from(process, long_poll_ports) == 0, 60, "the abandoned long-polls released")
        # Half-sent requests are closed once the client timeout passes.
        wait_until(lambda: held_from(process, half_sent_ports) == 0, 60, "the half-sent requests closed")
        text = sidecar.metrics()
        assert sample_value(text, "comfy_worker_sidecar_connections_dropped_total", reason="timeout") >= 1
        assert sample_value(text, "comfy_worker_sidecar_connections") <= 2  # this scrape, maybe its predecessor
        assert process.num_threads() <= threads
        for client in half_sent:  # the sidecar closed them: each reads end of file (or a reset)
            with contextlib.suppress(ConnectionResetError):
                assert client.recv(100) == b""
    finally:
        for client in half_sent + long_polls:
            client.close()
    assert requests.get(sidecar.url + "/ping", timeout=30).status_code == 204

    # A stop while long-polls wait (the handler's, at every container stop) ends them quietly too.
    waiting = [connect(sidecar, long_poll) for _ in range(3)]
    wait_until(lambda: held_from(process, ports(waiting)) == 3, 60, "the long-polls held")
    assert sidecar.close() == 0
    for client in waiting:
        client.close()
    alarming = [line for line in sidecar.proc.lines if "Traceback" in line or "Task was destroyed" in line]
    assert alarming == [], "evicted and stopped connections end without a traceback\n" + sidecar.proc.output()


def test_a_slow_client_cannot_hold_the_sidecar(world: World) -> None:
    """A request sent a byte at a time is cut off before it is whole; others are answered meanwhile.

    A byte comes every 10 ms or more, so a timeout per read (reset by each byte) would never fire:
    the sidecar counts SIDECAR_CLIENT_TIMEOUT_S (1 s) from the connection's start. Dribbling the
    whole request takes over 100 s, so the test tells the two apart by how far the client got,
    not by a clock.
    """
    sidecar = world.sidecar(SIDECAR_CLIENT_TIMEOUT_S="1")
    process = psutil.Process(sidecar.proc.popen.pid)
    client = connect(sidecar, b"G")
    client_port = ports([client])
    request = b"ET /ping HTTP/1.1\r\nHost: sidecar\r\n" + b"X-Pad: y\r\n" * 1000
    sent = answered = 0
    try:
        wait_until(lambda: held_from(process, client_port) == 1, 60, "the slow client accepted")
        for byte in request:
            if not held_from(process, client_port):
                break
            if sent % 5 == 0:  # the slow client is held right now: a new client is still answered
                assert requests.get(sidecar.url + "/ping", timeout=30).status_code == 204
                answered += 1
            try:
                client.send(bytes([byte]))
            except OSError:
                break  # closed by the sidecar
            sent += 1
            select.select([client], [], [], 0.01)
        assert sent < len(request), "the sidecar waited for the whole dribbled request"
        assert answered >= 1
        wait_until(lambda: held_from(process, client_port) == 0, 60, "the slow client closed")
        text = sidecar.metrics()
        assert sample_value(text, "comfy_worker_sidecar_connections_dropped_total", reason="timeout") >= 1
    finally:
        client.close()
