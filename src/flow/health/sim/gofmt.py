"""Go formatting helpers: the exact strings GPUd's Go code produces."""

from __future__ import annotations

import math
import re
import time

__all__ = ["go_duration_s", "humanize_bytes_si", "pct", "rfc3339"]

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def rfc3339(ts: float) -> str:
    """`metav1.Time` / `time.Time` JSON: RFC3339, whole seconds, UTC (`2026-11-28T14:20:03Z`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def pct(part: float, whole: float) -> str:
    """GPUd's percentage strings: `"%.2f"`, or the literal `"0.0"` when the denominator is 0."""
    if whole == 0:
        return "0.0"
    return f"{part / whole * 100:.2f}"


def humanize_bytes_si(n: int) -> str:
    """go-humanize `Bytes` (SI, as GPUd v0.5.x–v0.6.x prints memory): "86 GB", "1.0 MB", "5 B"."""
    if n < 10:
        return f"{n} B"
    sizes = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    e = math.floor(math.log(n) / math.log(1000))
    val = math.floor(n / 1000**e * 10 + 0.5) / 10
    return f"{val:.0f} {sizes[e]}" if val >= 10 else f"{val:.1f} {sizes[e]}"


def go_duration_s(text: str) -> float:
    """Parse a Go `time.ParseDuration` string ("30m", "3h", "1h30m", "90s") into seconds.

    Raises ValueError with Go's wording for anything Go would reject.
    """
    s = text.strip()
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if not m:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)$", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return sign * total
