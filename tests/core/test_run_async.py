"""`flow.cli.common.run_async`: the result of a sweep or a Prometheus read is returned without
asyncio building its repr (a 10,000-node fleet view spent 1.1 s of 5 s in that repr)."""

from __future__ import annotations

import asyncio

import pytest

from flow.cli.common import run_async


class Big:
    """Counts the times its repr is built."""

    reprs = 0

    def __repr__(self) -> str:
        Big.reprs += 1
        return "Big()"


async def produce() -> Big:
    await asyncio.sleep(0)
    return Big()


def test_the_result_comes_back_without_its_repr_being_built() -> None:
    Big.reprs = 0
    assert isinstance(run_async(produce()), Big)
    assert Big.reprs == 0


def test_plain_asyncio_run_builds_it_which_is_why_run_async_exists() -> None:
    Big.reprs = 0
    asyncio.run(produce())
    assert Big.reprs >= 1  # if this stops holding, run_async can go


def test_errors_propagate() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_async(fail())
