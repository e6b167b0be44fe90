"""Settings: environment variables over `~/.flow/config.yaml` (section `health:`) over defaults.

One loader, `load_config()`, reads the file and the environment; everything else receives a
`Config`. Every value is validated where it is read, and a bad one raises `ConfigError` naming
the variable or key, the value (`!r`) and what is allowed. An empty environment variable counts
as unset, so `FLOW_METRICS_ENDPOINT=` in a unit file means "no endpoint".

Every number has a finite `NumberRange`: NaN and infinities are refused where they are read, so
that no later `timedelta()`, `asyncio.sleep()` or httpx timeout meets one (an infinite backoff
never retries; a NaN watch interval spins). The YAML files flow reads must be regular files
(opened without blocking, so a FIFO cannot hang a command), at most `MAX_CONFIG_BYTES`, UTF-8,
and nested less deeply than the parser's recursion allows.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from flow import grammar
from flow.errors import ConfigError, FlowError
from flow.fs import RefusedFile, read_regular
from flow.secrets import read_secret_file, redact_url, validate_token

__all__ = [
    "BATCH_SIZE_RANGE",
    "COMPRESS_AFTER_DAYS_RANGE",
    "DEFAULT_HOME",
    "DEFAULT_PENALTIES",
    "ENV_VARS",
    "FLUSH_INTERVAL_RANGE",
    "MAX_CONFIG_BYTES",
    "METRICS_INTERVAL_RANGE",
    "PORT_RANGE",
    "PROMETHEUS_STALE_AFTER_RANGE",
    "RETENTION_DAYS_RANGE",
    "SSH_CONNECT_TIMEOUT_RANGE",
    "Config",
    "HealthSettings",
    "NumberRange",
    "Thresholds",
    "is_loopback_host",
    "load_config",
    "parse_bool",
    "read_regular_file",
    "validate_endpoint",
]

DEFAULT_HOME = Path("~/.flow")
DEFAULT_GPUD_VERSION = "v0.5.1"
DEFAULT_GPUD_PORT = 15132
DEFAULT_GPUD_BIND = "127.0.0.1"
DEFAULT_METRICS_INTERVAL_S = 60.0
DEFAULT_BATCH_SIZE = 100
DEFAULT_METRICS_FLUSH_INTERVAL_S = 300.0
DEFAULT_RETENTION_DAYS = 7
DEFAULT_COMPRESS_AFTER_DAYS = 1

FAIL_ON_CHOICES = ("issues", "warnings", "never")
HOST_KEY_POLICIES = ("strict", "accept-new", "off")

#: Points each reason code takes off the score of 100 (counted once per node per code).
DEFAULT_PENALTIES: Mapping[str, int] = {
    "temp_critical": 45,
    "temp_warning": 25,
    "thermal_margin": 15,
    "util_low": 5,
    "util_high": 5,
    "mem_critical": 25,
    "mem_warning": 10,
    "throttle_hw": 25,
    "throttle_sw": 5,
    "ecc_uncorrected": 45,
    "ecc_corrected": 25,
    "ecc_aggregate_uncorrected": 10,
    "remap_failed": 50,
    "remap_pending": 25,
    "nvlink_errors": 15,
    "xid_fatal": 50,
    "xid_warning": 20,
    "xid_application": 5,
    "xid_info": 0,
    "component_unhealthy": 40,
    "component_degraded": 25,
    "component_unreadable": 5,
    "gpu_missing": 50,
    "gpu_silent": 25,
}

#: The most config.yaml may hold; a settings file is a few hundred bytes.
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class NumberRange:
    """The finite range a number read from outside (env, file, option) must fall in.

    `low_open` makes the low end exclusive (`hours > 0`); `integer` refuses fractions.
    """

    low: float
    high: float
    unit: str = ""
    integer: bool = False
    low_open: bool = False

    def describe(self) -> str:
        """What is allowed, as the tail of an error message: `1-3650 days (a whole number)`."""
        unit = f" {self.unit}" if self.unit else ""
        if self.integer:
            return f"{self.low:g}-{self.high:g}{unit} (a whole number)"
        if self.low_open:
            return f"more than {self.low:g} and at most {self.high:g}{unit}"
        return f"{self.low:g}-{self.high:g}{unit}"

    def contains(self, number: float) -> bool:
        # NaN fails every comparison, so it is outside every range.
        above = number > self.low if self.low_open else number >= self.low
        return above and number <= self.high

    def parse(self, value: object, *, name: str) -> float:
        """`value` (a YAML number or a string) as a float in range, else `ConfigError` naming `name`."""
        if self.integer:
            return float(self.parse_int(value, name=name))
        number: float
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or not _ascii(value):
            raise self._error(name, value, "is not a number")
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except ValueError:
            raise self._error(name, value, "is not a number") from None
        except OverflowError:
            # A YAML integer too large for a float (10**400).
            raise self._error(name, value, "is out of range") from None
        if not math.isfinite(number):
            raise self._error(name, value, "is not a finite number")
        if not self.contains(number):
            raise self._error(name, value, "is out of range")
        return number

    def parse_int(self, value: object, *, name: str) -> int:
        """`value` as a whole number in range, else `ConfigError` naming `name`."""
        number: int
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not _ascii(value):
            raise self._error(name, value, "is not a whole number")
        try:
            # int() of a string over 4,300 digits raises ValueError too: not a whole number.
            number = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise self._error(name, value, "is not a whole number") from None
        if not self.contains(number):
            raise self._error(name, value, "is out of range")
        return number

    def _error(self, name: str, value: object, problem: str) -> ConfigError:
        return ConfigError(f"{name}={_shown(value)} {problem}; allowed: {self.describe()}")


def _shown(value: object, limit: int = 40) -> str:
    """`repr(value)`, cut short: a 400-digit number or a 5,000-deep list would bury the message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 8]}... ({len(text)} characters)"


