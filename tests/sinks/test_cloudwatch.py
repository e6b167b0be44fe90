"""CloudWatch sink against moto in server mode: what is sent is what get_metric_statistics returns."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3", reason="the cloudwatch extra (boto3) is not installed")

from flow.health.sinks.base import SinkError  # noqa: E402
from flow.health.sinks.cloudwatch import MAX_DATUMS_PER_CALL, CloudWatchSink  # noqa: E402
from flow.health.sinks.settings import CloudWatchSettings, parse_sink_settings  # noqa: E402
from flow.health.snapshot import Snapshot  # noqa: E402

from .servers import Server, free_port  # noqa: E402
from .snapshots import fleet, snapshot  # noqa: E402


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


def _settings(url: str, namespace: str) -> CloudWatchSettings:
    settings = parse_sink_settings(
        "cloudwatch", {"endpoint_url": url, "region": "us-east-1", "namespace": namespace, "timeout": 5}, {}
    )
    assert isinstance(settings, CloudWatchSettings)
    return settings


def _client(url: str) -> Any:
    return boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=url)


def _send(sink: CloudWatchSink, batch: list[Snapshot]) -> None:
    async def main() -> None:
        try:
            await sink.send(batch)
        finally:
            await sink.aclose()

    asyncio.run(main())


def _stat(url: str, namespace: str, name: str, s: Snapshot, **extra: str) -> list[dict[str, Any]]:
    dims = {
        "task_id": s.task_id,
        "task_name": s.task_name,
        "node": s.node,
        "instance_type": s.instance_type or "",
        **extra,
    }
    answer = _client(url).get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=s.timestamp - timedelta(minutes=5),
        EndTime=s.timestamp + timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum", "SampleCount"],
    )
    points: list[dict[str, Any]] = answer["Datapoints"]
    return points


def _gpu_dims(s: Snapshot, index: int) -> dict[str, str]:
    g = s.gpus[index]
    return {"gpu": str(index), "uuid": g.uuid or "", "model": g.model or ""}


def test_values_sent_come_back_from_get_metric_statistics(moto_server: Server) -> None:
    batch = fleet(2)
    _send(CloudWatchSink(_settings(moto_server.url, "Test/Basic")), batch)
    (temp,) = _stat(
        moto_server.url, "Test/Basic", "flow_gpu_temperature_celsius", batch[1], **_gpu_dims(batch[1], 1)
    )
    assert (temp["Maximum"], temp["SampleCount"]) == (61.0, 1.0)
    (score,) = _stat(moto_server.url, "Test/Basic", "flow_node_health_score", batch[0])
    assert score["Maximum"] == 100.0
    (mem,) = _stat(
        moto_server.url, "Test/Basic", "flow_gpu_memory_used_bytes", batch[0], **_gpu_dims(batch[0], 0)
    )
    assert mem["Unit"] == "Bytes" and mem["Maximum"] == 40 * 1024**3


def test_more_than_1000_datums_are_split_into_calls(moto_server: Server) -> None:
    batch = fleet(6, gpus=8)
    sink = CloudWatchSink(_settings(moto_server.url, "Test/Split"))
    calls = sink.calls(batch)
    assert len(calls) >= 2 and all(len(data) <= MAX_DATUMS_PER_CALL for data, _ in calls)
    assert sum(len(data) for data, _ in calls) > MAX_DATUMS_PER_CALL
    assert all(len(d["Dimensions"]) <= 30 for data, _ in calls for d in data)
    assert [delivered for _, delivered in calls][-1] == len(batch)
    _send(sink, batch)
    last = batch[-1]
    (temp,) = _stat(moto_server.url, "Test/Split", "flow_gpu_temperature_celsius", last, **_gpu_dims(last, 7))
    assert temp["Maximum"] == 65.0


def test_nan_never_reaches_cloudwatch(moto_server: Server) -> None:
    bad = snapshot(gpus=1, gpu_changes={"temp_c": math.nan, "power_w": math.inf})
    _send(CloudWatchSink(_settings(moto_server.url, "Test/NaN")), [bad])  # moto refuses NaN with a 400
    assert _stat(moto_server.url, "Test/NaN", "flow_gpu_temperature_celsius", bad, **_gpu_dims(bad, 0)) == []
    assert _stat(moto_server.url, "Test/NaN", "flow_node_health_score", bad) != []


def test_a_refused_call_is_not_retryable(moto_server: Server) -> None:
    client = _client(moto_server.url)

    def corrupt(params: dict[str, Any], **_: Any) -> None:
        params["MetricData"][0]["Value"] = math.nan  # what CloudWatch refuses with InvalidParameterValue

    client.meta.events.register("provide-client-params.cloudwatch.PutMetricData", corrupt)
    with pytest.raises(SinkError) as info:
        _send(CloudWatchSink(_settings(moto_server.url, "Test/Refused"), client=client), [snapshot()])
    assert (info.value.status, info.value.retryable) == (400, False)
    assert "InvalidParameterValue" in info.value.message


def test_an_unreachable_endpoint_is_retryable() -> None:
    sink = CloudWatchSink(_settings(f"http://127.0.0.1:{free_port()}", "Test/Down"))
    with pytest.raises(SinkError) as info:
        _send(sink, [snapshot()])
    assert info.value.retryable and info.value.status is None


def test_no_credentials_is_not_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    sink = CloudWatchSink(_settings(f"http://127.0.0.1:{free_port()}", "Test/NoCreds"))
    with pytest.raises(SinkError) as info:
        _send(sink, [snapshot()])
    assert not info.value.retryable and info.value.message == "cloudwatch: no AWS credentials"


def test_snapshots_older_than_two_weeks_are_left_out() -> None:
    now = datetime.now(timezone.utc)
    sink = CloudWatchSink(_settings("http://127.0.0.1:1", "Test/Old"))
    old, new = snapshot(node="old", when=now - timedelta(days=15)), snapshot(node="new", when=now)
    calls = sink.calls([old, new], now=now)
    nodes = {
        d["Value"] for data, _ in calls for datum in data for d in datum["Dimensions"] if d["Name"] == "node"
    }
    assert nodes == {"new"} and calls[-1][1] == 2


def test_dry_run_shows_the_call_parameters() -> None:
    sink = CloudWatchSink(_settings("http://127.0.0.1:1", "Test/Dry"))
    (request,) = sink.encode([snapshot()])
    assert request.method == "PutMetricData" and request.url == "http://127.0.0.1:1"
    assert (
        b'"Namespace": "Test/Dry"' in request.body
        and b'"MetricName": "flow_node_health_score"' in request.body
    )
