"""The GPUd HTTP client: one node, its requests in flight together, one deadline.

`GpudClient.read()` never raises for anything GPUd or the network does: a node that cannot be
read gives a Snapshot whose `gpud` status says why (not_listening, tls_error, timeout,
bad_response, error_response). httpx errors are mapped to the `GPUdError` tree in one place,
`get_json()`, which is public for callers that want one endpoint and an exception.

GPUd serves HTTPS only, with a self-signed certificate made at each start; verification is off
(GPUd's own client does the same) because the channel is an SSH tunnel, which authenticates the
node. Environment proxies are ignored for the same reason: the URL is a local tunnel end.

A node is not trusted to be well-behaved, so one broken or hostile node cannot take a sweep down:
- every answer is read as a stream and decompressed here, at most `MAX_COMPRESSED_BYTES` on the
  wire (gzip) and `MAX_BODY_BYTES` decoded; past either, reading stops at once and the answer is
  `bad_response` naming the limit (a gzip bomb or a huge array is never held whole);
- `read()` ends by its deadline, whatever the node does: a drip (headers, then a byte now and
  then) that no per-read timeout catches is cut there;
- text from GPUd's error bodies is cleaned (`flow.text.clean_text`) before it goes into a
  message; the adapters clean everything else they keep.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from flow.errors import GPUdError, GPUdStatusError, GPUdTimeout
from flow.health.bootid import local_boot_id
from flow.health.gpud.adapt import snapshot_from_responses
from flow.health.gpud.values import opt_text
from flow.health.snapshot import GpudStatus, ReadError, Snapshot, utcnow
from flow.text import clean_text

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_EVENTS_WINDOW_S",
    "DEFAULT_METRICS_SINCE_S",
    "DEFAULT_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_COMPRESSED_BYTES",
    "GpudAnswer",
    "GpudClient",
    "MachineInfoCache",
    "local_boot_id",
    "read_gpud",
]

DEFAULT_TIMEOUT_S = 5.0  # one request
DEFAULT_DEADLINE_S = 10.0  # the whole read of one node
DEFAULT_EVENTS_WINDOW_S = 3600.0  # XIDs and other events of the last hour
DEFAULT_METRICS_SINCE_S = 120.0  # GPUd samples once a minute: the last one or two samples
DEFAULT_MACHINE_INFO_TTL_S = 3600.0  # a GPUd upgrade without a reboot shows within the hour
#: The most one answer may be, decoded (bytes). GPUd's largest answer is /v1/metrics over its
#: whole 3 h retention on an 8-GPU node: 7.8 MB (0.3 MB gzip); flow asks for 2 min of it
#: (~0.1 MB). /v1/states there is 64 kB, a day of events a few kB. Not higher: decoding JSON
#: costs up to ~20 bytes of memory per byte (`[{},{},...]`), so 16 MiB can cost ~0.4 GB.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: The most one gzip answer may be on the wire (bytes): 13x the largest real one.
MAX_COMPRESSED_BYTES = 4 * 1024 * 1024
_SNIPPET = 120
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_INFLATE_STEP = 1024 * 1024  # inflate at most this much at once: the buffer is all we hold
# Slack for the read's own bookkeeping past its deadline (cancelled requests close their streams).
_CANCEL_GRACE_S = 1.0


@dataclass(frozen=True, kw_only=True)
class GpudAnswer:
    """One GPUd answer as it came: status, content type and body (decoded from gzip, size-bounded).

    `url` is the path's URL without its query. `reason` and `content_type` are cleaned; `body`
    is the node's bytes, not trusted.
    """

    url: str
    status_code: int
    reason: str
    content_type: str
    body: bytes | bytearray

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


class MachineInfoCache:
    """`/machine-info` answers keyed by (base_url, bootID): a rebooted node is read again.

    The key holds the boot id because a tunnel's local port may later lead to another node.
    """

    def __init__(self, *, ttl_s: float = DEFAULT_MACHINE_INFO_TTL_S, max_entries: int = 1024) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, Mapping[str, Any]]] = OrderedDict()

    def get(self, base_url: str, boot_id: str) -> Mapping[str, Any] | None:
        key = (base_url, boot_id)
        held = self._entries.get(key)
        if held is None or time.monotonic() - held[0] > self._ttl_s:
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return held[1]

    def put(self, base_url: str, info: Any) -> None:
        """Keep `info` if it is a machine-info object with a boot id; ignore anything else."""
        boot_id = opt_text(info.get("bootID")) if isinstance(info, Mapping) else None
        if boot_id is None:
            return
        self._entries[(base_url, boot_id)] = (time.monotonic(), info)
        self._entries.move_to_end((base_url, boot_id))
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: seconds > 0")
    return float(value)


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "TLS" in str(exc)


def _snippet(body: bytes | bytearray) -> str:
    text = clean_text(body[:_SNIPPET].decode("utf-8", "replace"))
    return " ".join(text.split()) + ("…" if len(body) > _SNIPPET else "")


def _error_body(body: Any) -> str | None:
    """GPUd's error body `{"code": N, "message": "..."}`: the message, or None if it is not one."""
    if isinstance(body, Mapping) and "code" in body and set(body) <= {"code", "message", "error"}:
        return clean_text(str(body.get("message") or body.get("error") or f"code {body['code']}"))
    return None


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: a whole number of bytes >= 1")
    return value


