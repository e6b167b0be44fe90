"""The metrics store as the stream's backlog: one task's log, read in batches from a position.

Positions are the store's `StreamPosition` (task, UTC day, byte offset into the day's stream),
kept in the cursor as its `to_dict()`. They survive compression of a day, so a backlog that
spans days is read exactly once in order, from the `.jsonl.gz` days to today's `.jsonl`.

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
        days = self._store.days(self._task_id)
        position = StreamPosition.start(self._task_id)
        if days:
            start = StreamPosition(task_id=self._task_id, day=days[-1], offset=0)
            position = start
            for _, position in self._store.iter_raw_from(start):  # noqa: B007 - the last one
                pass
        return position.to_dict()

    def is_ours(self, raw: Any) -> bool:
        """Whether a saved position belongs to this task (a changed task id starts afresh)."""
        return isinstance(raw, Mapping) and raw.get("task_id") == self._task_id

    def read_after(self, position: Any, limit: int) -> tuple[list[bytes], Any]:
        at = self._position(position)
        if self._last is not None and self._last[0] == at and len(self._last[1]) >= limit:
            return list(self._last[1]), self._last[2].to_dict()
        start = at
        if self._reader is None or self._reader_at != at:
            self._reader = self._store.iter_raw_from(at)
        out: list[bytes] = []
        for data, pos in self._reader:  # only lines that are JSON objects with a timestamp
            out.append(data)
            at = pos
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
