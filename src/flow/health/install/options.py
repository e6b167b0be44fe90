"""What one install run is told: GPUd version and source, listen address, collector settings.

`InstallOptions` is built from a `Config` (`from_config`) and then narrowed per node
(`for_task`). It checks every value that ends up inside a generated script against that value's
grammar (`flow.grammar`): values written to the env file may not contain quotes, backslashes or
control characters, and every option error names the CLI option or variable. The generators
quote each value all the same (`shell.py`).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flow import __version__, grammar
from flow.config import FLUSH_INTERVAL_RANGE, Config, validate_endpoint
from flow.errors import ConfigError
from flow.secrets import read_secret_file, validate_token

__all__ = [
    "DEFAULT_HEALTHZ_TIMEOUT_S",
    "GPUD_INSTALLER_URL",
    "SYSTEMD_MODES",
    "GpudSource",
    "InstallOptions",
    "default_package_spec",
    "listen_address",
    "read_token_file",
]

GPUD_INSTALLER_URL = "https://pkg.gpud.dev/install.sh"
#: `auto` looks for a running systemd (/run/systemd/system); `yes`/`no` force the choice.
SYSTEMD_MODES = ("auto", "yes", "no")
DEFAULT_HEALTHZ_TIMEOUT_S = 60

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def default_package_spec() -> str:
    """The pip requirement that installs this very version of flow on the node."""
    return f"flow-health=={__version__}"


def listen_address(bind: str, port: int) -> str:
    """`127.0.0.1:15132`, or `[::1]:15132` for an IPv6 address (`[::1%lo]:15132` with a scope)."""
    try:
        if ipaddress.ip_address(bind).version == 6:
            return f"[{bind}]:{port}"
    except ValueError:
        pass
    return f"{bind}:{port}"


def read_token_file(path: Path, *, option: str = "--token-file") -> str:
    """The metrics auth token from a regular file that only its owner can read (0600 or stricter).

    Raises:
        ConfigError: the file breaks a rule of `flow.secrets.read_secret_file`, or the token is
            not a valid bearer token; the message names `option` and the path, never the token.
    """
    token = read_secret_file(path, name=option, what="token")
    return validate_token(token, source=f"{option}={str(path)!r}")


def _string(value: object, *, option: str, secret: bool = False) -> str:
    # Library callers bypass the CLI's types: a non-string is a clear error, never a TypeError.
    if not isinstance(value, str):
        shown = option if secret else f"{option}={value!r}"
        raise ConfigError(f"{shown} is a {type(value).__name__}; allowed: a string")
    return value


def _env_value(value: object, *, option: str, secret: bool = False) -> str | None:
    if value is None:
        return None
    return grammar.text(_string(value, option=option, secret=secret), name=option, secret=secret)


@dataclass(frozen=True, kw_only=True)
class GpudSource:
    """Where the node gets the GPUd binary.

    Neither `tarball` nor `mirror`: the official installer (needs the internet). `tarball`:
    a path *on the node* to `gpud_<ver>_linux_<arch>.tgz`, or to a directory holding such
    tarballs (picked by the node's architecture). `mirror`: a URL; `{version}`, `{arch}` and
    `{file}` are substituted, and without `{file}` the tarball name is appended.
    `sha256`, when set, must match the tarball or nothing is installed.
    """

    tarball: str | None = None
    mirror: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.tarball is not None and self.mirror is not None:
            raise ConfigError(
                f"--gpud-tarball={self.tarball!r} and --gpud-mirror={self.mirror!r} are both set; "
                "allowed: one of them"
            )
        if self.tarball is not None:
            grammar.absolute_path(_string(self.tarball, option="--gpud-tarball"), name="--gpud-tarball")
        if self.mirror is not None:
            _env_value(self.mirror, option="--gpud-mirror")
            parts = urlsplit(self.mirror)
            if parts.scheme not in ("http", "https", "file") or (
                parts.scheme != "file" and not parts.hostname
            ):
                raise ConfigError(
                    f"--gpud-mirror={self.mirror!r} is not a URL; allowed: https://host/path "
                    "(with optional {version}, {arch}, {file})"
                )
        if self.sha256 is not None:
            if not isinstance(self.sha256, str) or not _SHA256_RE.fullmatch(self.sha256):
                raise ConfigError(
                    f"--gpud-sha256={self.sha256!r} is not a SHA-256 digest; allowed: 64 hex digits"
                )
            if self.kind == "installer":
                raise ConfigError(
                    "--gpud-sha256 needs --gpud-tarball or --gpud-mirror: the official installer "
                    "picks its own file"
                )
            object.__setattr__(self, "sha256", self.sha256.lower())

    @property
    def kind(self) -> str:
        """`installer`, `tarball` or `mirror`."""
        if self.tarball is not None:
            return "tarball"
        if self.mirror is not None:
            return "mirror"
        return "installer"


@dataclass(frozen=True, kw_only=True)
class InstallOptions:
    """Everything a generated script needs. `auth_token` never appears in `repr()`.

    `package=None` skips the collector's pip install (the venv is left as it is). `root` is
    baked into the script as the default of `$FLOW_ROOT`; `systemd` as `$FLOW_SYSTEMD`.
    """

    enabled: bool = True
    gpud_version: str = "v0.5.1"
    gpud_bind: str = "127.0.0.1"
    gpud_port: int = 15132
    gpud_source: GpudSource = field(default_factory=GpudSource)
    metrics_endpoint: str | None = None
    metrics_interval: float = 60.0
    metrics_batch_size: int = 100
    metrics_flush_interval: float = 300.0
    retention_days: int = 7
    compress_after_days: int = 1
    auth_token: str | None = field(default=None, repr=False)
    task_id: str | None = None
    task_name: str | None = None
    instance_type: str | None = None
    # The task's `gpus:` (None: the collector takes the instance type's count).
    expected_gpus: int | None = None
    package: str | None = field(default_factory=default_package_spec)
    python: str = "python3"
    root: str = ""
    systemd: str = "auto"
    healthz_timeout_s: int = DEFAULT_HEALTHZ_TIMEOUT_S

    def __post_init__(self) -> None:
        # Every value below lands in a root script or file: each is held to its grammar here,
        # and the generators quote it all the same.
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"FLOW_HEALTH_MONITORING={self.enabled!r} is not allowed; allowed: true, false")
        grammar.gpud_version(_string(self.gpud_version, option="--gpud-version"), name="--gpud-version")
        grammar.bind_address(_string(self.gpud_bind, option="FLOW_GPUD_BIND"), name="FLOW_GPUD_BIND")
        grammar.port(self.gpud_port, name="FLOW_GPUD_PORT")
        if self.metrics_endpoint is not None:
            # As a secret: the URL may carry user:password@ or an API key.
            _env_value(self.metrics_endpoint, option="--endpoint", secret=True)
            validate_endpoint(self.metrics_endpoint, name="--endpoint")
        grammar.finite_positive(self.metrics_interval, name="--interval", unit=" (seconds)")
        FLUSH_INTERVAL_RANGE.parse(self.metrics_flush_interval, name="FLOW_METRICS_FLUSH_INTERVAL")
        for option, number in (
            ("--batch-size", self.metrics_batch_size),
            ("--retention-days", self.retention_days),
            ("--compress-after-days", self.compress_after_days),
            ("--healthz-timeout", self.healthz_timeout_s),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ConfigError(f"{option}={number!r} is out of range; allowed: an integer >= 1")
        if self.auth_token is not None and (
            not isinstance(self.auth_token, str)
            or not self.auth_token
            or any(c.isspace() for c in self.auth_token)
        ):
            # The value itself is a secret: never quote it back.
            raise ConfigError("the metrics auth token is empty or holds whitespace; allowed: one word")
        _env_value(self.auth_token, option="the metrics auth token", secret=True)
        if self.task_id is not None:
            grammar.identifier(_string(self.task_id, option="--task-id"), name="--task-id")
        _env_value(self.task_name, option="--task-name")
        _env_value(self.instance_type, option="--instance-type")
        if self.expected_gpus is not None and (
            isinstance(self.expected_gpus, bool) or not isinstance(self.expected_gpus, int)
            or not 0 <= self.expected_gpus <= 1024
        ):
            raise ConfigError(f"--expected-gpus={self.expected_gpus!r} is out of range; allowed: "
                              "an integer 0-1024")
        if self.package is not None:
            _env_value(self.package, option="--package")
            if not self.package.strip():
                raise ConfigError(
                    f"--package={self.package!r} is empty; allowed: a pip requirement or a path, "
                    "or 'none' to skip the pip install"
                )
            if self.package.startswith("-"):
                # pip would read it as an option (--index-url=...), not as what to install.
                raise ConfigError(
                    f"--package={self.package!r} starts with '-'; allowed: a pip requirement or "
                    "a path, or 'none' to skip the pip install"
                )
        if not _string(self.python, option="--python").strip():
            raise ConfigError(f"--python={self.python!r} is empty; allowed: a python3 command")
        grammar.command(self.python, name="--python")
        _env_value(self.root, option="--root")
        if self.root and (not self.root.startswith("/") or self.root == "/"):
            raise ConfigError(
                f"--root={self.root!r} is not allowed; allowed: empty (the real root) or an "
                "absolute directory other than /"
            )
        if self.root:
            object.__setattr__(self, "root", posixpath.normpath(self.root))
        if self.systemd not in SYSTEMD_MODES:
            raise ConfigError(
                f"--systemd={self.systemd!r} is not allowed; allowed: {', '.join(SYSTEMD_MODES)}"
            )

    @property
    def listen_address(self) -> str:
        """GPUd's `--listen-address` value."""
        return listen_address(self.gpud_bind, self.gpud_port)

    @property
    def healthz_url(self) -> str:
        """GPUd's /healthz; an IPv6 scope's `%` is written `%25`, as URLs spell it (RFC 6874)."""
        return f"https://{self.listen_address.replace('%', '%25')}/healthz"

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> InstallOptions:
        """Defaults from the `health:` settings; `overrides` (CLI options) win.

        Raises:
            ConfigError: an override is not allowed; the message names its option.
        """
        health = config.health
        values: dict[str, Any] = {
            "enabled": health.enabled,
            "gpud_version": health.gpud_version,
            "gpud_bind": health.gpud_bind,
            "gpud_port": health.gpud_port,
            "metrics_endpoint": health.metrics_endpoint,
            "metrics_interval": health.metrics_interval,
            "metrics_batch_size": health.metrics_batch_size,
            "metrics_flush_interval": health.metrics_flush_interval,
            "retention_days": health.retention_days,
            "compress_after_days": health.compress_after_days,
            "auth_token": health.metrics_auth_token,
        }
        values.update(overrides)
        return cls(**values)

    def for_task(
        self,
        *,
        task_id: str | None,
        task_name: str | None,
        instance_type: str | None,
        gpud_port: int | None = None,
        expected_gpus: int | None = None,
    ) -> InstallOptions:
        """A copy carrying one task's identity (each node's env file names its own task), the
        task's own GPUd port when its inventory entry sets one, and its GPU count when it sets
        one (`gpus:`), so the node's collector knows how many GPUs it should see."""
        return replace(
            self,
            task_id=task_id,
            task_name=task_name,
            instance_type=instance_type,
            gpud_port=self.gpud_port if gpud_port is None else gpud_port,
            expected_gpus=expected_gpus,
        )
