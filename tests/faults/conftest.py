"""Fixtures of the fault-injection suite: the collector tests' real HTTP receiver and logger
reset, and a simulated GPUd on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collector.conftest import _restore_flow_logger, receiver
from collector.daemon import Gpud

__all__ = ["_restore_flow_logger", "gpud", "receiver"]


@pytest.fixture
def gpud() -> Iterator[Gpud]:
    sim = Gpud(gpu_count=2)
    try:
        yield sim
    finally:
        sim.close()
