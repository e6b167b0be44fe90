"""Fixtures that start real servers (see servers.py); each is stopped by PID after use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .servers import Server, run_moto, run_pushgateway


@pytest.fixture
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A fresh Pushgateway (no persistence) on a free loopback port."""
    with run_pushgateway(tmp_path_factory.mktemp("pushgateway")) as server:
        yield server


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """moto in server mode, shared by a module's tests (each uses its own namespace)."""
    with run_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server
