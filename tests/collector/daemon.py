"""Helpers for the collector tests: a simulated GPUd, an in-process daemon, the store's ids."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from flow.health.collector import Collector, CollectorSettings
from flow.health.sim import FleetThread, SimNode, start_fleet_in_thread
from flow.health.storage.store import MetricsStore
from flow.health.storage.stream import StreamPosition
from flow.health.streaming.payload import record_from_dict

__all__ = ["Gpud", "InProcessDaemon", "python_env", "stored_ids", "wait_for"]


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds; a hang-protection bound, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Gpud:
    """A simulated GPUd on a fixed port that can go down and come back on the same port."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._fleet: FleetThread | None = start_fleet_in_thread(1, **kwargs)
        self.port = self._fleet.nodes[0].port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def node(self) -> SimNode | None:
        """The simulated node while it is up (its `requests` count what it served)."""
        return self._fleet.nodes[0] if self._fleet is not None else None

    def down(self) -> None:
        if self._fleet is not None:
            self._fleet.stop()
            self._fleet = None

    def up(self) -> None:
        if self._fleet is None:
            self._fleet = start_fleet_in_thread(1, base_port=self.port, **self._kwargs)

    def close(self) -> None:
        self.down()


class InProcessDaemon:
    """`Collector.run()` on its own event loop in a thread, so a test can poll and poke."""

    def __init__(self, settings: CollectorSettings, **parts: Any) -> None:
        self.settings = settings
        self._parts = parts
        self.collector: Collector | None = None
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def go() -> None:
            self._stop = asyncio.Event()
            self.collector = Collector(self.settings, **self._parts)
            self._started.set()
            await self.collector.run(self._stop)

        try:
            self._loop.run_until_complete(go())
        except BaseException as exc:
            self.error = exc
            self._started.set()
        finally:
            self._loop.close()

    def start(self) -> InProcessDaemon:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the collector did not stop"
        if self.error is not None:
            raise self.error

    @property
    def cycles(self) -> int:
        return self.collector.cycles if self.collector else 0


def stored_ids(metrics_dir: Path, task_id: str) -> list[str]:
    """The record id of every snapshot in the store, in order (what should reach the endpoint)."""
    store = MetricsStore(metrics_dir, 7, 1, auto_cleanup=False)
    return [record_from_dict(orjson.loads(data))["id"]
            for data, _ in store.iter_raw_from(StreamPosition.start(task_id))]


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    env.update(extra)
    return env
