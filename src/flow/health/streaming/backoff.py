"""Retry timing: exponential backoff with full jitter, and the HTTP Retry-After header.

Full jitter (AWS architecture blog, "Exponential Backoff and Jitter"): the n-th consecutive
failure waits a uniform random time in [0, min(cap, base * 2**n)], so that a fleet of
collectors that lost the same endpoint does not come back in lockstep.

A server's Retry-After wins over the jitter, within bounds: at most an hour (a clock-skewed
date must not park delivery for days), and at least the backoff minimum, since `0`, a date in
the past or a negative number would otherwise retry in a tight loop (a hundred POSTs a second
to an endpoint that is already struggling).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from flow.errors import ConfigError

__all__ = ["DEFAULT_BACKOFF_MAX_S", "DEFAULT_BACKOFF_MIN_S", "Backoff", "parse_retry_after"]

DEFAULT_BACKOFF_MIN_S = 1.0
DEFAULT_BACKOFF_MAX_S = 300.0
#: The longest Retry-After we obey; a larger value (or a clock-skewed date) is clamped to it.
MAX_RETRY_AFTER_S = 3600.0


@dataclass(kw_only=True)
class Backoff:
    """Delays between attempts; `reset()` after a success."""

    min_s: float = DEFAULT_BACKOFF_MIN_S
    max_s: float = DEFAULT_BACKOFF_MAX_S
    rng: Callable[[float, float], float] = field(default=random.uniform, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ConfigError(
                f"backoff min={self.min_s!r} max={self.max_s!r}; allowed: 0 < min <= max (seconds)"
            )

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """Seconds to wait after one more failure.

        A server's Retry-After wins when given, clamped to [min_s, MAX_RETRY_AFTER_S].
        """
        ceiling = min(self.max_s, self.min_s * 2.0 ** min(self.failures, 60))
        self.failures += 1
        if retry_after_s is not None:
            # `not <=` also catches NaN, which max()/min() would pass through.
            if not retry_after_s >= self.min_s:
                return self.min_s
            return min(retry_after_s, MAX_RETRY_AFTER_S)
        return self.rng(0.0, ceiling)

    def capped_delay(self) -> float:
        """The wait after a failure that retrying soon will not fix (a rejected token)."""
        self.failures += 1
        return self.max_s

    def reset(self) -> None:
        self.failures = 0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # isdigit() alone accepts "²" and other Unicode digits, which float() refuses.
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())
