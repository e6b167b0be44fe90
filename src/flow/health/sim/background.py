"""Run a `SimFleet` on its own event loop in a background thread, for synchronous callers."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from flow.health.sim.server import SimFleet, SimNode

__all__ = ["FleetThread", "start_fleet_in_thread"]


class FleetThread:
    """A running fleet in a daemon thread. `.nodes` as in SimFleet; `.stop()` shuts it down."""

    def __init__(self, fleet: SimFleet) -> None:
        self.fleet = fleet
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="flow-sim-fleet", daemon=True)

    @property
    def nodes(self) -> list[SimNode]:
        return self.fleet.nodes

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
            # Let connection handlers that were cancelled at shutdown finish unwinding.
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            await self.fleet.start()
        except BaseException as exc:  # handed to the starting thread, which re-raises it
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self.fleet.stop()

    def start(self, timeout_s: float = 60.0) -> FleetThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the simulated fleet did not start within {timeout_s} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread (idempotent)."""
        if self._thread.is_alive() and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout_s)

    def __enter__(self) -> FleetThread:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_fleet_in_thread(nodes: int = 1, **kwargs: Any) -> FleetThread:
    """Start `SimFleet(nodes, **kwargs)` in a background thread; returns once it listens."""
    return FleetThread(SimFleet(nodes, **kwargs)).start()
