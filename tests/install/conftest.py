"""Fixtures for the install tests: an isolated root and a stand-in GPUd tarball."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from install.support import kill_root_processes, make_gpud_tarball
from sshd_support import free_port


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """An empty directory standing in for `/` (the scripts' FLOW_ROOT). Whatever the no-systemd
    fallback started under it is stopped at teardown, even when the test failed midway."""
    path = tmp_path / "root"
    path.mkdir()
    try:
        yield path
    finally:
        kill_root_processes(path)


@pytest.fixture
def tarballs(tmp_path: Path) -> Path:
    """A directory with the stand-in gpud v0.5.1 tarball for this machine's architecture."""
    directory = tmp_path / "tarballs"
    make_gpud_tarball(directory, "v0.5.1")
    return directory


@pytest.fixture
def gpud_port() -> int:
    return free_port()
