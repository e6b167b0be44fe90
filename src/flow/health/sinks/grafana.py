"""A Grafana dashboard for the metric vocabulary (`flow health grafana-dashboard`).

The JSON model imports as is (Dashboards > New > Import): a `datasource` variable (any
Prometheus data source; `--datasource NAME` preselects one), `task` and `node` variables
filled with `label_values(...)`, and panels for fleet status, per-node score over time,
per-GPU temperature / utilization / memory / power, throttling, XIDs, ECC and row remapping,
and the exporter's own sweep health. Every expression names only vocabulary metrics (a test
checks this, and runs each expression against a real Prometheus).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DASHBOARD_UID", "SCHEMA_VERSION", "dashboard", "dashboard_expressions"]

SCHEMA_VERSION = 39
DASHBOARD_UID = "flow-health"
_DS = {"type": "prometheus", "uid": "${datasource}"}
_SEL = 'task_id=~"$task", node=~"$node"'


def _panel(
    pid: int,
    title: str,
    kind: str,
    grid: tuple[int, int, int, int],
    targets: list[tuple[str, str]],
    unit: str = "short",
    description: str = "",
    **extra: Any,
) -> dict[str, Any]:
    x, y, w, h = grid
    panel: dict[str, Any] = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": _DS,
                "expr": expr,
                "legendFormat": legend,
                "range": kind != "stat",
                "instant": kind == "stat",
            }
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    panel.update(extra)
    return panel


def _row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def _status_stat(pid: int, status: str, x: int, color: str) -> dict[str, Any]:
    expr = f'count(flow_node_status{{status="{status}", {_SEL}}} == 1) or vector(0)'
    return _panel(
        pid,
        f"Nodes {status}",
        "stat",
        (x, 1, 6, 4),
        [(expr, status)],
        description=f"Nodes whose verdict is {status}",
        fieldConfig={
            "defaults": {"unit": "short", "color": {"mode": "fixed", "fixedColor": color}},
            "overrides": [],
        },
        options={
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    )


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": _DS,
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


def dashboard(*, datasource: str | None = None, title: str = "flow health: GPU fleet") -> dict[str, Any]:
    """The dashboard JSON model. `datasource` preselects a Prometheus data source by name or uid."""
    ds_var: dict[str, Any] = {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "refresh": 1,
        "hide": 0,
        "current": ({"selected": True, "text": datasource, "value": datasource} if datasource else {}),
    }
    panels: list[dict[str, Any]] = [
        _row(1, "Fleet", 0),
        _status_stat(2, "healthy", 0, "green"),
        _status_stat(3, "degraded", 6, "orange"),
        _status_stat(4, "critical", 12, "red"),
        _status_stat(5, "unknown", 18, "gray"),
        _panel(
            6,
            "Health score per node",
            "timeseries",
            (0, 5, 16, 8),
            [(f"flow_node_health_score{{{_SEL}}}", "{{task_name}} {{node}}")],
            description="0-100; Healthy 80-100, Degraded 60-79, Critical below 60; absent when unknown",
            fieldConfig={"defaults": {"unit": "short", "min": 0, "max": 100}, "overrides": []},
        ),
        _panel(
            7,
            "Reasons by code",
            "table",
            (16, 5, 8, 8),
            [(f"sum by (node, code, severity) (flow_node_health_reasons{{{_SEL}}})", "")],
            description="What takes points off each node's score",
            options={"showHeader": True},
        ),
        _panel(
            8,
            "GPUd reachable",
            "timeseries",
            (0, 13, 12, 6),
            [(f"flow_node_scrape_success{{{_SEL}}}", "{{node}}")],
            description="1 when GPUd answered for the node",
            fieldConfig={"defaults": {"unit": "short", "min": 0, "max": 1}, "overrides": []},
        ),
        _panel(
            9,
            "Sweep duration",
            "timeseries",
            (12, 13, 12, 6),
            [("flow_sweep_duration_seconds", "sweep"), ("flow_sweep_success", "success")],
            unit="s",
            description="The exporter's fleet sweeps (flow health serve)",
        ),
        _row(10, "GPUs", 19),
        _panel(
            11,
            "GPU temperature",
            "timeseries",
            (0, 20, 12, 8),
            [
                (f"flow_gpu_temperature_celsius{{{_SEL}}}", "{{node}} GPU {{gpu}}"),
                (f"max by (node) (flow_gpu_memory_temperature_celsius{{{_SEL}}})", "{{node}} HBM max"),
            ],
            unit="celsius",
        ),
        _panel(
            12,
            "GPU utilization",
            "timeseries",
            (12, 20, 12, 8),
            [(f"flow_gpu_utilization_percent{{{_SEL}}}", "{{node}} GPU {{gpu}}")],
            unit="percent",
            fieldConfig={"defaults": {"unit": "percent", "min": 0, "max": 100}, "overrides": []},
        ),
        _panel(
            13,
            "GPU memory used",
            "timeseries",
            (0, 28, 12, 8),
            [
                (
                    f"100 * flow_gpu_memory_used_bytes{{{_SEL}}} / flow_gpu_memory_total_bytes{{{_SEL}}}",
                    "{{node}} GPU {{gpu}}",
                )
            ],
            fieldConfig={"defaults": {"unit": "percent", "min": 0, "max": 100}, "overrides": []},
        ),
        _panel(
            14,
            "GPU power",
            "timeseries",
            (12, 28, 12, 8),
            [
                (f"flow_gpu_power_watts{{{_SEL}}}", "{{node}} GPU {{gpu}}"),
                (f"flow_gpu_power_limit_watts{{{_SEL}}}", "{{node}} GPU {{gpu}} limit"),
            ],
            unit="watt",
        ),
        _panel(
            15,
            "Throttling",
            "timeseries",
            (0, 36, 12, 8),
            [(f"flow_gpu_throttle_active{{{_SEL}}} == 1", "{{node}} GPU {{gpu}} {{reason}}")],
            description="Active clock-event reasons",
        ),
        _row(16, "Errors", 44),
        _panel(
            17,
            "XID errors",
            "timeseries",
            (0, 45, 12, 8),
            [
                (
                    f"sum by (node, gpu, code, xid_class) (flow_gpu_xid_errors{{{_SEL}}})",
                    "{{node}} GPU {{gpu}} XID {{code}} ({{xid_class}})",
                )
            ],
            description="XIDs GPUd currently reports, by code",
        ),
        _panel(
            18,
            "ECC errors",
            "timeseries",
            (12, 45, 12, 8),
            [
                (
                    f"sum by (node, gpu, type, scope) (flow_gpu_ecc_errors_total{{{_SEL}}})",
                    "{{node}} GPU {{gpu}} {{type}} ({{scope}})",
                )
            ],
            description="Cumulative ECC error counts",
        ),
        _panel(
            19,
            "Row remapping",
            "timeseries",
            (0, 53, 12, 8),
            [
                (f"flow_gpu_row_remap_pending{{{_SEL}}}", "{{node}} GPU {{gpu}} pending"),
                (f"flow_gpu_row_remap_failed{{{_SEL}}}", "{{node}} GPU {{gpu}} failed"),
                (f"flow_gpu_remapped_rows_uncorrectable_total{{{_SEL}}}", "{{node}} GPU {{gpu}} rows"),
            ],
        ),
        _panel(
            20,
            "NVLink errors",
            "timeseries",
            (12, 53, 12, 8),
            [
                (
                    f"sum by (node, gpu, type) (flow_gpu_nvlink_errors_total{{{_SEL}}})",
                    "{{node}} GPU {{gpu}} {{type}}",
                )
            ],
        ),
        _row(21, "Hosts", 61),
        _panel(
            22,
            "Host CPU",
            "timeseries",
            (0, 62, 12, 8),
            [(f"flow_host_cpu_utilization_percent{{{_SEL}}}", "{{node}}")],
            unit="percent",
        ),
        _panel(
            23,
            "Host memory used",
            "timeseries",
            (12, 62, 12, 8),
            [
                (
                    f"100 * flow_host_memory_used_bytes{{{_SEL}}} / flow_host_memory_total_bytes{{{_SEL}}}",
                    "{{node}}",
                )
            ],
            unit="percent",
        ),
    ]
    return {
        "uid": DASHBOARD_UID,
        "title": title,
        "description": "GPU fleet health from flow (metric names: docs/metrics.md)",
        "tags": ["flow", "gpu", "health"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                ds_var,
                _variable("task", "Task", "label_values(flow_node_status, task_id)"),
                _variable("node", "Node", 'label_values(flow_node_status{task_id=~"$task"}, node)'),
            ]
        },
        "panels": panels,
    }


def dashboard_expressions(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard model: panel targets and variable queries."""
    exprs = [t["expr"] for p in model["panels"] for t in p.get("targets", ())]
    for var in model["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["definition"])
    return exprs
