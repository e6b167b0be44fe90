"""The sink registry and the adapter that lets the stream sender drive any sink."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from flow.health.sinks.base import Sink, SinkError, SinkRegistry, parse_retry_after
from flow.health.snapshot import Snapshot
from flow.health.streaming.sink import DeliveryError
from flow.health.streaming.sink_bridge import SinkBridge

from .snapshots import snapshot


class Recorder:
    def __init__(self, name: str, error: SinkError | None = None) -> None:
        self.name = name
        self.destination = f"memory:{name}"
        self.batches: list[list[Snapshot]] = []
        self.closed = 0
        self.error = error

    async def send(self, batch: Sequence[Snapshot]) -> None:
        if self.error:
            raise self.error
        self.batches.append(list(batch))

    async def aclose(self) -> None:
        self.closed += 1
        if self.name == "bad-close":
            raise RuntimeError("close failed")


def test_registry_refuses_duplicate_names_and_lists_them() -> None:
    registry = SinkRegistry()
    registry.register(Recorder("a"))
    registry.register(Recorder("b"))
    with pytest.raises(ValueError, match=r"Duplicated sink name: 'a'; registered: a, b"):
        registry.register(Recorder("a"))
    assert registry.names() == ["a", "b"] and len(registry) == 2
    assert isinstance(registry.get("a"), Sink)
    registry.unregister("a")
    assert registry.names() == ["b"]
    with pytest.raises(KeyError):
        registry.unregister("a")


def test_iteration_is_a_copy_so_sinks_may_change_meanwhile() -> None:
    registry = SinkRegistry()
    for name in "abc":
        registry.register(Recorder(name))
    seen = []
    for sink in registry:
        seen.append(sink.name)
        if sink.name == "a":
            registry.unregister("c")
    assert seen == ["a", "b", "c"] and registry.names() == ["a", "b"]


def test_aclose_closes_every_sink_even_when_one_fails() -> None:
    registry = SinkRegistry()
    sinks = [Recorder("x"), Recorder("bad-close"), Recorder("y")]
    for sink in sinks:
        registry.register(sink)
    with pytest.raises(RuntimeError, match="close failed"):
        asyncio.run(registry.aclose())
    assert [s.closed for s in sinks] == [1, 1, 1]


def test_bridge_rebuilds_snapshots_and_skips_lines_that_are_not() -> None:
    sink = Recorder("r")
    bridge = SinkBridge(sink)
    good = snapshot()
    asyncio.run(bridge.send([good.to_json(), b'{"no": "timestamp"}']))
    assert bridge.destination == "memory:r"
    assert sink.batches == [[Snapshot.from_json(good.to_json())]]
    asyncio.run(bridge.aclose())
    assert sink.closed == 1


def test_bridge_maps_sink_errors_to_delivery_errors() -> None:
    error = SinkError("r: answered 429", retryable=True, status=429, retry_after_s=7.0)
    bridge = SinkBridge(Recorder("r", error))
    with pytest.raises(DeliveryError) as info:
        asyncio.run(bridge.send([snapshot().to_json()]))
    assert (info.value.retryable, info.value.status, info.value.retry_after_s) == (True, 429, 7.0)


def test_retry_after_seconds_or_http_date() -> None:
    from datetime import datetime, timezone

    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("garbage") is None and parse_retry_after(None) is None
