"""Fixtures of the fault-injection suite: a real HTTP receiver and a simulated GPUd on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from collector.daemon import Gpud
from collector.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver().start()
    try:
        yield rx
    finally:
        rx.close()


@pytest.fixture
def gpud() -> Iterator[Gpud]:
    sim = Gpud(gpu_count=2)
    try:
        yield sim
    finally:
        sim.close()


@pytest.fixture(autouse=True)
def _restore_flow_logger() -> Iterator[None]:
    """`flow health collect` configures the `flow` logger for stderr; undo it after each test."""
    logger = logging.getLogger("flow")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