def _ascii(value: object) -> bool:
    # int() and float() also read other scripts' digits ("٣" is 3): a value that reads one way
    # to flow and another to every shell script or human looking at it is refused.
    return not isinstance(value, str) or value.isascii()


PORT_RANGE = NumberRange(1, 65535, integer=True)
METRICS_INTERVAL_RANGE = NumberRange(0.05, 86400, "seconds")
BATCH_SIZE_RANGE = NumberRange(1, 10000, "snapshots", integer=True)
#: 0 sends each sample as soon as it is stored (a backlog still goes in full batches).
FLUSH_INTERVAL_RANGE = NumberRange(0, 86400, "seconds")
RETENTION_DAYS_RANGE = NumberRange(1, 3650, "days", integer=True)
COMPRESS_AFTER_DAYS_RANGE = NumberRange(1, 3650, "days", integer=True)
SSH_CONNECT_TIMEOUT_RANGE = NumberRange(0.1, 3600, "seconds")
PROMETHEUS_STALE_AFTER_RANGE = NumberRange(1, 86400, "seconds")
DEFAULT_PROMETHEUS_STALE_AFTER_S = 300.0

_BOOL_TRUE = frozenset({"1", "true", "yes", "on", "y", "t", "enable", "enabled"})
_BOOL_FALSE = frozenset({"0", "false", "no", "off", "n", "f", "disable", "disabled"})


def parse_bool(value: object, *, name: str) -> bool:
    """Accept a YAML bool or the usual spellings (true/false, yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)):
        text = str(value).strip().lower()
        if text in _BOOL_TRUE:
            return True
        if text in _BOOL_FALSE:
            return False
    raise ConfigError(
        f"{name}={value!r} is not a boolean; allowed: true/false, yes/no, on/off, 1/0"
    )


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 written as literals, and nothing else.

    Names under `.localhost` are not loopback here: RFC 6761 only asks resolvers to treat them
    so, and one a resolver sends on to DNS may point anywhere, taking a bearer token over plain
    http with it. `localhost` itself is kept (every resolver answers it from /etc/hosts).
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_endpoint(value: str, *, name: str) -> str:
    """A metrics URL: http(s) with a host; plain http only to a loopback host; a Pushgateway
    URL's grouping path (`flow.grammar.pushgateway_group`) well formed."""
    # Shown redacted: the URL may carry user:password@ or an API key in its query.
    shown = redact_url(value)
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ConfigError(f"{name}={shown!r} is not a URL; allowed: https://host[:port]/path") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}={shown!r} is not a URL; allowed: https://host[:port]/path")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"{name}={shown!r} uses plain http to a remote host; allowed: https:// "
            "(plain http only to 127.0.0.1, ::1 or localhost)"
        )
    try:
        _ = parts.port
    except ValueError:
        # Neither the URL nor urllib's message: a password holding an unescaped '/', '?' or '#'
        # ends the host part early, and what follows its ':' reads as the port.
        raise ConfigError(
            f"{name} has a bad port (the URL is not shown: it may hold a password); allowed: "
            "https://host[:port]/path with a port 1-65535, and '/', '?', '#', '@' in a password "
            "written %2F, %3F, %23, %40"
        ) from None
    # A path holding /metrics/job is pushed to as a Pushgateway: its grouping path must parse.
    grammar.pushgateway_group(value, name=name)
    return value


