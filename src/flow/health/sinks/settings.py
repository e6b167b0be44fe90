"""Validation of `health.sinks:` in config.yaml, one frozen settings record per sink.

```yaml
health:
  sinks:
    pushgateway: {url: "https://push.example.com"}
    datadog: {site: datadoghq.eu}              # key from DD_API_KEY or api_key_file (0600)
    dd-staging: {type: datadog, site: us5.datadoghq.com}
    cloudwatch: {region: eu-west-1, namespace: Flow/Health}
    otlp: {endpoint: "https://otel.example.com:4318/v1/metrics", encoding: protobuf}
```
A section's name is the sink's name; its `type` defaults to the name. A bad key or value
raises `ConfigError` naming `health.sinks.<name>.<key>`, the value and what is allowed.
Secrets (Datadog API key, OTLP headers, Pushgateway password) never come from config.yaml:
from the environment, or from a file readable by its owner only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flow.config import parse_bool, validate_endpoint
from flow.errors import ConfigError
from flow.secrets import read_secret_file, validate_header_value, validate_password, validate_token

__all__ = [
    "DEFAULT_CLOUDWATCH_NAMESPACE",
    "DEFAULT_DATADOG_SITE",
    "DEFAULT_OTLP_ENDPOINT",
    "DEFAULT_PUSHGATEWAY_JOB",
    "DEFAULT_SINK_TIMEOUT_S",
    "SINK_TYPES",
    "CloudWatchSettings",
    "DatadogSettings",
    "OtlpSettings",
    "PushgatewaySettings",
    "RemoteWriteSettings",
    "SinkSettings",
    "parse_otlp_headers",
    "parse_sink_settings",
    "parse_sinks",
    "read_secret_file",
]

DEFAULT_SINK_TIMEOUT_S = 10.0
DEFAULT_PUSHGATEWAY_JOB = "flow-health"
DEFAULT_DATADOG_SITE = "datadoghq.com"
DEFAULT_CLOUDWATCH_NAMESPACE = "Flow/Health"
DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318/v1/metrics"
DEFAULT_OTLP_MAX_REQUEST_BYTES = 4 * 1024 * 1024
OTLP_ENCODINGS = ("protobuf", "json")

SINK_TYPES = ("cloudwatch", "datadog", "otlp", "pushgateway", "remote_write")

_SITE_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9.\-_/#:]{1,255}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_JOB_RE = re.compile(r"^\S{1,200}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Prometheus label names; "__" names are reserved for Prometheus itself.
_LABEL_NAME_RE = re.compile(r"^(?!__)[A-Za-z_][A-Za-z0-9_]{0,127}$")
# The vocabulary's own labels: an extra label must not shadow one of them.
_VOCABULARY_LABELS = frozenset({"task_id", "task_name", "node", "instance_type", "gpu", "uuid", "model",
                                "status", "code", "severity", "state", "reason", "type", "scope",
                                "xid_class", "mount", "gpud_version", "driver_version", "cuda_version",
                                "gpud_api", "result"})


@dataclass(frozen=True, kw_only=True)
class SinkSettings:
    """What every sink section has."""

    name: str
    type: str
    enabled: bool = True
    timeout_s: float = DEFAULT_SINK_TIMEOUT_S


@dataclass(frozen=True, kw_only=True)
class PushgatewaySettings(SinkSettings):
    """`grouping` holds the grouping labels after `job` that every node's group carries (from
    a FLOW_METRICS_ENDPOINT that is a Pushgateway URL); `task_id` and `node` follow them."""

    url: str
    job: str = DEFAULT_PUSHGATEWAY_JOB
    grouping: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class RemoteWriteSettings(SinkSettings):
    """Prometheus remote write: `labels` are added to every series (say `cluster`); `token`
    goes as `Authorization: Bearer`, `username`/`password` as basic auth."""

    url: str
    labels: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class DatadogSettings(SinkSettings):
    site: str = DEFAULT_DATADOG_SITE
    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False)
    tags: tuple[str, ...] = ()
    gzip: bool = True

    @property
    def base_url(self) -> str:
        return (self.endpoint or f"https://api.{self.site}").rstrip("/")


@dataclass(frozen=True, kw_only=True)
class CloudWatchSettings(SinkSettings):
    namespace: str = DEFAULT_CLOUDWATCH_NAMESPACE
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    storage_resolution: int = 60


@dataclass(frozen=True, kw_only=True)
class OtlpSettings(SinkSettings):
    endpoint: str = DEFAULT_OTLP_ENDPOINT
    encoding: str = "protobuf"
    gzip: bool = True
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    service_name: str = "flow-health"
    max_request_bytes: int = DEFAULT_OTLP_MAX_REQUEST_BYTES


class _Section:
    """One `health.sinks.<name>` mapping, read key by key with errors that name the key."""

    def __init__(self, name: str, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        self.name = name
        self.raw = raw
        for key in raw:
            if key not in allowed:
                raise ConfigError(f"{self.key(str(key))} is not a known key; allowed: " + ", ".join(allowed))

    def key(self, key: str) -> str:
        return f"health.sinks.{self.name}.{key}"

    def bad(self, key: str, value: object, allowed: str) -> ConfigError:
        return ConfigError(f"{self.key(key)}={value!r} is not allowed; allowed: {allowed}")

    def text(
        self,
        key: str,
        default: str | None,
        check: Callable[[str], bool] | None = None,
        allowed: str = "a string",
    ) -> str | None:
        if key not in self.raw or self.raw[key] is None:
            return default
        value = self.raw[key]
        if not isinstance(value, str) or not value.strip() or (check and not check(value.strip())):
            raise self.bad(key, value, allowed)
        return value.strip()

    def url(self, key: str, default: str | None) -> str | None:
        value = self.text(key, None, allowed="a URL")
        if value is None:
            return default
        if urlsplit(value).password is not None:
            # Never quote the value: it holds a password.
            raise ConfigError(
                f"{self.key(key)} holds a password, which is not read from config.yaml; "
                "allowed: a URL without user:password@ (see the sink's secret settings)"
            )
        return validate_endpoint(value, name=self.key(key))

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
            raise self.bad(key, value, f"a number of seconds > {low:g} and <= {high:g}")
        return float(value)

    def integer(
        self, key: str, default: int, choices: tuple[int, ...] | None = None, low: int = 1, high: int = 2**31
    ) -> int:
        value = self.raw.get(key)
        if value is None:
            return default
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and choices is not None:
            ok = value in choices
        elif ok:
            ok = low <= value <= high
        if not ok:
            allowed = " or ".join(map(str, choices)) if choices else f"an integer {low}-{high}"
            raise self.bad(key, value, allowed)
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        return default if value is None else parse_bool(value, name=self.key(key))

    def path(self, key: str) -> Path | None:
        value = self.text(key, None, allowed="a file path")
        return Path(value).expanduser() if value else None


def _secret(section: _Section, env: Mapping[str, str], variable: str, key: str, what: str,
            check: Callable[[str, str], str], *, strip: bool = False) -> str | None:
    """A secret from the environment `variable`, else from the 0600 file named by `key`, checked by
    `check(value, source)` (which names the source, never the value); None when neither is set."""
    raw = env.get(variable) or ""
    value = (raw.strip() if strip else raw) or None
    if value is not None:
        return check(value, variable)
    path = section.path(key)
    if path is None:
        return None
    where = section.key(key)
    return check(read_secret_file(path, name=where, what=what), f"{where}={str(path)!r}")


def _token(what: str) -> Callable[[str, str], str]:
    return lambda value, source: validate_token(value, source=source, what=what)


def _password(value: str, source: str) -> str:
    return validate_password(value, source=source)


def _common(section: _Section, type_: str) -> dict[str, Any]:
    return {
        "name": section.name,
        "type": type_,
        "enabled": section.boolean("enabled", True),
        "timeout_s": section.number("timeout", DEFAULT_SINK_TIMEOUT_S, 0.0, 600.0),
    }


_COMMON_KEYS = ("type", "enabled", "timeout")


def _pushgateway(section: _Section, env: Mapping[str, str]) -> PushgatewaySettings:
    url = section.url("url", None)
    if url is None:
        raise ConfigError(
            f"{section.key('url')} is missing; allowed: the Pushgateway's URL, e.g. http://127.0.0.1:9091"
        )
    password = _secret(section, env, "FLOW_PUSHGATEWAY_PASSWORD", "password_file", "password", _password)
    username = section.text("username", None)
    if password is not None and username is None:
        raise ConfigError(
            f"{section.key('username')} is missing; allowed: the basic-auth user that goes with the password"
        )
    return PushgatewaySettings(
        **_common(section, "pushgateway"),
        url=url.rstrip("/"),
        job=section.text(
            "job", DEFAULT_PUSHGATEWAY_JOB, lambda v: bool(_JOB_RE.match(v)), "a job name without spaces"
        )
        or DEFAULT_PUSHGATEWAY_JOB,
        username=username,
        password=password,
    )


def _remote_write(section: _Section, env: Mapping[str, str]) -> RemoteWriteSettings:
    url = section.url("url", None)
    if url is None:
        raise ConfigError(f"{section.key('url')} is missing; allowed: the receiver's remote-write URL, "
                          "e.g. https://prometheus:9090/api/v1/write")
    raw_labels = section.raw.get("labels") or {}
    if not isinstance(raw_labels, Mapping):
        raise section.bad("labels", raw_labels, "a mapping of label names to values")
    labels: list[tuple[str, str]] = []
    for name, value in raw_labels.items():
        if not isinstance(name, str) or not _LABEL_NAME_RE.match(name) or name in _VOCABULARY_LABELS:
            raise ConfigError(f"{section.key('labels')} has the label name {str(name)[:60]!r}; allowed: "
                              "[A-Za-z_][A-Za-z0-9_]*, not starting with __ and not one of flow's own labels")
        if not isinstance(value, str | int | float) or isinstance(value, bool) or len(str(value)) > 1024:
            raise ConfigError(f"{section.key('labels')}.{name} is not a short text; allowed: a string "
                              "of at most 1024 characters")
        labels.append((name, str(value)))
    token = _secret(section, env, "FLOW_REMOTE_WRITE_TOKEN", "token_file", "token", _token("token"))
    password = _secret(section, env, "FLOW_REMOTE_WRITE_PASSWORD", "password_file", "password", _password)
    username = section.text("username", None)
    if password is not None and username is None:
        raise ConfigError(f"{section.key('username')} is missing; allowed: the basic-auth user that "
                          "goes with the password")
    return RemoteWriteSettings(**_common(section, "remote_write"), url=url, labels=tuple(sorted(labels)),
                               username=username, password=password, token=token)


def _datadog(section: _Section, env: Mapping[str, str]) -> DatadogSettings:
    site_default = (env.get("DD_SITE") or "").strip().lower() or DEFAULT_DATADOG_SITE
    if not _SITE_RE.match(site_default):
        raise ConfigError(
            f"DD_SITE={site_default!r} is not allowed; allowed: a Datadog site such as "
            "datadoghq.com, datadoghq.eu, us5.datadoghq.com"
        )
    site = section.text(
        "site",
        site_default,
        lambda v: bool(_SITE_RE.match(v.lower())),
        "a Datadog site such as datadoghq.com, datadoghq.eu, us5.datadoghq.com",
    )
    api_key = _secret(section, env, "DD_API_KEY", "api_key_file", "API key", _token("API key"),
                      strip=True)
    tags = section.raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise section.bad("tags", tags, 'a list of "key:value" strings')
    return DatadogSettings(
        **_common(section, "datadog"),
        site=(site or DEFAULT_DATADOG_SITE).lower(),
        endpoint=section.url("endpoint", None),
        api_key=api_key,
        tags=tuple(t.strip() for t in tags),
        gzip=section.boolean("gzip", True),
    )


def _cloudwatch(section: _Section, env: Mapping[str, str]) -> CloudWatchSettings:
    namespace = section.text(
        "namespace",
        DEFAULT_CLOUDWATCH_NAMESPACE,
        lambda v: bool(_NAMESPACE_RE.match(v)) and not v.startswith("AWS/"),
        "1-255 of A-Z a-z 0-9 . - _ / # :, not starting with AWS/",
    )
    return CloudWatchSettings(
        **_common(section, "cloudwatch"),
        namespace=namespace or DEFAULT_CLOUDWATCH_NAMESPACE,
        region=section.text(
            "region", None, lambda v: bool(_REGION_RE.match(v)), "an AWS region such as us-east-1"
        ),
        endpoint_url=section.url("endpoint_url", None),
        profile=section.text("profile", None),
        storage_resolution=section.integer("storage_resolution", 60, choices=(1, 60)),
    )


def parse_otlp_headers(text: str, *, name: str) -> dict[str, str]:
    """Parse OTel's `key1=value1,key2=value2` header list (values URL-encoded)."""
    headers: dict[str, str] = {}
    for number, item in enumerate(text.split(","), 1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key.strip())
        if not sep or not _HEADER_NAME_RE.match(key):
            # Never quote the entry: without its '=' the whole of it may be the API key.
            raise ConfigError(
                f"{name} has a malformed entry (entry {number}); allowed: key1=value1,key2=value2 "
                "with header names of letters, digits and !#$%&'*+.^_`|~-"
            )
        headers[key] = validate_header_value(unquote(value.strip()), source=f"{name}, header {key!r}")
    return headers


