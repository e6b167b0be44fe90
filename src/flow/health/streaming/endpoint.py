"""POST batches to FLOW_METRICS_ENDPOINT: the documented payload, bearer token, optional gzip.

The token comes from FLOW_METRICS_AUTH_TOKEN, or from a 0600 token file that is read again
before every attempt, so that replacing a rejected token in the file resumes delivery without
a restart. Each POST, answer included, completes within the send timeout or counts as a
timeout (a slow drip of an answer never trips httpx's per-read timeout); at most 64 KiB of an
answer is read. The token never appears in a log line or an error message: response excerpts are
scrubbed of it too. A token is checked (flow.secrets) before it goes into a header, so httpx
never raises an error that quotes it; exception texts are scrubbed all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from flow import __version__
from flow.errors import ConfigError
from flow.health.streaming.backoff import parse_retry_after
from flow.health.streaming.payload import encode_lines
from flow.health.streaming.sink import DeliveryError
from flow.http_deadline import request_within
from flow.secrets import read_secret_file, redact_http_logs, scrub, validate_token

__all__ = ["DEFAULT_SEND_TIMEOUT_S", "EndpointSink", "TokenSource", "redact_url"]

log = logging.getLogger("flow.collector.stream")

DEFAULT_SEND_TIMEOUT_S = 10.0
_EXCERPT_CHARS = 200
_RETRYABLE_STATUS = frozenset({408, 425, 429})


def redact_url(url: str) -> str:
    """The URL without user:password and query string (which may carry credentials).

    This is the endpoint's identity in the stream cursor (`destination`), so its form must
    not change; to show a URL with its parameters, use `flow.secrets.redact_url`.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class TokenSource:
    """The bearer token: fixed (environment), or re-read from a 0600 file on every call.

    A file that becomes unusable (unreadable, not a regular file, readable by others, empty,
    two lines, a character a header cannot carry) is reported once, by name and reason and
    never by content, and the last good token is kept; with none, `get()` raises a retryable
    `DeliveryError` so that the batch stays on disk instead of going out unauthenticated.
    """

    def __init__(self, *, token: str | None = None, path: Path | None = None) -> None:
        """Raises ConfigError when `token` is not a valid bearer token (never quoting it)."""
        self._token = None if token is None else validate_token(token, source="the bearer token")
        self._path = path if token is None else None
        self._last_problem: str | None = None

    def get(self) -> str | None:
        if self._path is None:
            return self._token
        problem = None
        try:
            self._token = validate_token(
                read_secret_file(self._path, name="token file", what="token"),
                source=f"token file {str(self._path)!r}",
            )
        except ConfigError as exc:
            problem = exc.message
        if problem != self._last_problem:
            if problem:
                log.warning("%s; %s", problem, "keeping the last good token" if self._token
                            else "holding the records until it is fixed")
            elif self._last_problem:
                log.info("token file %s readable again", self._path)
            self._last_problem = problem
        if problem and not self._token:
            raise DeliveryError(f"no usable token: {problem}", retryable=True)
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
        redact_http_logs()  # httpx logs each request's URL, credentials and all
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
            # The whole exchange, answer body included, within the send timeout: httpx's
            # per-read timeout alone lets an endpoint that drips its answer hold us forever.
            response = await request_within(self._client, "POST", self.url, timeout_s=self._timeout_s,
                                            content=body, headers=headers)
        except (UnicodeError, ValueError) as exc:
            # httpx refusing a header value or the URL: its message may quote the value.
            raise DeliveryError(f"request not sent: {type(exc).__name__}", retryable=True) from None
        except httpx.TimeoutException:
            raise DeliveryError(f"timeout: no complete answer within {self._timeout_s:g} s",
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
        return scrub(text, [token], replacement="<token>")