def _number(limits: NumberRange) -> Callable[..., float]:
    def check(value: object, *, name: str) -> float:
        return limits.parse(value, name=name)

    return check


def _whole(limits: NumberRange) -> Callable[..., int]:
    def check(value: object, *, name: str) -> int:
        return limits.parse_int(value, name=name)

    return check


def _gpud_version(value: object, *, name: str) -> str:
    return grammar.gpud_version(str(value).strip(), name=name)


def _gpud_bind(value: object, *, name: str) -> str:
    # It lands in root scripts and GPUd's flags: flow.grammar holds it to its real grammar.
    return grammar.bind_address(str(value).strip(), name=name)


def _endpoint(value: object, *, name: str) -> str | None:
    if value is None:
        return None
    return validate_endpoint(str(value).strip(), name=name)


def _choice(choices: tuple[str, ...]) -> Callable[..., str]:
    def check(value: object, *, name: str) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"{name}={value!r} is not allowed; allowed: {', '.join(choices)}")
        return text

    return check


def _bool(value: object, *, name: str) -> bool:
    return parse_bool(value, name=name)


def _path(value: object, *, name: str) -> Path:
    text = str(value).strip()
    if not text:
        raise ConfigError(f"{name}={value!r} is empty; allowed: a file path")
    return Path(text).expanduser()


def _remote_path(value: object, *, name: str) -> str:
    text = str(value).strip()
    if not text.startswith("/") or any(c in text for c in "\n\0"):
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: an absolute path on the nodes")
    return text


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Scoring thresholds (°C, %) and the penalty each reason code takes off the score."""

    temp_warning_c: float = 75.0
    temp_critical_c: float = 85.0
    slowdown_margin_c: float = 5.0
    util_low_pct: float = 10.0
    util_high_pct: float = 95.0
    mem_warning_pct: float = 90.0
    mem_critical_pct: float = 95.0
    penalties: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))

    def __post_init__(self) -> None:
        pairs = (
            ("temp_warning_c", "temp_critical_c"),
            ("mem_warning_pct", "mem_critical_pct"),
            ("util_low_pct", "util_high_pct"),
        )
        for low, high in pairs:
            if getattr(self, low) >= getattr(self, high):
                raise ConfigError(
                    f"health.thresholds.{low}={getattr(self, low)!r} must be below "
                    f"health.thresholds.{high}={getattr(self, high)!r}"
                )
        for key, value in self.penalties.items():
            if key not in DEFAULT_PENALTIES:
                raise ConfigError(
                    f"health.thresholds.penalties.{key} is not a reason code; allowed: "
                    + ", ".join(sorted(DEFAULT_PENALTIES))
                )
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise ConfigError(
                    f"health.thresholds.penalties.{key}={value!r} is out of range; "
                    "allowed: an integer 0-100"
                )

    def penalty(self, code: str) -> int:
        return self.penalties.get(code, DEFAULT_PENALTIES.get(code, 0))

    @classmethod
    def from_mapping(cls, raw: object) -> Thresholds:
        """Build from the `health.thresholds` mapping of config.yaml, validating each key."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"health.thresholds={_shown(raw)} is not a mapping of threshold: value")
        allowed = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in allowed:
                raise ConfigError(
                    f"health.thresholds.{key} is not a known threshold; allowed: "
                    + ", ".join(sorted(allowed))
                )
            if key == "penalties":
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"health.thresholds.penalties={value!r} is not a mapping of code: points"
                    )
                kwargs[key] = {**DEFAULT_PENALTIES, **value}
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    f"health.thresholds.{key}={value!r} is not a number; allowed: 0-200"
                )
            if not 0 <= value <= 200:
                raise ConfigError(f"health.thresholds.{key}={value!r} is out of range; allowed: 0-200")
            kwargs[key] = float(value)
        return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    """The `health:` settings. `metrics_auth_token` never appears in `repr()`."""

    enabled: bool = True
    gpud_version: str = DEFAULT_GPUD_VERSION
    gpud_port: int = DEFAULT_GPUD_PORT
    gpud_bind: str = DEFAULT_GPUD_BIND
    metrics_endpoint: str | None = None
    metrics_interval: float = DEFAULT_METRICS_INTERVAL_S
    metrics_batch_size: int = DEFAULT_BATCH_SIZE
    retention_days: int = DEFAULT_RETENTION_DAYS
    compress_after_days: int = DEFAULT_COMPRESS_AFTER_DAYS
    metrics_auth_token: str | None = field(default=None, repr=False)
    metrics_auth_token_file: Path | None = None
    metrics_gzip: bool = True
    metrics_flush_interval: float = DEFAULT_METRICS_FLUSH_INTERVAL_S
    fail_on: str = "never"
    ssh_host_key_policy: str = "accept-new"
    ssh_connect_timeout: float = 10.0
    metrics_dir: Path | None = None
    node_metrics_dir: str = "/var/lib/flow/metrics"
    # Where `flow health --source prometheus` reads the fleet view (docs/configuration.md).
    prometheus_url: str | None = None
    prometheus_token_file: Path | None = None
    prometheus_stale_after: float = DEFAULT_PROMETHEUS_STALE_AFTER_S


