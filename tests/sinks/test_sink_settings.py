"""health.sinks validation: every bad key or value is named with the value and what is allowed."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import pytest

from flow.config import load_config
from flow.errors import ConfigError
from flow.health.sinks.cloudwatch import CloudWatchSink
from flow.health.sinks.datadog import DatadogSink
from flow.health.sinks.factory import build_sink, build_sinks
from flow.health.sinks.otlp import OtlpSink
from flow.health.sinks.pushgateway import PushgatewaySink
from flow.health.sinks.settings import (
    CloudWatchSettings,
    DatadogSettings,
    OtlpSettings,
    PushgatewaySettings,
    parse_otlp_headers,
    parse_sink_settings,
)


def _error(name: str, raw: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_sink_settings(name, raw, env or {})
    return info.value.message


def test_defaults_and_type_from_name() -> None:
    dd = parse_sink_settings("datadog", {}, {})
    assert isinstance(dd, DatadogSettings)
    assert (dd.site, dd.base_url, dd.gzip, dd.enabled, dd.timeout_s) == (
        "datadoghq.com",
        "https://api.datadoghq.com",
        True,
        True,
        10.0,
    )
    cw = parse_sink_settings("cloudwatch", {"region": "eu-west-1"}, {})
    assert isinstance(cw, CloudWatchSettings)
    assert (cw.namespace, cw.region, cw.storage_resolution) == ("Flow/Health", "eu-west-1", 60)
    otlp = parse_sink_settings("otlp", None, {})
    assert isinstance(otlp, OtlpSettings)
    assert (otlp.endpoint, otlp.encoding) == ("http://127.0.0.1:4318/v1/metrics", "protobuf")
    named = parse_sink_settings("dd-eu", {"type": "datadog", "site": "datadoghq.eu"}, {})
    assert isinstance(named, DatadogSettings) and named.base_url == "https://api.datadoghq.eu"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("datadog", {"sitee": "x"}, "health.sinks.datadog.sitee is not a known key; allowed: type, enabled"),
        (
            "datadog",
            {"site": "not a site"},
            "health.sinks.datadog.site='not a site' is not allowed; allowed: a Datadog site",
        ),
        (
            "datadog",
            {"endpoint": "http://example.com"},
            "health.sinks.datadog.endpoint='http://example.com' uses plain http to a remote host",
        ),
        (
            "datadog",
            {"timeout": 0},
            "health.sinks.datadog.timeout=0 is not allowed; allowed: a number of seconds",
        ),
        ("datadog", {"gzip": "maybe"}, "health.sinks.datadog.gzip='maybe' is not a boolean"),
        ("datadog", {"tags": "a:b"}, "health.sinks.datadog.tags='a:b' is not allowed; allowed: a list of"),
        (
            "datadog",
            {"api_key": "s3cr3t"},
            "health.sinks.datadog.api_key is a secret and is not read from "
            "config.yaml; allowed: DD_API_KEY or a 0600 file",
        ),
        (
            "cloudwatch",
            {"namespace": "AWS/EC2"},
            "health.sinks.cloudwatch.namespace='AWS/EC2' is not allowed",
        ),
        (
            "cloudwatch",
            {"region": "mars"},
            "health.sinks.cloudwatch.region='mars' is not allowed; allowed: an AWS region",
        ),
        (
            "cloudwatch",
            {"storage_resolution": 5},
            "health.sinks.cloudwatch.storage_resolution=5 is not allowed; allowed: 1 or 60",
        ),
        (
            "otlp",
            {"encoding": "xml"},
            "health.sinks.otlp.encoding='xml' is not allowed; allowed: protobuf or json",
        ),
        ("pushgateway", {}, "health.sinks.pushgateway.url is missing"),
        ("pushgateway", {"url": "ftp://x"}, "health.sinks.pushgateway.url='ftp://x' is not a URL"),
        (
            "pushgateway",
            {"url": "https://u:pw@gw.example.com"},
            "health.sinks.pushgateway.url holds a password",
        ),
        (
            "influx",
            {},
            "health.sinks.influx='influx' is not a sink type; allowed: cloudwatch, datadog, otlp, "
            "pushgateway",
        ),
        ("mine", {"type": "graphite"}, "health.sinks.mine.type='graphite' is not a sink type"),
        ("datadog", ["x"], "health.sinks.datadog=['x'] is not a mapping"),
    ],
)
def test_bad_sections_name_key_value_and_allowed(name: str, raw: Any, expected: str) -> None:
    assert expected in _error(name, raw)


def test_a_password_in_a_url_is_never_echoed() -> None:
    assert "pw" not in _error("pushgateway", {"url": "https://u:pw@gw.example.com"})


def test_datadog_key_from_env_or_owner_only_file(tmp_path: Path) -> None:
    dd = parse_sink_settings("datadog", {}, {"DD_API_KEY": "k-env", "DD_SITE": "us5.datadoghq.com"})
    assert isinstance(dd, DatadogSettings)
    assert (dd.api_key, dd.site) == ("k-env", "us5.datadoghq.com")
    assert "k-env" not in repr(dd)

    key_file = tmp_path / "dd.key"
    key_file.write_text("k-file\n")
    key_file.chmod(0o644)
    assert "is readable by others (mode 0644); allowed: mode 0600" in _error(
        "datadog", {"api_key_file": str(key_file)}
    )
    key_file.chmod(0o600)
    dd = parse_sink_settings("datadog", {"api_key_file": str(key_file)}, {})
    assert isinstance(dd, DatadogSettings) and dd.api_key == "k-file"
    assert "cannot read the file" in _error("datadog", {"api_key_file": str(tmp_path / "missing")})


def test_otlp_endpoint_and_headers_from_otel_env(tmp_path: Path) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example.com:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret,x-tenant=t1",
    }
    otlp = parse_sink_settings("otlp", {"encoding": "json"}, env)
    assert isinstance(otlp, OtlpSettings)
    assert otlp.endpoint == "https://otel.example.com:4318/v1/metrics"
    assert dict(otlp.headers) == {"api-key": "s=cret", "x-tenant": "t1"}
    assert "s=cret" not in repr(otlp)
    specific = parse_sink_settings(
        "otlp", {}, {**env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://m.example.com/custom"}
    )
    assert isinstance(specific, OtlpSettings) and specific.endpoint == "https://m.example.com/custom"
    with pytest.raises(ConfigError) as info:
        parse_otlp_headers("good=1,novalue", name="OTEL_EXPORTER_OTLP_HEADERS")
    # The entry is not quoted: without its '=', it may be the key itself.
    assert "OTEL_EXPORTER_OTLP_HEADERS has a malformed entry (entry 2)" in info.value.message
    assert "novalue" not in info.value.message


def test_pushgateway_basic_auth_needs_a_user(tmp_path: Path) -> None:
    msg = _error("pushgateway", {"url": "http://127.0.0.1:9091"}, {"FLOW_PUSHGATEWAY_PASSWORD": "pw"})
    assert "health.sinks.pushgateway.username is missing" in msg
    gw = parse_sink_settings(
        "pushgateway", {"url": "http://127.0.0.1:9091/", "username": "u"}, {"FLOW_PUSHGATEWAY_PASSWORD": "pw"}
    )
    assert isinstance(gw, PushgatewaySettings) and (gw.url, gw.password) == ("http://127.0.0.1:9091", "pw")


def test_build_sinks_from_config_yaml(flow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (flow_home / "config.yaml").write_text(
        "health:\n  sinks:\n"
        "    pushgateway: {url: 'http://127.0.0.1:9091'}\n"
        "    datadog: {site: datadoghq.eu}\n"
        "    otlp: {encoding: json, enabled: false}\n"
        "    cloudwatch: {region: us-east-1}\n"
    )
    monkeypatch.setenv("DD_API_KEY", "k")
    registry = build_sinks(load_config(os.environ))
    assert registry.names() == ["pushgateway", "datadog", "cloudwatch"]
    kinds = [type(s) for s in registry]
    assert kinds == [PushgatewaySink, DatadogSink, CloudWatchSink]


def test_build_sinks_error_names_the_file(flow_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (flow_home / "config.yaml").write_text("health:\n  sinks:\n    datadog: {site: datadoghq.eu}\n")
    monkeypatch.delenv("DD_API_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        build_sinks(load_config(os.environ))
    assert info.value.message.startswith(
        f"{flow_home / 'config.yaml'}: health.sinks.datadog: no Datadog API key"
    )
    assert info.value.hint == "export DD_API_KEY=..."


def _hide_module(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == prefix or name.startswith(prefix + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_cloudwatch_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse_sink_settings("cloudwatch", {}, {})
    _hide_module(monkeypatch, "boto3")
    with pytest.raises(ConfigError) as info:
        build_sink(settings)
    assert (
        info.value.message
        == "health.sinks.cloudwatch: the CloudWatch sink needs boto3, which is not installed"
    )
    assert info.value.hint == "pip install 'flow-health[cloudwatch]'"
    # A dry run shows the calls without boto3.
    assert isinstance(build_sink(settings, require_secrets=False), CloudWatchSink)


def test_missing_otlp_extra_names_the_extra_and_json_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_module(monkeypatch, "opentelemetry")
    with pytest.raises(ConfigError) as info:
        build_sink(parse_sink_settings("otlp", {}, {}))
    assert "needs opentelemetry-proto" in info.value.message
    assert info.value.hint == "pip install 'flow-health[otlp]'"
    assert isinstance(build_sink(parse_sink_settings("otlp", {"encoding": "json"}, {})), OtlpSink)
