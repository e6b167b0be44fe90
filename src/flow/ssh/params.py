"""Plain connection parameters: what to reach (`SSHParams`) and how (`SSHOptions`).

`SSHParams` names one node; `SSHOptions` holds what every connection of a sweep shares (host-key
policy, known-hosts files, ssh_config files, connect timeout). Neither knows anything of tasks.
A `None` field means "not given here": asyncssh then takes the value from `~/.ssh/config`, and
failing that its own default (port 22, the local user name, the default keys and the agent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from flow.config import HOST_KEY_POLICIES, Config
from flow.errors import ConfigError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_SSH_CONFIG",
    "DEFAULT_SSH_CONFIG_FILES",
    "DEFAULT_USER_KNOWN_HOSTS",
    "HOST_KEY_POLICIES",
    "SSH_ERROR_KINDS",
    "CommandResult",
    "SSHOptions",
    "SSHParams",
]

#: The `kind` of every SSHError flow.ssh raises; flow.ssh.errors documents each.
SSH_ERROR_KINDS = (
    "dns",
    "refused",
    "timeout",
    "auth",
    "host_key_changed",
    "host_key_unknown",
    "tunnel",
    "gpud_not_listening",
    "closed",
    "error",
)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
#: What OpenSSH's client reads: the user's file, then the system's (first value obtained wins).
DEFAULT_SSH_CONFIG_FILES = (DEFAULT_SSH_CONFIG, Path("/etc/ssh/ssh_config"))
DEFAULT_USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts")


@dataclass(frozen=True, kw_only=True)
class SSHParams:
    """One SSH endpoint. Hashable: the pool keys connections on it.

    Attributes:
        host: a host name, an address or a `~/.ssh/config` alias.
        port: TCP port; None lets ssh_config decide (else 22).
        user: login name; None lets ssh_config decide (else the local user).
        key_paths: private keys to offer; empty lets ssh_config/defaults decide.
        use_agent: also offer the keys of the SSH agent (`SSH_AUTH_SOCK`).
    """

    host: str
    port: int | None = None
    user: str | None = None
    key_paths: tuple[Path, ...] = ()
    use_agent: bool = True

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"ssh host={self.host!r} is not a host name; allowed: a name or address")
        if self.port is not None and (
            isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535
        ):
            raise ConfigError(f"ssh port={self.port!r} is out of range; allowed: 1-65535")

    @property
    def label(self) -> str:
        """`user@host:port` as far as known, for messages."""
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port is not None else text


@dataclass(frozen=True, kw_only=True)
class SSHOptions:
    """What every connection of a sweep shares.

    Attributes:
        host_key_policy: `strict` refuses unknown keys; `accept-new` records them in
            `known_hosts_file` on first contact; `off` checks nothing. A changed key is
            refused under both `strict` and `accept-new`.
        known_hosts_file: flow's own known-hosts file ($FLOW_HOME/known_hosts), read and
            appended to; None disables recording.
        user_known_hosts_files: read-only known-hosts files consulted as well.
        ssh_config_files: OpenSSH client config files honoured for aliases, HostName, User,
            Port, IdentityFile, ProxyJump...; missing ones are skipped; empty means none.
        connect_timeout_s: deadline for TCP connect + SSH handshake + authentication.
    """

    host_key_policy: str = "accept-new"
    known_hosts_file: Path | None = None
    user_known_hosts_files: tuple[Path, ...] = (DEFAULT_USER_KNOWN_HOSTS,)
    ssh_config_files: tuple[Path, ...] = DEFAULT_SSH_CONFIG_FILES
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.host_key_policy not in HOST_KEY_POLICIES:
            raise ConfigError(
                f"host_key_policy={self.host_key_policy!r} is not allowed; "
                f"allowed: {', '.join(HOST_KEY_POLICIES)}"
            )
        if not self.connect_timeout_s > 0:
            raise ConfigError(f"connect_timeout_s={self.connect_timeout_s!r} is out of range; allowed: > 0")

    @classmethod
    def from_config(cls, config: Config) -> SSHOptions:
        """The options the settings ask for: policy, timeout and $FLOW_HOME/known_hosts."""
        return cls(
            host_key_policy=config.health.ssh_host_key_policy,
            known_hosts_file=config.known_hosts_file,
            connect_timeout_s=config.health.ssh_connect_timeout,
        )

    def existing_config_files(self) -> tuple[Path, ...]:
        """The ssh_config files that exist (asyncssh fails on a missing one)."""
        return tuple(p.expanduser() for p in self.ssh_config_files if p.expanduser().is_file())


class CommandResult(NamedTuple):
    """A finished remote command. Unpacks as `(exit_status, stdout, stderr)`.

    `exit_status` is the remote exit code; 128 + N when the command died of signal N; 255 when
    the server reported neither (as OpenSSH's client does).
    """

    exit_status: int
    stdout: str
    stderr: str
