"""A real HTTP receiver for the streaming tests: aiohttp on 127.0.0.1, in its own thread.

It can accept, refuse connections (stopped), stall, drip an answer, answer any status (with
Retry-After), and demand a bearer token. It counts records by their `id`, so a test can check that every
collected record arrived at least once and how many arrived twice.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Receiver"]


@dataclass
class Request:
    status: int
    records: int
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """Start with `start()`; `url` is the POST address. Change behaviour at any time:

    - `ok()`                  answer 200
    - `answer(status, retry_after=None, body="")`  answer that status
    - `answer_raw(status, body, headers)`  answer those exact bytes (e.g. a gzip bomb)
    - `stall()`               hold every request until `ok()` (or another mode)
    - `drip(status, every_s)` send the status and headers at once, then one body byte every
                              `every_s` seconds until the mode changes; the records count
                              only if the answer then completes (a 2xx the sender waited for)
    - `hold()`                count the records, then hold the answer until `ok()`
    - `stop()` / `start()`    close the port (connections refused) / open it again
    - `token = "x"`           answer 401 unless `Authorization: Bearer x`

    Any other path, and PUT, reach the same handler: the sinks' requests (Datadog, OTLP,
    Pushgateway) can be stalled, dripped or refused too (in "ok" mode only `/ingest` payloads
    are understood).
    """

    def __init__(self) -> None:
        self.port = 0
        self.token: str | None = None
        self.ids: Counter[str] = Counter()
        self.requests: list[Request] = []
        self.payloads: list[dict[str, Any]] = []
        self.keep_payloads = False
        self._mode: tuple[str, int, str | None, str] = ("ok", 200, None, "")
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._released: asyncio.Event | None = None
        self._raw: tuple[bytes, dict[str, str]] = (b"", {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    # behaviour -------------------------------------------------------------------------
    def ok(self) -> None:
        self._set(("ok", 200, None, ""))

    def answer(self, status: int, *, retry_after: str | None = None, body: str = "") -> None:
        self._set(("status", status, retry_after, body))

    def answer_raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self._raw = (body, headers)
        self._set(("raw", status, None, ""))

    def stall(self) -> None:
        self._set(("stall", 0, None, ""))

    def drip(self, status: int = 200, *, every_s: float = 1.0) -> None:
        self._set(("drip", status, None, str(every_s)))

    def hold(self) -> None:
        """Count the records, then hold the answer (the sender never learns they arrived)."""
        self._set(("hold", 0, None, ""))

    def _set(self, mode: tuple[str, int, str | None, str]) -> None:
        def apply() -> None:
            self._mode = mode
            if self._released is None:
                self._released = asyncio.Event()
            if mode[0] in ("stall", "hold"):
                self._released.clear()
            else:
                self._released.set()
        self._call(apply)

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> Receiver:
        async def up() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/ingest", self._handle)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            if self._released is None:
                self._released = asyncio.Event()
                self._released.set()
        asyncio.run_coroutine_threadsafe(up(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, fn: Any) -> None:
        async def run() -> None:
            fn()
        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # counts ------------------------------------------------------------------------------
    @property
    def unique(self) -> int:
        with self._lock:
            return len(self.ids)

    @property
    def duplicates(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self.ids.values())

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    # the handler -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        kind, status, retry_after, text = self._mode
        if kind == "stall":
            assert self._released is not None
            await self._released.wait()
            kind, status, retry_after, text = self._mode
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            self._log(401, 0, headers)
            return web.Response(status=401, text='{"error": "invalid token"}')
        if kind == "raw":
            self._log(status, 0, headers)
            return web.Response(status=status, body=self._raw[0], headers=self._raw[1])
        if kind == "drip":
            self._log(status, 0, headers)
            return await self._drip(request, status, float(text), body)
        if kind == "status":
            self._log(status, 0, headers)
            extra = {"Retry-After": retry_after} if retry_after is not None else {}
            return web.Response(status=status, text=text, headers=extra)
        # aiohttp already inflates a `Content-Encoding: gzip` body (and fails on a bad one).
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        payload = json.loads(body)
        ids = [m["id"] for m in payload["metrics"]]
        with self._lock:
            self.ids.update(ids)
            if self.keep_payloads:
                self.payloads.append(payload)
        self._log(200, len(ids), headers)
        if kind == "hold":
            assert self._released is not None
            await self._released.wait()
        return web.json_response({"accepted": len(ids)})

    async def _drip(
        self, request: web.Request, status: int, every_s: float, body: bytes
    ) -> web.StreamResponse:
        """Status and headers now, then a byte at a time (chunked, so the body has no known end)."""
        response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while self._mode[0] == "drip":
                await response.write(b" ")
                await asyncio.sleep(every_s)
            await response.write(b"{}")
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            return response  # the sender gave up on this answer and closed the connection
        if 200 <= status < 300 and request.path == "/ingest":
            # The answer completed: a sender still waiting takes the records as delivered.
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            with self._lock:
                self.ids.update(m["id"] for m in json.loads(body)["metrics"])
        return response

    def _log(self, status: int, records: int, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Request(status=status, records=records, headers=headers))
