"""Issue 12, class 7: an endpoint that drips its answer, or says `Retry-After: 0`.

A slow drip (status and headers at once, then a body byte every fraction of a second) never
trips httpx's per-read timeout: each request must still end within the send timeout, count as
a timeout failure (the batch kept, backoff), and be logged once. `Retry-After: 0` or a date
in the past must not turn retries into a tight loop. Everything runs for real: the collector
daemon against the simulated GPUd over HTTPS, and an aiohttp receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from collector.daemon import Gpud, InProcessDaemon, stored_ids, wait_for
from collector.receiver import Receiver
from flow.health.collector import CollectorSettings
from flow.health.sinks.base import Sink, SinkError
from flow.health.sinks.datadog import DatadogSink
from flow.health.sinks.otlp import OtlpSink
from flow.health.sinks.pushgateway import PushgatewaySink
from flow.health.sinks.settings import parse_sink_settings
from flow.health.streaming.endpoint import EndpointSink
from flow.health.streaming.sink import DeliveryError
from sinks.snapshots import fleet

TASK = "task-drip"
BATCH = 5
SEND_TIMEOUT_S = 0.5


def _settings(tmp_path: Path, gpud: Gpud, receiver: Receiver, **kw: object) -> CollectorSettings:
    values: dict[str, object] = {
        "task_id": TASK, "node": "node-1", "interval_s": 0.2, "gpud_url": gpud.url, "use_nvml": False,
        "metrics_dir": tmp_path / "metrics", "endpoint": receiver.url, "batch_size": BATCH,
        "backoff_min_s": 0.05, "backoff_max_s": 0.3, "send_timeout_s": SEND_TIMEOUT_S,
        "shutdown_grace_s": 1.0, "flush_interval_s": 0.3,
    }
    values.update(kw)
    return CollectorSettings(**values)  # type: ignore[arg-type]


def _all_delivered(tmp_path: Path, receiver: Receiver) -> bool:
    ids = stored_ids(tmp_path / "metrics", TASK)
    return bool(ids) and all(i in receiver.ids for i in ids)


def _check_nothing_lost(tmp_path: Path, receiver: Receiver) -> None:
    ids = stored_ids(tmp_path / "metrics", TASK)
    missing = [i for i in ids if i not in receiver.ids]
    assert not missing, f"{len(missing)} of {len(ids)} records never delivered"
    assert receiver.duplicates <= BATCH  # at most the one batch in flight when it recovered


def test_a_dripping_endpoint_costs_one_deadline_per_attempt_and_is_logged(
    tmp_path: Path, gpud: Gpud, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flow")
    daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver)).start()
    wait_for(lambda: receiver.unique >= 3, what="first deliveries")

    receiver.drip(200, every_s=0.1)  # a byte every 0.1 s: httpx's read timeout never fires
    first_drip = len(receiver.requests)
    # Before the fix the first POST waited on the drip forever: there was never a second one.
    wait_for(lambda: len(receiver.requests) - first_drip >= 3, what="three attempts against the drip")
    receiver.ok()
    wait_for(lambda: _all_delivered(tmp_path, receiver), what="the backlog after the drip")
    daemon.stop()

    _check_nothing_lost(tmp_path, receiver)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    timeouts = [m for m in messages if "no complete answer within 0.5 s" in m]
    assert len(timeouts) == 1, messages  # the start of the failure, once; the repeats at DEBUG
    assert "failing: timeout" in timeouts[0] and "records stay on disk" in timeouts[0]
    assert any("resumed after" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("retry_after", ["0", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_retry_after_zero_or_past_waits_at_least_the_backoff_minimum(
    tmp_path: Path, gpud: Gpud, receiver: Receiver, retry_after: str
) -> None:
    settings = _settings(tmp_path, gpud, receiver, backoff_min_s=0.5, backoff_max_s=2.0)
    daemon = InProcessDaemon(settings).start()
    wait_for(lambda: receiver.unique >= 1, what="a first delivery")

    receiver.answer(503, retry_after=retry_after, body="overloaded")
    wait_for(lambda: 503 in receiver.statuses(), what="a 503")
    time.sleep(3.0)
    refused = receiver.statuses().count(503)
    receiver.ok()
    wait_for(lambda: _all_delivered(tmp_path, receiver), what="the backlog after the 503s")
    daemon.stop()

    # 3 s at one attempt per 0.5 s at most, plus slack; before the fix it was hundreds.
    assert refused <= 3.0 / 0.5 + 2, f"{refused} POSTs in 3 s"
    _check_nothing_lost(tmp_path, receiver)


def test_endpoint_reads_a_bounded_part_of_a_gzip_bomb_answer(receiver: Receiver) -> None:
    """A 500 whose gzip body inflates to 64 MiB: the excerpt is logged, the rest never inflated."""
    bomb = gzip.compress(b"upstream down " + b"\0" * (64 * 1024 * 1024))
    receiver.answer_raw(500, bomb, {"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def send() -> DeliveryError:
        sink = EndpointSink(receiver.url, timeout_s=10.0, gzip=False)
        try:
            await sink.send([b'{"task_id": "t"}'])
        except DeliveryError as exc:
            return exc
        finally:
            await sink.aclose()
        raise AssertionError("a 500 was taken as delivered")

    tracemalloc.start()
    try:
        error = asyncio.run(send())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.status == 500 and error.retryable
    assert "upstream down" in error.message
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB while reading the answer"


def _sinks(url: str) -> list[tuple[str, Sink]]:
    timeout = {"timeout": SEND_TIMEOUT_S}
    datadog = parse_sink_settings("datadog", {"endpoint": url, **timeout}, {"DD_API_KEY": "k"})
    otlp = parse_sink_settings("otlp", {"endpoint": url + "/v1/metrics", "encoding": "json", **timeout})
    push = parse_sink_settings("pushgateway", {"url": url, **timeout})
    return [
        ("datadog", DatadogSink(datadog)),  # type: ignore[arg-type]
        ("otlp", OtlpSink(otlp)),  # type: ignore[arg-type]
        ("pushgateway", PushgatewaySink(push)),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("which", ["datadog", "otlp", "pushgateway"])
def test_http_sinks_give_up_on_a_drip_within_their_timeout(receiver: Receiver, which: str) -> None:
    receiver.drip(200, every_s=0.1)
    base = receiver.url.rsplit("/", 1)[0]

    async def send() -> Any:
        sink = dict(_sinks(base))[which]
        try:
            # The bound only keeps a failing test from hanging: the drip never ends by itself.
            await asyncio.wait_for(sink.send(fleet(1)), 30.0)
        except SinkError as exc:
            return exc
        except asyncio.TimeoutError:
            return "still waiting on the drip after 30 s"
        finally:
            await sink.aclose()
        return "taken as delivered"

    outcome = asyncio.run(send())
    receiver.ok()
    assert isinstance(outcome, SinkError), outcome
    assert outcome.retryable
    assert "no complete answer within 0.5 s" in outcome.message
    assert len(receiver.requests) == 1


def test_cloudwatch_gives_up_on_a_drip_within_its_timeout(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """boto3's read timeout restarts with each byte too: the sink sends the signed call itself."""
    pytest.importorskip("boto3", reason="the cloudwatch extra (boto3) is not installed")
    from flow.health.sinks.cloudwatch import CloudWatchSink

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    receiver.drip(200, every_s=0.1)
    settings = parse_sink_settings("cloudwatch", {
        "endpoint_url": receiver.url.rsplit("/", 1)[0], "region": "us-east-1", "timeout": SEND_TIMEOUT_S})

    async def send() -> Any:
        sink = CloudWatchSink(settings)  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(sink.send(fleet(1)), 30.0)
        except SinkError as exc:
            return exc
        except asyncio.TimeoutError:
            return "still waiting on the drip after 30 s"
        finally:
            receiver.ok()  # ends a drip still holding the worker thread (before the fix)
            await sink.aclose()
        return "taken as delivered"

    outcome = asyncio.run(send())
    assert isinstance(outcome, SinkError), outcome
    assert outcome.retryable
    assert "no complete answer within 0.5 s" in outcome.message
