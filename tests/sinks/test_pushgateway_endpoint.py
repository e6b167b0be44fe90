"""FLOW_METRICS_ENDPOINT as a Pushgateway URL (issue 13, item 7), against the real Pushgateway.

The real daemon (`Collector.run`) samples the simulated GPUd and streams to
`http://127.0.0.1:<port>/metrics/job/<job>[/<label>/<value>...]`: each node's series must land
in a group of its own, the gateway going away and coming back must cost no acknowledged batch,
a malformed grouping path must be refused (exit 2) before anything runs, and any other URL must
still get the JSON payload.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.daemon import Gpud, InProcessDaemon, stored_ids, wait_for
from collector.receiver import Receiver
from flow.cli.main import main
from flow.errors import ConfigError
from flow.grammar import pushgateway_group
from flow.health.collector import Collector, CollectorSettings, default_cursor_path
from flow.health.storage.store import MetricsStore
from flow.health.streaming.cursor import CursorFile

from .servers import (
    PUSHGATEWAY_TEST_BCRYPT,
    PUSHGATEWAY_TEST_PASSWORD,
    PUSHGATEWAY_TEST_USER,
    Server,
    free_port,
    run_pushgateway,
)

TASK = "task-pg"


@pytest.fixture
def gpud() -> Iterator[Gpud]:
    sim = Gpud(gpu_count=2)
    yield sim
    sim.close()


def _settings(tmp_path: Path, gpud: Gpud, endpoint: str, *, node: str = "node-1",
              **kw: Any) -> CollectorSettings:
    values: dict[str, Any] = {
        "task_id": TASK, "node": node, "interval_s": 0.2, "gpud_url": gpud.url, "use_nvml": False,
        "metrics_dir": tmp_path / node / "metrics", "endpoint": endpoint,
        # One record a batch: each sample is pushed as soon as it is stored, whatever the
        # flush interval, so the tests wait on the gateway, not on a batch filling.
        "batch_size": 1,
        "backoff_min_s": 0.05, "backoff_max_s": 0.3, "send_timeout_s": 2.0, "shutdown_grace_s": 5.0,
    }
    values.update(kw)
    return CollectorSettings(**values)


def _groups(gateway: str, auth: httpx.Auth | None = None) -> list[dict[str, Any]]:
    """The gateway's groups (`/api/v1/metrics`): each with its grouping `labels` and metrics."""
    answer = httpx.get(f"{gateway}/api/v1/metrics", timeout=5, auth=auth).json()
    assert answer["status"] == "success", answer
    groups: list[dict[str, Any]] = answer["data"]
    return groups


def _samples(
    gateway: str, name: str, auth: httpx.Auth | None = None
) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{gateway}/metrics", timeout=5, auth=auth).text
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


def _group_keys(gateway: str, auth: httpx.Auth | None = None) -> list[dict[str, str]]:
    """The grouping keys holding flow's series (the gateway's own push_time_seconds aside)."""
    return sorted((g["labels"] for g in _groups(gateway, auth) if "flow_node_health_score" in g),
                  key=lambda labels: labels.get("node", ""))


def test_each_node_is_pushed_to_its_own_group_under_the_urls_job_and_labels(
        tmp_path: Path, gpud: Gpud, pushgateway: Server) -> None:
    # The extra label rides base64 (how a value holding '/' is written), as a user would give it.
    endpoint = f"{pushgateway.url}/metrics/job/flow/cluster/eu-1/rack@base64/cm93LzM"
    one = InProcessDaemon(_settings(tmp_path, gpud, endpoint, node="node-1")).start()
    two = InProcessDaemon(_settings(tmp_path, gpud, endpoint, node="node-2")).start()
    try:
        wait_for(lambda: len(_group_keys(pushgateway.url)) == 2, what="both nodes' groups")
    finally:
        one.stop()
        two.stop()
    common = {"job": "flow", "cluster": "eu-1", "rack": "row/3", "task_id": TASK}
    assert _group_keys(pushgateway.url) == [{**common, "node": "node-1"}, {**common, "node": "node-2"}]
    scores = _samples(pushgateway.url, "flow_node_health_score")
    assert sorted(dict(k)["node"] for k in scores) == ["node-1", "node-2"]
    # One series per GPU per node: neither node overwrote the other.
    temps = _samples(pushgateway.url, "flow_gpu_temperature_celsius")
    assert sorted((dict(k)["node"], dict(k)["gpu"]) for k in temps) == [
        ("node-1", "0"), ("node-1", "1"), ("node-2", "0"), ("node-2", "1")]
    assert one.collector is not None and one.collector.streamer is not None
    assert one.collector.streamer.destination.startswith(f"pushgateway {pushgateway.url} job=flow")


