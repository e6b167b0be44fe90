"""Secrets in logs and printed settings (issue 12, class 4; the token files of class 10).

A token, API key or URL credential is either refused where it is loaded (exit 2, one line naming
its source and what is allowed, never the value) or accepted, and then it appears in no log
record (caplog at DEBUG, httpx's own loggers included) and in no printed setting (`flow config
show`, `--json`, `flow health install --dry-run`). Everything is sent to a real HTTP receiver on
loopback. Every secret a test makes starts with `MARK`, which no output holds by chance, so
"the secret is not in the output" cannot pass for an unrelated reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.receiver import Receiver
from flow.cli.main import main
from flow.config import load_config
from flow.errors import ConfigError
from flow.fleet import Inventory, Node, Task
from flow.health.sinks.base import SinkError
from flow.health.sinks.datadog import DatadogSink
from flow.health.sinks.http import HttpSender
from flow.health.sinks.settings import DatadogSettings, parse_sink_settings
from flow.health.snapshot import Snapshot
from flow.health.streaming.endpoint import EndpointSink, TokenSource
from flow.health.streaming.sink import DeliveryError
from flow.secrets import MAX_TOKEN_CHARS, read_secret_file, redact_url, scrub, validate_token
from sshd_support import free_port

FLOW = [sys.executable, "-m", "flow.cli.main"]
MARK = "Zq7"
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
HANG_BOUND_S = 60  # generous: proves "did not hang", not a timing

# Arbitrary text as an environment variable can hold it (no NUL) and UTF-8 can spell it.
_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_SECRET = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60),  # accepted
    st.text(_TEXT, max_size=60),
    st.text(st.sampled_from("\n\r\t \x1b\x7fé€\u202eab+/=~"), min_size=1, max_size=12),
    st.builds(lambda c, n: c * n, st.sampled_from("aZ-é\n"), st.integers(MAX_TOKEN_CHARS - 2, 20_000)),
).map(lambda tail: MARK + tail)


def _flow(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def _spellings(secret: str) -> list[str]:
    return [s for s in {secret, quote(secret, safe=""), quote(secret), repr(secret)[1:-1]} if MARK in s]


def _assert_absent(secret: str, text: str) -> None:
    for form in _spellings(secret):
        assert form not in text


def _token_file(directory: Path, content: bytes, name: str = "token") -> Path:
    path = directory / name
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def _snaps(n: int = 1) -> list[Snapshot]:
    return [Snapshot(timestamp=T0 + timedelta(seconds=i), task_id="t1", node="n1") for i in range(n)]


def _lines(n: int = 1) -> list[bytes]:
    return [s.to_json() for s in _snaps(n)]


def _debug(caplog: pytest.LogCaptureFixture) -> None:
    """Capture everything at DEBUG, httpx's loggers too (`flow health collect` quiets them)."""
    for name in (None, "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record of this process but the receiver's own (aiohttp's access log is the server's)."""
    return "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}"
                     for r in caplog.records if not r.name.startswith("aiohttp"))


def _send_endpoint(sink: EndpointSink) -> DeliveryError | None:
    async def go() -> DeliveryError | None:
        try:
            await sink.send(_lines())
        except DeliveryError as exc:
            return exc
        finally:
            await sink.aclose()
        return None
    return asyncio.run(go())


def _send_sink(sink: DatadogSink) -> SinkError | None:
    async def go() -> SinkError | None:
        try:
            await sink.send(_snaps())
        except SinkError as exc:
            return exc
        finally:
            await sink.aclose()
        return None
    return asyncio.run(go())


@pytest.fixture
def inventory(flow_home: Path) -> None:
    # Unreachable on purpose: a dry run connects nowhere.
    Inventory(flow_home / "tasks.yaml", [
        Task(id="task-sec01", name="sec", nodes=(Node(host="127.0.0.1", port=free_port(), user="root"),)),
    ]).save()


# --- tokens at load ---------------------------------------------------------------------------


def test_two_line_token_file_is_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _token_file(tmp_path, f"{MARK}first\n{MARK}second\n".encode())
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN_FILE", str(path))
    code, out = _flow(capsys, "config", "show")
    assert code == 2
    assert f"FLOW_METRICS_AUTH_TOKEN_FILE={str(path)!r} holds 2 lines; allowed:" in out
    assert MARK not in out and "Traceback" not in out


