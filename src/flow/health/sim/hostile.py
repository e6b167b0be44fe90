"""Hostile GPUd behaviours: what a broken or compromised node's port might send.

These scenarios are explicitly not GPUd: they exist so that clients (flow's and anyone's) can be
proven to survive them, in tests, the benchmarks and by hand (`flow health sim --scenario ...`).
`/healthz` answers as GPUd's does, so a client sees "GPUd up, its answers hostile"; every other
path is hostile:

| scenario | what the node sends |
|---|---|
| huge-body | a 256 MiB JSON array (GPUd's largest real answer is ~8 MB), chunked, no length |
| gzip-bomb | a 2 MiB gzip body that inflates to 2 GiB (`[`, spaces, `]`: valid JSON at the end) |
| drip | the headers, then the body one byte a second (every read is quick, the answer never ends) |
| control-chars | GPUd's healthy answers with terminal escapes and control characters in the text |

Both large bodies are streamed from small buffers built once per process, so serving them costs
the simulator little memory whatever the client does.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import struct
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from flow.health.sim.gofmt import rfc3339

if TYPE_CHECKING:
    from flow.health.sim.server import SimNode

__all__ = [
    "CONTROL_TEXT",
    "DRIP_INTERVAL_S",
    "GZIP_BOMB_INFLATED_BYTES",
    "HUGE_BODY_BYTES",
    "gzip_bomb",
    "serve_hostile",
]

HUGE_BODY_BYTES = 256 * 1024 * 1024
GZIP_BOMB_INFLATED_BYTES = 2 * 1024 * 1024 * 1024
DRIP_INTERVAL_S = 1.0
#: What control-chars puts in every reason, event and machine-info string: an OSC that retitles
#: the terminal, a clear-screen, colours, a carriage return that overwrites the line, the 8-bit
#: CSI form, a right-to-left override and a NUL.
CONTROL_TEXT = "\x1b]0;owned by the node\x07\x1b[2J\x1b[31mred\x1b[0m\r\n\x9b2J\u202eevil\x00 end"

_CHUNK = 1024 * 1024
# One huge-body element: a component entry GPUd could send (a client may parse it as it comes).
_HUGE_ITEM = b'{"component":"accelerator-nvidia-temperature","states":[]},'
_JSON = "application/json; charset=utf-8"


@functools.lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """One gzip member (~2 MiB) inflating to `GZIP_BOMB_INFLATED_BYTES`: `[`, spaces, `]`.

    Built without compressing 2 GiB: after a full flush deflate restarts with an empty window,
    so every further MiB of spaces compresses to the same bytes, repeated; only the CRC walks
    the whole inflated length (about half a second, once per process).
    """
    spaces = b" " * _CHUNK
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip header
    head = deflate.compress(b"[") + deflate.compress(spaces) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(spaces) + deflate.flush(zlib.Z_FULL_FLUSH)
    count = (GZIP_BOMB_INFLATED_BYTES - 2) // _CHUNK  # MiB of spaces, the first in `head`
    last = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw: the final block only
    tail = last.compress(b"]") + last.flush()
    crc = zlib.crc32(b"[")
    for _ in range(count):
        crc = zlib.crc32(spaces, crc)
    crc = zlib.crc32(b"]", crc)
    size = 2 + count * _CHUNK
    return b"".join((head, block * (count - 1), tail, struct.pack("<II", crc, size & 0xFFFFFFFF)))


def _dirty(value: Any) -> Any:
    """Every reason, message, name and host name with `CONTROL_TEXT` in it."""
    if isinstance(value, list):
        return [_dirty(v) for v in value]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if key in ("reason", "message", "hostname", "gpudVersion", "error") and isinstance(item, str):
                out[key] = f"{item} {CONTROL_TEXT}"
            elif key == "name" and isinstance(item, str):
                out[key] = f"{CONTROL_TEXT}{item}"
            else:
                out[key] = _dirty(item)
        return out
    return value


def _control_chars(node: SimNode, request: web.Request) -> web.Response | None:
    api, now = node.api, node.clock()
    path = request.path
    if path == "/v1/states":
        body: Any = _dirty(api.states_obj(list(api.components), now))
    elif path == "/v1/events":
        try:
            start = float(int(request.query.get("startTime") or now))
        except ValueError:
            start = now
        reboot = {"component": f"{CONTROL_TEXT}accelerator-nvidia-info", "time": rfc3339(now),
                  "name": "reboot", "type": "Warning", "message": "the node rebooted"}
        body = _dirty([*api.events_obj(list(api.components), start, now, now),
                       {"component": reboot["component"], "events": [reboot]}])
    elif path == "/machine-info" and not api.legacy:
        body = _dirty(orjson.loads(api.machine_info(now)))
    else:
        return None  # /healthz, /v1/metrics, ...: as the healthy node answers
    payload = orjson.dumps(body)
    headers = {"Content-Type": _JSON}
    if "gzip" in request.headers.get("Accept-Encoding", "") and path.startswith("/v1/"):
        payload = gzip.compress(payload, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return web.Response(status=200, body=payload, headers=headers)


async def _huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
    response.enable_chunked_encoding()  # no Content-Length: the client learns the size by reading
    await response.prepare(request)
    chunk = _HUGE_ITEM * (_CHUNK // len(_HUGE_ITEM))
    sent = 0
    try:
        await response.write(b"[")
        while sent < HUGE_BODY_BYTES:
            await response.write(chunk)
            sent += len(chunk)
        await response.write(b'{"component":"end","states":[]}]')
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client stopped reading: what it should do
    return response


async def _drip(request: web.Request, body: bytes, closing: asyncio.Event | None) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": _JSON})
    response.content_length = len(body)
    await response.prepare(request)
    try:
        for i in range(len(body)):
            await response.write(body[i:i + 1])
            if closing is None:
                await asyncio.sleep(DRIP_INTERVAL_S)
                continue
            try:
                await asyncio.wait_for(closing.wait(), DRIP_INTERVAL_S)
                return response  # the simulator is stopping
            except asyncio.TimeoutError:
                pass
        await response.write_eof()
    except ConnectionError:
        pass
    return response


async def serve_hostile(node: SimNode, request: web.Request,
                        closing: asyncio.Event | None) -> web.StreamResponse | None:
    """The hostile answer of `node` to `request`, or None where it answers as GPUd does."""
    if request.path == "/healthz":
        return None
    if node.scenario == "control-chars":
        return _control_chars(node, request)
    if node.scenario == "huge-body":
        return await _huge(request)
    if node.scenario == "gzip-bomb":
        bomb = await asyncio.to_thread(gzip_bomb)  # built once; the CRC pass must not stall the loop
        return web.Response(status=200, body=bomb,
                            headers={"Content-Type": _JSON, "Content-Encoding": "gzip"})
    if node.scenario == "drip":
        states = orjson.dumps(node.api.states_obj(list(node.api.components), node.clock()))
        return await _drip(request, states, closing)
    return None