def test_each_sample_is_pushed_without_waiting_for_a_batch(tmp_path: Path, gpud: Gpud,
                                                          pushgateway: Server) -> None:
    # A batch that would take minutes to fill, under the default flush interval: the gateway
    # keeps only the latest push, so every sample goes at once (a backlog still goes in batches).
    endpoint = f"{pushgateway.url}/metrics/job/flow"
    daemon = InProcessDaemon(_settings(tmp_path, gpud, endpoint, batch_size=1000)).start()
    def pushed() -> list[float]:
        return list(_samples(pushgateway.url, "flow_node_snapshot_timestamp_seconds").values())

    try:
        wait_for(lambda: bool(pushed()), what="a first push")
        (first,) = pushed()
        wait_for(lambda: pushed()[0] > first, what="a later sample pushed while the batch is far from full")
    finally:
        daemon.stop()


@pytest.mark.slow
def test_the_gateway_down_then_up_loses_no_batch(tmp_path: Path, gpud: Gpud) -> None:
    port = free_port()
    settings = _settings(tmp_path, gpud, f"http://127.0.0.1:{port}/metrics/job/flow")
    with run_pushgateway(tmp_path, port=port) as gateway:
        daemon = InProcessDaemon(settings).start()
        assert daemon.collector is not None
        wait_for(lambda: bool(_group_keys(gateway.url)), what="a first push")
    # The gateway is gone (connections refused): samples keep being stored, the cursor waits.
    streamer = daemon.collector.streamer
    assert streamer is not None
    cycles = daemon.cycles
    wait_for(lambda: daemon.cycles >= cycles + 5, what="samples while the gateway is down")
    assert streamer.stats.delivered < len(stored_ids(settings.metrics_dir, TASK))
    with run_pushgateway(tmp_path, port=port) as gateway:
        wait_for(lambda: bool(_group_keys(gateway.url)), what="the backlog pushed after the restart")
        daemon.stop()  # the shutdown sends what is left while the gateway answers
        ids = stored_ids(settings.metrics_dir, TASK)
        # Every stored record was acknowledged (this run started the cursor at the end of an
        # empty store), in order: the cursor stands on the last one.
        assert streamer.stats.delivered == len(ids)
        state = CursorFile(default_cursor_path(settings.metrics_dir)).load()
        assert state is not None and state.last_id == ids[-1] and state.delivered == len(ids)
        # A Pushgateway keeps the latest push per group: that is the newest snapshot.
        newest = list(MetricsStore(settings.metrics_dir, 7, 1).read_snapshots(task_id=TASK))[-1]
        (pushed,) = _samples(gateway.url, "flow_node_snapshot_timestamp_seconds").values()
        assert pushed == pytest.approx(newest.timestamp.timestamp())


def test_basic_auth_from_the_url_reaches_a_protected_gateway(tmp_path: Path, gpud: Gpud) -> None:
    user, password = PUSHGATEWAY_TEST_USER, PUSHGATEWAY_TEST_PASSWORD
    auth = httpx.BasicAuth(user, password)
    with run_pushgateway(tmp_path, basic_auth=(user, PUSHGATEWAY_TEST_BCRYPT)) as gateway:
        endpoint = gateway.url.replace("http://", f"http://{user}:{password}@") + "/metrics/job/flow"
        daemon = InProcessDaemon(_settings(tmp_path, gpud, endpoint)).start()
        try:
            wait_for(lambda: bool(_group_keys(gateway.url, auth)), what="a push with basic auth")
        finally:
            daemon.stop()
        assert daemon.collector is not None and daemon.collector.streamer is not None
        assert password not in daemon.collector.streamer.destination