@dataclass(frozen=True)
class _Setting:
    key: str
    env: str | None
    parse: Callable[..., Any]


# The ten documented variables come first; the rest are flow's own additions (docs/configuration.md).
_SETTINGS: tuple[_Setting, ...] = (
    _Setting("enabled", "FLOW_HEALTH_MONITORING", _bool),
    _Setting("gpud_version", "FLOW_GPUD_VERSION", _gpud_version),
    _Setting("gpud_port", "FLOW_GPUD_PORT", _whole(PORT_RANGE)),
    _Setting("gpud_bind", "FLOW_GPUD_BIND", _gpud_bind),
    _Setting("metrics_endpoint", "FLOW_METRICS_ENDPOINT", _endpoint),
    _Setting("metrics_interval", "FLOW_METRICS_INTERVAL", _number(METRICS_INTERVAL_RANGE)),
    _Setting("metrics_batch_size", "FLOW_METRICS_BATCH_SIZE", _whole(BATCH_SIZE_RANGE)),
    _Setting("retention_days", "FLOW_METRICS_RETENTION_DAYS", _whole(RETENTION_DAYS_RANGE)),
    _Setting("compress_after_days", "FLOW_METRICS_COMPRESS_AFTER_DAYS", _whole(COMPRESS_AFTER_DAYS_RANGE)),
    _Setting("metrics_auth_token_file", "FLOW_METRICS_AUTH_TOKEN_FILE", _path),
    _Setting("metrics_gzip", "FLOW_METRICS_GZIP", _bool),
    _Setting("metrics_flush_interval", "FLOW_METRICS_FLUSH_INTERVAL", _number(FLUSH_INTERVAL_RANGE)),
    _Setting("fail_on", "FLOW_FAIL_ON", _choice(FAIL_ON_CHOICES)),
    _Setting("ssh_host_key_policy", "FLOW_SSH_HOST_KEY_POLICY", _choice(HOST_KEY_POLICIES)),
    _Setting("ssh_connect_timeout", "FLOW_SSH_CONNECT_TIMEOUT", _number(SSH_CONNECT_TIMEOUT_RANGE)),
    _Setting("metrics_dir", "FLOW_METRICS_DIR", _path),
    _Setting("node_metrics_dir", "FLOW_NODE_METRICS_DIR", _remote_path),
    _Setting("prometheus_url", "FLOW_PROMETHEUS_URL", _endpoint),
    _Setting("prometheus_token_file", "FLOW_PROMETHEUS_TOKEN_FILE", _path),
    _Setting("prometheus_stale_after", "FLOW_PROMETHEUS_STALE_AFTER", _number(PROMETHEUS_STALE_AFTER_RANGE)),
)

