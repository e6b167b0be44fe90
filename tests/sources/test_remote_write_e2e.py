"""End to end: the collector's remote_write sink sends snapshots to a real Prometheus (its own
remote-write receiver), and `flow health --gpu --source prometheus` reads the same verdicts back."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.health.sinks.remote_write import RemoteWriteSink
from flow.health.sinks.settings import RemoteWriteSettings
from sinks.servers import run_prometheus
from sinks.snapshots import snapshot


def test_remote_written_fleet_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    batches = [
        [snapshot(node="n-ok", gpus=8, when=now - timedelta(seconds=65)),
         snapshot(node="n-hot", gpus=8, temp_c=60.0, when=now - timedelta(seconds=65)),
         snapshot(node="n-healed", gpus=8, temp_c=88.0, when=now - timedelta(seconds=65))],
        # A minute later n-hot is hot, n-healed has cooled (its old reasons must not linger).
        [snapshot(node="n-ok", gpus=8, when=now - timedelta(seconds=5)),
         snapshot(node="n-hot", gpus=8, temp_c=88.0, when=now - timedelta(seconds=5)),
         snapshot(node="n-healed", gpus=8, temp_c=60.0, when=now - timedelta(seconds=5)),
         snapshot(node="n-down", reachable=False, when=now - timedelta(seconds=5))],
    ]
    with run_prometheus(tmp_path, {}, remote_write_receiver=True) as prom:
        sink = RemoteWriteSink(RemoteWriteSettings(name="rw", type="remote_write",
                                                   url=f"{prom.url}/api/v1/write"))

        async def send() -> None:
            try:
                for batch in batches:
                    await sink.send(batch)
            finally:
                await sink.aclose()

        asyncio.run(send())
        code = main(["health", "--gpu", "--json", "--source", "prometheus", "--prometheus-url", prom.url])
        out, err = capsys.readouterr()
    assert code == 0, err
    nodes = {n["node"]: n for n in orjson.loads(out)["nodes"]}
    for want in batches[-1]:
        got = nodes[want.node]
        assert want.verdict is not None
        assert got["verdict"]["status"] == want.verdict.status.value
        assert got["verdict"]["score"] == want.verdict.score
        assert sorted({r["code"] for r in got["verdict"]["reasons"]}) == sorted(
            {r.code for r in want.verdict.reasons})
        assert [g["temp_c"] for g in got["gpus"]] == [g.temp_c for g in want.gpus]
        assert got["timestamp"] == want.to_dict()["timestamp"]
