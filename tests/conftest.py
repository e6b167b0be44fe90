"""Shared fixtures: every test runs with FLOW_HOME in a temp dir and no FLOW_* from the caller."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Local runs explore new examples each time; CI (CI=true) replays a fixed set, so a submission's
# result does not depend on the draw. A failure found locally becomes a regular test.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# A run that skips tests for want of a dependency fails, naming each (tests/skip_policy.py).
pytest_plugins = ["skip_policy"]


@pytest.fixture(autouse=True)
def _isolated_flow_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("FLOW_"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("flow-home")
    monkeypatch.setenv("FLOW_HOME", str(home))
    yield home


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    # A one-shot command run in-process freezes the heap it leaves (paused_gc(freeze=True), so
    # the real command does not pay a collection at exit); the tests after it get it back.
    yield
    gc.unfreeze()


@pytest.fixture
def flow_home(_isolated_flow_home: Path) -> Path:
    return _isolated_flow_home


@pytest.fixture
def isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HOME in a temp dir (no ~/.ssh/config or known_hosts of the machine running the tests), no
    ssh-agent, and a wide terminal for the views."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return home


# Real OpenSSH sshd servers (tests/sshd_support.py); any part's end-to-end tests may use them.
from sshd_support import (  # noqa: E402
    HangingServer,
    SshdFactory,
    SshdServer,
    sshd_missing_reason,
    sshd_servers,
)


@pytest.fixture
def sshd_factory(tmp_path: Path) -> Iterator[SshdFactory]:
    """Starts real sshd servers (`.start()`, `.start_many(n)`); all stopped after the test."""
    reason = sshd_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    yield from sshd_servers(tmp_path / "sshd")


@pytest.fixture
def sshd(sshd_factory: SshdFactory) -> SshdServer:
    """One real sshd on 127.0.0.1 trusting `sshd.client_key`; `sshd.params()` reaches it."""
    return sshd_factory.start()


@pytest.fixture
def hanging_server() -> Iterator[HangingServer]:
    """A TCP server on 127.0.0.1 that accepts and never sends an SSH banner."""
    server = HangingServer()
    try:
        yield server
    finally:
        server.close()
