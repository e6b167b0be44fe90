"""Prometheus: the vocabulary as prometheus_client metrics, the fleet exporter and its server.

- `SnapshotCollector` is a custom prometheus_client Collector over a "latest snapshots"
  provider: every collection renders the newest snapshot of each node.
- `PrometheusExporter` sweeps the fleet every interval (an injected async `sweep` callable:
  the checker in production, a stub in tests) and keeps the latest verdicts plus its own
  sweep metrics (`flow_sweep_*`). Its `serve()` renders the fleet with the fast writer of
  exposition.py, once per sweep, and serves that body to every scrape until the next sweep.
- `start_metrics_server` serves a registry at `/metrics` with aiohttp on the caller's event
  loop; `serve_prometheus` is the one-call form the collector uses for `--prometheus-listen`.

Samples carry no timestamps: Prometheus stamps them at scrape time, which is what it expects
from an exporter (and `flow_node_snapshot_timestamp_seconds` tells how old each reading is).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector, CollectorRegistry

from flow.errors import ConfigError
from flow.health.sinks.exposition import TEXT_CONTENT_TYPE, render_families
from flow.health.sinks.vocabulary import (
    MetricFamily,
    MetricType,
    latest_per_node,
    metric_families,
    spec,
)
from flow.health.snapshot import Snapshot

__all__ = [
    "DEFAULT_LISTEN",
    "TEXT_CONTENT_TYPE",
    "MetricsServer",
    "PrometheusExporter",
    "SnapshotCollector",
    "SweepFn",
    "exposition_text",
    "parse_listen",
    "serve_prometheus",
    "start_metrics_server",
    "to_prometheus",
]

log = logging.getLogger("flow.sinks.prometheus")

DEFAULT_LISTEN = "127.0.0.1:9464"

SweepFn = Callable[[], Awaitable[Sequence[Snapshot]]]
SnapshotProvider = Callable[[], Sequence[Snapshot]]


def to_prometheus(families: Iterable[MetricFamily]) -> Iterator[Metric]:
    """prometheus_client metric families for vocabulary families (no timestamps)."""
    for family in families:
        metric_spec = family.spec
        labels = list(metric_spec.label_names)
        # OpenMetrics requires the unit to be the name's suffix; all of ours are by construction.
        unit = metric_spec.unit if metric_spec.family_name.endswith("_" + metric_spec.unit) else ""
        metric: GaugeMetricFamily | CounterMetricFamily
        if metric_spec.type is MetricType.COUNTER:
            metric = CounterMetricFamily(metric_spec.family_name, metric_spec.help, labels=labels, unit=unit)
        else:
            metric = GaugeMetricFamily(metric_spec.family_name, metric_spec.help, labels=labels, unit=unit)
        for sample in family.samples:
            metric.add_metric([value for _, value in sample.labels], sample.value)
        yield metric


class _FamiliesCollector(Collector):
    def __init__(self, families: Sequence[MetricFamily]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return to_prometheus(self._families)


def exposition_text(families: Sequence[MetricFamily]) -> bytes:
    """The classic text exposition (version 0.0.4) of some families: a Pushgateway body."""
    return generate_latest(_FamiliesCollector(families))


class SnapshotCollector(Collector):
    """A Collector that renders the provider's latest snapshots at each scrape."""

    def __init__(self, provider: SnapshotProvider) -> None:
        self._provider = provider

    def describe(self) -> Iterable[Metric]:
        # Registering must not call the provider (it may have nothing yet).
        return ()

    def collect(self) -> Iterable[Metric]:
        snapshots = latest_per_node(list(self._provider()))
        return list(to_prometheus(metric_families(snapshots)))


