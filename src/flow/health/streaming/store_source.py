"""The metrics store as the stream's backlog: one task's log, read in batches from a position.

Positions are the store's `StreamPosition` (for each UTC day of the task, the bytes of that
day's stream already read), kept in the cursor as its `to_dict()`. They survive compression of
a day and do not depend on the order in which days were written, so a sample stored into an
earlier day after a later one (a clock stepped back, or one that ran ahead) is still sent.

The store's reader is a generator over the files; keeping it open between batches (while the
sender asks for the position it last returned) reads a long backlog in one pass instead of
reopening, and re-inflating, a compressed day for every batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flow.health.storage.store import MetricsStore
from flow.health.storage.stream import StreamPosition

__all__ = ["StoreBacklog"]


class StoreBacklog:
    """`BacklogSource` over one task of a `MetricsStore`. Not thread-safe: one reader at a time."""

    def __init__(self, store: MetricsStore, task_id: str) -> None:
        self._store = store
        self._task_id = task_id
        self._reader: Iterator[tuple[bytes, StreamPosition]] | None = None
        self._reader_at: StreamPosition | None = None
        # The last batch read, kept so that a retry after a failed send costs no I/O.
        self._last: tuple[StreamPosition, list[bytes], StreamPosition] | None = None

    def _position(self, raw: Any) -> StreamPosition:
        if isinstance(raw, Mapping):
            try:
                position = StreamPosition.from_dict(raw)
            except ValueError:
                return StreamPosition.start(self._task_id)
            if position.task_id == self._task_id:
                return position
        return StreamPosition.start(self._task_id)

    def start_position(self) -> dict[str, Any]:
        return StreamPosition.start(self._task_id).to_dict()

    def end_position(self) -> dict[str, Any]:
        return self._store.end_position(self._task_id).to_dict()

    def is_ours(self, raw: Any) -> bool:
        """Whether a saved position belongs to this task (a changed task id starts afresh)."""
        return isinstance(raw, Mapping) and raw.get("task_id") == self._task_id

    def read_after(self, position: Any, limit: int) -> tuple[list[bytes], Any]:
        at = self._position(position)
        if self._last is not None and self._last[0] == at and len(self._last[1]) >= limit:
            return list(self._last[1]), self._last[2].to_dict()
        start = at
        if self._reader is None or self._reader_at != at:
            self._reader = self._store.iter_raw_from(at, with_skipped=True)
        out: list[bytes] = []
        for data, pos in self._reader:
            at = pos  # past a damaged line too (the store counted it): it is never sent
            if not data:
                continue
            out.append(data)
            if len(out) >= limit:
                self._reader_at = at
                self._last = (start, out, at)
                return list(out), at.to_dict()
        # The reader reached the end of what is written: start a fresh one next time, which
        # also picks up a new day file.
        self._reader = None
        self._reader_at = None
        self._last = None
        return out, at.to_dict()