def test_two_line_token_file_named_in_config_yaml_names_the_key(flow_home: Path, tmp_path: Path) -> None:
    path = _token_file(tmp_path, f"{MARK}a\n{MARK}b\n".encode())
    (flow_home / "config.yaml").write_text(f"health:\n  metrics_auth_token_file: {path}\n")
    with pytest.raises(ConfigError) as info:
        load_config({"FLOW_HOME": str(flow_home)})
    assert f"health.metrics_auth_token_file={str(path)!r} holds 2 lines" in info.value.message
    assert MARK not in info.value.message


@pytest.mark.parametrize(("token", "problem"), [
    (f"{MARK}tökén", "holds a non-ASCII character"),
    (f"{MARK}two words", "holds a space"),
    (f"{MARK}\x1b[31m", "holds a control character"),
    (f"{MARK}" + "a" * MAX_TOKEN_CHARS, f"is {MAX_TOKEN_CHARS + 3} characters long"),
])
def test_bad_environment_token_exits_2_naming_the_variable_never_the_value(
    token: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN", token)
    code, out = _flow(capsys, "config", "show")
    assert code == 2
    assert f"FLOW_METRICS_AUTH_TOKEN: the token {problem}; allowed: 1-{MAX_TOKEN_CHARS} visible ASCII" in out
    assert MARK not in out


def test_token_grammar_accepts_jwt_and_b64token() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert validate_token(jwt, source="x") == jwt
    assert validate_token("abc+/~-._==", source="x") == "abc+/~-._=="


def test_token_file_that_is_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "token.d"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN_FILE", str(directory))
    code, out = _flow(capsys, "config", "show")
    assert code == 2
    assert f"FLOW_METRICS_AUTH_TOKEN_FILE={str(directory)!r} is a directory; allowed: a regular file" in out
    assert "Traceback" not in out


def test_token_file_that_is_a_fifo_fails_at_once(tmp_path: Path, flow_home: Path) -> None:
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo, 0o600)
    env = {**os.environ, "FLOW_HOME": str(flow_home), "FLOW_METRICS_AUTH_TOKEN_FILE": str(fifo)}
    # Without O_NONBLOCK, open() waits for a writer forever: the bound proves it does not.
    proc = subprocess.run([*FLOW, "config", "show"], env=env, capture_output=True, text=True,
                          timeout=HANG_BOUND_S)
    assert proc.returncode == 2
    assert f"FLOW_METRICS_AUTH_TOKEN_FILE={str(fifo)!r} is a FIFO; allowed: a regular file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_token_file_that_is_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _token_file(tmp_path, MARK.encode() + b"\xff\xfe\x80")
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN_FILE", str(path))
    code, out = _flow(capsys, "config", "show")
    assert code == 2
    assert f"FLOW_METRICS_AUTH_TOKEN_FILE={str(path)!r} is not UTF-8 text" in out
    assert MARK not in out and "Traceback" not in out


def test_token_file_below_a_regular_file_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = _token_file(tmp_path, b"x", name="plain")
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN_FILE", str(parent / "token"))
    code, out = _flow(capsys, "config", "show")
    assert code == 2
    assert "cannot read the file: Not a directory" in out and "Traceback" not in out


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="not applicable: needs Linux /proc/self/mem")
def test_token_file_whose_read_fails_is_named() -> None:
    # A regular 0600 file that opens but cannot be read (EIO at offset 0): the read-error path,
    # which unreadable-by-permission cannot reach when the tests run as root.
    with pytest.raises(ConfigError) as info:
        read_secret_file(Path("/proc/self/mem"), name="FLOW_METRICS_AUTH_TOKEN_FILE")
    assert info.value.message == (
        "FLOW_METRICS_AUTH_TOKEN_FILE='/proc/self/mem': cannot read the file: Input/output error"
    )


@pytest.mark.skipif(
    os.geteuid() == 0, reason="not applicable as root: root reads a mode-000 file, permissions cannot stop it"
)
def test_token_file_without_read_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _token_file(tmp_path, b"secret")
    path.chmod(0)
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN_FILE", str(path))
    code, out = _flow(capsys, "config", "show")
    assert code == 2 and "cannot read the file: Permission denied" in out


