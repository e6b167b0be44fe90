"""Sending encoded requests over HTTP, in order, mapping every failure to a SinkError.

Each request, answer included, completes within the sink's timeout or fails as a retryable
timeout (see deadline.py: a slow drip of an answer never trips httpx's per-read timeout).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping, Sequence

import httpx

from flow import __version__
from flow.health.sinks.base import (
    EncodedRequest,
    SinkError,
    error_from_response,
    error_from_transport,
    is_retryable_status,
)
from flow.http_deadline import request_within
from flow.secrets import redact_http_logs

__all__ = ["USER_AGENT", "HttpSender", "gzip_body"]

USER_AGENT = f"flow-health/{__version__}"


def gzip_body(body: bytes) -> bytes:
    """Deterministic gzip (mtime 0), so a dry run shows the same bytes a send would."""
    return gzip.compress(body, compresslevel=6, mtime=0)


class HttpSender:
    """One httpx client per sink (connection reuse across batches), created on first use.

    `transport` is injectable as in httpx, for tests that need a custom one.
    """

    def __init__(
        self,
        *,
        sink: str,
        timeout_s: float,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retryable: Callable[[int], bool] = is_retryable_status,
    ) -> None:
        self._sink = sink
        self._retryable = retryable
        self._timeout = httpx.Timeout(timeout_s)
        self._timeout_s = timeout_s
        self._auth = auth
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        redact_http_logs()  # httpx logs each request's URL, credentials and all

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                auth=self._auth,
                transport=self._transport,
                headers={"User-Agent": USER_AGENT},
                follow_redirects=False,
            )
        return self._client

    async def send_all(
        self, requests: Sequence[EncodedRequest], secret_headers: Mapping[str, str] | None = None
    ) -> list[httpx.Response]:
        """Send each request in order; stop at the first failure. Returns the (2xx) responses.

        Raises:
            SinkError: with `delivered` from the last request that succeeded.
        """
        client = self._get_client()
        responses: list[httpx.Response] = []
        delivered = 0
        for request in requests:
            headers = {**request.headers, **(secret_headers or {})}
            try:
                # A total deadline: httpx's per-read timeout never fires on a slow drip.
                response = await request_within(
                    client, request.method, request.url, timeout_s=self._timeout_s,
                    headers=headers, content=request.payload,
                )
            except (UnicodeError, ValueError) as exc:
                # httpx refusing a header value or the URL: its message may quote a secret.
                raise SinkError(
                    f"{self._sink}: request not sent: {type(exc).__name__} (a header or the URL "
                    "holds a character HTTP cannot carry)",
                    retryable=False, sink=self._sink, delivered=delivered,
                ) from None
            except httpx.HTTPError as exc:
                raise error_from_transport(
                    exc, sink=self._sink, url=request.url, delivered=delivered,
                    secrets=(secret_headers or {}).values(),
                ) from None
            if not 200 <= response.status_code < 300:
                error = error_from_response(response, sink=self._sink, delivered=delivered)
                error.retryable = self._retryable(response.status_code)
                raise error
            responses.append(response)
            delivered = request.delivered
        return responses

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