class _BoundedBody:
    """One answer's body, fed as it arrives, decoded here under both limits.

    httpx would inflate a gzip body whole before anyone could look at its size; here each wire
    chunk inflates to at most what is left of the decoded limit (zlib's `max_length`), so memory
    never exceeds the limit however small the compressed body was.
    """

    def __init__(self, url: str, encoding: str, *, max_body: int, max_compressed: int) -> None:
        self.url = url
        self.max_body = max_body
        self.max_compressed = max_compressed
        self.buffer = bytearray()
        self.wire = 0
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._inflate: Any = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(_GZIP_WBITS)
        else:  # asked only for gzip: anything else is not GPUd's
            raise GPUdError(f"GPUd's answer to {url} is encoded {clean_text(encoding)!r}; flow reads "
                            "identity or gzip", url=url, kind="bad_response")

    def too_big(self, declared: int | None) -> None:
        """Raise now if a declared Content-Length is over the wire limit (nothing need be read)."""
        if declared is not None:
            self._count_wire(declared)

    def _count_wire(self, n: int) -> None:
        if self._inflate is None and n > self.max_body:
            raise self._over(f"exceeds {_size(self.max_body)}, the limit for one answer")
        if self._inflate is not None and n > self.max_compressed:
            raise self._over(f"exceeds {_size(self.max_compressed)} compressed, the limit for a gzip answer")

    def _over(self, what: str) -> GPUdError:
        return GPUdError(f"GPUd's answer to {self.url} {what}; flow stopped reading it", url=self.url,
                         kind="bad_response")

    def feed(self, chunk: bytes) -> None:
        self.wire += len(chunk)
        self._count_wire(self.wire)
        if self._inflate is None:
            self._keep(chunk)
            return
        pending = chunk
        try:
            while True:
                if self._inflate.eof:  # a gzip member ended; another may follow (RFC 1952)
                    pending = self._inflate.unused_data + pending
                    if not pending:
                        return
                    self._inflate = zlib.decompressobj(_GZIP_WBITS)
                out = self._inflate.decompress(pending, _INFLATE_STEP)
                self._keep(out)
                pending = self._inflate.unconsumed_tail
                # A full step may leave output inside zlib with no input left: ask again.
                if not pending and len(out) < _INFLATE_STEP and not self._inflate.eof:
                    return
        except zlib.error as exc:
            raise GPUdError(f"GPUd's gzip answer to {self.url} is corrupt: {exc}", url=self.url,
                            kind="bad_response") from None

    def _keep(self, data: bytes) -> None:
        if len(self.buffer) + len(data) > self.max_body:
            how = " decompressed" if self._inflate is not None else ""
            raise self._over(f"exceeds {_size(self.max_body)}{how}, the limit for one answer")
        self.buffer += data

    def finish(self) -> bytearray:
        if self._inflate is not None and self.wire and not self._inflate.eof:
            raise GPUdError(f"GPUd's gzip answer to {self.url} broke off", url=self.url, kind="bad_response")
        return self.buffer  # orjson reads a bytearray as is: no copy of up to MAX_BODY_BYTES


#: Components whose per-GPU blobs carry the core readings (temperature, use, memory, power).
_CORE_COMPONENTS = ("accelerator-nvidia-temperature", "accelerator-nvidia-utilization",
                    "accelerator-nvidia-memory", "accelerator-nvidia-power")


