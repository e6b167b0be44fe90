"""The sshd fixture itself: many real servers start quickly and stop by PID; the hanging server hangs."""

from __future__ import annotations

import os
import socket

from sshd_support import HangingServer, SshdFactory


def test_a_dozen_real_sshd_start_in_parallel_and_stop_by_pid(sshd_factory: SshdFactory) -> None:
    servers = sshd_factory.start_many(12)
    assert len({s.port for s in servers}) == 12
    assert len({s.host_key.public for s in servers}) == 12  # each its own host key
    for server in servers:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-OpenSSH")
    pids = [s.process.pid for s in servers]
    sshd_factory.stop_all()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"sshd {pid} still running")


def test_the_hanging_server_accepts_and_never_sends(hanging_server: HangingServer) -> None:
    with socket.create_connection((hanging_server.host, hanging_server.port), timeout=5) as sock:
        sock.settimeout(0.3)
        try:
            data = sock.recv(64)
        except TimeoutError:
            data = None
    assert data is None  # no banner, no close
