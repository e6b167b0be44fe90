"""Reading a day's lines: plain and gzip alike, offsets that survive compression, damage skipped.

A day's *stream* is the decompressed `.jsonl.gz` followed by the `.jsonl`. Compression copies
bytes verbatim (and ends the compressed part with a newline), so a byte offset into the stream
names the same line before and after its file is compressed: that is what a `StreamPosition`
holds. Nothing here raises on bad data: a line that is not a snapshot, a torn last line and a
damaged gzip tail are counted in `ReadCounters` and skipped.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import orjson

from flow.errors import StorageError
from flow.health.snapshot import SCHEMA_VERSION, format_time, parse_time
from flow.health.storage.layout import DayFiles, to_utc
from flow.health.storage.locking import task_lock

__all__ = [
    "CHUNK_BYTES",
    "TS_END",
    "TS_PREFIX",
    "Line",
    "OpenDay",
    "ReadCounters",
    "decode_record",
    "fast_timestamp",
    "gz_chunks",
    "iter_day_lines",
    "open_day",
    "plain_chunks",
    "time_key",
]

CHUNK_BYTES = 1024 * 1024
_GZ_IN_BYTES = 256 * 1024
# Snapshot.to_dict puts schema and timestamp first, so a line starts with this and the
# 24-byte timestamp: a window test can skip a line without decoding it.
TS_PREFIX = b'{"schema":%d,"timestamp":"' % SCHEMA_VERSION
_TS_LEN = 24
TS_END = len(TS_PREFIX) + _TS_LEN  # where the timestamp's closing quote is


@dataclass
class ReadCounters:
    """What reads skipped. `corrupt_lines` counts lines that are not snapshots (torn by a
    crash, damaged, or not JSON) and damaged gzip tails."""

    corrupt_lines: int = 0
    examples: list[str] = field(default_factory=list)

    def corrupt(self, where: str) -> None:
        self.corrupt_lines += 1
        if len(self.examples) < 10:
            self.examples.append(where)


class Line(NamedTuple):
    data: bytes  # without its newline
    start: int  # offset of its first byte in the day's stream
    end: int  # offset just past it (past its newline when it has one)
    terminated: bool  # False for a last line with no newline: torn, or still being written
    plain: bool  # it comes from the `.jsonl` part (the one that can still grow)


@dataclass
class OpenDay:
    """A day's files, opened together under the task's shared lock (a consistent pair)."""

    files: DayFiles
    gz: BinaryIO | None
    plain: BinaryIO | None

    def close(self) -> None:
        for f in (self.gz, self.plain):
            if f is not None:
                f.close()

    def __enter__(self) -> OpenDay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_or_none(path: Path) -> BinaryIO | None:
    try:
        return open(path, "rb")  # closed by OpenDay.close
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{path}: cannot read metrics: {exc.strerror or exc}", path=path) from exc


def open_day(files: DayFiles) -> OpenDay:
    """Open a day's `.jsonl.gz` and `.jsonl` as one consistent view.

    The compressor swaps them under the exclusive lock (rename the new `.gz`, then unlink the
    `.jsonl`), so opening both under the shared lock never sees a line twice or not at all.
    """
    try:
        with task_lock(files.task_dir, shared=True, create=False):
            gz = _open_or_none(files.gz)
            try:
                plain = _open_or_none(files.plain)
            except StorageError:
                if gz is not None:
                    gz.close()
                raise
    except OSError as exc:  # the lock itself (say a store of another user)
        raise StorageError(f"{files.task_dir}: cannot read metrics: {exc.strerror or exc}",
                           path=files.task_dir) from exc
    return OpenDay(files=files, gz=gz, plain=plain)


def gz_chunks(f: BinaryIO, counters: ReadCounters, where: str) -> Iterator[bytes]:
    """Decompressed bytes of a (multi-member) gzip file; a damaged or truncated tail ends it
    quietly after everything before it was returned, and is counted once."""
    decomp = zlib.decompressobj(wbits=31)
    started = False
    while True:
        raw = f.read(_GZ_IN_BYTES)
        if not raw:
            break
        started = True
        while raw:
            try:
                out = decomp.decompress(raw)
            except zlib.error:
                counters.corrupt(f"{where}: damaged gzip data")
                return
            if out:
                yield out
            if decomp.eof:
                raw = decomp.unused_data
                decomp = zlib.decompressobj(wbits=31)  # the next gzip member, if any
                started = bool(raw)
            else:
                raw = b""
    if started:
        out = decomp.flush()
        if out:
            yield out
        counters.corrupt(f"{where}: truncated gzip data")


def plain_chunks(f: BinaryIO, skip: int) -> Iterator[bytes]:
    if skip:
        f.seek(skip, os.SEEK_SET)
    while True:
        chunk = f.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _split(chunks: Iterator[bytes], base: int, *, plain: bool) -> Iterator[Line]:
    """Lines of a chunk stream. A last line without a newline is `terminated=False` only in
    the plain part (it may still be growing); a compressed part never grows, so its tail is
    final and left to the decoder to accept or count."""
    rest = b""
    pos = base
    for chunk in chunks:
        buf = rest + chunk if rest else chunk
        parts = buf.split(b"\n")
        rest = parts.pop()
        for part in parts:
            end = pos + len(part) + 1
            yield Line(part, pos, end, True, plain)
            pos = end
    if rest:
        yield Line(rest, pos, pos + len(rest), not plain, plain)


def iter_day_lines(day: OpenDay, counters: ReadCounters, *, start_offset: int = 0) -> Iterator[Line]:
    """Every line of the day's stream from `start_offset` (which must be a line start)."""
    base = 0
    if day.gz is not None:
        where = str(day.files.gz)
        if start_offset == 0:
            for line in _split(gz_chunks(day.gz, counters, where), 0, plain=False):
                yield line
                base = line.end
        else:
            # Skip what the cursor already consumed without splitting it into lines.
            gz_len = 0
            pending: list[bytes] = []
            for chunk in gz_chunks(day.gz, counters, where):
                if gz_len + len(chunk) > start_offset:
                    pending.append(chunk[max(0, start_offset - gz_len):])
                gz_len += len(chunk)
            if pending:
                yield from _split(iter(pending), start_offset, plain=False)
            base = gz_len
    if day.plain is not None:
        skip = max(0, start_offset - base)
        yield from _split(plain_chunks(day.plain, skip), base + skip, plain=True)


def fast_timestamp(data: bytes) -> bytes | None:
    """The line's timestamp (`YYYY-MM-DDTHH:MM:SS.mmmZ`) read without decoding, or None."""
    if (
        data.startswith(TS_PREFIX)
        and data[TS_END : TS_END + 1] == b'"'
        and data[TS_END - 1 : TS_END] == b"Z"
    ):
        return data[len(TS_PREFIX) : TS_END]
    return None


def time_key(moment: datetime) -> bytes:
    """The stored timestamp text for `moment`, rounded up to the millisecond: stored times
    have millisecond precision, so `stored >= time_key(t)` is exactly `stored >= t`."""
    moment = to_utc(moment)
    if moment.microsecond % 1000:
        moment += timedelta(microseconds=1000 - moment.microsecond % 1000)
    return format_time(moment).encode("ascii")


def decode_record(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """The decoded JSON object and its normalised timestamp key, or None if it is not one."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    ts = obj.get("timestamp")
    if not isinstance(ts, str):
        return None
    try:
        key = format_time(parse_time(ts)).encode("ascii")
    except (ValueError, OverflowError):
        return None
    return obj, key
