"""`flow health --source prometheus` against a real Prometheus (Debian's `prometheus`) whose TSDB
holds scored snapshots, each sample stamped with its snapshot's time as remote write sends it
(loaded with `promtool tsdb create-blocks-from openmetrics`).

The snapshots are what a sweep over SSH produces for these nodes (`score_snapshot` over
simulated readings); the view read back must say the same: statuses, scores, reason codes and
the GPU readings the fleet table shows.
"""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from flow.cli.main import main
from flow.fleet.inventory import Inventory
from flow.fleet.model import Node, Task
from flow.health.scoring import score_snapshot
from flow.health.snapshot import GpuReading, Snapshot, XidError
from flow.health.sources.prometheus import (
    GPU_FIELDS,
    GPU_SHARDS,
    MAX_POINTS_PER_SERIES,
    PrometheusError,
    PrometheusSource,
    fleet_queries,
    gpu_time_queries,
    history_step,
    paused_gc,
)
from flow.health.storage.sample import Sample
from flow.health.storage.summary import summarize_task
from flow.views.summary import summarise
from sinks.servers import PrometheusServer, free_port, receiver
from sinks.snapshots import GIB, snapshot

from .promdata import prometheus_with

TASK = "task-abc123"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
FRESH = [NOW - timedelta(seconds=125), NOW - timedelta(seconds=65), NOW - timedelta(seconds=5)]


def _changed_gpus(node: str, when: datetime,
                  change: Callable[[tuple[GpuReading, ...]], tuple[GpuReading, ...]]) -> Snapshot:
    base = snapshot(node=node, gpus=8, when=when, scored=False)
    changed = replace(base, gpus=change(base.gpus), expected_gpus=8)
    return changed.with_verdict(score_snapshot(changed))


def _nodes() -> dict[str, list[Snapshot]]:
    """Node name -> its snapshots (three, a minute apart, the newest 5 s old)."""
    xid = XidError(code=79, gpu="00000000:0A:00.0", gpu_index=0, message="fallen off the bus",
                   time=NOW - timedelta(minutes=10), xid_class="fatal")
    return {
        "n-ok": [snapshot(node="n-ok", gpus=8, when=t) for t in FRESH],
        "n-hot": [snapshot(node="n-hot", gpus=8, temp_c=88.0, when=t) for t in FRESH],
        "n-mem": [snapshot(node="n-mem", gpus=4, when=t, gpu_changes={"mem_used_bytes": 76 * GIB})
                  for t in FRESH],
        "n-warm": [snapshot(node="n-warm", gpus=8, temp_c=78.0, when=t) for t in FRESH],
        "n-ecc": [snapshot(node="n-ecc", gpus=8, when=t, gpu_changes={"ecc_volatile_uncorrected": 2})
                  for t in FRESH],
        "n-xid": [snapshot(node="n-xid", gpus=8, when=t, xids=(xid,)) for t in FRESH],
        "n-down": [snapshot(node="n-down", reachable=False, when=t) for t in FRESH],
        # Hot a minute ago, healed now: the old reason's series must not linger into the view.
        "n-healed": [snapshot(node="n-healed", gpus=2, temp_c=t, when=w)
                     for t, w in zip((88.0, 88.0, 60.0), FRESH, strict=True)],
        # GPUd answered a minute ago and times out now: its "ok" state and versions linger.
        "n-fell": [snapshot(node="n-fell", gpus=8, when=FRESH[0]),
                   snapshot(node="n-fell", gpus=8, when=FRESH[1]),
                   snapshot(node="n-fell", reachable=False, when=FRESH[2])],
        # GPU 7 stopped reporting a minute ago (GPUd still lists it), or vanished altogether:
        # its series linger, the view must not show their old readings.
        "n-silent": [snapshot(node="n-silent", gpus=8, when=FRESH[0]),
                     snapshot(node="n-silent", gpus=8, when=FRESH[1]),
                     _changed_gpus("n-silent", FRESH[2],
                                   lambda g: (*g[:7], GpuReading(index=7, silent=True)))],
        "n-lost": [snapshot(node="n-lost", gpus=8, when=FRESH[0]),
                   snapshot(node="n-lost", gpus=8, when=FRESH[1]),
                   _changed_gpus("n-lost", FRESH[2], lambda g: g[:7])],
        # Sixteen GPUs: indices past the shards named one by one, and of two digits.
        "n-16": [snapshot(node="n-16", gpus=16, when=t) for t in FRESH],
        # Its collector stopped 15 minutes ago.
        "n-stale": [snapshot(node="n-stale", gpus=8, when=NOW - timedelta(minutes=15))],
    }