def _has_gaps(states: Any) -> bool:
    """True when /v1/metrics may hold GPU readings the states' blobs lack.

    Looked up on the raw answer (no parsing): a GPU machine whose core NVIDIA components are
    missing or carry no `extra_info["data"]` blob (v0.4, a component still initialising).
    """
    blobs: dict[str, bool] = {}
    gpu_machine = False
    for entry in states if isinstance(states, list) else ():
        if not isinstance(entry, Mapping):
            continue
        name = str(entry.get("component", ""))
        if not name.startswith("accelerator-nvidia"):
            continue
        gpu_machine = True
        if name in _CORE_COMPONENTS:
            found = False
            for state in entry.get("states") or ():
                extra = state.get("extra_info") if isinstance(state, Mapping) else None
                if isinstance(extra, Mapping) and extra.get("data"):
                    found = True
            blobs[name] = blobs.get(name, False) or found
    return gpu_machine and not all(blobs.get(name) for name in _CORE_COMPONENTS)


class GpudClient:
    """Reads one GPUd: `/healthz`, `/machine-info`, `/v1/states`, `/v1/events`, `/v1/metrics`.

    Args:
        base_url: GPUd's URL, e.g. `https://127.0.0.1:15132` (usually a tunnel's local end).
        timeout_s: the limit for each request (connect, each read).
        deadline_s: the limit for one `read()` of the node, all requests together.
        transport: an httpx transport to use instead of the network (tests, in-process servers).
        events_window_s: how far back `/v1/events` is asked (`startTime`, unix seconds).
        metrics_since_s: how far back `/v1/metrics` is asked (`since`); the newest sample wins.
        machine_info_cache: share one between clients to keep /machine-info across sweeps.
        max_body_bytes: the most one answer may be, decoded; past it the answer is bad_response.
        max_compressed_bytes: the most one gzip answer may be on the wire.

    Raises:
        ValueError: a bad URL, a time limit that is not a positive number of seconds, or a size
            limit that is not a whole number of bytes >= 1.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
        transport: httpx.AsyncBaseTransport | None = None,
        events_window_s: float = DEFAULT_EVENTS_WINDOW_S,
        metrics_since_s: float = DEFAULT_METRICS_SINCE_S,
        machine_info_cache: MachineInfoCache | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_compressed_bytes: int = MAX_COMPRESSED_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"base_url={base_url!r} is not allowed; allowed: https://host:port")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = _positive("timeout_s", timeout_s)
        self.deadline_s = _positive("deadline_s", deadline_s)
        self.events_window_s = _positive("events_window_s", events_window_s)
        self.metrics_since_s = _positive("metrics_since_s", metrics_since_s)
        self.max_body_bytes = _positive_int("max_body_bytes", max_body_bytes)
        self.max_compressed_bytes = _positive_int("max_compressed_bytes", max_compressed_bytes)
        self.machine_info_cache = machine_info_cache if machine_info_cache is not None else MachineInfoCache()
        self._answered = False  # the last read got GPUd's states
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            verify=False,
            transport=transport,
            timeout=httpx.Timeout(self.timeout_s),
            headers={"Accept": "application/json", "Accept-Encoding": "gzip"},
            trust_env=False,
            follow_redirects=False,
            # One keep-alive connection per node: requests queue on it. Through an SSH tunnel
            # each new connection costs a channel and a TLS handshake (~15 ms, mostly CPU); a
            # request on an open one ~5 ms. TCP_NODELAY on both ends (asyncssh, GPUd/Go) means
            # no Nagle/delayed-ACK stall (measured: docs/gpud-client.md).
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def __repr__(self) -> str:
        return f"GpudClient({self.base_url!r}, timeout_s={self.timeout_s!r}, deadline_s={self.deadline_s!r})"

    async def __aenter__(self) -> GpudClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET `path` and decode its JSON body.

        Raises:
            GPUdTimeout: no answer within `timeout_s` (kind "timeout").
            GPUdStatusError: a non-2xx status or GPUd's JSON error body (kind "error_response").
            GPUdError: nothing listening (kind "not_listening"), a TLS handshake failure
                ("tls_error"), or an answer that is not JSON, broke off, or is over a size limit
                ("bad_response").
        """
        return self._decode(await self.get(path, params))

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> GpudAnswer:
        """GET `path` and return the answer whatever its status, its body read under the size limits.

        For callers that show any GPUd path (`flow health gpud`): a 404 or a text body is an
        answer here, not an error. The body is the node's bytes, untrusted: clean before showing.

        Raises:
            GPUdTimeout: no answer within `timeout_s` (kind "timeout").
            GPUdError: nothing listening (kind "not_listening"), a TLS handshake failure
                ("tls_error"), or an answer that broke off or is over a size limit ("bad_response").
        """
        url = f"{self.base_url}{path}"
        try:
            async with self._http.stream("GET", path, params=params) as response:
                content = await self._read_body(response, url)
        except httpx.TimeoutException as exc:
            raise GPUdTimeout(
                f"GPUd at {url} did not answer within {self.timeout_s:g} s ({type(exc).__name__})", url=url
            ) from exc
        except httpx.ConnectError as exc:
            if _is_tls_failure(exc):
                raise GPUdError(f"TLS handshake with {self.base_url} failed: {exc}", url=url,
                                kind="tls_error") from exc
            raise GPUdError(f"nothing is listening at {self.base_url}: {exc}", url=url,
                            kind="not_listening") from exc
        except httpx.HTTPError as exc:  # the connection broke mid-answer, bad gzip, protocol errors
            raise GPUdError(f"GPUd at {url} broke off its answer: {type(exc).__name__}: {exc}", url=url,
                            kind="bad_response") from exc
        return GpudAnswer(url=url, status_code=response.status_code,
                          reason=clean_text(response.reason_phrase),
                          content_type=clean_text(response.headers.get("Content-Type", ""), limit=200),
                          body=content)

    async def _read_body(self, response: httpx.Response, url: str) -> bytearray:
        limits = {"max_body": self.max_body_bytes, "max_compressed": self.max_compressed_bytes}
        if response.is_stream_consumed:  # an in-memory transport's answer: already read and decoded
            body = _BoundedBody(url, "", **limits)
            body.feed(response.content)
            return body.finish()
        body = _BoundedBody(url, response.headers.get("Content-Encoding", ""), **limits)
        length = response.headers.get("Content-Length", "")
        body.too_big(int(length) if length.isascii() and length.isdigit() else None)
        async for chunk in response.aiter_raw():
            body.feed(chunk)
        return body.finish()

    def _decode(self, answer: GpudAnswer) -> Any:
        content, url = answer.body, answer.url
        try:
            body: Any = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = None
            decoded = False
        else:
            decoded = True
        if not answer.ok:
            detail = _error_body(body) or _snippet(content) or answer.reason
            raise GPUdStatusError(f"GPUd answered {url} with HTTP {answer.status_code}: {detail}",
                                  status_code=answer.status_code, url=url)
        if not decoded:
            raise GPUdError(f"GPUd's answer to {url} is not JSON: {_snippet(content)!r}", url=url,
                            kind="bad_response")
        message = _error_body(body)
        if message is not None:
            code = body.get("code")
            status_code = code if isinstance(code, int) else answer.status_code
            raise GPUdStatusError(f"GPUd answered {url} with error {code}: {message}",
                                  status_code=status_code, url=url)
        return body

    async def _fetch_all(
        self, requests: Mapping[str, Awaitable[Any]], *, deadline_s: float | None = None
    ) -> dict[str, Any]:
        """Run the requests (queued on the client's one connection, in order); each result is its
        body or the exception it ended with. What has not answered at the deadline is cancelled.
        """
        tasks = {name: asyncio.ensure_future(request) for name, request in requests.items()}
        limit = self.deadline_s if deadline_s is None else deadline_s
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=limit)
        finally:  # also when the caller cancels us: no request outlives the read (no-op if done)
            for task in tasks.values():
                task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_CANCEL_GRACE_S)
        results: dict[str, Any] = {}
        for name, task in tasks.items():
            if task in pending:
                results[name] = GPUdTimeout(
                    f"GPUd at {self.base_url} did not answer {name} within the "
                    f"{limit:.1f} s deadline", url=self.base_url)
            elif task.exception() is not None:
                results[name] = task.exception()
            else:
                results[name] = task.result()
        return results

    async def read(
        self,
        *,
        task_id: str,
        task_name: str = "",
        node: str = "",
        instance_type: str | None = None,
        boot_id: str | None = None,
    ) -> Snapshot:
        """One unscored snapshot of the node (verdict None; the caller scores it).

        Args:
            boot_id: the node's boot id if the caller knows it; /machine-info is then taken from
                the cache when it holds that boot.

        Never raises for GPUd's or the network's failures; they are in `snapshot.gpud`. Returns
        by `deadline_s` (plus a second at most to close what was cut off) whatever the node does.
        """
        started = time.monotonic()
        identity: dict[str, Any] = {"task_id": task_id, "task_name": task_name, "node": node,
                                    "instance_type": instance_type}
        try:
            # The requests have the deadline already (_fetch_all); this one is over everything,
            # so nothing the node does (a drip, an answer cut mid-way) can hold the read longer.
            return await asyncio.wait_for(self._read(identity, started, boot_id),
                                          self.deadline_s + _CANCEL_GRACE_S)
        except asyncio.TimeoutError:
            self._answered = False
            latency_ms = round((time.monotonic() - started) * 1000.0, 1)
            error = (f"GPUd at {self.base_url} did not finish answering within the "
                     f"{self.deadline_s:g} s deadline")
            return Snapshot(timestamp=utcnow(), **identity, gpud=GpudStatus(
                reachable=False, state="timeout", error=error, latency_ms=latency_ms))

    async def _read(self, identity: dict[str, Any], started: float, boot_id: str | None) -> Snapshot:
        now_s = int(time.time())
        # The requests queue on one connection, so their order is the plan: /healthz (cheap; it
        # tells "GPUd up, states stuck" from "GPUd down") and the states first; then what the
        # states call for; events (a query of GPUd's database) last, so a stuck events query
        # costs only the events.
        # A client kept across reads (the collector's) skips /healthz while GPUd answers.
        opening: dict[str, Awaitable[Any]] = {} if self._answered else {"/healthz": self.get_json("/healthz")}
        opening["/v1/states"] = self.get_json("/v1/states")
        first = await self._fetch_all(opening)
        states = first["/v1/states"]
        if not isinstance(states, (list, BaseException)):  # JSON, but not GPUd's: e.g. a proxy's
            states = GPUdError(f"GPUd's answer to {self.base_url}/v1/states is a JSON "
                               f"{type(states).__name__}, not the array of components GPUd sends",
                               kind="bad_response")
        self._answered = not isinstance(states, BaseException)
        if isinstance(states, BaseException):
            latency_ms = round((time.monotonic() - started) * 1000.0, 1)
            return Snapshot(timestamp=utcnow(), gpud=self._failure(states, first, latency_ms), **identity)

        rest: dict[str, Awaitable[Any]] = {}
        machine_info = self.machine_info_cache.get(self.base_url, boot_id) if boot_id else None
        if machine_info is None:
            rest["/machine-info"] = self.get_json("/machine-info")
        # /v1/metrics only when the states' blobs leave GPU readings out (v0.4, an old or
        # failed component): parsing it is most of a read's CPU, and it is rarely needed.
        if _has_gaps(states):
            rest["/v1/metrics"] = self.get_json("/v1/metrics", {"since": f"{int(self.metrics_since_s)}s"})
        rest["/v1/events"] = self.get_json(
            "/v1/events", {"startTime": str(now_s - int(self.events_window_s)), "endTime": str(now_s)})
        remaining = max(0.001, self.deadline_s - (time.monotonic() - started))
        results = {**first, **await self._fetch_all(rest, deadline_s=remaining)}
        latency_ms = round((time.monotonic() - started) * 1000.0, 1)

        errors: list[ReadError] = []
        if "/machine-info" in results:
            machine_info = results["/machine-info"]
            if isinstance(machine_info, GPUdStatusError) and machine_info.status_code == 404:
                machine_info = None  # v0.4 has no /machine-info
            elif isinstance(machine_info, BaseException):
                errors.append(ReadError(component="machine-info", message=str(machine_info)))
                machine_info = None
            else:
                self.machine_info_cache.put(self.base_url, machine_info)
        bodies: dict[str, Any] = {}
        for path in ("/v1/events", "/v1/metrics", "/healthz"):
            body = results.get(path)
            if isinstance(body, BaseException):
                errors.append(ReadError(component=path.rsplit("/", 1)[-1], message=str(body)))
                body = None
            bodies[path] = body
        return snapshot_from_responses(
            states, bodies["/v1/events"], bodies["/v1/metrics"], machine_info,
            timestamp=utcnow(), latency_ms=latency_ms, read_errors=errors, **identity,
        )

    def _failure(self, exc: BaseException, results: Mapping[str, Any], latency_ms: float) -> GpudStatus:
        kind = exc.kind if isinstance(exc, GPUdError) else "bad_response"
        # httpx's and h11's texts may quote what the node sent: cleaned like the node's own text.
        message = clean_text(str(exc) if isinstance(exc, GPUdError) else f"{type(exc).__name__}: {exc}")
        if "/healthz" in results and not isinstance(results["/healthz"], BaseException):
            message = f"/healthz answered but /v1/states failed: {message}"
        return GpudStatus(reachable=False, state=kind, error=message, latency_ms=latency_ms)


async def read_gpud(
    base_url: str,
    *,
    task_id: str,
    task_name: str = "",
    node: str = "",
    instance_type: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    deadline_s: float = DEFAULT_DEADLINE_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Snapshot:
    """Read one node once with a client of its own (see `GpudClient`)."""
    async with GpudClient(
        base_url, timeout_s=timeout_s, deadline_s=deadline_s, transport=transport
    ) as client:
        return await client.read(task_id=task_id, task_name=task_name, node=node, instance_type=instance_type)
