"""Load snapshots into a real Prometheus: OpenMetrics with timestamps, through
`promtool tsdb create-blocks-from openmetrics`, then Prometheus started on that data dir.

The samples are the vocabulary's (flow.health.sinks.vocabulary.metric_families), each stamped
with its snapshot's time, as the collector's remote_write sink sends them.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from flow.health.sinks.vocabulary import MetricType, metric_families
from flow.health.snapshot import Snapshot
from sinks.servers import PrometheusServer, binary, run_prometheus

PROMTOOL_BIN = "/usr/bin/promtool"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def openmetrics(snapshots: Iterable[Snapshot]) -> str:
    """OpenMetrics text of the snapshots' samples, each with its snapshot's Unix time."""
    ordered = sorted(snapshots, key=lambda s: s.timestamp)
    out: list[str] = []
    for family in metric_families(ordered):
        spec = family.spec
        out.append(f"# TYPE {spec.family_name} {spec.type.value}\n")
        series: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
            line = f"{spec.name}{{{labels}}} {sample.value!r} {sample.timestamp.timestamp():.3f}\n"
            series.setdefault(sample.labels, []).append(line)
        for lines in series.values():  # a series' samples together, in time order
            out.extend(lines)
        assert spec.type in (MetricType.GAUGE, MetricType.COUNTER)
    out.append("# EOF\n")
    return "".join(out)


def create_blocks(tmp: Path, snapshots: Iterable[Snapshot]) -> Path:
    """A TSDB directory holding the snapshots' samples (promtool's blocks)."""
    exe = binary(PROMTOOL_BIN, "prometheus")
    source = tmp / "data.om"
    source.write_text(openmetrics(snapshots))
    tsdb = tmp / "tsdb"
    tsdb.mkdir(exist_ok=True)
    done = subprocess.run([exe, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"promtool failed ({done.returncode}): {done.stderr[-3000:]}")
    return tsdb


@contextlib.contextmanager
def prometheus_with(tmp: Path, snapshots: Iterable[Snapshot]) -> Iterator[PrometheusServer]:
    """A real Prometheus whose TSDB holds the snapshots (it scrapes nothing)."""
    create_blocks(tmp, snapshots)
    with run_prometheus(tmp, {}) as server:
        yield server
