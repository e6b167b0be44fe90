"""Serving simulated GPUd nodes over HTTPS with aiohttp: `SimNode` and `SimFleet`.

All the nodes of a fleet share one event loop and one aiohttp server; each node has its own
listening socket and its own certificate, and a request finds its node by the local port it
arrived on. Bodies are cached per node per sampler minute, so a sweep over hundreds of nodes
costs little more than the TLS handshakes.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from flow.health.bootid import local_boot_id
from flow.health.sim.api import DEFAULT_QUERY_SINCE_S, ApiError, NodeApi, parse_version
from flow.health.sim.gofmt import go_duration_s
from flow.health.sim.hardware import DEFAULT_GPU_MODEL, resolve_model
from flow.health.sim.hostile import serve_hostile
from flow.health.sim.physics import NodeProfile, make_profile, mix
from flow.health.sim.promtext import CONTENT_TYPE as PROM_CONTENT_TYPE
from flow.health.sim.scenarios import HOSTILE_SCENARIOS, assign_scenarios, validate_scenario
from flow.health.sim.tls import self_signed_context

__all__ = [
    "DEFAULT_GPUD_VERSION",
    "DEFAULT_GPU_COUNT",
    "DEFAULT_SLOW_DELAY_S",
    "GARBAGE_BODY",
    "SimFleet",
    "SimNode",
]

DEFAULT_GPUD_VERSION = "v0.5.1"
DEFAULT_GPU_COUNT = 8
DEFAULT_SLOW_DELAY_S = 30.0
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
# What a misconfigured proxy in front of the port might say: 200, claims JSON, is not GPUd's.
GARBAGE_BODY = (b"<html><head><title>Welcome</title></head>"
                b"<body><h1>It works!</h1><p>default backend - 200</p></body></html>\n")
_SHUTDOWN_TIMEOUT_S = 0.25
_GZIP_LEVEL = 5


#: This machine's boot id, or None: what a GPUd running on this host reports. A collector on
#: the same host compares it with GPUd's to keep /machine-info for the boot, so a node simulated
#: for it should report this one (`SimNode(boot_id=host_boot_id())`).
host_boot_id = local_boot_id


class SimNode:
    """One simulated GPUd. Use as `async with SimNode(...) as node:` or inside a `SimFleet`.

    `port=0` picks a free port. A `gpud-down` node binds nothing: its port is one that was free
    a moment ago (or the given one), so connections are refused.
    """

    def __init__(
        self,
        *,
        index: int = 0,
        scenario: str = "healthy",
        gpu_model: str = DEFAULT_GPU_MODEL,
        gpu_count: int = DEFAULT_GPU_COUNT,
        gpud_version: str = DEFAULT_GPUD_VERSION,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        slow_delay_s: float = DEFAULT_SLOW_DELAY_S,
        boot_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if scenario == "mixed":
            raise ValueError("'mixed' applies to a fleet; give a node one scenario")
        validate_scenario(scenario)
        model = resolve_model(gpu_model)
        if not 1 <= gpu_count <= 8:
            raise ValueError(f"gpu_count must be between 1 and 8, got {gpu_count!r}")
        parse_version(gpud_version)
        if slow_delay_s < 0:
            raise ValueError(f"slow_delay_s must be >= 0, got {slow_delay_s!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {port!r}")
        if scenario == "nvlink-errors" and not model.nvlink_links:
            raise ValueError(f"scenario 'nvlink-errors' needs a GPU with NVLink; {model.key} has none")
        if scenario.startswith("row-remap") and not model.row_remapping:
            raise ValueError(f"scenario {scenario!r} needs row remapping; {model.key} does not support it")
        self.index = index
        self.scenario = scenario
        self.gpu_model = model.key
        self.gpu_count = gpu_count
        self.gpud_version = gpud_version if gpud_version.startswith("v") else "v" + gpud_version
        self.seed = seed
        self.host = host
        self.port = port
        self.slow_delay_s = slow_delay_s
        # A GPUd reports the boot id of the machine it runs on; a node simulated for a collector
        # on this host can report this host's (see `host_boot_id`), as the collector expects.
        self.boot_id = boot_id
        self.clock = clock
        #: Requests served, by path: what a client asked of this node, and how often.
        self.requests: Counter[str] = Counter()
        self._model = model
        self._profile: NodeProfile | None = None
        self._api: NodeApi | None = None
        self._own_server: _Server | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def profile(self) -> NodeProfile:
        if self._profile is None:
            raise RuntimeError("the node has not been started")
        return self._profile

    @property
    def api(self) -> NodeApi:
        if self._api is None:
            raise RuntimeError("the node has not been started")
        return self._api

    @property
    def gpu_uuids(self) -> list[str]:
        return [g.uuid for g in self.profile.gpus]

    def _prepare(self) -> None:
        self._profile = make_profile(index=self.index, seed=self.seed, scenario=self.scenario,
                                     model=self._model, gpu_count=self.gpu_count,
                                     started_ts=int(self.clock()), boot_id=self.boot_id)
        self._api = NodeApi(self._profile, self.gpud_version, self.clock)

    def _socket(self) -> socket.socket | None:
        """The listening socket, or None for a node that plays `gpud-down`."""
        if self.scenario == "gpud-down":
            if self.port == 0:
                self.port = _closed_port(self.host)
            return None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        sock.listen(512)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    async def start(self) -> SimNode:
        server = _Server()
        await server.setup()
        try:
            await server.add(self, self_signed_context((self.host, "localhost")))
        except BaseException:
            await server.cleanup()
            raise
        self._own_server = server
        return self

    async def stop(self) -> None:
        if self._own_server is not None:
            await self._own_server.cleanup()
            self._own_server = None

    async def __aenter__(self) -> SimNode:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return (f"SimNode(index={self.index}, url={self.url!r}, scenario={self.scenario!r}, "
                f"gpu_model={self.gpu_model!r}, gpu_count={self.gpu_count})")


class SimFleet:
    """Many simulated nodes in one process, on consecutive ports from `base_port` (0 = any free)."""

    def __init__(
        self,
        nodes: int = 1,
        *,
        base_port: int = 0,
        scenario: str | Sequence[str] = "healthy",
        gpud_version: str = DEFAULT_GPUD_VERSION,
        gpu_model: str = DEFAULT_GPU_MODEL,
        gpu_count: int = DEFAULT_GPU_COUNT,
        seed: int = 0,
        slow_delay_s: float = DEFAULT_SLOW_DELAY_S,
        host: str = "127.0.0.1",
        boot_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if boot_id is not None and nodes != 1:
            raise ValueError(f"boot_id names one machine; give it to a one-node fleet, not {nodes} nodes")
        if not 0 <= base_port <= 65535 or (base_port and base_port + nodes - 1 > 65535):
            raise ValueError(f"base_port {base_port!r} leaves no room for {nodes} nodes")
        model = resolve_model(gpu_model)
        unsupported = set()
        if not model.nvlink_links:
            unsupported.add("nvlink-errors")
        if not model.row_remapping:
            unsupported |= {"row-remap-pending", "row-remap-failed"}
        names = assign_scenarios(nodes, scenario, unsupported=unsupported)
        self.nodes: list[SimNode] = [
            SimNode(index=i, scenario=name, gpu_model=model.key, gpu_count=gpu_count,
                    gpud_version=gpud_version, seed=mix(seed * 1_000_003 + i), host=host,
                    port=base_port + i if base_port else 0, slow_delay_s=slow_delay_s, boot_id=boot_id,
                    clock=clock)
            for i, name in enumerate(names)
        ]
        self._server: _Server | None = None

    async def start(self) -> SimFleet:
        server = _Server()
        await server.setup()
        try:
            for node in self.nodes:
                await server.add(node, self_signed_context((node.host, "localhost")))
        except BaseException:
            await server.cleanup()
            raise
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.cleanup()
            self._server = None

    async def __aenter__(self) -> SimFleet:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def _closed_port(host: str) -> int:
    """A port that was free a moment ago: bind, read it, close (nothing listens there after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


class _Server:
    """One aiohttp server; each node is a SockSite on its own socket."""

    def __init__(self) -> None:
        self.by_port: dict[int, SimNode] = {}
        self._closing: asyncio.Event | None = None
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                    shutdown_timeout=_SHUTDOWN_TIMEOUT_S)

    async def setup(self) -> None:
        self._closing = asyncio.Event()
        await self.runner.setup()

    async def add(self, node: SimNode, ctx: ssl.SSLContext) -> None:
        node._prepare()
        sock = node._socket()
        if sock is None:
            return
        site = web.SockSite(self.runner, sock, ssl_context=ctx)
        await site.start()
        self.by_port[node.port] = node

    async def cleanup(self) -> None:
        if self._closing is not None:
            self._closing.set()  # releases gpud-slow handlers at once
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        node = self.by_port.get(sockname[1]) if sockname else None
        if node is None:
            return web.Response(status=404, text="404 page not found")
        node.requests[request.path] += 1
        if node.scenario == "gpud-slow" and self._closing is not None:
            try:
                await asyncio.wait_for(self._closing.wait(), node.slow_delay_s)
                return web.Response(status=503, text="shutting down")
            except asyncio.TimeoutError:
                pass
        if node.scenario == "gpud-garbage":
            return web.Response(status=200, body=GARBAGE_BODY, content_type="application/json")
        if node.scenario in HOSTILE_SCENARIOS:
            hostile = await serve_hostile(node, request, self._closing)
            if hostile is not None:
                return hostile
        try:
            return _route(node, request)
        except ApiError as err:
            return web.Response(status=err.status, body=err.body(), content_type="application/json",
                                charset="utf-8")


