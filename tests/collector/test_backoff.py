"""Backoff: full jitter under an exponential ceiling, capped; Retry-After honoured."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from flow.errors import ConfigError
from flow.health.streaming.backoff import Backoff, parse_retry_after


def _ceiling_rng(low: float, high: float) -> float:
    return high


def test_ceiling_doubles_per_failure_up_to_the_cap() -> None:
    backoff = Backoff(min_s=1.0, max_s=10.0, rng=_ceiling_rng)
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_full_jitter_draws_between_zero_and_the_ceiling() -> None:
    calls: list[tuple[float, float]] = []

    def rng(low: float, high: float) -> float:
        calls.append((low, high))
        return (low + high) / 2

    backoff = Backoff(min_s=0.5, max_s=300.0, rng=rng)
    backoff.next_delay()
    backoff.next_delay()
    assert calls == [(0.0, 0.5), (0.0, 1.0)]


def test_retry_after_wins_over_the_jittered_delay() -> None:
    backoff = Backoff(min_s=1.0, max_s=300.0, rng=_ceiling_rng)
    assert backoff.next_delay(retry_after_s=7.0) == 7.0
    assert backoff.failures == 1


def test_capped_delay_for_non_retryable_errors() -> None:
    assert Backoff(min_s=1.0, max_s=42.0).capped_delay() == 42.0


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_bad_bounds_are_a_config_error(lo: float, hi: float) -> None:
    with pytest.raises(ConfigError, match="allowed: 0 < min <= max"):
        Backoff(min_s=lo, max_s=hi)


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now=now) == 0.0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("retry_after", [0.0, -5.0, 0.01, float("nan")])
def test_retry_after_below_the_minimum_waits_the_minimum(retry_after: float) -> None:
    # Issue 12: `Retry-After: 0` (or a past date) made a tight loop of POSTs.
    backoff = Backoff(min_s=0.5, max_s=300.0, rng=_ceiling_rng)
    assert [backoff.next_delay(retry_after_s=retry_after) for _ in range(3)] == [0.5, 0.5, 0.5]


def test_retry_after_is_capped_at_an_hour() -> None:
    backoff = Backoff(min_s=1.0, max_s=300.0)
    assert backoff.next_delay(retry_after_s=86400.0 * 365) == 3600.0
    assert backoff.next_delay(retry_after_s=float("inf")) == 3600.0


@pytest.mark.parametrize("value", ["\xb2", "-1", "1.5", "Mon, 01 Jan 99999 00:00:00 GMT",
                                   "Mon, 01 Jan 1970 00:00:00 +9999", "\x00", "9" * 400 + "x"])
def test_parse_retry_after_garbage_is_none_never_an_exception(value: str) -> None:
    from flow.health.sinks.base import parse_retry_after as sink_parse_retry_after

    assert parse_retry_after(value) is None
    assert sink_parse_retry_after(value) is None
