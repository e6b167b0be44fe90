"""Which GPUd paths `flow health gpud` asks for, and how (flow.health.gpud.paths)."""

from __future__ import annotations

import pytest

from flow.health.gpud.paths import (
    DEFAULT_EVENTS_SINCE_S,
    KNOWN_PATHS,
    MissingPathError,
    missing_path_message,
    parse_since,
    plan_request,
)

NOW = 1_767_225_600.5


@pytest.mark.parametrize("text,seconds", [("24h", 86400), ("30m", 1800), ("90s", 90), ("7d", 604800),
                                          ("1h30m", 5400), (" 2h ", 7200)])
def test_since_durations(text: str, seconds: int) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "1.5h", "0s", "367d", "1w", "nan", "1h 30m"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="allowed"):
        parse_since(text)


def test_events_get_a_day_unless_asked_otherwise() -> None:
    request = plan_request("/v1/events", now_s=NOW)
    assert request.params == {"startTime": str(int(NOW) - DEFAULT_EVENTS_SINCE_S)}
    assert request.notes and "the last 24h" in request.notes[0]
    assert plan_request("/v1/events", since_s=3600, now_s=NOW).params == {"startTime": str(int(NOW) - 3600)}
    given = plan_request("/v1/events", ["startTime=5"], now_s=NOW)
    assert given.params == {"startTime": "5"} and given.notes == ()
    info = plan_request("/v1/info", since_s=600, now_s=NOW)
    assert info.params == {"startTime": str(int(NOW) - 600), "since": "600s"}


def test_since_reaches_metrics_only_when_given() -> None:
    assert plan_request("/v1/metrics", now_s=NOW).params == {}
    assert plan_request("/v1/metrics", since_s=120, now_s=NOW).params == {"since": "120s"}
    assert plan_request("/v1/metrics?since=5m", since_s=120, now_s=NOW).params == {"since": "5m"}
    assert plan_request("/v1/states", since_s=120, now_s=NOW).params == {}


def test_inline_query_and_pairs_merge_in_order() -> None:
    request = plan_request("/v1/states?components=cpu,memory", ["x_y=1"], now_s=NOW)
    assert request.params == {"components": "cpu,memory", "x_y": "1"}
    assert request.display() == "/v1/states?components=cpu,memory&x_y=1"


def test_every_known_path_and_the_root_pass() -> None:
    for path in [*KNOWN_PATHS, "/", "/v1/plugins"]:
        assert plan_request(path, now_s=NOW).path == path


def test_v1_gpu_is_refused_first_and_the_message_says_where_the_data_is() -> None:
    with pytest.raises(MissingPathError) as caught:
        plan_request("/v1/gpu?bad key=1", now_s=NOW)
    message, hint = missing_path_message(caught.value.path, "train-a")
    assert "GPUd has no /v1/gpu" in message and "/v1/metrics" in message and "/machine-info" in message
    assert "flow health gpud train-a /v1/metrics --query components=accelerator-nvidia-temperature" in hint


@pytest.mark.parametrize("target", ["https://127.0.0.1:15132/healthz", "127.0.0.1:15132/healthz", "",
                                    "/v1//states", "/v1/states/", "/v1/./states", "/a/../b",
                                    "/v1/st\x1bates", "/v1/states#x", "/" + "x" * 256,
                                    "/v1/states?a", "/v1/states?a=1&&b=2"])
def test_bad_paths(target: str) -> None:
    with pytest.raises(ValueError, match=r"allowed|not k=v"):
        plan_request(target, now_s=NOW)


@pytest.mark.parametrize("pair", ["k", "=v", "k=a;b", "k=" + "x" * 513, "k=a\nb", "k=\u202e",
                                  "endTime=now", "startTime=2026-01-01T00:00:00Z"])
def test_bad_pairs(pair: str) -> None:
    with pytest.raises(ValueError, match=r"allowed"):
        plan_request("/v1/events", [pair], now_s=NOW)


def test_too_many_pairs() -> None:
    with pytest.raises(ValueError, match="at most 16"):
        plan_request("/v1/states", [f"k{i}=1" for i in range(17)], now_s=NOW)