NODES = _nodes()


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    # The fleet's times are relative to when it is loaded, not to when the module was imported:
    # in a long run the tests here start minutes after collection, and every node would be stale.
    global NOW, FRESH, NODES
    NOW = datetime.now(timezone.utc).replace(microsecond=0)
    FRESH = [NOW - timedelta(seconds=125), NOW - timedelta(seconds=65), NOW - timedelta(seconds=5)]
    NODES = _nodes()
    with prometheus_with(tmp_path_factory.mktemp("prom"),
                         [s for snaps in NODES.values() for s in snaps]) as server:
        yield server


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _fleet_json(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> dict[str, Any]:
    code, out, err = _run(capsys, "health", "--gpu", "--json", "--source", "prometheus",
                          "--prometheus-url", url, *extra)
    assert code == 0, err
    doc: dict[str, Any] = orjson.loads(out)
    return doc


def _by_node(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["node"]: n for n in doc["nodes"]}


def test_fleet_json_says_what_the_sweep_said(prom: PrometheusServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    doc = _fleet_json(capsys, prom.url)
    assert doc["kind"] == "fleet"
    nodes = _by_node(doc)
    assert set(nodes) == set(NODES)
    for name, snaps in NODES.items():
        if name == "n-stale":
            continue
        swept, read = snaps[-1], nodes[name]
        assert swept.verdict is not None
        assert read["verdict"]["status"] == swept.verdict.status.value, name
        assert read["verdict"]["score"] == swept.verdict.score, name
        assert sorted({r["code"] for r in read["verdict"]["reasons"]}) == sorted(
            {r.code for r in swept.verdict.reasons}), name
        assert read["task_id"] == TASK and read["task_name"] == swept.task_name
        assert read["timestamp"] == swept.to_dict()["timestamp"]
        assert len(read["gpus"]) == len(swept.gpus), name
        for got, want in zip(read["gpus"], swept.gpus, strict=True):
            assert (got["index"], got["silent"]) == (want.index, want.silent), name
            for field_name in GPU_FIELDS:
                assert got[field_name] == getattr(want, field_name), (name, field_name)
    # Where the readings reproduce a code, the reason is scoring's own, message and GPU.
    hot = nodes["n-hot"]["verdict"]["reasons"][0]
    assert hot["code"] == "temp_critical" and hot["gpu"] is not None and "88 °C" in hot["message"]
    assert nodes["n-healed"]["verdict"]["reasons"] == []
    assert nodes["n-down"]["gpud"]["reachable"] is False
    fell = nodes["n-fell"]["gpud"]
    assert (fell["reachable"], fell["state"], fell["version"]) == (False, "timeout", None)
    assert nodes["n-ok"]["gpud"]["version"] == "v0.5.1"
    swept_fresh = [s[-1] for n, s in NODES.items() if n != "n-stale"]
    want = summarise(swept_fresh).to_dict()
    got = doc["summary"]
    for key in ("healthy", "degraded", "critical", "gpus_total"):
        assert got[key] == want[key], key
    assert got["unknown"] == want["unknown"] + 1  # the stale node


def test_fleet_table_rows(prom: PrometheusServer, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    code, out, err = _run(capsys, "health", "--gpu", "--source", "prometheus", "--prometheus-url", prom.url)
    assert code == 0, err
    assert "GPU fleet health" in out and "Issues" in out
    for line in out.splitlines():
        if "n-hot" in line and "critical" in line:
            assert "88°C" in line and "GPU 0 at 88 °C" in line
            break
    else:
        raise AssertionError(out)
    assert f"Read from Prometheus at {prom.url}" in out


def test_stale_node_is_unknown_with_its_age(prom: PrometheusServer,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    stale = _by_node(_fleet_json(capsys, prom.url))["n-stale"]
    assert stale["verdict"]["status"] == "unknown" and stale["verdict"]["score"] is None
    [reason] = stale["verdict"]["reasons"]
    assert reason["code"] == "stale" and reason["severity"] == "unknown"
    age = re.search(r"(\d+) min", reason["message"])
    assert age is not None and int(age.group(1)) >= 15, reason["message"]  # 15 min old when loaded
    # A longer limit (FLOW_PROMETHEUS_STALE_AFTER) takes it for fresh again.
    assert stale["timestamp"] == NODES["n-stale"][-1].to_dict()["timestamp"]


def test_stale_limit_is_configurable(prom: PrometheusServer, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_PROMETHEUS_STALE_AFTER", "2")
    nodes = _by_node(_fleet_json(capsys, prom.url))
    assert {r["code"] for n in nodes.values() for r in n["verdict"]["reasons"]} == {"stale"}


def test_inventory_decides_the_fleet(prom: PrometheusServer, capsys: pytest.CaptureFixture[str],
                                     flow_home: Path) -> None:
    inventory = Inventory(flow_home / "tasks.yaml")
    inventory.add(Task(id=TASK, name="training", instance_type="8xH100",
                       nodes=(Node(host="n-ok"), Node(host="n-hot"), Node(host="n-missing"))))
    inventory.save()
    nodes = _by_node(_fleet_json(capsys, prom.url))
    assert list(nodes) == ["n-ok", "n-hot", "n-missing"]
    missing = nodes["n-missing"]["verdict"]
    assert missing["status"] == "unknown" and missing["reasons"][0]["code"] == "no_data"
    assert nodes["n-hot"]["verdict"]["status"] == "critical"


def test_fail_on_and_filter(prom: PrometheusServer, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("health", "--gpu", "--json", "--source", "prometheus", "--prometheus-url", prom.url)
    assert _run(capsys, *base, "--fail-on", "issues")[0] == 1
    assert _run(capsys, *base, "--fail-on", "never")[0] == 0
    code, out, _ = _run(capsys, *base, "--filter", "n-ok", "--fail-on", "warnings")
    assert code == 0
    assert [n["node"] for n in orjson.loads(out)["nodes"]] == ["n-ok"]
    assert _run(capsys, *base, "--filter", "n-warm", "--fail-on", "warnings")[0] == 1
    assert _run(capsys, *base, "--filter", "n-warm", "--fail-on", "issues")[0] == 0


def test_configured_url_and_missing_url(prom: PrometheusServer, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = _run(capsys, "health", "--gpu", "--source", "prometheus")
    assert code == 2 and "FLOW_PROMETHEUS_URL" in err and "Traceback" not in err
    monkeypatch.setenv("FLOW_PROMETHEUS_URL", prom.url)
    code, out, err = _run(capsys, "health", "--gpu", "--json", "--source", "prometheus")
    assert code == 0, err
    assert len(orjson.loads(out)["nodes"]) == len(NODES)


def test_history_from_range_queries(prom: PrometheusServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "health", "--task", TASK, "--history", "1", "--json",
                          "--source", "prometheus", "--prometheus-url", prom.url)
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["kind"] == "history" and doc["source"] == "prometheus"
    swept = sorted((s for snaps in NODES.values() for s in snaps if s.timestamp > NOW - timedelta(hours=1)),
                   key=lambda s: (s.timestamp, s.node))
    assert len(doc["snapshots"]) == len(swept)
    want = summarize_task(TASK, [Sample.from_snapshot(s) for s in swept],
                          window_start=NOW - timedelta(hours=1), window_end=NOW).to_dict()
    got = doc["summary"]
    for key in ("snapshots", "status_counts", "score_min", "score_max", "score_avg", "xid_count",
                "xid_by_code", "first_time", "last_time"):
        assert got[key] == want[key], key
    # A GPU's series that stopped are not read into the steps after (they linger in Prometheus).
    newest = {s["node"]: s for s in doc["snapshots"]}
    assert [len(newest[n]["gpus"]) for n in ("n-ok", "n-lost", "n-fell")] == [8, 7, 0]
    assert newest["n-fell"]["verdict"]["score"] is None
    # Node by node, as the sweep's snapshots give them: n-ecc's count stayed at 2, no new error.
    for key in ("ecc_corrected_increase", "ecc_uncorrected_increase", "status_changes",
                "status_current", "score_current"):
        assert got[key] == want[key], key
    assert got["ecc_uncorrected_increase"] == 0
    periods = [p["reasons"] for p in got["unhealthy_periods"]]
    assert periods == [p["reasons"] for p in want["unhealthy_periods"]]
    code, out, err = _run(capsys, "health", "--task", TASK, "--history", "1",
                          "--source", "prometheus", "--prometheus-url", prom.url)
    assert code == 0 and f"History from Prometheus ({prom.url}): {len(swept)} snapshots" in out


def test_history_step_bounds_points() -> None:
    for hours in (1, 24, 24 * 7, 8760):
        step = history_step(hours, 60.0)
        assert hours * 3600 / step < MAX_POINTS_PER_SERIES
    assert history_step(1, 60.0) == 60


def test_prometheus_down_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://flow:s3cret-pw@127.0.0.1:{free_port()}"
    code, out, err = _run(capsys, "health", "--gpu", "--source", "prometheus", "--prometheus-url", url)
    assert code == 2
    assert "ERROR: cannot reach Prometheus at http://***@127.0.0.1:" in err
    assert "s3cret-pw" not in err + out and "Traceback" not in err


def test_plain_http_to_a_remote_host_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "health", "--gpu", "--source", "prometheus",
                        "--prometheus-url", "http://prometheus.example.com:9090")
    assert code == 2 and "--prometheus-url" in err and "plain http" in err


async def _hostile(handler: Any, **source: Any) -> str:
    async with receiver(handler) as url:
        with pytest.raises(PrometheusError) as caught:
            await PrometheusSource(url=url, timeout_s=60, **source).read_fleet()
    return caught.value.message


def test_a_huge_answer_is_refused_unread() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b'{"status":"success","data":{"resultType":"vector","result":[' + b" " * 65536
        with_more = True
        while with_more:  # until the client hangs up
            try:
                await response.write(chunk)
            except (ConnectionError, RuntimeError):
                with_more = False
        return response

    message = asyncio.run(_hostile(endless, max_answer_bytes=1024 * 1024))
    assert "more than 1048576 bytes" in message


def test_a_slow_answer_within_the_timeout_is_read() -> None:
    # Longer than httpx's own default (5 s between reads), well within ours.
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5.5)
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    async def run() -> int:
        async with receiver(slow) as url:
            read = await PrometheusSource(url=url, timeout_s=20).read_fleet()
        return len(read.snapshots)

    assert asyncio.run(run()) == 0


def test_error_answers_name_the_problem() -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "errorType": "bad_data",
                                  "error": "parse error\x1b[2J at char 3"}, status=400)

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", status=200)

    async def unauthorized(request: web.Request) -> web.Response:
        return web.Response(text="no", status=401)

    async def mistyped(request: web.Request) -> web.Response:
        # JSON of the API's shape but a label that is no string: refused whole, where it is.
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"node": "n-1", "task_id": 7}, "value": [1.0, "1"]}]}})

    message = asyncio.run(_hostile(refuse))
    assert "refused the" in message and "parse error at char 3" in message and "\x1b" not in message
    assert "not the Prometheus API's JSON" in asyncio.run(_hostile(garbage))
    assert "(401)" in asyncio.run(_hostile(unauthorized))
    message = asyncio.run(_hostile(mistyped))
    assert "not the Prometheus API's JSON" in message and "$.data.result[0].metric.task_id" in message


