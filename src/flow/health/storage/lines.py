"""Reading a day's lines: plain and gzip alike, offsets that survive compression, damage skipped.

A day's *stream* is the decompressed `.jsonl.gz` followed by the `.jsonl`. Compression copies
bytes verbatim (and ends the compressed part with a newline), so a byte offset into the stream
names the same line before and after its file is compressed: that is what a `StreamPosition`
holds. Nothing here raises on bad data: a line that is not a snapshot, a torn last line and a
damaged gzip tail are counted in `ReadCounters` and skipped.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Iterator
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
    "MAX_LINE_BYTES",
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
    "well_formed_time_key",
]

CHUNK_BYTES = 1024 * 1024
_GZ_IN_BYTES = 256 * 1024
_GZ_MAGIC = b"\x1f\x8b\x08"
#: The longest line read. A snapshot of an 8-GPU node is about 9 KiB and GPUd's answers are
#: capped before they become one; a longer line is damage (a run of NULs after a crash, say)
#: and is skipped and counted without being held in memory.
MAX_LINE_BYTES = 4 * 1024 * 1024
# Snapshot.to_dict puts schema and timestamp first, so a line starts with this and the
# 24-byte timestamp: a window test can skip a line without decoding it.
TS_PREFIX = b'{"schema":%d,"timestamp":"' % SCHEMA_VERSION
_TS_LEN = 24
TS_END = len(TS_PREFIX) + _TS_LEN  # where the timestamp's closing quote is
#: A stored timestamp's shape. A line is judged by its prefix alone only when the timestamp
#: there has it: a damaged byte in it would otherwise compare as "outside the window" and the
#: line vanish uncounted; such a line goes through decoding, which counts it.
_TS_SHAPE = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def well_formed_time_key(key: bytes) -> bool:
    """True when `key` (a line's timestamp bytes) is `YYYY-MM-DDTHH:MM:SS.mmmZ` in digits."""
    return _TS_SHAPE.fullmatch(key) is not None


@dataclass
class ReadCounters:
    """What reads skipped. `corrupt_lines` counts lines that are not snapshots (torn by a
    crash, damaged, over-long, or not JSON) and lines lost in damaged gzip data; `unreadable`
    names the day files that could not be opened at all."""

    corrupt_lines: int = 0
    examples: list[str] = field(default_factory=list)
    #: Day files that could not be opened (permissions, a directory in the way), skipped.
    unreadable: list[str] = field(default_factory=list)

    def corrupt(self, where: str) -> None:
        self.corrupt_lines += 1
        if len(self.examples) < 10:
            self.examples.append(where)

    def skipped_file(self, why: str) -> None:
        if why not in self.unreadable and len(self.unreadable) < 100:
            self.unreadable.append(why)


class Line(NamedTuple):
    data: bytes  # without its newline (empty for a line over MAX_LINE_BYTES)
    start: int  # offset of its first byte in the day's stream
    end: int  # offset just past it (past its newline when it has one)
    terminated: bool  # False for a last line with no newline: torn, or still being written
    plain: bool  # it comes from the `.jsonl` part (the one that can still grow)
    too_long: bool = False  # over MAX_LINE_BYTES: dropped unread, to be counted as corrupt


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
    """Decompressed bytes of a (multi-member) gzip file, in chunks of at most `CHUNK_BYTES`
    (so a member that inflates a thousandfold costs no more memory than any other).

    Damage never hides what precedes it: everything zlib can inflate before the first bad
    byte is returned (found by replaying the failing input in ever smaller pieces), the loss is
    counted (about as many lines as the member's recorded size says are missing, at least
    one), and reading resumes at the next gzip member if a later one is intact. A truncated
    tail is returned as far as it goes and counted once.
    """
    decomp = zlib.decompressobj(wbits=31)
    in_member = False
    member_out = member_lines = 0
    line_bytes = 0.0  # the mean line length of the member's first chunk (before any damage)
    consumed = 0  # compressed bytes of the file handed to zlib so far
    pending = b""
    while True:
        if not pending:
            pending = f.read(_GZ_IN_BYTES)
            if not pending:
                break
        in_member = True
        saved = decomp.copy()
        try:
            out = decomp.decompress(pending, CHUNK_BYTES)
        except zlib.error:
            out, used = _salvage(saved, pending)
            if out:
                member_lines += out.count(b"\n")
                member_out += len(out)
                yield out
            damage_at = consumed + used
            _count_damage(f, counters, where, damage_at, member_lines, line_bytes)
            # Resume at the next member (late writes folded in by the compressor are members).
            restart = _next_member(f, damage_at + 1)
            if restart is None:
                return
            f.seek(restart)
            consumed, pending = restart, b""
            # Every member starts a line (the compressor ends each with a newline): end the
            # damaged one's last partial line here, so that it never glues onto the next.
            yield b"\n"
            decomp = zlib.decompressobj(wbits=31)
            in_member = False
            member_out = member_lines = 0
            line_bytes = 0.0
            continue
        if out:
            newlines = out.count(b"\n")
            if not line_bytes and newlines:
                line_bytes = len(out) / newlines
            member_lines += newlines
            member_out += len(out)
            yield out
        if decomp.eof:
            rest = decomp.unused_data
            consumed += len(pending) - len(rest)
            pending = rest
            decomp = zlib.decompressobj(wbits=31)  # the next gzip member, if any
            in_member = False
            member_out = member_lines = 0
            line_bytes = 0.0
        else:
            tail = decomp.unconsumed_tail
            consumed += len(pending) - len(tail)
            pending = tail
    if in_member:
        out = decomp.flush()
        if out:
            yield out
        counters.corrupt(f"{where}: truncated gzip data")
    elif consumed == 0 and f.tell() == 0:
        counters.corrupt(f"{where}: empty gzip file")  # the compressor never writes one


def _salvage(saved: Any, data: bytes) -> tuple[bytes, int]:
    """What `saved` (a decompressor before `data`) inflates from `data` before the damage,
    and how many bytes of `data` precede the bad one. Only runs on damaged files."""
    out: list[bytes] = []
    used = 0
    step = 1024
    size = 0
    while used < len(data) and size < 64 * CHUNK_BYTES:
        trial = saved.copy()
        try:
            piece = trial.decompress(data[used : used + step])
        except zlib.error:
            if step == 1:
                break
            step = 1
            continue
        out.append(piece)
        size += len(piece)
        used += min(step, len(data) - used)
        saved = trial
        if trial.eof:
            break
    return b"".join(out), used


def _count_damage(f: BinaryIO, counters: ReadCounters, where: str, at: int, member_lines: int,
                  line_bytes: float) -> None:
    """Count the lines lost at damage: the member's recorded size (the gzip trailer's ISIZE,
    when the damaged member is the file's last) over its mean line length, less the lines
    inflated. Damaged data often inflates to text without newlines until zlib notices, so
    counting the newlines seen would hide most of the loss."""
    lost = 1
    try:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    except OSError:
        isize = 0
    if line_bytes:
        lost = max(1, round(isize / line_bytes) - member_lines)
    counters.corrupt(f"{where}: damaged gzip data at compressed byte {at} "
                     f"(about {lost} line(s) unreadable)")
    counters.corrupt_lines += lost - 1


def _next_member(f: BinaryIO, after: int) -> int | None:
    """The offset of the next gzip member header at or after `after`, or None."""
    f.seek(after)
    carry = b""
    base = after
    while True:
        block = f.read(_GZ_IN_BYTES)
        if not block:
            return None
        buf = carry + block
        hit = buf.find(_GZ_MAGIC)
        if hit >= 0:
            return base - len(carry) + hit
        carry = buf[-(len(_GZ_MAGIC) - 1):]
        base += len(block)


def plain_chunks(f: BinaryIO, skip: int) -> Iterator[bytes]:
    if skip:
        f.seek(skip, os.SEEK_SET)
    while True:
        chunk = f.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def _split(chunks: Iterable[bytes], base: int, *, plain: bool) -> Iterator[Line]:
    """Lines of a chunk stream starting at stream offset `base`. A last line without a newline
    is `terminated=False` only in the plain part (it may still be growing); a compressed part
    never grows, so its tail is final and left to the decoder to accept or count.

    A line over `MAX_LINE_BYTES` is not kept: its bytes are dropped as they come (constant
    memory, linear time) and it is yielded with no data and `too_long` set.
    """
    rest = b""
    pos = base  # where the next line starts
    at = base  # the stream offset of the chunk's first byte
    skipping = False  # inside an over-long line that started at `pos`
    for chunk in chunks:
        chunk_at = at
        at += len(chunk)
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            end = chunk_at + nl + 1
            yield Line(b"", pos, end, True, plain, True)
            pos = end
            chunk = chunk[nl + 1 :]
            skipping = False
        buf = rest + chunk if rest else chunk
        parts = buf.split(b"\n")
        rest = parts.pop()
        for part in parts:
            end = pos + len(part) + 1
            if len(part) > MAX_LINE_BYTES:
                yield Line(b"", pos, end, True, plain, True)
            else:
                yield Line(part, pos, end, True, plain)
            pos = end
        if len(rest) > MAX_LINE_BYTES:
            skipping = True
            rest = b""
    if skipping:
        yield Line(b"", pos, at, not plain, plain, True)
    elif rest:
        yield Line(rest, pos, pos + len(rest), not plain, plain)


def _skip_to(chunks: Iterable[bytes], offset: int) -> Iterator[bytes]:
    """The chunks' bytes from `offset` on, without keeping what comes before it."""
    seen = 0
    for chunk in chunks:
        if seen + len(chunk) > offset:
            yield chunk[max(0, offset - seen) :] if seen < offset else chunk
        seen += len(chunk)


def iter_day_lines(day: OpenDay, counters: ReadCounters, *, start_offset: int = 0) -> Iterator[Line]:
    """Every line of the day's stream from `start_offset` (which must be a line start)."""
    base = 0
    gz = day.gz
    if gz is not None:
        where = str(day.files.gz)
        gz_len = 0

        def measured() -> Iterator[bytes]:
            nonlocal gz_len
            for chunk in gz_chunks(gz, counters, where):
                gz_len += len(chunk)
                yield chunk

        # What the cursor already consumed is skipped without splitting it into lines.
        chunks = measured() if start_offset == 0 else _skip_to(measured(), start_offset)
        yield from _split(chunks, start_offset, plain=False)
        base = gz_len
    if day.plain is not None:
        skip = max(0, start_offset - base)
        yield from _split(plain_chunks(day.plain, skip), base + skip, plain=True)


def fast_timestamp(data: bytes) -> bytes | None:
    """The line's timestamp (`YYYY-MM-DDTHH:MM:SS.mmmZ`) read without decoding, or None."""
    if data.startswith(TS_PREFIX) and data[TS_END : TS_END + 1] == b'"':
        key = data[len(TS_PREFIX) : TS_END]
        if well_formed_time_key(key):
            return key
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
