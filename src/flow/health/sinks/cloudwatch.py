"""Amazon CloudWatch: `PutMetricData` through boto3 (the optional extra `flow-health[cloudwatch]`).

Each sample is one MetricDatum: the vocabulary name, the non-empty labels as dimensions
(at most 9 of CloudWatch's 30), the snapshot's timestamp and a CloudWatch unit. Calls
hold at most 1000 datums and stay under the 1 MB request limit; NaN and infinities never
get this far (the vocabulary drops them). Points older than CloudWatch accepts (two weeks)
are left out rather than failing the whole call.

Credentials and region follow boto3's usual chain (environment, profile, instance role)
unless `region` / `profile` are set; `endpoint_url` points at a test server such as moto.
boto3 is synchronous: calls run in a worker thread so the event loop keeps going.

boto3 signs each call, but the HTTP exchange is ours (botocore's `before-send` hook): its
urllib3 read timeout starts again with every byte, so an endpoint that drips its answer would
hold the worker thread, and delivery, forever. Ours gives up once `timeout` has passed since
the call began (checked as each piece of the answer arrives; each step, such as a read that
receives nothing, also fails after `timeout`), and keeps at most 64 KiB of the answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from flow.errors import ConfigError
from flow.health.sinks.base import EncodedRequest, SinkError, is_retryable_status
from flow.health.sinks.settings import CloudWatchSettings
from flow.health.sinks.vocabulary import MetricType, snapshot_families
from flow.health.snapshot import Snapshot, utcnow
from flow.http_deadline import MAX_ANSWER_BYTES
from flow.secrets import redact_url, scrub, url_secrets

__all__ = ["MAX_DATUMS_PER_CALL", "MAX_DIMENSIONS", "CloudWatchSink", "cloudwatch_datums", "require_boto3"]

log = logging.getLogger("flow.sinks.cloudwatch")

MAX_DATUMS_PER_CALL = 1000
MAX_DIMENSIONS = 30
MAX_REQUEST_BYTES = 900_000  # of the documented 1 MB, with room for the protocol's framing
MAX_AGE = timedelta(days=14) - timedelta(minutes=5)
_MAX_DIMENSION_VALUE = 1024
EXTRA_HINT = "pip install 'flow-health[cloudwatch]'"

_UNITS = {
    "bytes": "Bytes",
    "percent": "Percent",
    "seconds": "Seconds",
    "bytes_per_second": "Bytes/Second",
}
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServiceError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


class _NoCompleteAnswer(Exception):
    """The PutMetricData exchange ran past the sink's timeout (raised in the worker thread)."""