class PrometheusExporter:
    """Sweeps the fleet every `interval_s` and exposes the latest verdicts.

    The sweep is any `async () -> Sequence[Snapshot]`. A sweep that raises or exceeds
    `sweep_timeout_s` counts as failed: the previous snapshots stay served (their
    `flow_node_snapshot_timestamp_seconds` shows their age) and `flow_sweep_success` is 0.
    """

    def __init__(
        self,
        sweep: SweepFn,
        *,
        interval_s: float = 30.0,
        sweep_timeout_s: float | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"Invalid argument interval_s={interval_s!r}: must be > 0")
        self._sweep = sweep
        self.interval_s = interval_s
        self.sweep_timeout_s = sweep_timeout_s
        self._latest: list[Snapshot] = []
        self._duration_s: float | None = None
        self._success: bool | None = None
        self._last_success: float | None = None
        self._results = {"ok": 0, "error": 0}
        self.generation = 0  # bumped by every sweep: what a cached /metrics body depends on
        self.last_error: BaseException | None = None
        sweep_collector = _SweepCollector(self)
        self._sweep_registry = CollectorRegistry(auto_describe=False)
        self._sweep_registry.register(sweep_collector)
        # `registry` holds everything, for embedding in another server; `serve()` renders the
        # same content through the fast writer.
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(self.latest))
        self.registry.register(sweep_collector)

    def latest(self) -> list[Snapshot]:
        """The snapshots of the last successful sweep (empty before the first one)."""
        return self._latest

    async def sweep_once(self) -> bool:
        """Run one sweep and record it; returns whether it succeeded. Never raises (but cancels)."""
        start = time.monotonic()
        try:
            if self.sweep_timeout_s is not None:
                result = await asyncio.wait_for(self._sweep(), self.sweep_timeout_s)
            else:
                result = await self._sweep()
            snapshots = list(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._duration_s = time.monotonic() - start
            self._success = False
            self._results["error"] += 1
            self.generation += 1
            self.last_error = exc
            log.warning("fleet sweep failed: %s", exc or type(exc).__name__)
            return False
        self._duration_s = time.monotonic() - start
        self._latest = snapshots  # one assignment: a scrape sees the old list or the new one
        self._success = True
        self._last_success = time.time()
        self._results["ok"] += 1
        self.generation += 1
        self.last_error = None
        return True

    def render(self, *, openmetrics: bool = False) -> bytes:
        """The /metrics body: the fleet through the fast writer, then the sweep metrics."""
        families = metric_families(latest_per_node(self._latest))
        fleet = render_families(families, openmetrics=openmetrics, eof=False)
        tail = (generate_openmetrics if openmetrics else generate_latest)(self._sweep_registry)
        return fleet + tail

    async def serve(self, *, host: str, port: int) -> MetricsServer:
        """Start serving this exporter's /metrics (rendered once per sweep, fast path)."""
        return await start_metrics_server(
            self.registry,
            host=host,
            port=port,
            generation=lambda: self.generation,
            render=lambda openmetrics: self.render(openmetrics=openmetrics),
        )

    async def run(self, stop: asyncio.Event | None = None, *, sweeps: int | None = None) -> None:
        """Sweep every interval until `stop` is set (or `sweeps` sweeps were done).

        The next deadline advances by the interval from the previous one, so sweeps do not
        drift; a sweep longer than the interval is followed at once by the next.
        """
        stop = stop or asyncio.Event()
        deadline = time.monotonic()
        done = 0
        while not stop.is_set():
            await self.sweep_once()
            done += 1
            if sweeps is not None and done >= sweeps:
                return
            deadline += self.interval_s
            now = time.monotonic()
            if deadline < now:
                deadline = now
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, deadline - now))


class _SweepCollector(Collector):
    def __init__(self, exporter: PrometheusExporter) -> None:
        self._exporter = exporter

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        e = self._exporter
        out: list[Metric] = []

        def gauge(name: str, value: float | None) -> None:
            if value is not None:
                s = spec(name)
                out.append(
                    GaugeMetricFamily(
                        s.name, s.help, value=value, unit=s.unit if s.name.endswith("_" + s.unit) else ""
                    )
                )

        gauge("flow_sweep_duration_seconds", e._duration_s)
        gauge("flow_sweep_success", None if e._success is None else float(e._success))
        gauge("flow_sweep_last_success_timestamp_seconds", e._last_success)
        gauge("flow_sweep_nodes", float(len(latest_per_node(e._latest))) if e._success is not None else None)
        s = spec("flow_sweeps_total")
        counter = CounterMetricFamily(s.family_name, s.help, labels=["result"])
        for result, count in e._results.items():
            counter.add_metric([result], float(count))
        out.append(counter)
        return out


