"""Shared fixtures: every test runs with FLOW_HOME in a temp dir and no FLOW_* from the caller."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_flow_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("FLOW_"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("flow-home")
    monkeypatch.setenv("FLOW_HOME", str(home))
    yield home


@pytest.fixture
def flow_home(_isolated_flow_home: Path) -> Path:
    return _isolated_flow_home
