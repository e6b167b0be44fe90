"""One HTTP exchange under a total deadline, keeping a bounded part of the answer.

httpx's timeouts are per operation: the read timeout starts again with every byte, so an
endpoint that sends its status line and headers and then one byte every few seconds never
times out, and the sender waits on it forever (a "slow drip"). `request_within` puts the whole
exchange (connection, request body, status, headers, answer body) under one deadline, and
raises `AnswerTimeout`, an `httpx.TimeoutException`, when the answer is not complete by then.

The answer body is read raw and at most `max_body` bytes of it are kept, decompressed here
with the same bound (a small gzip body may inflate a thousandfold): an acknowledgement or an
error excerpt fits, and a hostile or broken endpoint cannot make the sender buffer more. A
body longer than that is not read to its end; the connection is then closed rather than
reused. The returned response carries the kept bytes, already decoded.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping

import httpx

__all__ = ["MAX_ANSWER_BYTES", "AnswerTimeout", "request_within"]

#: The most of an answer's body that is kept (decoded). Acknowledgements are a few bytes, error
#: pages a few KiB; the log shows an excerpt of 200 characters.
MAX_ANSWER_BYTES = 64 * 1024

_ZLIB_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
# Headers that described the wire form of the body, not the decoded bytes kept.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class AnswerTimeout(httpx.TimeoutException):
    """The exchange did not complete within its total deadline (a slow or dripping answer)."""


async def request_within(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    max_body: int = MAX_ANSWER_BYTES,
) -> httpx.Response:
    """Send one request and return its answer, all within `timeout_s` seconds.

    The response holds at most `max_body` bytes of the decoded body (`response.content`).

    Raises:
        AnswerTimeout: no complete answer within `timeout_s` (message: "no complete answer
            within N s").
        httpx.HTTPError: as `client.request` would (refused, reset, TLS, its own timeouts).
    """
    request = client.build_request(method, url, headers=headers, content=content)

    async def exchange() -> tuple[httpx.Response, bytes]:
        response = await client.send(request, stream=True)
        try:
            return response, await _read_bounded(response, max_body)
        finally:
            await response.aclose()

    try:
        response, body = await asyncio.wait_for(exchange(), timeout_s)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise AnswerTimeout(f"no complete answer within {timeout_s:g} s", request=request) from None
    return httpx.Response(
        response.status_code,
        headers=[(k, v) for k, v in response.headers.multi_items() if k.lower() not in _WIRE_HEADERS],
        content=body,
        request=request,
        extensions={k: v for k, v in response.extensions.items() if k == "reason_phrase"},
    )


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    """Up to `limit` decoded bytes of the body, reading no more of it than needed for them."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    inflate = None
    if encoding in _ZLIB_ENCODINGS:
        # wbits 32 + MAX_WBITS: a gzip or a zlib header, detected from the data.
        inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)
    elif encoding not in ("", "identity"):
        # Not decoded (br, zstd, ...): nothing is shown of it rather than compressed bytes.
        return f"({encoding}-encoded answer not shown)".encode()
    kept = bytearray()
    async for chunk in response.aiter_raw():
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, limit - len(kept) + 1)
            except zlib.error:
                break
        kept += chunk
        if len(kept) > limit:
            break
    return bytes(kept[:limit])
