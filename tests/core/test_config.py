"""Configuration: every source, precedence, and every bad value (message and exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from flow.cli.main import main
from flow.config import ENV_VARS, Config, HealthSettings, Thresholds, load_config
from flow.errors import ConfigError

FLOW = [sys.executable, "-m", "flow.cli.main"]


def write_config(home: Path, text: str) -> Path:
    path = home / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_documented_ones(flow_home: Path) -> None:
    config = load_config({"FLOW_HOME": str(flow_home)})
    h = config.health
    assert (h.enabled, h.gpud_version, h.gpud_port, h.gpud_bind) == (True, "v0.5.1", 15132, "127.0.0.1")
    assert (h.metrics_endpoint, h.metrics_interval, h.metrics_batch_size) == (None, 60.0, 100)
    assert (h.retention_days, h.compress_after_days, h.metrics_auth_token) == (7, 1, None)
    assert config.metrics_dir == flow_home / "metrics"
    assert config.config_file == flow_home / "config.yaml"
    assert config.sources["gpud_port"] == "default"


def test_the_ten_documented_variables() -> None:
    assert ENV_VARS == (
        "FLOW_HEALTH_MONITORING", "FLOW_GPUD_VERSION", "FLOW_GPUD_PORT", "FLOW_GPUD_BIND",
        "FLOW_METRICS_ENDPOINT", "FLOW_METRICS_INTERVAL", "FLOW_METRICS_BATCH_SIZE",
        "FLOW_METRICS_RETENTION_DAYS", "FLOW_METRICS_COMPRESS_AFTER_DAYS", "FLOW_METRICS_AUTH_TOKEN",
    )


def test_env_overrides_file_overrides_default(flow_home: Path) -> None:
    write_config(flow_home, "health:\n  gpud_port: 16000\n  metrics_interval: 30\n  retention_days: 3\n")
    env = {"FLOW_HOME": str(flow_home), "FLOW_GPUD_PORT": "17000"}
    config = load_config(env)
    assert config.health.gpud_port == 17000
    assert config.sources["gpud_port"] == "env FLOW_GPUD_PORT"
    assert config.health.metrics_interval == 30.0
    assert config.sources["metrics_interval"].startswith("file ")
    assert config.health.retention_days == 3
    assert config.health.metrics_batch_size == 100
    assert config.sources["metrics_batch_size"] == "default"


def test_every_variable_is_read_from_the_environment(flow_home: Path) -> None:
    env = {
        "FLOW_HOME": str(flow_home),
        "FLOW_HEALTH_MONITORING": "off",
        "FLOW_GPUD_VERSION": "v0.4.4",
        "FLOW_GPUD_PORT": "15133",
        "FLOW_GPUD_BIND": "::1",
        "FLOW_METRICS_ENDPOINT": "https://metrics.example.com/ingest",
        "FLOW_METRICS_INTERVAL": "1",
        "FLOW_METRICS_BATCH_SIZE": "7",
        "FLOW_METRICS_RETENTION_DAYS": "30",
        "FLOW_METRICS_COMPRESS_AFTER_DAYS": "2",
        "FLOW_METRICS_AUTH_TOKEN": "s3cret",
    }
    h = load_config(env).health
    assert h == HealthSettings(
        enabled=False, gpud_version="v0.4.4", gpud_port=15133, gpud_bind="::1",
        metrics_endpoint="https://metrics.example.com/ingest", metrics_interval=1.0,
        metrics_batch_size=7, retention_days=30, compress_after_days=2, metrics_auth_token="s3cret",
    )


def test_flush_interval_default_file_and_env(flow_home: Path) -> None:
    # Issue 13, item 9: how long a partial batch may wait (an addition beyond the ten variables).
    assert load_config({"FLOW_HOME": str(flow_home)}).health.metrics_flush_interval == 300.0
    write_config(flow_home, "health:\n  metrics_flush_interval: 30\n")
    assert load_config({"FLOW_HOME": str(flow_home)}).health.metrics_flush_interval == 30.0
    config = load_config({"FLOW_HOME": str(flow_home), "FLOW_METRICS_FLUSH_INTERVAL": "0"})
    assert config.health.metrics_flush_interval == 0.0
    assert config.sources["metrics_flush_interval"] == "env FLOW_METRICS_FLUSH_INTERVAL"


def test_monitoring_disabled_by_names_the_setting(flow_home: Path) -> None:
    assert load_config({"FLOW_HOME": str(flow_home)}).monitoring_disabled_by is None
    off = load_config({"FLOW_HOME": str(flow_home), "FLOW_HEALTH_MONITORING": "no"})
    assert off.monitoring_disabled_by == "FLOW_HEALTH_MONITORING=false"
    path = write_config(flow_home, "health:\n  enabled: false\n")
    assert load_config({"FLOW_HOME": str(flow_home)}).monitoring_disabled_by == (
        f"health.enabled: false in {path}")


def test_flow_home_relocates_everything(tmp_path: Path) -> None:
    config = load_config({"FLOW_HOME": str(tmp_path / "elsewhere")})
    assert config.home == tmp_path / "elsewhere"
    assert config.tasks_file == tmp_path / "elsewhere" / "tasks.yaml"
    assert config.known_hosts_file == tmp_path / "elsewhere" / "known_hosts"
    assert config.metrics_dir == tmp_path / "elsewhere" / "metrics"


def test_metrics_dir_variable(flow_home: Path, tmp_path: Path) -> None:
    config = load_config({"FLOW_HOME": str(flow_home), "FLOW_METRICS_DIR": str(tmp_path / "m")})
    assert config.metrics_dir == tmp_path / "m"


@pytest.mark.parametrize("spelling,expected", [
    ("true", True), ("TRUE", True), ("yes", True), ("on", True), ("1", True),
    ("false", False), ("No", False), ("off", False), ("0", False),
])
def test_boolean_spellings(flow_home: Path, spelling: str, expected: bool) -> None:
    env = {"FLOW_HOME": str(flow_home), "FLOW_HEALTH_MONITORING": spelling}
    assert load_config(env).health.enabled is expected


def test_empty_variable_counts_as_unset(flow_home: Path) -> None:
    env = {"FLOW_HOME": str(flow_home), "FLOW_METRICS_ENDPOINT": "", "FLOW_GPUD_PORT": " "}
    h = load_config(env).health
    assert h.metrics_endpoint is None and h.gpud_port == 15132


@pytest.mark.parametrize("endpoint", [
    "http://127.0.0.1:8080/ingest", "http://localhost/x", "http://[::1]:9/x", "https://example.com/x",
    "https://metrics.localhost/x",
])
def test_allowed_endpoints(flow_home: Path, endpoint: str) -> None:
    env = {"FLOW_HOME": str(flow_home), "FLOW_METRICS_ENDPOINT": endpoint}
    assert load_config(env).health.metrics_endpoint == endpoint


BAD_ENV = [
    ("FLOW_HEALTH_MONITORING", "maybe", "allowed: true/false"),
    ("FLOW_GPUD_VERSION", "latest", "allowed: vMAJOR.MINOR.PATCH"),
    ("FLOW_GPUD_PORT", "0", "allowed: 1-65535"),
    ("FLOW_GPUD_PORT", "65536", "allowed: 1-65535"),
    ("FLOW_GPUD_PORT", "http", "not a whole number"),
    ("FLOW_GPUD_BIND", "0.0.0.0", "allowed: a loopback address"),
    ("FLOW_GPUD_BIND", "gpu-node", "is not an IP address"),
    ("FLOW_METRICS_ENDPOINT", "http://metrics.example.com/x", "allowed: https://"),
    ("FLOW_METRICS_ENDPOINT", "http://metrics.localhost/x", "allowed: https://"),
    ("FLOW_METRICS_ENDPOINT", "metrics.example.com", "is not a URL"),
    ("FLOW_METRICS_ENDPOINT", "ftp://127.0.0.1/x", "is not a URL"),
    ("FLOW_METRICS_INTERVAL", "0", "allowed: 0.05-86400 seconds"),
    ("FLOW_METRICS_INTERVAL", "-5", "allowed: 0.05-86400 seconds"),
    ("FLOW_METRICS_INTERVAL", "soon", "is not a number"),
    ("FLOW_METRICS_INTERVAL", "nan", "is not a finite number"),
    ("FLOW_METRICS_INTERVAL", "1e308", "is out of range; allowed: 0.05-86400 seconds"),
    ("FLOW_METRICS_BATCH_SIZE", "0", "allowed: 1-10000 snapshots (a whole number)"),
    ("FLOW_METRICS_BATCH_SIZE", "2.5", "not a whole number"),
    ("FLOW_METRICS_RETENTION_DAYS", "-1", "allowed: 1-3650 days (a whole number)"),
    ("FLOW_METRICS_RETENTION_DAYS", "3651", "allowed: 1-3650 days (a whole number)"),
    ("FLOW_METRICS_COMPRESS_AFTER_DAYS", "zero", "not a whole number"),
    ("FLOW_SSH_CONNECT_TIMEOUT", "inf", "allowed: 0.1-3600 seconds"),
    ("FLOW_METRICS_FLUSH_INTERVAL", "-1", "allowed: 0-86400 seconds"),
    ("FLOW_METRICS_FLUSH_INTERVAL", "86401", "allowed: 0-86400 seconds"),
    ("FLOW_METRICS_FLUSH_INTERVAL", "inf", "allowed: 0-86400 seconds"),
]


@pytest.mark.parametrize("name,value,allowed", BAD_ENV)
def test_bad_variable_is_named_with_value_and_allowed(
    flow_home: Path, name: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"FLOW_HOME": str(flow_home), name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and allowed in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("name,value,allowed", BAD_ENV[:6])
def test_bad_variable_exits_2_through_the_cli(
    flow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, value: str, allowed: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ERROR: ") and name in err[0] and allowed in err[0]


BAD_FILE = [
    ("gpud_port: 70000", "health.gpud_port=70000", "1-65535"),
    ("enabled: sometimes", "health.enabled='sometimes'", "true/false"),
    ("metrics_endpoint: http://10.0.0.1/x", "health.metrics_endpoint", "https://"),
    ("metrics_batch_size: -3", "health.metrics_batch_size=-3", "1-10000"),
    ("retention_days: 0", "health.retention_days=0", "1-3650 days"),
    ("metrics_interval: .inf", "health.metrics_interval=inf", "0.05-86400 seconds"),
    ("ssh_connect_timeout: .nan", "health.ssh_connect_timeout=nan", "0.1-3600 seconds"),
    ("compress_after_days: true", "health.compress_after_days=True", "whole number"),
    ("gpud_prot: 1", "health.gpud_prot is not a known setting", "allowed: "),
    ("metrics_auth_token: abc", "health.metrics_auth_token is not read from config.yaml",
     "FLOW_METRICS_AUTH_TOKEN"),
    ("thresholds:\n    temp_critical_c: hot", "health.thresholds.temp_critical_c='hot'", "number"),
    ("thresholds:\n    temp_warning_c: 90", "temp_warning_c=90.0 must be below", "temp_critical_c"),
    ("thresholds:\n    penalties:\n      nope: 3", "penalties.nope is not a reason code", "temp_critical"),
    ("thresholds:\n    penalties:\n      temp_critical: 500", "penalties.temp_critical=500", "0-100"),
    ("fail_on: always", "health.fail_on='always'", "issues, warnings, never"),
    ("metrics_flush_interval: .nan", "health.metrics_flush_interval=nan", "0-86400 seconds"),
]


@pytest.mark.parametrize("line,culprit,allowed", BAD_FILE)
def test_bad_file_value_names_file_key_and_allowed(
    flow_home: Path, line: str, culprit: str, allowed: str
) -> None:
    path = write_config(flow_home, f"health:\n  {line}\n")
    with pytest.raises(ConfigError) as info:
        load_config({"FLOW_HOME": str(flow_home)})
    message = str(info.value)
    assert str(path) in message and culprit in message and allowed in message


def test_malformed_yaml_names_file_and_line(flow_home: Path) -> None:
    path = write_config(flow_home, "health:\n  gpud_port: 1\n  bad: [unclosed\n  other: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config({"FLOW_HOME": str(flow_home)})
    assert str(path) in str(info.value) and " line " in str(info.value)
    assert "malformed YAML" in str(info.value)


def test_top_level_must_be_a_mapping(flow_home: Path) -> None:
    write_config(flow_home, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config({"FLOW_HOME": str(flow_home)})


def test_token_file_must_be_0600(flow_home: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n")
    token.chmod(0o644)
    write_config(flow_home, f"health:\n  metrics_auth_token_file: {token}\n")
    with pytest.raises(ConfigError, match=r"readable by others .*chmod 600"):
        load_config({"FLOW_HOME": str(flow_home)})
    token.chmod(0o600)
    config = load_config({"FLOW_HOME": str(flow_home)})
    assert config.health.metrics_auth_token == "abc123"


def test_env_token_wins_over_token_file(flow_home: Path, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file")
    token.chmod(0o600)
    env = {"FLOW_HOME": str(flow_home), "FLOW_METRICS_AUTH_TOKEN_FILE": str(token),
           "FLOW_METRICS_AUTH_TOKEN": "from-env"}
    assert load_config(env).health.metrics_auth_token == "from-env"


def test_token_never_in_repr_or_show(
    flow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOW_METRICS_AUTH_TOKEN", "hunter2-secret")
    config = load_config()
    assert "hunter2" not in repr(config)
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "<redacted>" in out
    assert main(["config", "show", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["metrics_auth_token"] == {"value": "<redacted>", "source": "env FLOW_METRICS_AUTH_TOKEN"}


def test_show_names_the_source_of_each_setting(
    flow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(flow_home, "health:\n  retention_days: 14\n")
    monkeypatch.setenv("FLOW_GPUD_PORT", "16000")
    assert main(["config", "show", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["gpud_port"] == {"value": 16000, "source": "env FLOW_GPUD_PORT"}
    assert doc["retention_days"] == {"value": 14, "source": f"file {path}"}
    assert doc["metrics_batch_size"]["source"] == "default"


def test_show_gives_typed_values_and_the_store_really_used(
    flow_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 13 item 10: every value used to be a string ("True", "15132") and metrics_dir "none".
    assert main(["config", "show", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["enabled"]["value"] is True and doc["metrics_gzip"]["value"] is True
    assert doc["gpud_port"]["value"] == 15132 and doc["metrics_interval"]["value"] == 60.0
    assert doc["metrics_endpoint"]["value"] is None and doc["metrics_auth_token"]["value"] is None
    assert doc["thresholds.temp_critical_c"]["value"] == 85.0
    assert doc["metrics_dir"] == {"value": str(flow_home / "metrics"),
                                  "source": "default: $FLOW_HOME/metrics"}
    assert main(["config", "show"]) == 0
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in capsys.readouterr().out.splitlines()}
    assert lines["metrics_dir"].split() == [str(flow_home / "metrics"), "default:", "$FLOW_HOME/metrics"]
    assert lines["enabled"].split() == ["true", "default"]
    assert lines["metrics_interval"].split() == ["60", "default"]
    monkeypatch.setenv("FLOW_METRICS_DIR", str(flow_home / "elsewhere"))
    monkeypatch.setenv("FLOW_METRICS_GZIP", "false")
    assert main(["config", "show", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["metrics_dir"] == {"value": str(flow_home / "elsewhere"), "source": "env FLOW_METRICS_DIR"}
    assert doc["metrics_gzip"]["value"] is False


def test_config_path(flow_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(flow_home / "config.yaml")


def test_thresholds_are_configurable(flow_home: Path) -> None:
    write_config(flow_home, "health:\n  thresholds:\n    temp_warning_c: 70\n    penalties:\n"
                            "      util_low: 0\n")
    t = load_config({"FLOW_HOME": str(flow_home)}).thresholds
    assert t.temp_warning_c == 70.0 and t.penalty("util_low") == 0 and t.penalty("temp_critical") == 45


def test_config_objects_compare_and_repr() -> None:
    assert Thresholds() == Thresholds()
    assert HealthSettings(gpud_port=1) != HealthSettings()
    assert "gpud_port=15132" in repr(HealthSettings())
    c = Config(home=Path("/h"), config_file=Path("/h/config.yaml"))
    assert c.with_health(gpud_port=2).health.gpud_port == 2 and c.health.gpud_port == 15132


# The real entry point, in a subprocess, as a user runs it.

def run_flow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    full_env.update(env)
    return subprocess.run([*FLOW, *args], env=full_env, capture_output=True, text=True, timeout=60)


def test_subprocess_bad_env_exits_2_with_one_line(flow_home: Path) -> None:
    proc = run_flow("config", "show", env={"FLOW_HOME": str(flow_home), "FLOW_METRICS_BATCH_SIZE": "lots"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "ERROR: FLOW_METRICS_BATCH_SIZE='lots' is not a whole number; "
        "allowed: 1-10000 snapshots (a whole number)"
    )


def test_subprocess_bad_file_exits_2(flow_home: Path) -> None:
    path = write_config(flow_home, "health:\n  gpud_bind: 0.0.0.0\n")
    proc = run_flow("health", env={"FLOW_HOME": str(flow_home)})
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "health.gpud_bind='0.0.0.0'" in proc.stderr


def test_subprocess_malformed_yaml_exits_2(flow_home: Path) -> None:
    write_config(flow_home, "health: {gpud_port: 1\n")
    proc = run_flow("config", "show", env={"FLOW_HOME": str(flow_home)})
    assert proc.returncode == 2 and "line" in proc.stderr and "config.yaml" in proc.stderr


def test_subprocess_version_and_help(flow_home: Path) -> None:
    proc = run_flow("--version", env={"FLOW_HOME": str(flow_home)})
    assert proc.returncode == 0 and "0.1.0" in proc.stdout
    proc = run_flow("--help", env={"FLOW_HOME": str(flow_home)})
    assert proc.returncode == 0 and "health" in proc.stdout and "config" in proc.stdout
