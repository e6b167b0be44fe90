"""`GET /metrics`: the latest points in Prometheus text exposition format (version 0.0.4).

Like GPUd's registry, every series carries a `gpud_component` label naming its component.
"""

from __future__ import annotations

from collections.abc import Iterable

from flow.health.sim.metrics import MetricPoint

__all__ = ["CONTENT_TYPE", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    return str(int(v)) if v.is_integer() else repr(v)


def render_prometheus(points: Iterable[MetricPoint]) -> bytes:
    families: dict[str, list[MetricPoint]] = {}
    for pt in points:
        families.setdefault(pt.name, []).append(pt)
    lines: list[str] = []
    for name in sorted(families):
        pts = families[name]
        kind = "counter" if pts[0].counter else "gauge"
        lines.append(f"# HELP {name} {name.replace('_', ' ')} (gpud component {pts[0].component})")
        lines.append(f"# TYPE {name} {kind}")
        for pt in pts:
            labels = [("gpud_component", pt.component), *pt.labels]
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{lab}}} {_fmt(pt.value)}")
    return ("\n".join(lines) + "\n").encode()