def test_token_is_sent_as_bearer(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    async def run() -> None:
        async with receiver(answer) as url:
            from flow.cli.prometheus_view import prometheus_source
            from flow.config import load_config

            monkeypatch.setenv("FLOW_PROMETHEUS_TOKEN", "tok-123")
            source = prometheus_source(load_config(), url)
            await source.read_fleet()

    asyncio.run(run())
    assert seen and set(seen) == {"Bearer tok-123"}


def test_watch_reads_again_until_interrupted(prom: PrometheusServer) -> None:
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "flow.cli.main", "health", "--gpu", "--json", "--watch", "0.2",
         "--source", "prometheus", "--prometheus-url", prom.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        assert proc.stdout is not None
        documents, lines = 0, []
        for line in proc.stdout:  # each document ends with a `}` alone on its line
            lines.append(line)
            if line == b"}\n":
                assert len(orjson.loads(b"".join(lines))["nodes"]) == len(NODES)
                documents, lines = documents + 1, []
                if documents == 2:
                    break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert documents == 2


def test_source_options_that_do_not_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "health", "--gpu", "--prometheus-url", "http://127.0.0.1:9")
    assert code == 2 and "--prometheus-url" in err and "--source prometheus" in err
    code, _, err = _run(capsys, "health", "--task", TASK, "--source", "prometheus",
                        "--prometheus-url", "http://127.0.0.1:9")
    assert code == 2 and "--history" in err