def _json_response(request: web.Request, body: bytes, *, indent: bool = False,
                   compressed: Callable[[], bytes] | None = None) -> web.Response:
    """200 with a JSON body; gzip on /v1/* when asked (`compressed` supplies a cached gzip)."""
    if indent:
        body = json.dumps(orjson.loads(body), indent=4, ensure_ascii=False).encode()
        compressed = None
    headers = {"Content-Type": JSON_CONTENT_TYPE}
    if "gzip" in request.headers.get("Accept-Encoding", "") and request.path.startswith("/v1/"):
        body = compressed() if compressed else gzip.compress(body, compresslevel=_GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return web.Response(status=200, body=body, headers=headers)


def _cached_json(request: web.Request, api: NodeApi, key: tuple[Any, ...], now: float,
                 build: Callable[[], bytes], indent: bool) -> web.Response:
    """A body (and its gzip) computed at most once per node, request and sampler minute."""
    body = api.cached(key, now, build)
    return _json_response(request, body, indent=indent, compressed=lambda: api.cached(
        (*key, "gzip"), now, lambda: gzip.compress(body, compresslevel=_GZIP_LEVEL)))


def _route(node: SimNode, request: web.Request) -> web.Response:
    api, path, q = node.api, request.path, request.query
    now = node.clock()
    indent = request.headers.get("json-indent", "").lower() == "true"
    if path == "/v1/health-states/set-healthy" and request.method == "POST" and api.has_set_healthy:
        return _json_response(request, orjson.dumps(api.set_healthy(q.get("components"), now)),
                              indent=indent)
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=404, text="404 page not found")
    if path == "/healthz":
        return _json_response(request, api.healthz(), indent=indent)
    if path == "/machine-info" and not api.legacy:
        return _json_response(request, api.machine_info(now), indent=indent)
    if path == "/metrics":
        return web.Response(status=200, body=api.prometheus(now),
                            headers={"Content-Type": PROM_CONTENT_TYPE})
    if path == "/v1/components":
        return _json_response(request, api.components_body(), indent=indent)
    if path == "/v1/states":
        comps = api.parse_components(q.get("components"))
        return _cached_json(request, api, ("states", tuple(comps)), now,
                            lambda: orjson.dumps(api.states_obj(comps, now)), indent)
    if path == "/v1/components/trigger-check" and not api.legacy:
        name = q.get("componentName", "")
        comps = api.parse_components(name) if name else []
        if not comps:
            raise ApiError(400, "component name is required")
        return _json_response(request, orjson.dumps(api.states_obj(comps, now)), indent=indent)
    if path == "/v1/events":
        comps = api.parse_components(q.get("components"))
        start, end = _times(q, now)
        return _json_response(request, orjson.dumps(api.events_obj(comps, start, end, now)), indent=indent)
    if path == "/v1/metrics":
        comps = api.parse_components(q.get("components"))
        since = _since(q)
        return _cached_json(request, api, ("metrics", tuple(comps), since), now,
                            lambda: api.metrics_body(comps, since, now), indent)
    if path == "/v1/info":
        comps = api.parse_components(q.get("components"))
        start, end = _times(q, now)
        since = _since(q)
        return _json_response(request, orjson.dumps(api.info_obj(comps, start, end, since, now)),
                              indent=indent)
    return web.Response(status=404, text="404 page not found")


def _times(q: Any, now: float) -> tuple[float, float]:
    """`startTime` / `endTime`: integer unix seconds; both default to now (so: no events)."""
    out = []
    for key in ("startTime", "endTime"):
        raw = q.get(key)
        if raw in (None, ""):
            out.append(float(int(now)))
            continue
        try:
            out.append(float(int(raw)))
        except ValueError:
            raise ApiError(400, f'failed to parse time: strconv.ParseInt: parsing "{raw}": invalid syntax'
                           ) from None
    return out[0], out[1]


def _since(q: Any) -> float:
    raw = q.get("since")
    if raw in (None, ""):
        return float(DEFAULT_QUERY_SINCE_S)
    try:
        return go_duration_s(raw)
    except ValueError as exc:
        raise ApiError(400, f"failed to parse duration: {exc}") from None