class _KeptBody:
    """What botocore reads an answer's body from (`AWSResponse.raw.stream()`)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _verify() -> ssl.SSLContext | bool:
    # botocore honours AWS_CA_BUNDLE; so does the exchange that replaced its transport.
    bundle = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else True


def require_boto3() -> Any:
    """Import boto3, or raise ConfigError naming the extra to install."""
    try:
        import boto3
    except ImportError:
        raise ConfigError(
            "the CloudWatch sink needs boto3, which is not installed", hint=EXTRA_HINT
        ) from None
    return boto3


def cloudwatch_datums(snapshot: Snapshot, *, storage_resolution: int = 60) -> list[dict[str, Any]]:
    """The MetricData entries of one snapshot (one per sample)."""
    datums: list[dict[str, Any]] = []
    for family in snapshot_families(snapshot):
        metric = family.spec
        unit = _UNITS.get(metric.unit) or ("Count" if metric.type is MetricType.COUNTER else "None")
        for sample in family.samples:
            dimensions = [{"Name": k, "Value": v[:_MAX_DIMENSION_VALUE]} for k, v in sample.labels if v != ""]
            if len(dimensions) > MAX_DIMENSIONS:
                raise SinkError(
                    f"{metric.name} has {len(dimensions)} dimensions; CloudWatch allows {MAX_DIMENSIONS}",
                    retryable=False,
                )
            datums.append(
                {
                    "MetricName": metric.name,
                    "Dimensions": dimensions,
                    "Timestamp": sample.timestamp,
                    "Value": sample.value,
                    "Unit": unit,
                    "StorageResolution": storage_resolution,
                }
            )
    return datums


def _size(datum: dict[str, Any]) -> int:
    return len(orjson.dumps(datum)) + 64  # per-member framing of the wire protocol


class CloudWatchSink:
    """Sends batches with PutMetricData; `encode()` shows the call parameters as JSON."""

    def __init__(self, settings: CloudWatchSettings, *, client: Any = None) -> None:
        self.name = settings.name
        self.settings = settings
        self._client = client
        self._http: httpx.Client | None = None
        self.destination = f"cloudwatch {redact_url(self._endpoint())} namespace={settings.namespace}"

    def _get_client(self) -> Any:
        if self._client is None:
            boto3 = require_boto3()
            from botocore.config import Config as BotoConfig

            session = boto3.session.Session(
                profile_name=self.settings.profile, region_name=self.settings.region
            )
            self._client = session.client(
                "cloudwatch",
                endpoint_url=self.settings.endpoint_url,
                config=BotoConfig(
                    connect_timeout=self.settings.timeout_s,
                    read_timeout=self.settings.timeout_s,
                    # The collector retries with its durable cursor; one layer of retries is enough.
                    retries={"total_max_attempts": 1, "mode": "standard"},
                ),
            )
            self._client.meta.events.register(
                "before-send.cloudwatch.PutMetricData", self._send_within_deadline
            )
        return self._client

    def _send_within_deadline(self, request: Any, **_: Any) -> Any:
        """botocore's `before-send` hook: send the signed request under a total deadline."""
        from botocore.awsrequest import AWSResponse

        timeout_s = self.settings.timeout_s
        deadline = time.monotonic() + timeout_s
        if self._http is None:
            self._http = httpx.Client(
                timeout=timeout_s,
                follow_redirects=False,
                verify=_verify(),
                # Raw bytes are what botocore parses: no compressed answers.
                headers={"Accept-Encoding": "identity"},
            )
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        kept = bytearray()
        with self._http.stream(
            request.method, request.url, headers=list(request.headers.items()), content=body or b""
        ) as response:
            for chunk in response.iter_raw():
                if time.monotonic() > deadline:
                    break
                kept += chunk
                if len(kept) > MAX_ANSWER_BYTES:
                    break
            if time.monotonic() > deadline:
                raise _NoCompleteAnswer(f"no complete answer within {timeout_s:g} s")
        return AWSResponse(request.url, response.status_code, response.headers, _KeptBody(bytes(kept)))

    def calls(
        self, batch: Sequence[Snapshot], *, now: datetime | None = None
    ) -> list[tuple[list[dict[str, Any]], int]]:
        """(MetricData, delivered) per PutMetricData call, within the count and size limits."""
        oldest = (now or utcnow()) - MAX_AGE
        calls: list[tuple[list[dict[str, Any]], int]] = []
        current: list[dict[str, Any]] = []
        size = 0
        dropped = 0
        for index, snapshot in enumerate(batch):
            if snapshot.timestamp < oldest:
                dropped += 1
                continue
            for datum in cloudwatch_datums(snapshot, storage_resolution=self.settings.storage_resolution):
                datum_size = _size(datum)
                if current and (len(current) >= MAX_DATUMS_PER_CALL or size + datum_size > MAX_REQUEST_BYTES):
                    calls.append((current, index))  # everything before this snapshot is complete
                    current, size = [], 0
                current.append(datum)
                size += datum_size
        if current:
            calls.append((current, len(batch)))
        elif calls:
            calls[-1] = (calls[-1][0], len(batch))
        if dropped:
            log.warning(
                "%s: left out %d snapshot(s) older than CloudWatch accepts (14 days)", self.name, dropped
            )
        return calls

    def _endpoint(self) -> str:
        if self.settings.endpoint_url:
            return self.settings.endpoint_url
        # boto3's own order: the setting, then AWS_REGION / AWS_DEFAULT_REGION (then its config file).
        region = (
            self.settings.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "<default region>"
        )
        return f"https://monitoring.{region}.amazonaws.com"

    def encode(self, batch: Sequence[Snapshot]) -> list[EncodedRequest]:
        return [
            EncodedRequest(
                method="PutMetricData",
                url=self._endpoint(),
                headers={"X-Flow-Note": "boto3 call parameters; boto3 signs and encodes them"},
                body=orjson.dumps(
                    {"Namespace": self.settings.namespace, "MetricData": data}, option=orjson.OPT_INDENT_2
                ),
                delivered=delivered,
            )
            for data, delivered in self.calls(batch)
        ]

    async def send(self, batch: Sequence[Snapshot]) -> None:
        client = self._get_client()
        done = 0
        for data, delivered in self.calls(batch):
            try:
                await asyncio.to_thread(
                    client.put_metric_data, Namespace=self.settings.namespace, MetricData=data
                )
            except Exception as exc:
                raise self._error(exc, done) from None
            done = delivered

    def _error(self, exc: Exception, delivered: int) -> SinkError:
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
        )

        if isinstance(exc, (_NoCompleteAnswer, httpx.TimeoutException)):
            detail = str(exc) if isinstance(exc, _NoCompleteAnswer) else (
                f"no complete answer within {self.settings.timeout_s:g} s")
            return SinkError(
                f"{self.name}: PutMetricData timed out: {detail}",
                retryable=True,
                sink=self.name,
                delivered=delivered,
            )
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            retryable = code in _RETRYABLE_CODES or (status is not None and is_retryable_status(status))
            return SinkError(
                f"{self.name}: PutMetricData answered {status} {code}: {message}",
                retryable=retryable,
                status=status,
                sink=self.name,
                delivered=delivered,
            )
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return SinkError(
                f"{self.name}: no AWS credentials",
                retryable=False,
                sink=self.name,
                delivered=delivered,
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role",
            )
        if isinstance(exc, NoRegionError):
            return SinkError(
                f"{self.name}: no AWS region",
                retryable=False,
                sink=self.name,
                delivered=delivered,
                hint=f"set health.sinks.{self.name}.region or AWS_REGION",
            )
        retryable = isinstance(exc, (HTTPClientError, ConnectionError, OSError, httpx.TransportError))
        # botocore quotes the endpoint URL ("Could not connect to the endpoint URL: ...").
        detail = scrub(str(exc), url_secrets(self.settings.endpoint_url or ""))
        return SinkError(
            f"{self.name}: PutMetricData failed: {detail}",
            retryable=retryable,
            sink=self.name,
            delivered=delivered,
        )

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await asyncio.to_thread(http.close)
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            await asyncio.to_thread(client.close)