def test_config_show_redacts_the_url(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_PROMETHEUS_URL", "https://flow:s3cret-pw@prom.example.com:9090")
    monkeypatch.setenv("FLOW_PROMETHEUS_STALE_AFTER", "120")
    code, out, err = _run(capsys, "config", "show")
    assert code == 0, err
    assert "https://***@prom.example.com:9090" in out and "s3cret-pw" not in out
    monkeypatch.setenv("FLOW_PROMETHEUS_STALE_AFTER", "nan")
    code, _, err = _run(capsys, "config", "show")
    assert code == 2 and "FLOW_PROMETHEUS_STALE_AFTER" in err


def _promql_match(matcher: str, value: str) -> bool:
    """A `label=~"re"` / `label!~"re"` matcher applied to a value (PromQL anchors the regex)."""
    m = re.fullmatch(r'\w+(=~|!~)"(.*)"', matcher)
    assert m is not None, matcher
    hit = re.fullmatch(m.group(2), value) is not None
    return hit if m.group(1) == "=~" else not hit


def test_gpu_shards_split_every_index_exactly_once() -> None:
    for index in range(100):
        owners = [m for m in GPU_SHARDS if _promql_match(m, str(index))]
        assert len(owners) == 1, (index, owners)
    queries = fleet_queries()
    for shard in range(len(GPU_SHARDS)):
        for field_name in GPU_FIELDS:
            assert GPU_SHARDS[shard] in queries[f"{field_name}/{shard}"]


def test_paused_gc_restores_the_collector_and_freezes_on_request() -> None:
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            pass
        assert not gc.isenabled()  # an inner pause leaves the outer one paused
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with paused_gc(freeze=True):
        kept = [{"n": i} for i in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() >= len(kept)


def test_gpu_time_queries_name_exactly_the_nodes_asked_about() -> None:
    names = ["10.0.0.5", "a+b", "n(1)", "x|y", "back\\slash", 'quo"te'] + [f"n{i:03d}" for i in range(200)]
    queries = gpu_time_queries(names * 2)
    assert len(queries) == 3 * len(GPU_FIELDS)  # 100 nodes a query
    matched: list[str] = []
    for name, query in queries.items():
        literal = re.search(r'node=~"((?:[^"\\]|\\.)*)"', query)
        assert literal is not None and name.startswith("gpu_times/")
        regex = re.sub(r'\\(.)', r"\1", literal.group(1))  # the PromQL string's escapes
        if name.split("/")[1] == GPU_FIELDS[0]:
            matched += [n for n in names if re.fullmatch(regex, n)]
        for other in ("10x0x0x5", "ab", "aab", "n(1", "x", "n000x"):
            assert not re.fullmatch(regex, other), (regex[:60], other)
    assert sorted(matched) == sorted(names)
