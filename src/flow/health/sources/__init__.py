"""Where a fleet view is read from: the SSH sweep (flow.health.sweep.checker) or Prometheus (PromQL).

`flow.health.sources.prometheus` reads the fleet view and a task's history back from a
Prometheus (or Thanos, Mimir, VictoriaMetrics) that the collectors remote-write to, with a
handful of queries for any fleet size.
"""

from __future__ import annotations

__all__: list[str] = []