def _otlp(section: _Section, env: Mapping[str, str]) -> OtlpSettings:
    endpoint = DEFAULT_OTLP_ENDPOINT
    if env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        endpoint = validate_endpoint(
            env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"].strip(), name="OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
        )
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        # The spec: the generic variable is a base URL, the signal path is appended.
        base = validate_endpoint(
            env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip(), name="OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        endpoint = base.rstrip("/") + "/v1/metrics"
    endpoint = section.url("endpoint", None) or endpoint
    headers: dict[str, str] = {}
    for var in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"):
        if env.get(var):
            headers.update(parse_otlp_headers(env[var], name=var))
    headers_file = section.path("headers_file")
    if headers_file is not None:
        headers.update(
            parse_otlp_headers(
                read_secret_file(headers_file, name=section.key("headers_file"), what="headers"),
                name=f"{section.key('headers_file')}={str(headers_file)!r}",
            )
        )
    return OtlpSettings(
        **_common(section, "otlp"),
        endpoint=endpoint,
        encoding=section.text(
            "encoding", "protobuf", lambda v: v in OTLP_ENCODINGS, " or ".join(OTLP_ENCODINGS)
        )
        or "protobuf",
        gzip=section.boolean("gzip", True),
        headers=headers,
        service_name=section.text("service_name", "flow-health") or "flow-health",
        max_request_bytes=section.integer(
            "max_request_bytes", DEFAULT_OTLP_MAX_REQUEST_BYTES, low=1024, high=1024 * 1024 * 1024
        ),
    )


_PARSERS: dict[str, tuple[tuple[str, ...], Callable[[_Section, Mapping[str, str]], SinkSettings]]] = {
    "pushgateway": (("url", "job", "username", "password_file"), _pushgateway),
    "datadog": (("site", "endpoint", "api_key_file", "tags", "gzip"), _datadog),
    "cloudwatch": (("namespace", "region", "endpoint_url", "profile", "storage_resolution"), _cloudwatch),
    "otlp": (("endpoint", "encoding", "gzip", "headers_file", "service_name", "max_request_bytes"), _otlp),
    "remote_write": (("url", "labels", "username", "password_file", "token_file"), _remote_write),
}

_SECRET_KEYS = {
    "api_key": "DD_API_KEY or a 0600 file named by api_key_file",
    "password": "FLOW_PUSHGATEWAY_PASSWORD or a 0600 file named by password_file",
    "headers": "OTEL_EXPORTER_OTLP_HEADERS or a 0600 file named by headers_file",
    "token": "FLOW_REMOTE_WRITE_TOKEN or a 0600 file named by token_file",
}


def parse_sink_settings(name: str, raw: object, env: Mapping[str, str] | None = None) -> SinkSettings:
    """Validate one `health.sinks.<name>` section.

    Raises:
        ConfigError: naming `health.sinks.<name>.<key>`, the value and what is allowed.
    """
    env = os.environ if env is None else env
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"health.sinks.{name}={raw!r} is not a mapping; allowed: key: value settings")
    type_ = raw.get("type", name)
    if type_ not in _PARSERS:
        where = f"health.sinks.{name}.type" if "type" in raw else f"health.sinks.{name}"
        shown = type_ if "type" in raw else name
        raise ConfigError(
            f"{where}={shown!r} is not a sink type; allowed: "
            + ", ".join(SINK_TYPES)
            + (" (or set type: to one of them)" if "type" not in raw else "")
        )
    for key, where in _SECRET_KEYS.items():
        if key in raw:
            raise ConfigError(
                f"health.sinks.{name}.{key} is a secret and is not read from config.yaml; allowed: {where}"
            )
    keys, parser = _PARSERS[type_]
    section = _Section(name, raw, _COMMON_KEYS + keys)
    return parser(section, env)


def parse_sinks(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> list[SinkSettings]:
    """Validate every section of `health.sinks`, in file order (disabled ones included)."""
    return [parse_sink_settings(str(name), section, env) for name, section in raw.items()]
