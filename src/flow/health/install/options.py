"""What one install run is told: GPUd version and source, listen address, collector settings.

`InstallOptions` is built from a `Config` (`from_config`) and then narrowed per node
(`for_task`). It validates everything that ends up inside a generated script, so the script
generator can trust its input: values written to the env file may not contain quotes,
backslashes or control characters, and every option error names the CLI option.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flow import __version__
from flow.config import Config, validate_endpoint
from flow.errors import ConfigError

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

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
# Env-file values are single-quoted (valid for systemd's EnvironmentFile= and for POSIX sh),
# so a value may hold any printable character except the quote and the backslash.
_ENV_VALUE_RE = re.compile(r"^[^\x00-\x1f\x7f'\\]*$")


def default_package_spec() -> str:
    """The pip requirement that installs this very version of flow on the node."""
    return f"flow-health=={__version__}"


def listen_address(bind: str, port: int) -> str:
    """`127.0.0.1:15132`, or `[::1]:15132` for an IPv6 address."""
    try:
        if ipaddress.ip_address(bind).version == 6:
            return f"[{bind}]:{port}"
    except ValueError:
        pass
    return f"{bind}:{port}"


def read_token_file(path: Path, *, option: str = "--token-file") -> str:
    """The metrics auth token from a file that only its owner can read (mode 0600 or stricter).

    Raises:
        ConfigError: the file is missing, readable by others, or empty.
    """
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{option}={str(path)!r}: cannot read the token file: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{option}={str(path)!r} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"allowed: mode 0600 (chmod 600 {path})"
        )
    token = text.strip()
    if not token:
        raise ConfigError(f"{option}={str(path)!r} is empty; allowed: a file holding the token")
    return token


def _env_value(value: str | None, *, option: str, secret: bool = False) -> str | None:
    if value is None:
        return None
    if not _ENV_VALUE_RE.match(value):
        shown = option if secret else f"{option}={value!r}"
        raise ConfigError(
            f"{shown} holds a quote, backslash or control character; "
            "allowed: printable characters other than ' and \\"
        )
    return value


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
            _env_value(self.tarball, option="--gpud-tarball")
            if not self.tarball.startswith("/"):
                raise ConfigError(
                    f"--gpud-tarball={self.tarball!r} is not an absolute path; "
                    "allowed: an absolute path on the node"
                )
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
            if not _SHA256_RE.match(self.sha256):
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
    retention_days: int = 7
    compress_after_days: int = 1
    auth_token: str | None = field(default=None, repr=False)
    task_id: str | None = None
    task_name: str | None = None
    instance_type: str | None = None
    package: str | None = field(default_factory=default_package_spec)
    python: str = "python3"
    root: str = ""
    systemd: str = "auto"
    healthz_timeout_s: int = DEFAULT_HEALTHZ_TIMEOUT_S

    def __post_init__(self) -> None:
        if not _VERSION_RE.match(self.gpud_version):
            raise ConfigError(
                f"--gpud-version={self.gpud_version!r} is not a GPUd release tag; "
                "allowed: vMAJOR.MINOR.PATCH"
            )
        try:
            ipaddress.ip_address(self.gpud_bind)
        except ValueError:
            raise ConfigError(
                f"FLOW_GPUD_BIND={self.gpud_bind!r} is not an IP address; allowed: 127.0.0.1 or ::1"
            ) from None
        if not 1 <= self.gpud_port <= 65535:
            raise ConfigError(f"FLOW_GPUD_PORT={self.gpud_port!r} is out of range; allowed: 1-65535")
        if self.metrics_endpoint is not None:
            validate_endpoint(self.metrics_endpoint, name="--endpoint")
            _env_value(self.metrics_endpoint, option="--endpoint")
        if not self.metrics_interval > 0:
            raise ConfigError(f"--interval={self.metrics_interval!r} is out of range; allowed: seconds > 0")
        for option, number in (
            ("--batch-size", self.metrics_batch_size),
            ("--retention-days", self.retention_days),
            ("--compress-after-days", self.compress_after_days),
            ("--healthz-timeout", self.healthz_timeout_s),
        ):
            if number < 1:
                raise ConfigError(f"{option}={number!r} is out of range; allowed: an integer >= 1")
        if self.auth_token is not None and (
            not self.auth_token or any(c.isspace() for c in self.auth_token)
        ):
            # The value itself is a secret: never quote it back.
            raise ConfigError("the metrics auth token is empty or holds whitespace; allowed: one word")
        _env_value(self.auth_token, option="the metrics auth token", secret=True)
        _env_value(self.task_id, option="--task-id")
        _env_value(self.task_name, option="--task-name")
        _env_value(self.instance_type, option="--instance-type")
        if self.package is not None:
            if not self.package.strip() or "\n" in self.package:
                raise ConfigError(
                    f"--package={self.package!r} is empty; allowed: a pip requirement or a path, "
                    "or 'none' to skip the pip install"
                )
            _env_value(self.package, option="--package")
        if not self.python.strip():
            raise ConfigError(f"--python={self.python!r} is empty; allowed: a python3 command")
        if self.root and (not self.root.startswith("/") or self.root == "/"):
            raise ConfigError(
                f"--root={self.root!r} is not allowed; allowed: empty (the real root) or an "
                "absolute directory other than /"
            )
        if self.root:
            object.__setattr__(self, "root", posixpath.normpath(self.root))
            _env_value(self.root, option="--root")
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
        return f"https://{self.listen_address}/healthz"

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
    ) -> InstallOptions:
        """A copy carrying one task's identity (each node's env file names its own task), and
        the task's own GPUd port when its inventory entry sets one."""
        return replace(
            self,
            task_id=task_id,
            task_name=task_name,
            instance_type=instance_type,
            gpud_port=self.gpud_port if gpud_port is None else gpud_port,
        )