def test_token_file_larger_than_the_bound(tmp_path: Path) -> None:
    path = _token_file(tmp_path, b"a" * (1024 * 1024))
    with pytest.raises(ConfigError, match="is larger than 65536 bytes"):
        read_secret_file(path, name="--token-file")


def test_install_token_file_is_checked_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _token_file(tmp_path, f"{MARK}a\n{MARK}b\n".encode())
    code, out = _flow(capsys, "health", "startup-script", "--token-file", str(path))
    assert code == 2
    assert f"--token-file={str(path)!r} holds 2 lines" in out and MARK not in out


# --- tokens at run time ----------------------------------------------------------------------


def test_token_file_turning_bad_warns_by_name_and_keeps_the_good_token(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    _debug(caplog)
    path = _token_file(tmp_path, f"{MARK}good".encode())
    receiver.token = f"{MARK}good"
    tokens = TokenSource(path=path)
    assert _send_endpoint(EndpointSink(receiver.url, tokens=tokens)) is None
    path.write_bytes(f"{MARK}new\n{MARK}line\n".encode())
    assert _send_endpoint(EndpointSink(receiver.url, tokens=tokens)) is None
    assert _send_endpoint(EndpointSink(receiver.url, tokens=tokens)) is None
    assert receiver.statuses() == [200, 200, 200]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage() == (
        f"token file={str(path)!r} holds 2 lines; allowed: the token alone, on one line; "
        "keeping the last good token"
    )
    assert MARK + "new" not in _logged(caplog) and MARK + "good" not in _logged(caplog)


def test_no_good_token_holds_the_batch_and_sends_nothing(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    _debug(caplog)
    path = _token_file(tmp_path, f"{MARK}tök".encode())
    error = _send_endpoint(EndpointSink(receiver.url, tokens=TokenSource(path=path)))
    assert error is not None and error.retryable
    assert "holds a non-ASCII character" in error.message
    assert receiver.requests == []
    _assert_absent(f"{MARK}tök", error.message + _logged(caplog))


# --- header values never reach a message -----------------------------------------------------


@pytest.mark.parametrize("key", [f"{MARK}key\nX-Injected: 1", f"{MARK}kéy", f"{MARK}key\x00"])
def test_datadog_key_httpx_refuses_never_reaches_an_error_or_a_log(
    key: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings built by hand skip the load-time check: the send path must not leak either."""
    _debug(caplog)
    settings_ = DatadogSettings(name="datadog", type="datadog", endpoint=f"http://127.0.0.1:{receiver.port}",
                                api_key=key)
    error = _send_sink(DatadogSink(settings_))
    assert error is not None
    assert receiver.requests == []
    _assert_absent(key, error.message + _logged(caplog))
    assert MARK not in error.message


def test_header_error_from_h11_is_scrubbed(receiver: Receiver) -> None:
    sender = HttpSender(sink="x", timeout_s=5.0)
    from flow.health.sinks.base import EncodedRequest

    async def go() -> SinkError:
        try:
            await sender.send_all([EncodedRequest(method="POST", url=receiver.url)],
                                  {"X-Key": f"{MARK}a\rb"})
        except SinkError as exc:
            return exc
        finally:
            await sender.aclose()
        raise AssertionError("sent")
    error = asyncio.run(go())
    assert MARK not in error.message


@pytest.mark.parametrize("key", [f"{MARK}key\nsecond", f"{MARK}kéy", f"{MARK} spaced"])
def test_bad_datadog_key_is_refused_at_load(key: str, flow_home: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (flow_home / "config.yaml").write_text("health:\n  sinks:\n    datadog: {site: datadoghq.eu}\n")
    monkeypatch.setenv("DD_API_KEY", key)
    code, out = _flow(capsys, "health", "sinks")
    assert code == 2
    assert "DD_API_KEY: the API key holds" in out and MARK not in out


def test_two_line_datadog_key_file_is_refused(tmp_path: Path) -> None:
    path = _token_file(tmp_path, f"{MARK}a\n{MARK}b".encode())
    with pytest.raises(ConfigError) as info:
        parse_sink_settings("datadog", {"api_key_file": str(path)}, {})
    assert info.value.message.startswith(f"health.sinks.datadog.api_key_file={str(path)!r} holds 2 lines")
    assert MARK not in info.value.message


def test_otlp_header_value_with_a_line_break_is_refused_by_header_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse_sink_settings("otlp", {}, {"OTEL_EXPORTER_OTLP_HEADERS": f"api-key={MARK}a%0Ab"})
    assert "OTEL_EXPORTER_OTLP_HEADERS, header 'api-key': the value holds a line break" in info.value.message
    assert MARK not in info.value.message


def test_pushgateway_password_with_a_line_break_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_sink_settings("pushgateway", {"url": "http://127.0.0.1:9091", "username": "u"},
                            {"FLOW_PUSHGATEWAY_PASSWORD": f"{MARK}a\nb"})
    assert "FLOW_PUSHGATEWAY_PASSWORD: the password holds a line break" in info.value.message
    assert MARK not in info.value.message


# --- URLs ------------------------------------------------------------------------------------

URL = f"https://flowuser:{MARK}pw@metrics.example.com/x?api_key={MARK}K&region=eu"


def test_config_show_redacts_url_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", URL)
    code, out = _flow(capsys, "config", "show")
    assert code == 0
    assert "https://***@metrics.example.com/x?api_key=***&region=eu" in out and MARK not in out
    code, out = _flow(capsys, "config", "show", "--json")
    assert code == 0
    assert orjson.loads(out)["metrics_endpoint"]["value"] == (
        "https://***@metrics.example.com/x?api_key=***&region=eu"
    )
    assert MARK not in out


def test_install_dry_run_redacts_url_credentials(
    inventory: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", URL)
    code, out = _flow(capsys, "health", "install", "sec", "--dry-run")
    assert code == 0, out
    assert "FLOW_METRICS_ENDPOINT='https://***@metrics.example.com/x?api_key=***&region=eu'" in out
    assert MARK not in out


def test_url_errors_show_the_url_redacted(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", f"http://u:{MARK}pw@metrics.example.com/x?token={MARK}t")
    code, out = _flow(capsys, "config", "show")
    assert code == 2
    assert "FLOW_METRICS_ENDPOINT='http://***@metrics.example.com/x?token=***' uses plain http" in out
    assert MARK not in out
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", f"https://u:{MARK}pw@host:{MARK}/x")
    code, out = _flow(capsys, "config", "show")
    assert code == 2 and "has a bad port" in out and MARK not in out


@pytest.mark.parametrize(("url", "shown"), [
    ("https://h/x", "https://h/x"),
    ("https://h:8443/x?a=1&b=2#top", "https://h:8443/x?a=1&b=2#top"),
    ("https://u:p@h/x", "https://***@h/x"),
    ("https://u@h/x", "https://***@h/x"),
    ("https://h/x?apikey=1&X-Amz-Signature=2&sig=3&password=4&n=5", "https://h/x?apikey=***&X-Amz-Signature=***"
     "&sig=***&password=***&n=5"),
    ("https://h/cb#access_token=1&state=2", "https://h/cb#access_token=***&state=2"),
    ("https://[::1", "<URL not shown: it cannot be parsed>"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_httpx_request_logs_never_hold_url_credentials(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    _debug(caplog)
    url = f"http://flowuser:{MARK}pw@127.0.0.1:{receiver.port}/ingest?api_key={MARK}K"
    assert _send_endpoint(EndpointSink(url)) is None
    logged = _logged(caplog)
    assert "HTTP Request: POST" in logged  # httpx did log the request, redacted
    assert MARK not in logged


# --- properties ------------------------------------------------------------------------------

_SETTINGS = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_SETTINGS
@given(secret=_SECRET)
def test_any_environment_token_is_refused_cleanly_or_never_shown(
    secret: str, receiver: Receiver, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    _debug(caplog)
    caplog.clear()
    with mock.patch.dict(os.environ, {"FLOW_METRICS_AUTH_TOKEN": secret}):
        code, out = _flow(capsys, "config", "show")
        code_json, out_json = _flow(capsys, "config", "show", "--json")
    token = secret.strip()
    _assert_absent(token, out + out_json)
    if code == 2:
        assert "FLOW_METRICS_AUTH_TOKEN: the token" in out and code_json == 2
        return
    assert code == 0 and code_json == 0
    receiver.token = "another"  # a 401 whose excerpt the error quotes
    error = _send_endpoint(EndpointSink(receiver.url, tokens=TokenSource(token=token)))
    assert error is not None and error.status == 401
    _assert_absent(token, error.message + _logged(caplog))


@_SETTINGS
@given(secret=_SECRET)
def test_any_token_file_is_refused_cleanly_or_never_logged(
    secret: str, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    _debug(caplog)
    caplog.clear()
    path = _token_file(tmp_path_factory.mktemp("tok"), secret.encode())
    with mock.patch.dict(os.environ, {"FLOW_METRICS_AUTH_TOKEN_FILE": str(path)}):
        code, out = _flow(capsys, "config", "show")
    token = secret.strip()
    _assert_absent(token, out)
    receiver.token = "another"
    if code == 2:
        assert f"FLOW_METRICS_AUTH_TOKEN_FILE={str(path)!r}" in out
        # At run time the same file is a warning and a held batch, never a request.
        error = _send_endpoint(EndpointSink(receiver.url, tokens=TokenSource(path=path)))
        assert error is not None and error.retryable and error.status is None
    else:
        error = _send_endpoint(EndpointSink(receiver.url, tokens=TokenSource(path=path)))
        assert error is not None and error.status == 401
    _assert_absent(token, error.message + _logged(caplog))


@_SETTINGS
@given(key=_SECRET)
def test_any_datadog_key_is_refused_cleanly_or_never_logged(
    key: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    _debug(caplog)
    caplog.clear()
    receiver.answer(403, body='{"errors": ["Forbidden"]}')
    try:
        dd = parse_sink_settings("datadog", {"endpoint": f"http://127.0.0.1:{receiver.port}"},
                                 {"DD_API_KEY": key})
    except ConfigError as exc:
        assert exc.message.startswith("DD_API_KEY: the API key")
        _assert_absent(key.strip(), exc.message)
        return
    assert isinstance(dd, DatadogSettings)
    error = _send_sink(DatadogSink(dd))
    assert error is not None and error.status == 403
    _assert_absent(key.strip(), error.message + _logged(caplog) + dd.base_url + repr(dd))


_CREDENTIAL = st.text(_TEXT, min_size=1, max_size=40).map(lambda t: MARK + t)


@_SETTINGS
@given(password=_CREDENTIAL, key=_CREDENTIAL)
def test_any_url_credentials_are_never_printed_or_logged(
    password: str, key: str, inventory: None, receiver: Receiver,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    _debug(caplog)
    caplog.clear()
    creds = f"flowuser:{quote(password, safe='')}@"
    query = f"?api_key={quote(key, safe='')}"
    url = f"https://{creds}metrics.example.com/in{query}"
    with mock.patch.dict(os.environ, {"FLOW_METRICS_ENDPOINT": url}):
        shown = "\n".join(_flow(capsys, *args)[1] for args in (
            ("config", "show"), ("config", "show", "--json"), ("health", "install", "sec", "--dry-run"),
        ))
    assert "https://***@metrics.example.com/in?api_key=***" in shown
    local = f"http://{creds}127.0.0.1:{receiver.port}/ingest{query}"
    receiver.answer(500, body="down")
    error = _send_endpoint(EndpointSink(local))
    assert error is not None and error.status == 500
    logged = shown + error.message + _logged(caplog)
    for secret in (password, key):
        _assert_absent(secret, logged)


def test_secret_file_rules_do_not_follow_permissions_of_a_symlink(tmp_path: Path) -> None:
    """A symlink is followed (Kubernetes mounts secrets so); the target's mode is what counts."""
    target = _token_file(tmp_path, b"tok")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert read_secret_file(link, name="x") == "tok"
    target.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_secret_file(link, name="x")
    assert stat.S_ISLNK(link.lstat().st_mode)


def test_a_short_token_is_scrubbed_where_it_stands_not_inside_words() -> None:
    message = "All connection attempts failed; sent token t to t.example"
    assert scrub(message, ["t"]) == "All connection attempts failed; sent token *** to ***.example"
    assert scrub("Bearer s3cr3t-TOKEN-value rejected", ["s3cr3t-TOKEN-value"]) == "Bearer *** rejected"
