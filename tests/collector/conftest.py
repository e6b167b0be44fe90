"""Fixtures for the collector tests: a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

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
