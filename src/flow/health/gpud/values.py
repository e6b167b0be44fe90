"""The one boundary where GPUd's JSON values become readings or `None`.

GPUd's JSON is read by several adapters (state blobs, metrics, events, machine-info); they all
go through these helpers so that "unavailable" has one meaning: a missing key, `null`, a value
of the wrong type, an empty string (GPUd leaves `""` after a failed check) or NaN all become
`None`. None of these functions raises.

Text is the node's, not ours: `opt_text` is where every string GPUd sends enters, and it cleans
it (`flow.text.clean_text`: no terminal escapes or control characters, at most 4096 characters)
so that nothing downstream (snapshot, JSONL, --json, tables) ever holds the raw text.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from flow.health.snapshot import ReadError
from flow.text import MAX_FIELD_CHARS, clean_text

__all__ = [
    "as_records",
    "component_entries",
    "is_supported",
    "normalize_bus_id",
    "opt_bool",
    "opt_float",
    "opt_int",
    "opt_positive",
    "opt_text",
    "parse_rfc3339",
]

_INT64_LIMIT = 2**63
# Go's RFC3339 has up to nine fractional digits; Python 3.10's fromisoformat takes three or six.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})?$"
)
# "0000:18:00.0", "00000000:18:00.0" (NVML), "PCI:0000:18:00" (kmsg), "18:00.0".
_BUS_ID = re.compile(
    r"^(?:pci:)?(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})(?:\.([0-7]))?$", re.IGNORECASE
)


def opt_float(value: Any) -> float | None:
    """A finite number, or None. Numeric strings count ("66.30" is how GPUd writes percents)."""
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer beyond float range
        return None
    return number if math.isfinite(number) else None


def opt_int(value: Any) -> int | None:
    """A whole number (counts, bytes) within int64, or None. Floats are truncated: metrics carry
    floats. Beyond int64 no GPU counter goes, and the snapshot's JSON encoder could not write it."""
    if type(value) is int:  # the common case (JSON counters), checked without the calls below
        return value if -_INT64_LIMIT < value < _INT64_LIMIT else None
    if isinstance(value, int) and not isinstance(value, bool):
        number: float | int = value  # exact, whatever its size
    else:
        parsed = opt_float(value)
        if parsed is None:
            return None
        number = parsed
    if not -_INT64_LIMIT < number < _INT64_LIMIT:
        return None
    return int(number)


def opt_positive(value: Any) -> float | None:
    """A number > 0, or None: for thresholds and limits, where GPUd writes 0 for 'not read'."""
    number = opt_float(value)
    return number if number is not None and number > 0 else None


def opt_bool(value: Any) -> bool | None:
    """A JSON bool; metric values 0/1 count too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def opt_text(value: Any) -> str | None:
    """A non-empty string, cleaned (`clean_text`), or None (also when nothing is left of it)."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) <= MAX_FIELD_CHARS and value.isprintable():
        return value  # clean_text's own fast path, inlined: this runs ~100 times a read
    return clean_text(value) or None


def is_supported(record: Mapping[str, Any], flag: str) -> bool:
    """False only when GPUd says so: an absent flag (older versions) counts as supported."""
    return record.get(flag) is not False


def as_records(value: Any) -> list[Mapping[str, Any]] | None:
    """A JSON array of objects; `[]` for null/absent; None when it is something else."""
    if value is None:
        return []
    if not isinstance(value, list):
        return None
    # `type(...) is dict` first: decoded JSON is always dicts, and the Mapping ABC check is slow.
    if not all(type(item) is dict or isinstance(item, Mapping) for item in value):
        return None
    return value


def normalize_bus_id(value: Any) -> str | None:
    """A PCI bus id in one spelling, `dddd:bb:dd.f` lower case, or None.

    NVML writes an 8-digit domain, GPUd trims it to 4, and the kernel log (XID lines) leaves the
    function off; all three name the same GPU, so they must compare equal.
    """
    if not isinstance(value, str):
        return None
    return _normalize_bus_text(value)


@functools.lru_cache(maxsize=1024)
def _normalize_bus_text(value: str) -> str | None:
    # Cached: a node's few bus ids come back in every blob of every read (~90 times a read).
    match = _BUS_ID.match(value.strip())
    if match is None:
        return None
    domain, bus, device, function = match.groups()
    domain_n = int(domain, 16) if domain else 0
    domain_text = f"{domain_n:04x}" if domain_n <= 0xFFFF else f"{domain_n:08x}"
    return f"{domain_text}:{int(bus, 16):02x}:{int(device, 16):02x}.{int(function or '0')}"


def parse_rfc3339(value: Any) -> datetime | None:
    """An aware UTC datetime from Go's RFC3339 (any fraction length), or None."""
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    if zone in (None, "Z", "z"):
        zone = "+00:00"
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}.{micro}{zone}")
    except ValueError:
        return None
    if moment.year < 1971:  # Go's zero time ("0001-01-01T00:00:00Z") means "never"
        return None
    return moment.astimezone(timezone.utc)


def _name_of(entry: Any, default: str) -> str:
    return (opt_text(entry.get("component")) if isinstance(entry, Mapping) else None) or default


def component_entries(
    body: Any, key: str, what: str, errors: list[ReadError]
) -> list[tuple[str, list[Any]]]:
    """GPUd's envelope `[{"component": C, key: [...]}, ...]` -> [(C, items)].

    Entries that cannot be read are appended to `errors`, named by their component (or `what`).
    """
    if body is None:
        return []
    if not isinstance(body, list):
        errors.append(ReadError(component=what, message=f"expected a JSON array, got {type(body).__name__}"))
        return []
    result = []
    for entry in body:
        if not isinstance(entry, Mapping) or key not in entry:
            errors.append(ReadError(component=_name_of(entry, what), message=f"entry has no {key!r} array"))
            continue
        component = _name_of(entry, what)
        items = entry[key] if entry[key] is not None else []  # Go writes a nil slice as null
        if not isinstance(items, list):
            errors.append(ReadError(component=component, message=f"entry has no {key!r} array"))
            continue
        result.append((component, items))
    return result
