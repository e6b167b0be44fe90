"""The fleet view and a task's history, read back from Prometheus with PromQL.

The collectors remote-write the metric vocabulary (docs/metrics.md) to a Prometheus (or
Thanos, Mimir, VictoriaMetrics); this module reads it back as `Snapshot` objects, so the fleet
table, the issues, the `--json` documents and the history summary render them unchanged.

The fleet view is a fixed handful of instant queries for the whole fleet (`fleet_queries`),
never one per node; a task's history is a handful of range queries for that task
(`history_queries`). What comes back is less than a sweep over SSH reads:

- Reasons come back as code and severity (the `flow_node_health_reasons` series). Where scoring
  the GPU readings read back gives the same code (temperature, utilization, memory), the
  reasons are those, per GPU with their messages, as over SSH; any other code is one reason
  with the count of GPUs or components it hit, its message rebuilt from the code
  (`REASON_TEXT`) and its GPU unknown (`gpu` null).
- GPUs carry the readings the fleet table shows (`GPU_FIELDS`); the others are null. GPUd's
  components, events and the host metrics are not read (`host` is null).
- A node whose newest snapshot is older than `stale_after_s` is `unknown` with reason `stale`
  and its age; a node expected (from the inventory) that Prometheus does not hold is `unknown`
  with reason `no_data`.

A series that stopped being written lingers for Prometheus' lookback delta (5 minutes by
default) after its last remote-written sample: the label-valued families (reasons, GPUd state,
versions) are therefore read only where their sample is as new as the node's snapshot, the
score not while the status is unknown, and GPU readings, where a GPU may have vanished
(`FleetAnswers.lingering_gpu_suspects`), only where their sample is as new as the snapshot
(`gpu_time_queries`, a follow-up for those nodes alone).

Every answer is bounded (`MAX_ANSWER_BYTES`, and a total deadline per request); labels are
strings from the nodes and are cleaned (flow.text.clean_text) where they enter.

Parts: `promql` (the queries), `client` (the API calls, bounded), `answers` (their typed
decoding), `fleet` and `history` (the answers assembled into snapshots), `verdicts` (reasons
read back).
"""

from __future__ import annotations

from flow.health.sources.prometheus.client import (
    DEFAULT_STALE_AFTER_S,
    DEFAULT_TIMEOUT_S,
    MAX_ANSWER_BYTES,
    FleetRead,
    PrometheusError,
    PrometheusSource,
    paused_gc,
)
from flow.health.sources.prometheus.fleet import ExpectedNode, FleetAnswers, assemble_fleet
from flow.health.sources.prometheus.history import assemble_history, window_bounds
from flow.health.sources.prometheus.promql import (
    DEFAULT_LOOKBACK_S,
    GPU_FIELDS,
    GPU_SHARDS,
    MAX_POINTS_PER_SERIES,
    fleet_queries,
    gpu_time_queries,
    history_queries,
    history_step,
)
from flow.health.sources.prometheus.verdicts import REASON_TEXT

__all__ = [
    "DEFAULT_LOOKBACK_S",
    "DEFAULT_STALE_AFTER_S",
    "DEFAULT_TIMEOUT_S",
    "GPU_FIELDS",
    "GPU_SHARDS",
    "MAX_ANSWER_BYTES",
    "MAX_POINTS_PER_SERIES",
    "REASON_TEXT",
    "ExpectedNode",
    "FleetAnswers",
    "FleetRead",
    "PrometheusError",
    "PrometheusSource",
    "assemble_fleet",
    "assemble_history",
    "fleet_queries",
    "gpu_time_queries",
    "history_queries",
    "history_step",
    "paused_gc",
    "window_bounds",
]
