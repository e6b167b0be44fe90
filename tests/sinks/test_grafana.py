"""The Grafana dashboard: an importable JSON model whose queries name only exported metrics."""

from __future__ import annotations

import re

import orjson
from click.testing import CliRunner

from flow.cli.main import cli
from flow.health.sinks.grafana import dashboard, dashboard_expressions
from flow.health.sinks.vocabulary import ALL_METRICS

_METRIC = re.compile(r"\bflow_[a-z0-9_]+\b")


def test_expressions_name_only_metrics_the_exporter_produces() -> None:
    exported = {m.name for m in ALL_METRICS}
    exprs = dashboard_expressions(dashboard())
    named = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert named and named <= exported, named - exported
    # The panels cover the fleet, the per-node score, the GPUs, XIDs and ECC.
    for needed in (
        "flow_node_status",
        "flow_node_health_score",
        "flow_gpu_temperature_celsius",
        "flow_gpu_utilization_percent",
        "flow_gpu_memory_used_bytes",
        "flow_gpu_xid_errors",
        "flow_gpu_ecc_errors_total",
    ):
        assert needed in named, needed


def test_model_is_importable_shape() -> None:
    model = dashboard()
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    assert model["uid"] and model["title"]
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for panel in model["panels"]:
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"} and grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        for target in panel["targets"]:
            assert target["expr"] and target["refId"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["task"]["definition"] == "label_values(flow_node_status, task_id)"
    assert variables["node"]["definition"] == 'label_values(flow_node_status{task_id=~"$task"}, node)'
    for name in ("task", "node"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    panel_exprs = " ".join(t["expr"] for p in model["panels"] for t in p.get("targets", ()))
    assert 'task_id=~"$task"' in panel_exprs and 'node=~"$node"' in panel_exprs


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


def test_cli_prints_the_dashboard_with_the_chosen_datasource() -> None:
    result = CliRunner().invoke(cli, ["health", "grafana-dashboard", "--datasource", "Mimir"])
    assert result.exit_code == 0, result.output
    model = orjson.loads(result.output)
    ds = model["templating"]["list"][0]
    assert ds["current"] == {"selected": True, "text": "Mimir", "value": "Mimir"}
    assert model == dashboard(datasource="Mimir")
