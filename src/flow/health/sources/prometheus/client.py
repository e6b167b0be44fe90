"""Prometheus' HTTP API, asked many queries at once: every answer bounded in size and time, and
held to the API's shape (answers.py) before anything of it is used."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

from flow.config import Thresholds, is_loopback_host
from flow.errors import TransportError
from flow.health.snapshot import Snapshot
from flow.health.sources.prometheus.answers import Series, decode_answer
from flow.health.sources.prometheus.fleet import ExpectedNode, FleetAnswers, assemble_fleet
from flow.health.sources.prometheus.history import assemble_history
from flow.health.sources.prometheus.promql import (
    DEFAULT_LOOKBACK_S,
    fleet_queries,
    gpu_time_queries,
    history_queries,
    history_step,
)
from flow.http_deadline import AnswerTimeout, request_within
from flow.secrets import redact_url
from flow.text import clean_text

__all__ = [
    "DEFAULT_STALE_AFTER_S",
    "DEFAULT_TIMEOUT_S",
    "MAX_ANSWER_BYTES",
    "FleetRead",
    "PrometheusError",
    "PrometheusSource",
    "paused_gc",
]

#: A node whose newest snapshot is older than this is `unknown` (`stale`): 5 collector
#: intervals of 60 s, and Prometheus' own lookback delta.
DEFAULT_STALE_AFTER_S = 300.0
DEFAULT_TIMEOUT_S = 30.0
#: The largest answer read: the biggest query of a 10,000-node, 8-GPU fleet answers 2.5 MB
#: (docs/benchmarks.md), so a fleet twenty times larger fits; a hostile or misdirected
#: endpoint cannot make us buffer more.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


@contextlib.contextmanager
def paused_gc(*, freeze: bool = False) -> Iterator[None]:
    """The cyclic garbage collector paused. Decoding a fleet's answers, and turning 10,000
    snapshots into a JSON document, allocate millions of objects, none of them in a cycle; the
    collector's passes would scan them all again and again (a third of the time).

    What was allocated during the pause is young when it ends, and the collector's next pass
    scans all of it once (half a second for a fleet). With `freeze`, everything alive is moved
    out of the collector's reach instead (`gc.freeze`): for a command about to exit, which
    would otherwise pay that pass at exit; reference counting still frees it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


class PrometheusError(TransportError):
    """Prometheus could not be read: unreachable, refused, too slow, too large or not its API.

    The message names the URL (redacted) and what went wrong; exit status 2 (the fleet view
    could not be built, which is not a verdict on the fleet).
    """

    exit_code = 2

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


@dataclass(frozen=True)
class FleetRead:
    snapshots: tuple[Snapshot, ...]
    elapsed_s: float
    queries: int