#: The environment variables flow reads, in documentation order.
ENV_VARS: tuple[str, ...] = (
    *(s.env for s in _SETTINGS[:9] if s.env),
    "FLOW_METRICS_AUTH_TOKEN",
)

#: Keys of `health:` that hold structure rather than one value.
_SECTION_KEYS = ("thresholds", "sinks", "remediation")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything flow reads from the environment and config.yaml, validated."""

    home: Path
    config_file: Path
    health: HealthSettings = field(default_factory=HealthSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    sinks: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    # `health.remediation` as written; flow.health.remediate.policy.RemediationSettings
    # validates it when a remediation command reads it (as flow.health.sinks does `sinks`).
    remediation: Mapping[str, Any] = field(default_factory=dict)

    @property
    def metrics_dir(self) -> Path:
        return self.health.metrics_dir or self.home / "metrics"

    @property
    def tasks_file(self) -> Path:
        return self.home / "tasks.yaml"

    @property
    def known_hosts_file(self) -> Path:
        return self.home / "known_hosts"

    @property
    def monitoring_disabled_by(self) -> str | None:
        """None while health monitoring is on; else the setting that turned it off, written as
        the user would write it: `FLOW_HEALTH_MONITORING=false` or `health.enabled: false in FILE`."""
        if self.health.enabled:
            return None
        source = self.sources.get("enabled", "")
        if source.startswith("file "):
            return f"health.enabled: false in {source.removeprefix('file ')}"
        return "FLOW_HEALTH_MONITORING=false"

    def with_health(self, **changes: Any) -> Config:
        """A copy with some health settings replaced (CLI options override everything)."""
        return replace(self, health=replace(self.health, **changes))

    def effective(self) -> list[tuple[str, str | int | float | bool | None, str]]:
        """(setting, value, source) rows for `flow config show`, values typed as the settings
        hold them (a path as a string, an unset value as None); the token is redacted.

        `metrics_dir` shows the directory the store really uses, with the rule that chose it
        when nothing set it.
        """
        rows: list[tuple[str, str | int | float | bool | None, str]] = [
            ("home", str(self.home), self.sources.get("home", ""))]
        for setting in _SETTINGS:
            value = getattr(self.health, setting.key)
            source = self.sources.get(setting.key, "default")
            if setting.key in ("metrics_endpoint", "prometheus_url") and value is not None:
                value = redact_url(value)
            elif setting.key == "metrics_dir" and value is None:
                value, source = self.metrics_dir, "default: $FLOW_HOME/metrics"
            if isinstance(value, Path):
                value = str(value)
            rows.append((setting.key, value, source))
        token = self.health.metrics_auth_token
        rows.append(
            (
                "metrics_auth_token",
                None if token is None else "<redacted>",
                self.sources.get("metrics_auth_token", "default"),
            )
        )
        for key in ("temp_warning_c", "temp_critical_c", "mem_warning_pct", "mem_critical_pct",
                    "util_low_pct", "util_high_pct", "slowdown_margin_c"):
            rows.append(
                (f"thresholds.{key}", getattr(self.thresholds, key),
                 self.sources.get(f"thresholds.{key}", "default"))
            )
        return rows


def read_regular_file(
    path: Path, *, max_bytes: int, error: Callable[..., FlowError] = ConfigError
) -> str | None:
    """The UTF-8 text of `path`, or None when it does not exist.

    The file is opened with O_NONBLOCK and checked with fstat before anything is read, so a
    FIFO, a device or a directory is refused at once instead of blocking or streaming forever.

    Raises:
        `error` (with `path=`): not a regular file, unreadable, over `max_bytes`, or not UTF-8;
        the message names the file and what is allowed.
    """
    try:
        data = read_regular(path, max_bytes)
    except RefusedFile as refused:
        if refused.reason == "too_large":
            raise error(f"{path} is larger than {max_bytes} bytes; allowed: a file of at most "
                        f"{max_bytes} bytes", path=path) from None
        raise error(f"{path} is {refused.detail}, not a regular file; allowed: a regular file",
                    path=path) from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}", path=path) from None
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{path} line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; allowed: UTF-8 text",
            path=path,
        ) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    text = read_regular_file(path, max_bytes=MAX_CONFIG_BYTES)
    if text is None:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}", path=path) from None
    except RecursionError:
        # PyYAML's pure-Python composer recurses once per level: `[[[[...]]]]` 5,000 deep.
        raise ConfigError(
            f"{path}: YAML nested too deeply; allowed: a mapping a few levels deep", path=path
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping with a 'health:' section", path=path)
    health = data.get("health", {})
    if health is None:
        return {}
    if not isinstance(health, dict):
        raise ConfigError(f"{path}: 'health' must be a mapping, not {_shown(health)}", path=path)
    return health


def _read_token_file(path: Path, *, name: str) -> str:
    """The token from a regular 0600 file (flow.secrets states the rules); errors never quote it."""
    token = read_secret_file(path, name=name, what="token")
    return validate_token(token, source=f"{name}={str(path)!r}")


def load_config(
    env: Mapping[str, str] | None = None, *, config_file: Path | None = None
) -> Config:
    """Read config.yaml and the environment into a validated `Config`.

    Raises:
        ConfigError: a value, key or the file is bad; the message names it.
    """
    env = os.environ if env is None else env
    raw_home = env.get("FLOW_HOME") or str(DEFAULT_HOME)
    home = Path(raw_home).expanduser()
    sources: dict[str, str] = {s.key: "default" for s in _SETTINGS}
    sources["metrics_auth_token"] = "default"
    sources["home"] = "env FLOW_HOME" if env.get("FLOW_HOME") else "default"
    path = config_file or home / "config.yaml"
    file_values = _read_yaml(path)

    known = {s.key for s in _SETTINGS} | set(_SECTION_KEYS)
    if "metrics_auth_token" in file_values:
        raise ConfigError(
            f"{path}: health.metrics_auth_token is not read from config.yaml; allowed: "
            "FLOW_METRICS_AUTH_TOKEN or a 0600 file named by health.metrics_auth_token_file",
            path=path,
        )
    for key in file_values:
        if key not in known:
            raise ConfigError(
                f"{path}: health.{key} is not a known setting; allowed: "
                + ", ".join(sorted(known)),
                path=path,
            )

    values: dict[str, Any] = {}
    for setting in _SETTINGS:
        env_value = env.get(setting.env) if setting.env else None
        if env_value is not None and env_value.strip() != "":
            values[setting.key] = setting.parse(env_value, name=setting.env)
            sources[setting.key] = f"env {setting.env}"
        elif setting.key in file_values:
            value = file_values[setting.key]
            try:
                values[setting.key] = setting.parse(value, name=f"health.{setting.key}")
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc.message}", path=path) from None
            sources[setting.key] = f"file {path}"

    token = env.get("FLOW_METRICS_AUTH_TOKEN")
    if token is not None and token.strip():
        values["metrics_auth_token"] = validate_token(token.strip(), source="FLOW_METRICS_AUTH_TOKEN")
        sources["metrics_auth_token"] = "env FLOW_METRICS_AUTH_TOKEN"
    elif "metrics_auth_token_file" in values:
        from_env = sources["metrics_auth_token_file"].startswith("env")
        values["metrics_auth_token"] = _read_token_file(
            values["metrics_auth_token_file"],
            name="FLOW_METRICS_AUTH_TOKEN_FILE" if from_env else "health.metrics_auth_token_file",
        )
        sources["metrics_auth_token"] = f"file {values['metrics_auth_token_file']}"

    try:
        thresholds = Thresholds.from_mapping(file_values.get("thresholds"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", path=path) from None
    for key in (file_values.get("thresholds") or {}):
        sources[f"thresholds.{key}"] = f"file {path}"

    sinks = file_values.get("sinks") or {}
    if not isinstance(sinks, Mapping):
        raise ConfigError(f"{path}: health.sinks={_shown(sinks)} is not a mapping", path=path)
    remediation = file_values.get("remediation") or {}
    if not isinstance(remediation, Mapping):
        raise ConfigError(f"{path}: health.remediation={_shown(remediation)} is not a mapping", path=path)

    return Config(
        home=home,
        config_file=path,
        health=HealthSettings(**values),
        thresholds=thresholds,
        sinks=dict(sinks),
        sources=sources,
        remediation=dict(remediation),
    )
