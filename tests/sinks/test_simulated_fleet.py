"""The exporter over a simulated fleet: GPUd simulator -> GPUd client -> scoring -> /metrics.

The sweep here is what the checker does minus SSH, so the metrics are those a real fleet of
GPUd nodes would produce, faults included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flow.health.gpud.client import read_gpud
from flow.health.scoring import score_snapshot
from flow.health.sim import SimFleet
from flow.health.sinks.prometheus import PrometheusExporter, start_metrics_server
from flow.health.snapshot import Snapshot

SCENARIOS = ["healthy", "hot", "xid-fatal", "row-remap-failed", "gpud-down"]


def test_exporter_serves_a_simulated_fleets_faults() -> None:
    async def main() -> str:
        async with SimFleet(nodes=len(SCENARIOS), scenario=SCENARIOS, gpu_count=2, seed=7) as sim:

            async def sweep() -> Sequence[Snapshot]:
                reads = [
                    read_gpud(
                        node.url,
                        task_id="task-sim",
                        task_name="sim",
                        node=node.scenario,
                        instance_type="sim-2gpu",
                        timeout_s=5,
                        deadline_s=10,
                    )
                    for node in sim.nodes
                ]
                return [s.with_verdict(score_snapshot(s)) for s in await asyncio.gather(*reads)]

            exporter = PrometheusExporter(sweep, interval_s=60)
            assert await exporter.sweep_once(), exporter.last_error
            server = await start_metrics_server(exporter.registry, host="127.0.0.1", port=0)
            async with server, httpx.AsyncClient() as client:
                return (await client.get(server.url)).text

    text = asyncio.run(main())
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def value(name: str, **labels: str) -> list[float]:
        return [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]

    status = {
        node: next(
            s.labels["status"]
            for s in samples
            if s.name == "flow_node_status" and s.labels["node"] == node and s.value == 1.0
        )
        for node in SCENARIOS
    }
    assert status["healthy"] == "healthy"
    assert status["gpud-down"] == "unknown"
    assert status["xid-fatal"] == "critical" and status["row-remap-failed"] == "critical"
    assert value("flow_node_scrape_success", node="gpud-down") == [0.0]
    assert value("flow_node_health_score", node="gpud-down") == []
    assert max(value("flow_gpu_temperature_celsius", node="hot")) > max(
        value("flow_gpu_temperature_celsius", node="healthy")
    )
    assert sum(value("flow_gpu_xid_errors", node="xid-fatal", xid_class="fatal")) >= 1
    assert 1.0 in value("flow_gpu_row_remap_failed", node="row-remap-failed")
    assert len(value("flow_gpu_utilization_percent", node="healthy")) == 2