@dataclass(frozen=True, kw_only=True)
class PrometheusSource:
    """Where and how to query. `url` is the base URL (`https://prom:9090`, or a path prefix
    such as Mimir's `/prometheus`); basic auth may ride in it (shown redacted); `token` is sent
    as `Authorization: Bearer`."""

    url: str
    token: str | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_answer_bytes: int = MAX_ANSWER_BYTES
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    lookback_s: float = DEFAULT_LOOKBACK_S
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    def client(self) -> httpx.AsyncClient:
        # Compressing tens of megabytes costs Prometheus more than sending them over loopback.
        host = httpx.URL(self.url).host
        headers = {"Accept": "application/json",
                   "Accept-Encoding": "identity" if is_loopback_host(host) else "gzip"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Many parallel answers of megabytes each: no pool limit below the query count. The
        # timeout is ours, not httpx's 5 s between reads: a fleet's largest queries take that.
        return httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=32),
                                 timeout=httpx.Timeout(self.timeout_s), follow_redirects=False,
                                 trust_env=False)

    async def query(self, client: httpx.AsyncClient, path: str, params: Mapping[str, str],
                    what: str) -> list[Series]:
        """One API call (`/api/v1/query` or `/api/v1/query_range`): its `data.result`.

        Raises:
            PrometheusError: unreachable, timed out, an HTTP error, an answer larger than
                `max_answer_bytes`, or not a successful Prometheus API answer.
        """
        shown = self.shown_url
        url = str(httpx.URL(self.url.rstrip("/") + path, params=dict(params)))
        try:
            response = await request_within(client, "GET", url, timeout_s=self.timeout_s,
                                            max_body=self.max_answer_bytes + 1)
        except AnswerTimeout:
            raise PrometheusError(
                f"Prometheus at {shown} gave no complete answer to the {what} query within "
                f"{self.timeout_s:g} s", url=shown,
                hint="check the server's load, or narrow the fleet with --filter") from None
        except httpx.HTTPError as exc:
            detail = clean_text(str(exc) or type(exc).__name__, limit=200)
            raise PrometheusError(f"cannot reach Prometheus at {shown}: {detail}", url=shown,
                                  hint="check --prometheus-url / FLOW_PROMETHEUS_URL") from None
        body = response.content
        if len(body) > self.max_answer_bytes:
            raise PrometheusError(
                f"Prometheus at {shown} answered the {what} query with more than "
                f"{self.max_answer_bytes} bytes; allowed: at most {self.max_answer_bytes} bytes",
                url=shown, hint="narrow the fleet with --filter, or check that the URL is Prometheus")
        if response.status_code in (401, 403):
            raise PrometheusError(
                f"Prometheus at {shown} refused the query ({response.status_code})", url=shown,
                hint="set FLOW_PROMETHEUS_TOKEN (or health.prometheus_token_file), or put "
                     "user:password@ in the URL")
        try:
            answer = decode_answer(body)
        except ValueError as exc:
            excerpt = clean_text(body[:200].decode("utf-8", "replace"), limit=200)
            raise PrometheusError(
                f"Prometheus at {shown} answered the {what} query with HTTP "
                f"{response.status_code}, not the Prometheus API's JSON "
                f"({clean_text(str(exc), limit=200)}): {excerpt!r}", url=shown,
                hint="the URL is the server's base (https://host:9090), without /api/v1") from None
        if answer.status != "success":
            error = clean_text(answer.error or answer.errorType or "error", limit=300)
            raise PrometheusError(
                f"Prometheus at {shown} refused the {what} query (HTTP {response.status_code}): "
                f"{error}", url=shown)
        if answer.data is None:
            raise PrometheusError(f"Prometheus at {shown} answered the {what} query without a "
                                  "result list", url=shown)
        return answer.data.result

    async def _each_answer(self, path: str, queries: Mapping[str, str], extra: Mapping[str, str],
                           fold: Callable[[str, list[Series]], None]) -> None:
        """Every query at once; `fold(name, result)` for each answer as it arrives."""
        async def one(client: httpx.AsyncClient, name: str, query: str) -> None:
            fold(name, await self.query(client, path, {"query": query, **extra}, name))

        async with self.client() as client:
            await asyncio.gather(*(one(client, name, q) for name, q in queries.items()))

    async def read_fleet(self, *, expected: Sequence[ExpectedNode] | None = None,
                         now: datetime | None = None) -> FleetRead:
        """The fleet view: one snapshot per node Prometheus holds (or per `expected` node).

        Raises:
            PrometheusError: see `query`.
        """
        started = time.monotonic()
        now = now or datetime.now(timezone.utc)
        queries = fleet_queries(lookback_s=max(self.lookback_s, self.stale_after_s))
        with paused_gc():
            answers = FleetAnswers()
            at = {"time": f"{now.timestamp():.3f}"}
            await self._each_answer("/api/v1/query", queries, at, answers.add)
            follow_up = gpu_time_queries(key[1] for key in answers.lingering_gpu_suspects())
            if follow_up:
                await self._each_answer("/api/v1/query", follow_up, at, answers.add)
                queries.update(follow_up)
            snapshots = assemble_fleet(answers, now=now, stale_after_s=self.stale_after_s,
                                       thresholds=self.thresholds, expected=expected)
            del answers
        return FleetRead(tuple(snapshots), time.monotonic() - started, len(queries))

    async def read_history(self, task_id: str, hours: float, *, interval_s: float,
                           now: datetime | None = None) -> list[Snapshot]:
        """A task's snapshots over the last `hours`, time-ordered, one per distinct snapshot
        seen at the query's step (`history_step`).

        Raises:
            PrometheusError: see `query`.
        """
        now = now or datetime.now(timezone.utc)
        step = history_step(hours, interval_s)
        end = now.timestamp()
        extra = {"start": f"{end - hours * 3600.0:.3f}", "end": f"{end:.3f}", "step": f"{step}s"}
        results: dict[str, list[Series]] = {}
        with paused_gc():
            await self._each_answer("/api/v1/query_range", history_queries(task_id, step), extra,
                                    results.__setitem__)
            return assemble_history(results, thresholds=self.thresholds)
