"""The PromQL of the Prometheus source: a fleet view's instant queries, the follow-up for
nodes whose GPU series may linger, and a task's range queries. The same handful for any fleet
size; values that enter a query are quoted (`quote`, `regex_alternatives`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "DEFAULT_LOOKBACK_S",
    "GPU_FIELDS",
    "GPU_METRICS",
    "GPU_SHARDS",
    "MAX_POINTS_PER_SERIES",
    "SNAPSHOT_TIME",
    "fleet_queries",
    "gpu_time_queries",
    "history_queries",
    "history_step",
    "quote",
    "regex_alternatives",
]

SNAPSHOT_TIME = "flow_node_snapshot_timestamp_seconds"
#: How far back the list of nodes looks: a node silent for longer is forgotten (or, when the
#: inventory names it, `no_data`).
DEFAULT_LOOKBACK_S = 3600.0
#: Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS_PER_SERIES = 11_000

#: The per-GPU families the fleet view reads, by the GpuReading field they fill.
GPU_METRICS: Mapping[str, str] = {
    "temp_c": "flow_gpu_temperature_celsius",
    "util_gpu_pct": "flow_gpu_utilization_percent",
    "mem_used_bytes": "flow_gpu_memory_used_bytes",
    "mem_total_bytes": "flow_gpu_memory_total_bytes",
}
#: GpuReading fields read from Prometheus (what the fleet table shows); the others are None.
GPU_FIELDS: tuple[str, ...] = tuple(GPU_METRICS)
#: Each per-GPU family is read in shards of GPU indices, disjoint and together everything (a
#: PromQL regex is anchored): four answers of 20,000 series for a 10,000-node fleet instead of
#: one of 80,000, so the answers arrive one after another and each is folded while Prometheus
#: still works on the others. Prometheus' own cost is the same (docs/benchmarks.md).
GPU_SHARDS: tuple[str, ...] = ('gpu=~"[01]"', 'gpu=~"[23]"', 'gpu=~"[45]"', 'gpu!~"[0-5]"')
#: Nodes per follow-up query of GPU sample times (`gpu_time_queries`).
NODES_PER_TIME_QUERY = 100


def quote(value: str) -> str:
    """A PromQL string literal (its escapes are Go's)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def regex_alternatives(values: Iterable[str]) -> str:
    """A PromQL regex matching exactly these values (RE2 syntax, anchored by PromQL)."""
    return "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", v) for v in sorted(set(values)))


def _matcher(task_id: str | None, **more: str) -> str:
    if task_id is None:
        return ""
    pairs = {"task_id": task_id, **more}
    return "{" + ", ".join(f"{k}={quote(v)}" for k, v in pairs.items()) + "}"


def _fresh(selector: str, match: str = "") -> str:
    """`selector` without the series older than their node's newest snapshot (lingering ones).
    `match` narrows the snapshot times compared to (a range query evaluates them per step)."""
    latest = f"max by (task_id, node) (timestamp({SNAPSHOT_TIME}{match}))"
    return (f"({selector} unless (timestamp({selector}) < on (task_id, node) group_left () "
            f"{latest}))")


def fleet_queries(*, lookback_s: float = DEFAULT_LOOKBACK_S) -> dict[str, str]:
    """The instant queries of one fleet view, by name: the same handful for any fleet size.
    A per-GPU query is named `FIELD/SHARD` (`temp_c/0`)."""
    queries = {
        "nodes": f"last_over_time({SNAPSHOT_TIME}[{int(lookback_s)}s])",
        "status": "flow_node_status == 1",
        "score": "flow_node_health_score",
        "gpus": "flow_node_gpus",
        "reasons": _fresh("flow_node_health_reasons"),
        # Their value is 1; asked for their sample's time instead, lingering series are left
        # out by the assembly at a third of what the join of `_fresh` costs Prometheus.
        # (`timestamp` gives a sample's own time only when applied to a plain selector.)
        "state": "timestamp(flow_node_scrape_state)",
        "info": "timestamp(flow_node_info)",
    }
    for shard, matcher in enumerate(GPU_SHARDS):
        for name, metric in GPU_METRICS.items():
            # Only the identifying labels travel: a tenth of the bytes of the full label set.
            queries[f"{name}/{shard}"] = f"max by (task_id, node, gpu) ({metric}{{{matcher}}})"
    return queries


def gpu_time_queries(nodes: Iterable[str]) -> dict[str, str]:
    """The follow-up instant queries of a fleet view: when each per-GPU series of these nodes
    was last written, for nodes whose GPU series may linger. Named `gpu_times/FIELD/CHUNK`."""
    ordered = sorted(set(nodes))
    queries = {}
    for start in range(0, len(ordered), NODES_PER_TIME_QUERY):
        chunk = ordered[start:start + NODES_PER_TIME_QUERY]
        matcher = f"{{node=~{quote(regex_alternatives(chunk))}}}"
        for name, metric in GPU_METRICS.items():
            queries[f"gpu_times/{name}/{start // NODES_PER_TIME_QUERY}"] = (
                f"max by (task_id, node, gpu) (timestamp({metric}{matcher}))")
    return queries


def history_queries(task_id: str, step_s: int) -> dict[str, str]:
    """The range queries of one task's history, by name, at a step of `step_s` seconds."""
    m = _matcher(task_id)

    def written_in_step(selector: str) -> str:
        # A snapshot is taken from a step only where the node's snapshot time changed, that is
        # where it was written within the step; its GPU samples carry the same time. A series
        # that stopped (a GPU that vanished, an XID no longer reported) has none there, where
        # a plain selector would repeat its last sample for the lookback delta. As cheap.
        return f"last_over_time({selector}[{step_s}s])"

    return {
        "nodes": f"{SNAPSHOT_TIME}{m}",
        "status": f"flow_node_status{m} == 1",
        "score": f"flow_node_health_score{m}",
        "reasons": _fresh(f"flow_node_health_reasons{m}", m),
        # Selectors, not aggregations: a range answer names each series once, so aggregating
        # away labels saves no bytes and costs Prometheus twice the time.
        "temp_c": written_in_step(f"flow_gpu_temperature_celsius{m}"),
        "util_gpu_pct": written_in_step(f"flow_gpu_utilization_percent{m}"),
        # Only counts above 0: the summary counts rises, and most GPUs never have an error.
        "ecc": written_in_step(f"flow_gpu_ecc_errors_total{_matcher(task_id, scope='volatile')}")
               + " > 0",
        "xid": written_in_step(f"flow_gpu_xid_errors{m}"),
    }


def history_step(hours: float, interval_s: float) -> int:
    """The range-query step (whole seconds): the collector interval, or coarser where the
    window would otherwise need more than `MAX_POINTS_PER_SERIES` points."""
    window = hours * 3600.0
    return max(1, math.ceil(interval_s), math.ceil(window / (MAX_POINTS_PER_SERIES - 1)))
