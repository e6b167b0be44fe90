"""Bad values (issue 12, class 10) and the loopback rule for plain http (class 11).

Every number flow reads has a finite documented range (docs/configuration.md), checked where it
is read: NaN, infinities and huge values stop the command with exit 2 and one line naming the
source (the option, the environment variable, or the config.yaml key and file). The YAML files
flow reads must be regular UTF-8 files of bounded size and depth. Plain http is allowed only to
literal loopback addresses and `localhost`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.cli.main import main
from flow.config import MAX_CONFIG_BYTES, is_loopback_host, load_config, validate_endpoint
from flow.errors import ConfigError

FLOW = [sys.executable, "-m", "flow.cli.main"]


def _error_line(err: str) -> str:
    """The one `ERROR:` (flow) or `Error:` (click usage) line, after checking there is one."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("ERROR:", "Error:"))]
    assert len(lines) == 1, err
    return lines[0]


def _run_main(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# --- the reproductions of the issue, through the real command line -------------------------

# (argv, environment, what the one error line must name: source first, then the value)
OPTION_CASES = [
    (["health", "cleanup", "--retention-days", "1000000000"], {}, ["--retention-days", "'1000000000'"]),
    (["health", "cleanup", "--compress-after-days", "99999"], {}, ["--compress-after-days", "'99999'"]),
    (["health", "--task", "x", "--history", "1e9"], {}, ["--history", "'1e9'"]),
    (["health", "--task", "x", "--history", "inf"], {}, ["--history", "'inf'"]),
    (["health", "--task", "x", "--history", "nan"], {}, ["--history", "'nan'"]),
    (["health", "--task", "x", "--history", "0"], {}, ["--history", "'0'"]),
    (["health", "export", "--format", "json", "--from-store", "--hours", "inf"], {}, ["--hours", "'inf'"]),
    (["health", "export", "--format", "json", "--from-store", "--hours", "nan"], {}, ["--hours", "'nan'"]),
    (["health", "collect", "--once", "--no-store"], {"FLOW_METRICS_BACKOFF_MAX": "inf"},
     ["FLOW_METRICS_BACKOFF_MAX", "--backoff-max", "'inf'"]),
    (["health", "collect", "--once", "--no-store"], {"FLOW_METRICS_BACKOFF_MIN": "nan"},
     ["FLOW_METRICS_BACKOFF_MIN", "'nan'"]),
    (["health", "collect", "--once", "--no-store"], {"FLOW_METRICS_SEND_TIMEOUT": "inf"},
     ["FLOW_METRICS_SEND_TIMEOUT", "--send-timeout", "'inf'"]),
    (["health", "collect", "--once", "--no-store", "--send-timeout", "1e20"], {},
     ["--send-timeout", "'1e20'"]),
    (["health", "collect", "--once", "--no-store"], {"FLOW_METRICS_INTERVAL": "1e308"},
     ["FLOW_METRICS_INTERVAL", "'1e308'"]),
    (["health", "collect", "--once", "--no-store", "--interval", "nan"], {}, ["--interval", "'nan'"]),
    (["config", "show"], {"FLOW_SSH_CONNECT_TIMEOUT": "1e20"}, ["FLOW_SSH_CONNECT_TIMEOUT", "'1e20'"]),
    (["health", "--gpu"], {"FLOW_SSH_CONNECT_TIMEOUT": "nan"}, ["FLOW_SSH_CONNECT_TIMEOUT", "'nan'"]),
    (["config", "show"], {"FLOW_METRICS_RETENTION_DAYS": "1000000000"},
     ["FLOW_METRICS_RETENTION_DAYS", "'1000000000'"]),
    (["config", "show"], {"FLOW_METRICS_BATCH_SIZE": "1" + "0" * 5000},
     ["FLOW_METRICS_BATCH_SIZE", "characters)"]),
    (["config", "show"], {"FLOW_GPUD_PORT": "٣"}, ["FLOW_GPUD_PORT", "'٣'"]),
    (["health", "--gpu", "--watch", "nan"], {}, ["--watch", "'nan'"]),
    (["health", "--gpu", "--watch", "inf"], {}, ["--watch", "'inf'"]),
    (["health", "--gpu", "--timeout", "nan"], {}, ["--timeout", "'nan'"]),
    (["health", "--gpu", "--timeout", "-inf"], {}, ["--timeout", "'-inf'"]),
    (["health", "serve", "--interval", "1e308", "--input", "x.jsonl"], {}, ["--interval", "'1e308'"]),
    (["health", "demo", "--timeout", "nan"], {}, ["--timeout", "'nan'"]),
    (["health", "sim", "--slow-delay", "inf"], {}, ["--slow-delay", "'inf'"]),
    (["health", "sim", "--seed", "-1"], {}, ["--seed"]),
    (["health", "startup-script", "--task-id", "t", "--interval", "nan"], {}, ["--interval", "'nan'"]),
    (["health", "startup-script", "--task-id", "t", "--retention-days", "100000"], {},
     ["--retention-days", "'100000'"]),
    (["health", "install", "x", "--timeout", "inf"], {}, ["--timeout", "'inf'"]),
]


@pytest.mark.parametrize("argv,env,named", OPTION_CASES,
                         ids=[" ".join(c[0][-2:]) + (f" {next(iter(c[1]))}" if c[1] else "")
                              for c in OPTION_CASES])
def test_bad_number_exits_2_naming_its_source(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: list[str], env: dict[str, str], named: list[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, err = _run_main(capsys, argv)
    line = _error_line(err)
    assert code == 2, err
    for word in named:
        assert word in line, (word, line)
    assert "allowed" in line or "range" in line, line


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels + "\n"


# (file, bytes written, what the error line names besides the file)
FILE_CASES = [
    ("config.yaml", b'health:\n  gpud_port: "\xff\xfe"\n', "line 2: byte 0xff is not UTF-8"),
    ("config.yaml", b"health: " + _deep(5000).encode(), "nested too deeply"),
    ("config.yaml", b"health:\n  metrics_interval: .nan\n", "health.metrics_interval=nan"),
    ("config.yaml", b"health:\n  ssh_connect_timeout: 1e400\n", "health.ssh_connect_timeout='1e400'"),
    ("config.yaml", b"health:\n  ssh_connect_timeout: 1.0e+400\n", "health.ssh_connect_timeout=inf"),
    ("config.yaml", b"health:\n  retention_days: 1" + b"0" * 400 + b"\n", "health.retention_days="),
    ("config.yaml", b"health:\n  metrics_interval: 1" + b"0" * 400 + b".0\n", "health.metrics_interval="),
    ("config.yaml", b"#" * (MAX_CONFIG_BYTES + 1), f"larger than {MAX_CONFIG_BYTES} bytes"),
    ("tasks.yaml", b"version: 1\ntasks:\n  - name: \xc3\x28\n", "line 3: byte 0xc3 is not UTF-8"),
    ("tasks.yaml", b"tasks: " + _deep(5000).encode(), "nesting depth"),  # libyaml's own limit
    ("tasks.yaml", b"tasks: " + _deep(900).encode(), "nested too deeply"),  # our constructors' recursion
    ("config.yaml", b"health: " + _deep(300).encode(),
     "must be a mapping, not " + "[" * 32 + "... (600 characters)"),
]


@pytest.mark.parametrize("name,content,named", FILE_CASES, ids=[f"{c[0]}:{c[2][:24]}" for c in FILE_CASES])
def test_bad_file_exits_2_naming_the_file(
    flow_home: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, named: str
) -> None:
    path = flow_home / name
    path.write_bytes(content)
    code, err = _run_main(capsys, ["tasks", "list"] if name == "tasks.yaml" else ["config", "show"])
    line = _error_line(err)
    assert code == 2 and str(path) in line and named in line, err


@pytest.mark.parametrize("name", ["config.yaml", "tasks.yaml"])
@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_a_yaml_file_that_is_not_a_regular_file_is_refused_at_once(
    flow_home: Path, name: str, kind: str
) -> None:
    # A subprocess: a FIFO opened for reading without O_NONBLOCK blocks until a writer comes,
    # which would hang this test rather than fail it. The bound only proves it did not hang.
    path = flow_home / name
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")  # a symlink to a device: followed, then refused
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")} | {"FLOW_HOME": str(flow_home)}
    proc = subprocess.run([*FLOW, *(["tasks", "list"] if name == "tasks.yaml" else ["config", "show"])],
                          env=env, capture_output=True, text=True, timeout=60)
    line = _error_line(proc.stderr)
    assert proc.returncode == 2 and str(path) in line and "not a regular file" in line, proc.stderr
    assert {"directory": "a directory", "fifo": "a FIFO", "device": "a character device"}[kind] in line


def test_the_deep_config_through_a_real_process(flow_home: Path) -> None:
    # The RecursionError came from PyYAML's composer; in a fresh interpreter the stack is the
    # one a user's `flow` has, not pytest's.
    (flow_home / "config.yaml").write_text("health: " + _deep(5000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")} | {"FLOW_HOME": str(flow_home)}
    proc = subprocess.run([*FLOW, "config", "show"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "nested too deeply" in proc.stderr and "Traceback" not in proc.stderr


def test_good_values_at_the_edges_are_accepted(flow_home: Path) -> None:
    env = {"FLOW_HOME": str(flow_home), "FLOW_METRICS_INTERVAL": "0.05", "FLOW_SSH_CONNECT_TIMEOUT": "3600",
           "FLOW_METRICS_RETENTION_DAYS": "3650", "FLOW_METRICS_BATCH_SIZE": "10000",
           "FLOW_GPUD_PORT": "65535"}
    h = load_config(env).health
    assert (h.metrics_interval, h.ssh_connect_timeout, h.retention_days) == (0.05, 3600.0, 3650)
    assert (h.metrics_batch_size, h.gpud_port) == (10000, 65535)


# --- properties: any float spelling is refused with its source named, or lands in range ----

# The documented ranges (docs/configuration.md), written out here rather than imported so that
# a change to a range in the code that the docs do not follow fails this test.
ENV_RANGES = {
    "FLOW_METRICS_INTERVAL": (0.05, 86400.0, False),
    "FLOW_SSH_CONNECT_TIMEOUT": (0.1, 3600.0, False),
    "FLOW_GPUD_PORT": (1, 65535, True),
    "FLOW_METRICS_BATCH_SIZE": (1, 10000, True),
    "FLOW_METRICS_RETENTION_DAYS": (1, 3650, True),
    "FLOW_METRICS_COMPRESS_AFTER_DAYS": (1, 3650, True),
    "FLOW_METRICS_FLUSH_INTERVAL": (0.0, 86400.0, False),
}
SETTING_KEYS = {
    "FLOW_METRICS_INTERVAL": "metrics_interval",
    "FLOW_SSH_CONNECT_TIMEOUT": "ssh_connect_timeout",
    "FLOW_GPUD_PORT": "gpud_port",
    "FLOW_METRICS_BATCH_SIZE": "metrics_batch_size",
    "FLOW_METRICS_RETENTION_DAYS": "retention_days",
    "FLOW_METRICS_COMPRESS_AFTER_DAYS": "compress_after_days",
    "FLOW_METRICS_FLUSH_INTERVAL": "metrics_flush_interval",
}

NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda f: f"{f:.3f}"),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "+inf", "-inf", "Infinity", "1e309", "-1e309",
                     "1e-400", "0", "-0", "0.0", "1_000", " 7 ", "0x10", "1e3", "٣", "", "3.5"]),
)


@settings(max_examples=300, deadline=None)
@given(variable=st.sampled_from(sorted(ENV_RANGES)), text=NUMBER_TEXT)
def test_numeric_variables_are_refused_or_in_range(variable: str, text: str) -> None:
    env = {"FLOW_HOME": "/nonexistent/flow-home", variable: text}
    low, high, integer = ENV_RANGES[variable]
    try:
        value = getattr(load_config(env).health, SETTING_KEYS[variable])
    except ConfigError as exc:
        assert exc.exit_code == 2
        assert exc.message.startswith(f"{variable}=") and "allowed: " in exc.message, exc.message
        assert "\n" not in exc.message
        return
    if not text.strip():
        return  # empty counts as unset: the default
    assert math.isfinite(value) and low <= value <= high, (text, value)
    assert not integer or isinstance(value, int)


YAML_TEXT = st.one_of(
    NUMBER_TEXT.filter(lambda t: t.strip() and "\n" not in t and not t.strip().startswith(("#", "-", "%"))),
    st.sampled_from([".nan", ".NaN", ".inf", "-.inf", "+.inf", "1e400", "1" + "0" * 400, "0o17", "0x1F",
                     "!!float nan", "[1]", "{a: 1}", "true", "~"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variable=st.sampled_from(sorted(ENV_RANGES)), text=YAML_TEXT)
def test_numeric_keys_of_config_yaml_are_refused_or_in_range(
    tmp_path: Path, variable: str, text: str
) -> None:
    key = SETTING_KEYS[variable]
    path = tmp_path / "config.yaml"
    path.write_text(f"health:\n  {key}: {text}\n")
    low, high, _ = ENV_RANGES[variable]
    try:
        value = getattr(load_config({"FLOW_HOME": str(tmp_path)}).health, key)
    except ConfigError as exc:
        assert exc.exit_code == 2
        assert exc.message.startswith(f"{path}") and "\n" not in exc.message, exc.message
        assert f"health.{key}" in exc.message or "malformed YAML" in exc.message, exc.message
        return
    if text.strip() in ("~", "null"):
        return
    assert math.isfinite(value) and low <= value <= high, (text, value)


def _option(command: click.Command, name: str) -> click.Parameter:
    return next(p for p in command.params if p.name == name)


def _cli_options() -> list[tuple[str, click.Command, str, float, float]]:
    from flow.cli import (
        collect_cmd,
        demo_cmd,
        health_cmd,
        install_cmd,
        integrations_cmd,
        sim_cmd,
        storage_cmd,
    )

    return [
        ("health --history", health_cmd.health, "history_hours", 0.0, 8760.0),
        ("health --watch", health_cmd.health, "watch_s", 0.05, 86400.0),
        ("health --timeout", health_cmd.health, "timeout_s", 0.1, 3600.0),
        ("collect --interval", collect_cmd.collect, "interval", 0.05, 86400.0),
        ("collect --flush-interval", collect_cmd.collect, "flush_interval", 0.0, 86400.0),
        ("collect --backoff-min", collect_cmd.collect, "backoff_min", 0.01, 3600.0),
        ("collect --backoff-max", collect_cmd.collect, "backoff_max", 0.01, 86400.0),
        ("collect --send-timeout", collect_cmd.collect, "send_timeout", 0.1, 3600.0),
        ("serve --interval", integrations_cmd.serve, "interval", 0.05, 86400.0),
        ("export --hours", integrations_cmd.export, "hours", 0.0, 8760.0),
        ("cleanup --retention-days", storage_cmd.cleanup_cmd, "retention_days", 1, 3650),
        ("cleanup --compress-after-days", storage_cmd.cleanup_cmd, "compress_after_days", 0, 3650),
        ("install --timeout", install_cmd.install_cmd, "timeout_s", 1.0, 3600.0),
        ("install --interval", install_cmd.install_cmd, "interval", 0.05, 86400.0),
        ("install --batch-size", install_cmd.install_cmd, "batch_size", 1, 10000),
        ("install --retention-days", install_cmd.install_cmd, "retention_days", 1, 3650),
        ("install --compress-after-days", install_cmd.install_cmd, "compress_after_days", 1, 3650),
        ("demo --timeout", demo_cmd.demo, "timeout_s", 0.5, 3600.0),
        ("sim --slow-delay", sim_cmd.sim, "slow_delay_s", 0.0, 3600.0),
    ]


CLI_OPTIONS = _cli_options()


@settings(max_examples=400, deadline=None)
@given(index=st.integers(0, len(CLI_OPTIONS) - 1), text=NUMBER_TEXT)
def test_numeric_options_are_refused_or_in_range(index: int, text: str) -> None:
    label, command, name, low, high = CLI_OPTIONS[index]
    param = _option(command, name)
    ctx = click.Context(command)
    try:
        value = param.type.convert(text, param, ctx)
    except click.BadParameter as exc:
        assert "\n" not in exc.format_message(), exc.format_message()
        assert repr(text)[:20] in exc.format_message() or "characters)" in exc.format_message()
        return
    assert math.isfinite(value) and value <= high, (label, text, value)
    # --history and --hours: more than 0; the rest: at least their low end
    assert value > low if low == 0.0 and label.endswith(("--history", "--hours")) else value >= low


def test_an_option_from_the_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOW_METRICS_BACKOFF_MAX", "1e9")
    code, err = _run_main(capsys, ["health", "collect", "--once", "--no-store"])
    line = _error_line(err)
    assert code == 2 and "FLOW_METRICS_BACKOFF_MAX (for --backoff-max): '1e9' is out of range" in line
    assert "allowed: 0.01-86400 seconds" in line


# --- plain http only to loopback (class 11) ------------------------------------------------

NOT_LOOPBACK = ["foo.localhost", "evil.localhost", "localhost.evil.com", "localhost.", "127.0.0.1.nip.io",
                "LOCALHOST.example", "127.1", "0.0.0.0", "::", "10.0.0.1", "example.com"]
LOOPBACK = ["localhost", "LocalHost", "127.0.0.1", "127.9.8.7", "::1", "[::1]"]


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_only_literal_loopback_counts_as_loopback(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize("host", LOOPBACK)
def test_literal_loopback_and_localhost_are_loopback(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("url", ["http://foo.localhost/x", "http://metrics.localhost:8080/ingest",
                                 "http://localhost.evil.com/x", "http://localhost./x"])
def test_plain_http_to_a_localhost_subdomain_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="plain http to a remote host"):
        validate_endpoint(url, name="FLOW_METRICS_ENDPOINT")


@pytest.mark.parametrize("url", ["http://localhost:8080/x", "http://127.0.0.1/x", "http://[::1]:9/x",
                                 "https://foo.localhost/x"])
def test_plain_http_to_loopback_and_https_anywhere_are_allowed(url: str) -> None:
    assert validate_endpoint(url, name="FLOW_METRICS_ENDPOINT") == url


def test_every_endpoint_follows_the_loopback_rule(
    flow_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The metrics endpoint (env and file), a sink's URL, OTLP's standard variable, install --endpoint.
    monkeypatch.setenv("FLOW_METRICS_ENDPOINT", "http://ingest.localhost/v1")
    code, err = _run_main(capsys, ["config", "show"])
    assert code == 2 and "FLOW_METRICS_ENDPOINT" in _error_line(err)
    monkeypatch.delenv("FLOW_METRICS_ENDPOINT")

    path = flow_home / "config.yaml"
    path.write_text("health:\n  metrics_endpoint: http://ingest.localhost/v1\n")
    code, err = _run_main(capsys, ["config", "show"])
    line = _error_line(err)
    assert code == 2 and str(path) in line and "health.metrics_endpoint" in line

    path.write_text("health:\n  sinks:\n    pushgateway: {url: 'http://gw.localhost:9091'}\n")
    code, err = _run_main(capsys, ["health", "sinks"])
    line = _error_line(err)
    assert code == 2 and "health.sinks.pushgateway.url" in line and "plain http" in line

    path.write_text("health:\n  sinks:\n    otlp: {}\n")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel.localhost:4318")
    code, err = _run_main(capsys, ["health", "sinks"])
    line = _error_line(err)
    assert code == 2 and "OTEL_EXPORTER_OTLP_ENDPOINT" in line and "plain http" in line
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    path.unlink()

    code, err = _run_main(capsys, ["health", "startup-script", "--task-id", "t",
                                   "--endpoint", "http://ingest.localhost/v1"])
    line = _error_line(err)
    assert code == 2 and "--endpoint" in line and "plain http" in line


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+400", "601", "0"])
def test_a_sink_timeout_is_finite_and_bounded(
    flow_home: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    (flow_home / "config.yaml").write_text(
        f"health:\n  sinks:\n    pushgateway: {{url: 'http://127.0.0.1:9091', timeout: {value}}}\n"
    )
    code, err = _run_main(capsys, ["health", "sinks"])
    line = _error_line(err)
    assert code == 2 and "health.sinks.pushgateway.timeout" in line and "<= 600" in line, err