class MetricsServer:
    """A running `/metrics` HTTP server (aiohttp, on the caller's loop)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def aclose(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _BodyCache:
    """Rendered bodies per (generation, content type, gzip): one render per sweep, whatever
    the number of scrapes; a lock makes concurrent scrapes share that render."""

    def __init__(self) -> None:
        self._key: object = None
        self._bodies: dict[tuple[str, bool], bytes] = {}
        self._lock = asyncio.Lock()

    async def get(
        self, generation: object, content_type: str, gzipped: bool, render: Callable[[], bytes]
    ) -> bytes:
        async with self._lock:
            if generation != self._key:
                self._key, self._bodies = generation, {}
            key = (content_type, gzipped)
            if key not in self._bodies:
                plain_key = (content_type, False)
                if plain_key not in self._bodies:
                    self._bodies[plain_key] = await asyncio.to_thread(render)
                if gzipped:
                    self._bodies[key] = await asyncio.to_thread(gzip.compress, self._bodies[plain_key], 6)
            return self._bodies[key]


async def start_metrics_server(
    registry: CollectorRegistry,
    *,
    host: str,
    port: int,
    generation: Callable[[], object] | None = None,
    render: Callable[[bool], bytes] | None = None,
) -> MetricsServer:
    """Serve `registry` at http://host:port/metrics (port 0 picks a free port).

    Text format or OpenMetrics as the scraper asks, gzipped when it accepts gzip. With
    `generation` (a value that changes whenever the registry's content may have changed, such
    as the exporter's sweep count), bodies are rendered once per generation. `render(openmetrics)`,
    when given, replaces prometheus_client's rendering of the registry (the exporter's fast path).

    Raises:
        ConfigError: the address cannot be bound (in use, not local, no permission).
    """
    cache = _BodyCache()

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        if render is not None and not openmetrics:
            content_type = TEXT_CONTENT_TYPE

        def render_body() -> bytes:
            return render(openmetrics) if render is not None else encoder(registry)

        if generation is not None:
            body = await cache.get(generation(), content_type, gzipped, render_body)
        else:
            # Rendering takes a while on a large fleet: keep the loop (and the sweeps) running.
            body = await asyncio.to_thread(render_body)
            if gzipped:
                body = await asyncio.to_thread(gzip.compress, body, 6)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
        return response

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="flow health exporter: metrics at /metrics\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"--listen={host}:{port}: cannot listen there: {exc.strerror or exc}") from None
    bound = runner.addresses[0]
    return MetricsServer(runner, host, int(bound[1]))


async def serve_prometheus(
    provider: SnapshotProvider,
    *,
    host: str = "127.0.0.1",
    port: int = 9464,
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve the vocabulary for whatever `provider()` returns now (the collector's own node).

    `provider` is called at each scrape, in a worker thread: return a list that is not
    mutated afterwards (replace it, don't append to it).

    The collector calls this once (`--prometheus-listen`) with a function returning its latest
    snapshot(s), and `await server.aclose()` on shutdown.
    """
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(provider))
    return await start_metrics_server(registry, host=host, port=port)


def parse_listen(text: str, *, name: str = "--listen") -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces) into (host, port).

    Raises:
        ConfigError: naming the option, the value and the allowed forms.
    """
    allowed = "HOST:PORT such as 127.0.0.1:9464, [::1]:9464 or :9464 (all interfaces), port 0-65535"
    raw = text.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{name}={text!r} is not an address; allowed: {allowed}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ConfigError(f"{name}={text!r} is not an address; allowed: {allowed}")
        host = host[1:-1]
    elif ":" in host or any(c.isspace() for c in host):
        raise ConfigError(f"{name}={text!r} is not an address (IPv6 needs brackets); allowed: {allowed}")
    return (host or "0.0.0.0", int(port_text))
