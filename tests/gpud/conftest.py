"""Fixtures for the GPUd client tests: real servers on 127.0.0.1 (see servers.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from gpud.servers import GpudStub, RawServer, Route, answer_plain_http, make_tls_files, say_nothing


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed ECDSA certificate, like the one GPUd makes at each start."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def gpud_stub(tls_files: tuple[Path, Path]) -> Iterator[Callable[[Mapping[str, Route]], GpudStub]]:
    started: list[GpudStub] = []

    def make(routes: Mapping[str, Route]) -> GpudStub:
        stub = GpudStub(dict(routes), *tls_files).start()
        started.append(stub)
        return stub

    yield make
    for stub in started:
        stub.close()


@pytest.fixture
def plain_tcp_server() -> Iterator[RawServer]:
    """Speaks plain HTTP where TLS is expected: the client's TLS handshake fails."""
    server = RawServer(answer_plain_http)
    yield server
    server.close()


@pytest.fixture
def silent_server() -> Iterator[RawServer]:
    """Accepts connections and never answers, not even the TLS handshake."""
    server = RawServer(say_nothing)
    yield server
    server.close()


@pytest.fixture
def refused_url() -> str:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}"
