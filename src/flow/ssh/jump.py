"""ProxyJump: the jump hosts (bastions) a node is reached through, read from ssh_config.

asyncssh can follow `ProxyJump` by itself, but then every node opens its own connection to the
jump host (a sweep of 60 nodes is 60 logins there at once, and OpenSSH's default `MaxStartups
10:30:100` drops a third of them), and the hop's host key is checked against
`~/.ssh/known_hosts` alone, outside flow's policy (an unknown bastion key was refused as if it
had changed). flow therefore resolves the chain here, and `flow.ssh.connect` / `SSHPool` open
each hop themselves, under the same policy and known-hosts store as the nodes; the pool opens
one connection per hop and carries every node behind it as a channel through it (as `ssh -J`
with a control master does).

Resolution follows OpenSSH:
- the node's `ProxyJump` (first value obtained wins; `none` means direct) is a comma list
  `[user@]host[:port]` (or `ssh://[user@]host[:port]`), connected in order;
- the first hop's own ssh_config block applies to it, its `ProxyJump` included (so a bastion
  behind another bastion chains), up to `MAX_HOPS` hops; a loop is an error;
- a hop's `HostName`, `Port`, `User` and `IdentityFile` come from its own ssh_config block when
  the spec does not give them. A hop without an `IdentityFile` there is offered the node's keys
  (one key for the bastion and its nodes is the common case).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import asyncssh

from flow.errors import ConfigError, SSHError
from flow.ssh.params import SSHOptions, SSHParams

__all__ = ["MAX_HOPS", "jump_chain", "parse_proxy_jump"]

#: Most hops a chain may have (OpenSSH has no limit, but a longer chain is a config loop).
MAX_HOPS = 8

_ALLOWED = "[user@]host[:port] or ssh://[user@]host[:port], comma-separated, or none"


def parse_proxy_jump(value: str) -> tuple[tuple[str | None, str, int | None], ...]:
    """`a,user@b:2222` -> `((None, "a", None), ("user", "b", 2222))`; `none` -> `()`.

    Raises:
        ValueError: a hop that is not `[user@]host[:port]`; the message names it.
    """
    if value.strip().lower() == "none":
        return ()
    hops: list[tuple[str | None, str, int | None]] = []
    for raw in value.split(","):
        spec = raw.strip()
        if spec.startswith("ssh://"):
            spec = spec[len("ssh://"):].rstrip("/")
        user: str | None = None
        if "@" in spec:
            user, spec = spec.rsplit("@", 1)
        port: int | None = None
        host = spec
        if spec.startswith("["):  # [v6addr]:port, as OpenSSH writes it
            end = spec.find("]")
            rest = spec[end + 1:] if end >= 0 else ""
            if end < 0 or (rest and not rest.startswith(":")):
                raise ValueError(f"jump host {raw.strip()!r} is malformed; allowed: {_ALLOWED}")
            host, port_text = spec[1:end], (rest[1:] if rest else None)
        elif spec.count(":") == 1:
            host, port_text = spec.split(":")
        else:
            port_text = None
        if port_text is not None:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ValueError(f"jump host {raw.strip()!r} has port {port_text!r}; allowed: 1-65535")
            port = int(port_text)
        if not host or any(c.isspace() for c in host) or (user is not None and not user):
            raise ValueError(f"jump host {raw.strip()!r} is malformed; allowed: {_ALLOWED}")
        hops.append((user, host, port))
    return tuple(hops)


def _config_for(host: str, port: int | None, user: str | None, files: tuple[Path, ...]) -> Any:
    """asyncssh's view of ssh_config for this host (the same files it will read to connect)."""
    try:
        local_user = getpass.getuser()
    except (KeyError, OSError):
        local_user = ""
    return asyncssh.config.SSHClientConfig.load(
        None, [str(p) for p in files], False, False, False, local_user,
        user if user is not None else (), host, port if port is not None else (),
    )


def jump_chain(params: SSHParams, options: SSHOptions) -> tuple[SSHParams, ...]:
    """The hops to go through, outermost first, to reach `params`; `()` for a direct connection.

    Raises:
        SSHError: kind `error` for an unreadable ssh_config, a malformed `ProxyJump`, a chain
            longer than `MAX_HOPS` or one that loops; the message names the node and the value.
    """
    files = options.existing_config_files()
    if not files:
        return ()
    chain: list[SSHParams] = []
    seen = {(params.host, params.port, params.user)}
    target, label = params, params.label
    while True:
        try:
            config = _config_for(target.host, target.port, target.user, files)
        except asyncssh.ConfigParseError as exc:
            raise SSHError(f"{label}: cannot read ssh_config: {exc}", host=params.host, kind="error") from exc
        value = config.get("ProxyJump")
        if not isinstance(value, str):
            break
        try:
            specs = parse_proxy_jump(value)
        except ValueError as exc:
            raise SSHError(
                f"{label}: ssh_config ProxyJump {value!r} for {target.host}: {exc}",
                host=params.host, kind="error",
            ) from exc
        hops: list[SSHParams] = []
        for user, host, port in specs:
            if (host, port, user) in seen:
                names = " -> ".join(h.label for h in [*chain, target]) + f" -> {host}"
                raise SSHError(f"{label}: ProxyJump loops in ssh_config: {names}",
                               host=params.host, kind="error")
            seen.add((host, port, user))
            hops.append(_hop_params(user, host, port, params, files))
        chain[:0] = hops
        if len(chain) > MAX_HOPS:
            raise SSHError(
                f"{label}: ProxyJump chain longer than {MAX_HOPS} hops in ssh_config",
                host=params.host, kind="error",
            )
        # OpenSSH reaches the first hop with its own config, its ProxyJump included; later hops
        # are reached through the earlier ones whatever their config says.
        target = hops[0] if hops else target
        if not hops:
            break
    return tuple(chain)


def _hop_params(
    user: str | None, host: str, port: int | None, node: SSHParams, files: tuple[Path, ...]
) -> SSHParams:
    hop_config = _config_for(host, port, user, files)
    # Explicit keys would override the hop's IdentityFile in asyncssh: offer the node's only
    # where ssh_config names none for the hop.
    keys = node.key_paths if not hop_config.get("IdentityFile") else ()
    try:
        return SSHParams(host=host, port=port, user=user, key_paths=keys, use_agent=node.use_agent)
    except ConfigError as exc:
        raise SSHError(f"{node.label}: ssh_config ProxyJump: {exc}", host=node.host, kind="error") from exc
