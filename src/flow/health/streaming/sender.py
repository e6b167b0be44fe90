"""The stream sender: the local store is the log, the cursor is how far the destination acked.

It runs as its own asyncio task beside the sampler. Each round it reads at most one batch
after the cursor from disk (memory stays bounded whatever the outage length), sends it, and
on a 2xx moves the cursor past it and saves the cursor atomically. A failed batch stays
where it is and is sent again after a wait: exponential backoff with full jitter for errors
that retrying fixes (or the server's Retry-After), the capped interval for the rest. Since
the cursor only moves after an acknowledgement, a crash resends at most one batch.

A partial batch (the tail of the log) is held until it fills, until its oldest record has
waited `flush_s` (counted from the wake that first saw it), until the sampler marks a sample
`urgent` (the node's status changed: a fault never waits for a batch to fill), or until
shutdown. A backlog of a batch or more is sent at once, in full batches.

Logging says what changed, not what repeated: the first failure of an outage, a change in the
kind of failure, and the recovery, each once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from flow.health.streaming.backoff import Backoff
from flow.health.streaming.cursor import CursorFile, CursorState
from flow.health.streaming.payload import line_identity, record_id
from flow.health.streaming.sink import BatchSink, DeliveryError

__all__ = ["DEFAULT_SHUTDOWN_GRACE_S", "BacklogSource", "Streamer", "StreamerStats"]

log = logging.getLogger("flow.collector.stream")

DEFAULT_SHUTDOWN_GRACE_S = 3.0


class BacklogSource(Protocol):
    """Resumable reads of the local store, oldest first. Positions are opaque and JSON-able."""

    def start_position(self) -> Any:
        """The position before the oldest retained record."""
        ...

    def end_position(self) -> Any:
        """The position after the newest stored record."""
        ...

    def read_after(self, position: Any, limit: int) -> tuple[list[bytes], Any]:
        """Up to `limit` stored lines (snapshot JSON) after `position`, and the position after them."""
        ...


@dataclass
class StreamerStats:
    delivered: int = 0
    batches: int = 0
    failures: int = 0
    last_error: str | None = None


class Streamer:
    """Delivers the store's records after the cursor to one sink, forever (until `stop`)."""

    def __init__(
        self,
        *,
        source: BacklogSource,
        sink: BatchSink,
        cursor: CursorFile,
        batch_size: int,
        poll_s: float,
        backoff: Backoff | None = None,
        shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
        flush_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`flush_s`: the longest a partial batch is held (0: it is sent at once)."""
        self._source = source
        self._sink = sink
        self._cursor_file = cursor
        self._batch_size = batch_size
        self._poll_s = poll_s
        self._backoff = backoff or Backoff()
        self._grace_s = shutdown_grace_s
        self._flush_s = flush_s
        self._clock = clock
        self._state: CursorState | None = None
        self.stats = StreamerStats()
        self._failing_since: float | None = None
        self._failure_kind: str | None = None
        self._drain_until: float | None = None
        self._io: ThreadPoolExecutor | None = None

    @property
    def destination(self) -> str:
        return self._sink.destination

    async def aclose(self) -> None:
        await self._sink.aclose()

    @property
    def state(self) -> CursorState | None:
        return self._state

    @property
    def acked_timestamp(self) -> str | None:
        """Timestamp of the newest acknowledged record: everything after it is undelivered."""
        return self._state.last_timestamp if self._state else None

    def resume(self) -> CursorState:
        """Load the cursor, or start one, and save it before any sample is taken.

        A first start (no cursor) begins at the end of the store: the destination receives
        what is collected from now on. A corrupt cursor begins at the oldest retained record
        (duplicates rather than loss). A cursor written for another destination is restarted
        at the end of the store, and the log says so.
        """
        destination = self._sink.destination
        state = self._cursor_file.load()
        if state is None and self._cursor_file.was_corrupt:
            log.error("stream cursor %s is corrupt; resending every retained record to %s "
                      "(the destination may see duplicates)", self._cursor_file.path, destination)
            state = CursorState(destination=destination, position=self._source.start_position())
        elif state is None:
            state = CursorState(destination=destination, position=self._source.end_position())
            log.info("streaming to %s from now on (new cursor %s)", destination, self._cursor_file.path)
        elif state.destination != destination:
            log.warning("stream cursor %s was for %s; streaming to %s from now on",
                        self._cursor_file.path, state.destination, destination)
            state = CursorState(destination=destination, position=self._source.end_position())
        else:
            log.info("streaming to %s, resuming after %s (%d records delivered so far)",
                     destination, state.last_timestamp or "the start", state.delivered)
        self._cursor_file.save(state)
        self._state = state
        return state

    async def run(self, stop: asyncio.Event, wake: asyncio.Event | None = None,
                  urgent: asyncio.Event | None = None) -> None:
        """Send until `stop` is set. `wake` is set by the sampler after each stored sample;
        `urgent`, set before `wake`, says that sample must not wait for a batch to fill.

        On stop, while the destination is answering, what is left is sent for up to
        `shutdown_grace_s` (a clean restart leaves no backlog); a batch still in flight at the
        end of the grace period is abandoned, and stays after the cursor for the next start.
        """
        state = self._state or self.resume()
        wake = wake or asyncio.Event()
        urgent = urgent or asyncio.Event()
        self._drain_until = None
        # One worker thread for the store reads and cursor writes: the reads stay in order, and
        # large buffers are not spread over many threads' malloc arenas (RSS stays flat).
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-stream-io")
        # While a full batch is being sent, the next one is read (a backlog replay overlaps
        # disk and network); one read at a time, so the store's reader is never shared.
        prefetch: asyncio.Future[tuple[list[bytes], Any, Any]] | None = None
        # A partial batch being held: its lines (later reads start after them, so a held
        # batch is read once), and when its oldest line was first seen.
        held: list[bytes] = []
        held_next: Any = None
        held_since: float | None = None
        # An urgent sample is stored: send through the end of the log, partial batch included.
        flushing = False
        try:
            while True:
                if stop.is_set():
                    if self._drain_until is None:
                        self._drain_until = self._clock() + self._grace_s
                    if self._failing_since is not None or self._clock() >= self._drain_until:
                        return
                wake.clear()
                if urgent.is_set():
                    # Cleared before the read, so that this read (or a later one) holds the
                    # urgent sample; `flushing` lasts until a read reaches the end of the log.
                    urgent.clear()
                    flushing = True
                prepared: Any = None
                prefetched = prefetch is not None
                if prefetch is not None:
                    snapshots, next_position, prepared = await prefetch
                    prefetch = None
                elif held:
                    more, next_position = await self._read(held_next, self._batch_size - len(held))
                    snapshots = held + more
                else:
                    snapshots, next_position = await self._read(state.position)
                held = []
                if not snapshots:
                    flushing = False
                    held_since = None
                    if next_position != state.position:
                        # Only damaged lines (counted by the store): move past them for good.
                        state.position = next_position
                        await asyncio.get_running_loop().run_in_executor(
                            self._io, self._cursor_file.save, state)
                    if prefetched:
                        # Read while the previous batch was being sent: what was stored since
                        # is not in it. Read again before taking this for the end of the log
                        # (at a stop, it would be left on disk until the next start).
                        continue
                    if stop.is_set():
                        return
                    await _wait_any(stop, wake, urgent, timeout=self._poll_s)
                    continue
                partial = len(snapshots) < self._batch_size
                if partial and not flushing and not stop.is_set():
                    now = self._clock()
                    if held_since is None:
                        held_since = now
                    if now < held_since + self._flush_s:
                        held, held_next = snapshots, next_position
                        await _wait_any(stop, wake, urgent, timeout=held_since + self._flush_s - now)
                        continue
                if not partial:
                    prefetch = asyncio.ensure_future(self._read_ahead(next_position))
                outcome = await self._send_one(snapshots, stop, prepared)
                if outcome is None:  # abandoned at shutdown
                    return
                if isinstance(outcome, DeliveryError):
                    # Read again from the cursor; `held_since` and `flushing` stand, so a due
                    # or urgent batch stays due.
                    await _discard(prefetch)
                    prefetch = None
                    delay = self._on_failure(outcome)
                    if not stop.is_set():
                        await _wait_any(stop, timeout=delay)
                    continue
                await self._ack(state, snapshots, next_position)
                if partial:
                    flushing = False
                    held_since = None
                    if not stop.is_set():
                        # A partial batch was the end of the log: wait for the next sample (which
                        # sets `wake`, cleared before that read) rather than read an empty tail.
                        await _wait_any(stop, wake, urgent, timeout=self._poll_s)
        finally:
            await _discard(prefetch)
            self._io.shutdown(wait=False)
            self._io = None

    async def _read(self, position: Any, limit: int | None = None) -> tuple[list[bytes], Any]:
        return await asyncio.get_running_loop().run_in_executor(
            self._io, self._source.read_after, position, limit or self._batch_size)

    async def _read_ahead(self, position: Any) -> tuple[list[bytes], Any, Any]:
        """The next batch, and, when the sink can, its request body encoded ahead: a backlog
        replay then reads, encodes and sends three batches at once on two CPUs."""
        lines, next_position = await self._read(position)
        prepare = getattr(self._sink, "prepare", None)
        prepared = await prepare(lines) if lines and prepare is not None else None
        return lines, next_position, prepared

    async def _ack(self, state: CursorState, snapshots: Sequence[bytes], next_position: Any) -> None:
        """The destination acknowledged: move the cursor past the batch and save it."""
        task_id, node, timestamp = line_identity(snapshots[-1])
        state.position = next_position
        state.delivered += len(snapshots)
        state.last_timestamp = timestamp or state.last_timestamp
        state.last_id = record_id(task_id, node, timestamp)
        await asyncio.get_running_loop().run_in_executor(self._io, self._cursor_file.save, state)
        self.stats.delivered += len(snapshots)
        self.stats.batches += 1
        self._on_success()

    async def _send_one(
        self, snapshots: Sequence[bytes], stop: asyncio.Event, prepared: Any = None
    ) -> DeliveryError | bool | None:
        """True when acknowledged, the error when refused, None when abandoned at shutdown."""
        if prepared is not None:
            send = asyncio.ensure_future(self._sink.send(snapshots, prepared=prepared))  # type: ignore[call-arg]
        else:
            send = asyncio.ensure_future(self._sink.send(snapshots))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({send, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not send.done():
                if self._drain_until is None:
                    self._drain_until = self._clock() + self._grace_s
                await asyncio.wait({send}, timeout=max(0.0, self._drain_until - self._clock()))
            if not send.done():
                send.cancel()
                with contextlib.suppress(asyncio.CancelledError, DeliveryError):
                    await send
                log.warning("shutting down: abandoned an in-flight batch of %d records; "
                            "it is resent on the next start", len(snapshots))
                return None
        finally:
            stopping.cancel()
        exc = send.exception()
        if exc is None:
            return True
        if isinstance(exc, DeliveryError):
            return exc
        # A sink bug must not kill delivery (nor lose data): treat it as a retryable failure.
        log.debug("sink raised %r", exc, exc_info=exc)
        return DeliveryError(f"error: {type(exc).__name__}: {exc}", retryable=True)

    def _on_failure(self, error: DeliveryError) -> float:
        self.stats.failures += 1
        self.stats.last_error = error.message
        if error.retryable:
            delay = self._backoff.next_delay(error.retry_after_s)
        else:
            delay = self._backoff.capped_delay()
        if self._failing_since is None:
            self._failing_since = self._clock()
        if error.kind != self._failure_kind:
            self._failure_kind = error.kind
            if error.retryable:
                log.warning("delivery to %s failing: %s; records stay on disk, retrying with backoff",
                            self._sink.destination, error.message)
            else:
                log.error("delivery to %s rejected: %s; records stay on disk, retrying every %g s "
                          "(fix the token or the endpoint; no restart needed)",
                          self._sink.destination, error.message, self._backoff.max_s)
        else:
            log.debug("delivery to %s still failing: %s; next attempt in %.1f s",
                      self._sink.destination, error.message, delay)
        return delay

    def _on_success(self) -> None:
        if self._failing_since is not None:
            log.info("delivery to %s resumed after %d failed attempts over %.0f s; sending the backlog",
                     self._sink.destination, self._backoff.failures, self._clock() - self._failing_since)
        self._failing_since = None
        self._failure_kind = None
        self._backoff.reset()


async def _discard(future: asyncio.Future[Any] | None) -> None:
    """Wait for a prefetch nobody will use (its thread cannot be interrupted) and drop it."""
    if future is not None:
        with contextlib.suppress(Exception):
            await future


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Return when any event is set or after `timeout` seconds, whichever is first."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
