"""A fast writer of the Prometheus text format and OpenMetrics for vocabulary families.

prometheus_client renders about 20 µs per sample; a 1000-node fleet of 8-GPU nodes is about
250 000 samples, which took longer than Prometheus' default 10 s scrape timeout. This writer
formats each distinct label set once and joins strings, several times faster. Its output
parses to exactly the samples prometheus_client produces for the same families (a test checks
both formats), so the exporter can use it for its bulk and prometheus_client for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from flow.health.sinks.vocabulary import MetricFamily

__all__ = ["OPENMETRICS_CONTENT_TYPE", "TEXT_CONTENT_TYPE", "render_families"]

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render_families(
    families: Iterable[MetricFamily], *, openmetrics: bool = False, eof: bool = True
) -> bytes:
    """The families in the classic text format (0.0.4) or OpenMetrics 1.0.

    With `openmetrics`, `eof=False` leaves out the final `# EOF` so that more families can
    follow (the exporter appends its own sweep metrics).
    """
    out: list[str] = []
    labels_text: dict[tuple[tuple[str, str], ...], str] = {}
    for family in families:
        spec = family.spec
        # OpenMetrics names the family without `_total`; the classic format names the sample.
        name = spec.family_name if openmetrics else spec.name
        out.append(f"# HELP {name} {_help(spec.help)}\n# TYPE {name} {spec.type.value}\n")
        if openmetrics and spec.unit and spec.family_name.endswith("_" + spec.unit):
            out.append(f"# UNIT {name} {spec.unit}\n")
        sample_name = spec.name
        for sample in family.samples:
            text = labels_text.get(sample.labels)
            if text is None:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
                text = labels_text[sample.labels] = "{" + inner + "}" if inner else ""
            out.append(f"{sample_name}{text} {_value(sample.value)}\n")
    if openmetrics and eof:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")