def test_the_bearer_token_goes_to_a_pushgateway_endpoint_as_for_any_endpoint(
        tmp_path: Path, gpud: Gpud) -> None:
    # A gateway behind a proxy that checks a bearer token (the receiver answers 401 without it).
    receiver = Receiver().start()
    try:
        receiver.token = "tok-123"
        receiver.answer(200)
        endpoint = f"http://127.0.0.1:{receiver.port}/proxy/metrics/job/flow"
        daemon = InProcessDaemon(_settings(tmp_path, gpud, endpoint, token="tok-123")).start()
        try:
            wait_for(lambda: 200 in receiver.statuses(), what="an accepted push")
        finally:
            daemon.stop()
        pushed = [r for r in receiver.requests if r.status == 200]
        assert pushed and all(r.headers["Content-Type"].startswith("text/plain") for r in pushed)
        assert 401 not in receiver.statuses()
    finally:
        receiver.close()


def test_a_password_in_the_url_and_a_token_are_refused_together(tmp_path: Path, gpud: Gpud) -> None:
    settings = _settings(tmp_path, gpud, "http://u:p@127.0.0.1:1/metrics/job/flow", token="t")
    with pytest.raises(ConfigError, match=r"FLOW_METRICS_ENDPOINT.*FLOW_METRICS_AUTH_TOKEN") as info:
        asyncio.run(Collector(settings, gpud=None).run(asyncio.Event()))
    assert "p@" not in str(info.value)


@pytest.mark.parametrize(("path", "problem"), [
    ("/metrics/job/", "the job name is empty"),
    ("/metrics/job", "the job name is empty"),
    ("/metrics/job@base64/=", "the job name is empty"),
    ("/metrics/job/flow/cluster", "a label without a value ('cluster')"),
    ("/metrics/job/flow/cluster/a/cluster/b", "'cluster' is given twice"),
    ("/metrics/job/flow/node/n1", "'node' is set by the collector"),
    ("/metrics/job/flow/__name__/x", "'__name__' is not a label name"),
    ("/metrics/job/flow/zone@base64/%21%21", "not base64url-encoded"),
    ("/metrics/job/flow?x=1", "no query string"),
])
def test_a_bad_grouping_path_exits_2_naming_the_variable(
        path: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", f"http://127.0.0.1:{free_port()}{path}")
    assert main(["health", "collect", "--once", "--task-id", TASK]) == 2
    err = capsys.readouterr().err
    assert "FLOW_METRICS_ENDPOINT" in err and problem in err
    assert "allowed: a Pushgateway URL" in err and "Traceback" not in err


def test_a_bad_grouping_path_is_refused_by_the_installer_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOW_HOME", str(tmp_path / "home"))
    url = "https://gw.example.com/metrics/job/flow/zone"
    assert main(["health", "startup-script", "--endpoint", url]) == 2
    err = capsys.readouterr().err
    assert "--endpoint" in err and "a label without a value" in err


@pytest.mark.parametrize("url", [
    "https://ingest.example.com/ingest",
    "https://ingest.example.com/metrics",
    "https://ingest.example.com/metrics/jobs/flow",
    "https://ingest.example.com/v1/metrics?job=flow",
])
def test_other_urls_are_not_pushgateways(url: str) -> None:
    assert pushgateway_group(url, name="FLOW_METRICS_ENDPOINT") is None


def test_a_json_endpoint_still_gets_the_documented_payload(tmp_path: Path, gpud: Gpud) -> None:
    receiver = Receiver().start()
    try:
        receiver.keep_payloads = True
        daemon = InProcessDaemon(_settings(tmp_path, gpud, receiver.url)).start()
        try:
            wait_for(lambda: receiver.unique >= 2, what="two records")
        finally:
            daemon.stop()
        assert daemon.collector is not None
        (streamer,) = daemon.collector.streamers
        assert streamer.destination == receiver.url
        assert {p["source"] for p in receiver.payloads} == {"flow-compute"}
        assert all(r.headers["Content-Type"] == "application/json" for r in receiver.requests)
    finally:
        receiver.close()


def test_config_show_says_the_endpoint_is_a_pushgateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", "https://gw.example.com:9091/metrics/job/flow/cluster/eu")
    assert main(["config", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("metrics_endpoint"))
    note = "a Pushgateway: pushes to job=flow cluster=eu, one group per node (+ task_id, node)"
    assert note in lines[at + 1]
    assert main(["config", "show", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metrics_endpoint"]["pushgateway"] == {"grouping": {"job": "flow", "cluster": "eu"},
                                                      "per_node": ["task_id", "node"]}
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", "https://ingest.example.com/ingest")
    assert main(["config", "show", "--json"]) == 0
    assert "pushgateway" not in json.loads(capsys.readouterr().out)["metrics_endpoint"]

