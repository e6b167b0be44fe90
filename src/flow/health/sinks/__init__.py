"""Integrations: the metric vocabulary, the Prometheus exporter, sinks and the Grafana dashboard.

```
vocabulary.py   snapshots -> metric families (the one naming of every metric)
prometheus.py   prometheus_client Collector, the fleet exporter, /metrics server
exposition.py   a fast text/OpenMetrics writer for the exporter's large bodies
pushgateway.py  datadog.py  cloudwatch.py  otlp.py   the sinks (Sink protocol in base.py)
http.py  batching.py   sending requests in order; splitting batches within size limits
settings.py     validation of health.sinks in config.yaml; factory.py builds the sinks
grafana.py      the dashboard JSON model
```
See docs/metrics.md and docs/integrations.md.
"""

from flow.health.sinks.base import EncodedRequest, EncodingSink, Sink, SinkError, SinkRegistry
from flow.health.sinks.factory import build_sink, build_sinks
from flow.health.sinks.prometheus import PrometheusExporter, SnapshotCollector, serve_prometheus
from flow.health.sinks.settings import parse_sink_settings, parse_sinks
from flow.health.sinks.vocabulary import ALL_METRICS, METRICS, metric_families

__all__ = [
    "ALL_METRICS",
    "METRICS",
    "EncodedRequest",
    "EncodingSink",
    "PrometheusExporter",
    "Sink",
    "SinkError",
    "SinkRegistry",
    "SnapshotCollector",
    "build_sink",
    "build_sinks",
    "metric_families",
    "parse_sink_settings",
    "parse_sinks",
    "serve_prometheus",
]
