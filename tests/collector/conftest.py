"""Fixtures for the collector tests: a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from collector.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver().start()
    try:
        yield rx
    finally:
        rx.close()


@pytest.fixture(autouse=True)
def _restore_flow_logger() -> Iterator[None]:
    """`flow health collect` configures the `flow` logger for stderr; undo it after each test."""
    logger = logging.getLogger("flow")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
