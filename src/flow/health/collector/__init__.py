"""The per-node collector daemon (`flow-metrics-streamer`): sample GPUd and the host every
interval, score, store, and stream the store to the destinations.

Modules: `daemon` (the `Collector` loop: schedule, store, senders, retention, clock steps),
`sampling` (one scored sample: GPUd, else NVML, plus host metrics), `host` (psutil readings),
`nvml` (the direct NVML reader where GPUd is absent). It may import `gpud`, `storage`,
`streaming`, `sinks`, `scoring` and `snapshot`; never `flow.cli` or `flow.views` (the CLI in
`flow.cli.collect_cmd` is its entry point). docs/collector.md.
"""

from flow.health.collector.daemon import (
    CLEANUP_EVERY,
    Collector,
    CollectorSettings,
    collect_once,
    default_cursor_path,
    next_deadline,
)

__all__ = [
    "CLEANUP_EVERY",
    "Collector",
    "CollectorSettings",
    "collect_once",
    "default_cursor_path",
    "next_deadline",
]
