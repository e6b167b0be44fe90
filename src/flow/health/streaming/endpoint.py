"""POST batches to FLOW_METRICS_ENDPOINT: the documented payload, bearer token, optional gzip.

The token comes from FLOW_METRICS_AUTH_TOKEN, or from a 0600 token file that is read again
before every attempt, so that replacing a rejected token in the file resumes delivery without
a restart. The token never appears in a log line or an error message: response excerpts are
scrubbed of it too.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from flow import __version__
from flow.health.streaming.backoff import parse_retry_after
from flow.health.streaming.payload import encode_lines
from flow.health.streaming.sink import DeliveryError

__all__ = ["DEFAULT_SEND_TIMEOUT_S", "EndpointSink", "TokenSource", "redact_url"]

log = logging.getLogger("flow.collector.stream")

DEFAULT_SEND_TIMEOUT_S = 10.0
_EXCERPT_CHARS = 200
_RETRYABLE_STATUS = frozenset({408, 425, 429})


def redact_url(url: str) -> str:
    """The URL without user:password and query string (which may carry credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class TokenSource:
    """The bearer token: fixed (environment), or re-read from a 0600 file on every call."""

    def __init__(self, *, token: str | None = None, path: Path | None = None) -> None:
        self._token = token
        self._path = path if token is None else None
        self._last_problem: str | None = None

    def get(self) -> str | None:
        if self._path is None:
            return self._token
        problem = None
        try:
            info = self._path.stat()
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                problem = f"mode {stat.S_IMODE(info.st_mode):04o} is readable by others (need 0600)"
            else:
                fresh = self._path.read_text(encoding="utf-8").strip()
                if fresh:
                    self._token = fresh
                else:
                    problem = "the file is empty"
        except OSError as exc:
            problem = exc.strerror or str(exc)
        if problem != self._last_problem:
            if problem:
                log.error("token file %s unusable: %s; keeping the last good token", self._path, problem)
            elif self._last_problem:
                log.info("token file %s readable again", self._path)
            self._last_problem = problem
        return self._token


class EndpointSink:
    """Sends batches to one HTTP endpoint with httpx (a kept-alive connection)."""

    def __init__(
        self,
        url: str,
        *,
        tokens: TokenSource | None = None,
        gzip: bool = True,
        timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._tokens = tokens or TokenSource()
        self._gzip = gzip
        self._timeout_s = timeout_s
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-stream-encode")
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), transport=transport, follow_redirects=False,
            headers={"User-Agent": f"flow-health/{__version__}"},
        )

    @property
    def destination(self) -> str:
        return redact_url(self.url)

    async def aclose(self) -> None:
        await self._client.aclose()
        self._encoder.shutdown(wait=False)

    async def prepare(self, lines: Sequence[bytes]) -> bytes:
        """The request body for `lines`; the sender calls it ahead, while a batch is in flight.

        Encoding a large batch takes milliseconds (zlib releases the GIL): keep the loop free.
        """
        return await asyncio.get_running_loop().run_in_executor(
            self._encoder, partial(encode_lines, lines, compress=self._gzip))

    async def send(self, lines: Sequence[bytes], *, prepared: bytes | None = None) -> None:
        body = prepared if prepared is not None else await self.prepare(lines)
        headers = {"Content-Type": "application/json"}
        if self._gzip:
            headers["Content-Encoding"] = "gzip"
        token = self._tokens.get()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(f"timeout: no answer within {self._timeout_s:g} s",
                                retryable=True) from None
        except httpx.HTTPError as exc:
            # Connection refused/reset, DNS, TLS: the endpoint is not there (yet).
            detail = self._scrub(str(exc) or type(exc).__name__, token)
            raise DeliveryError(f"network: {type(exc).__name__}: {detail}", retryable=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = self._scrub(" ".join(response.text[:_EXCERPT_CHARS].split()), token)
        retryable = status in _RETRYABLE_STATUS or status >= 500
        raise DeliveryError(
            f"HTTP {status} {response.reason_phrase}: {excerpt or '(empty body)'}",
            retryable=retryable,
            status=status,
            retry_after_s=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
        )

    @staticmethod
    def _scrub(text: str, token: str | None) -> str:
        return text.replace(token, "<token>") if token else text
