"""EndpointSink against a real HTTP receiver: statuses, gzip, token, and what is retryable."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.receiver import Receiver
from flow.health.snapshot import Snapshot
from flow.health.streaming.endpoint import EndpointSink, TokenSource, redact_url
from flow.health.streaming.sink import DeliveryError

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _snaps(n: int) -> list[bytes]:
    return [Snapshot(timestamp=T0 + timedelta(seconds=i), task_id="t1", node="n1").to_json()
            for i in range(n)]


def _send(sink: EndpointSink, snaps: list[bytes]) -> DeliveryError | None:
    async def go() -> DeliveryError | None:
        try:
            await sink.send(snaps)
        except DeliveryError as exc:
            return exc
        finally:
            await sink.aclose()
        return None
    return asyncio.run(go())


def test_2xx_delivers_gzip_with_bearer_token(receiver: Receiver) -> None:
    receiver.token = "s3cret"
    receiver.keep_payloads = True
    error = _send(EndpointSink(receiver.url, tokens=TokenSource(token="s3cret"), gzip=True), _snaps(3))
    assert error is None
    assert receiver.unique == 3
    headers = receiver.requests[0].headers
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json"
    assert receiver.payloads[0]["source"] == "flow-compute"


def test_plain_body_when_gzip_is_off(receiver: Receiver) -> None:
    assert _send(EndpointSink(receiver.url, gzip=False), _snaps(1)) is None
    assert "Content-Encoding" not in receiver.requests[0].headers
    assert "Authorization" not in receiver.requests[0].headers


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_retryable_statuses(receiver: Receiver, status: int) -> None:
    receiver.answer(status, retry_after="2")
    error = _send(EndpointSink(receiver.url), _snaps(1))
    assert error is not None and error.retryable
    assert error.status == status
    assert error.retry_after_s == 2.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_other_4xx_are_not_retryable_and_quote_the_body(receiver: Receiver, status: int) -> None:
    receiver.answer(status, body="payload rejected:\n  field x")
    error = _send(EndpointSink(receiver.url), _snaps(1))
    assert error is not None and not error.retryable
    assert error.status == status
    assert "payload rejected: field x" in error.message


def test_token_never_appears_in_an_error(receiver: Receiver) -> None:
    receiver.answer(401, body="bad token: Bearer hunter2hunter2")
    error = _send(EndpointSink(receiver.url, tokens=TokenSource(token="hunter2hunter2")), _snaps(1))
    assert error is not None
    assert "hunter2hunter2" not in error.message
    assert "<token>" in error.message


def test_refused_connection_is_retryable(receiver: Receiver) -> None:
    receiver.stop()
    error = _send(EndpointSink(receiver.url), _snaps(1))
    assert error is not None and error.retryable and error.status is None
    assert error.message.startswith("network:")


def test_stall_times_out_and_is_retryable(receiver: Receiver) -> None:
    receiver.stall()
    error = _send(EndpointSink(receiver.url, timeout_s=0.3), _snaps(1))
    receiver.ok()
    assert error is not None and error.retryable
    assert error.message.startswith("timeout:")


def test_token_file_is_read_again_on_every_attempt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    path.write_text("old\n")
    os.chmod(path, 0o600)
    tokens = TokenSource(path=path)
    assert tokens.get() == "old"
    path.write_text("new\n")
    assert tokens.get() == "new"
    os.chmod(path, 0o644)  # a bad file keeps the last good token and says why, once
    assert tokens.get() == "new"
    assert tokens.get() == "new"
    assert sum("readable by others" in r.message for r in caplog.records) == 1
    assert all("new" not in r.message for r in caplog.records)


def test_environment_token_wins_over_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file")
    os.chmod(path, 0o600)
    assert TokenSource(token="from-env", path=path).get() == "from-env"


def test_redact_url_drops_credentials_and_query() -> None:
    assert redact_url("https://user:pw@metrics.example.com:8443/in?key=abc") == (
        "https://metrics.example.com:8443/in"
    )
