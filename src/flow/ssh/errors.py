"""The edge where asyncssh and OS errors become `SSHError` with a `kind`.

Every kind has its own readable message, so a fleet table can say *why* a node is unreachable:

| kind | when |
|---|---|
| dns | the host name does not resolve |
| refused | TCP connection refused (nothing listens on the SSH port) |
| timeout | no connect, banner, handshake or authentication within the deadline |
| auth | every key was refused, or a key file is unusable |
| host_key_changed | the server's key differs from a recorded one (or is revoked) |
| host_key_unknown | the key is not recorded and the policy is `strict` |
| tunnel | a port forward or channel could not be opened |
| gpud_not_listening | the forward's remote port is closed (GPUd not installed or not running) |
| closed | the server closed or reset the connection |
| error | anything else (unreachable network, bad ssh_config, protocol failure) |

What the server says (a disconnect or refusal reason, an exception's text) is the node's text,
not ours: it goes into a message only through `_said` (`flow.text.clean_text`), so a reason
carrying terminal escapes cannot retitle or clear the operator's terminal where it is shown.

Behind a jump host (ProxyJump), a failure of the hop keeps its kind and is reported for every
node behind it as `<node> via jump host <hop>: <the hop's message>` (`via_jump_error`); a hop
that cannot reach the node gives `refused`, `tunnel` or `error` naming both
(`map_jump_channel_error`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import asyncssh

from flow.errors import SSHError
from flow.ssh.known_hosts import HostKeyCheck, fingerprint, lookup_name
from flow.ssh.params import SSH_ERROR_KINDS, SSHParams
from flow.text import clean_text

__all__ = [
    "SSH_ERROR_KINDS",
    "map_channel_error",
    "map_connect_error",
    "map_jump_channel_error",
    "map_session_error",
    "via_jump_error",
]


def _said(value: object) -> str:
    """Text the node (or its network) put in an exception, cleaned for a message."""
    return clean_text(str(value))


def _host_key_error(label: str, host: str, check: HostKeyCheck | None, reason: str) -> SSHError:
    if check is None or check.verdict is None:
        # asyncssh refused on its own: a revoked key or an untrusted certificate authority.
        return SSHError(
            f"{label}: host key refused: {_said(reason)}",
            host=host,
            kind="host_key_changed",
            hint="check the @revoked / @cert-authority lines of your known_hosts files",
        )
    name = lookup_name(check.host or host, check.port)
    presented = (
        f"{check.presented.get_algorithm()} {fingerprint(check.presented)}" if check.presented else "a key"
    )
    if check.verdict == "changed":
        old = check.offending
        where = old.where if old is not None else "a known_hosts file"
        old_fp = f"{old.key.get_algorithm()} {fingerprint(old.key)}" if old is not None else "another key"
        path = old.path if old is not None else "~/.ssh/known_hosts"
        return SSHError(
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\n"
            f"The host key of {name} is {presented}, but {where} records {old_fp} for it.\n"
            "Someone could be intercepting this connection (man-in-the-middle), or the host was\n"
            "reinstalled. flow refuses to connect (only host_key_policy=off skips this check).",
            host=host,
            kind="host_key_changed",
            hint=(
                f"if the change is expected, delete the old key: ssh-keygen -R '{name}' -f {path} "
                "and connect again to record the new one"
            ),
        )
    record = check.store.record_file
    target = f" >> {record}" if record is not None else ""
    port = f"-p {check.port} " if check.port not in (None, 22) else ""
    return SSHError(
        f"{label}: host key of {name} ({presented}) is not known and host_key_policy is strict",
        host=host,
        kind="host_key_unknown",
        hint=(
            f"verify the fingerprint, then record it: ssh-keyscan {port}{check.host or host}{target}, "
            "or connect once with FLOW_SSH_HOST_KEY_POLICY=accept-new"
        ),
    )


def map_connect_error(
    exc: BaseException,
    *,
    label: str,
    host: str,
    port: int | None,
    timeout_s: float,
    check: HostKeyCheck | None = None,
) -> SSHError:
    """Turn anything `asyncssh.connect` raised into an SSHError with a kind and a clear message."""
    if isinstance(exc, SSHError):
        return exc
    where = f"port {port}" if port is not None else "its SSH port"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return SSHError(
            f"{label}: no SSH answer within {timeout_s:g} s (TCP connect, banner, handshake, login)",
            host=host,
            kind="timeout",
            hint="is the host up and the port open to you? FLOW_SSH_CONNECT_TIMEOUT raises the limit",
        )
    if isinstance(exc, socket.gaierror):
        return SSHError(
            f"{label}: cannot resolve host {host!r}: {_said(exc.strerror or exc)}",
            host=host,
            kind="dns",
            hint="check the host name (flow tasks list) and your DNS / ~/.ssh/config",
        )
    if isinstance(exc, ConnectionRefusedError):
        return SSHError(
            f"{label}: connection refused on {where}: nothing listens there",
            host=host,
            kind="refused",
            hint="is sshd running on the node, and is the port right?",
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        return SSHError(
            f"{label}: authentication failed: the server refused every key offered ({_said(exc.reason)})",
            host=host,
            kind="auth",
            hint="check the user, the key (--key / IdentityFile / the agent) and authorized_keys on the node",
        )
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return _host_key_error(label, host, check, exc.reason)
    if isinstance(exc, (asyncssh.KeyImportError, asyncssh.KeyEncryptionError)):
        return SSHError(f"{label}: cannot use the private key: {_said(exc)}", host=host, kind="auth")
    if isinstance(exc, asyncssh.ConfigParseError):
        return SSHError(f"{label}: cannot read ssh_config: {_said(exc)}", host=host, kind="error")
    if isinstance(exc, asyncssh.KeyExchangeFailed) and check is not None and check.known:
        return SSHError(
            f"{label}: the server offers no host key of the type recorded for "
            f"{lookup_name(check.host or host, check.port)} ({_said(exc.reason)})",
            host=host,
            kind="host_key_changed",
            hint=f"if the host was reinstalled, delete the old key from {check.known[0].path}",
        )
    if isinstance(exc, asyncssh.ChannelOpenError):
        return map_channel_error(exc, label=label, host=host)
    if isinstance(exc, (asyncssh.ConnectionLost, ConnectionResetError, BrokenPipeError)):
        return SSHError(f"{label}: the server closed the connection: {_said(exc)}", host=host, kind="closed")
    if isinstance(exc, asyncssh.DisconnectError):
        return SSHError(f"{label}: SSH failed: {_said(exc.reason)}", host=host, kind="closed")
    if isinstance(exc, OSError):
        reason = _said(exc.strerror or str(exc) or type(exc).__name__)
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return SSHError(f"{label}: host unreachable: {reason}", host=host, kind="error")
        return SSHError(f"{label}: cannot connect: {reason}", host=host, kind="error")
    return SSHError(f"{label}: SSH failed: {type(exc).__name__}: {_said(exc)}", host=host, kind="error")


def map_channel_error(
    exc: Any, *, label: str, host: str, remote: tuple[str, int] | None = None
) -> SSHError:
    """A channel (session or direct-tcpip) the server would not open."""
    code = getattr(exc, "code", None)
    reason = _said(getattr(exc, "reason", exc))
    if remote is not None and code == asyncssh.OPEN_CONNECT_FAILED:
        return SSHError(
            f"{label}: nothing listens on {remote[0]}:{remote[1]} on the node ({reason})",
            host=host,
            kind="gpud_not_listening",
            hint="GPUd is not installed or not running there: flow logs TASK --source gpud",
        )
    if code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
        return SSHError(
            f"{label}: the server forbids port forwarding ({reason})",
            host=host,
            kind="tunnel",
            hint="set AllowTcpForwarding yes in the node's sshd_config",
        )
    target = f" to {remote[0]}:{remote[1]}" if remote is not None else ""
    return SSHError(f"{label}: cannot open an SSH channel{target}: {reason}", host=host, kind="tunnel")


def map_session_error(exc: BaseException, *, label: str, host: str, what: str) -> SSHError:
    """An error while a command or tunnel runs over an established connection."""
    if isinstance(exc, SSHError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return SSHError(f"{label}: {what} did not finish in time", host=host, kind="timeout")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return map_channel_error(exc, label=label, host=host)
    if isinstance(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionError, BrokenPipeError)):
        return SSHError(f"{label}: the connection closed during {what}: {_said(exc)}", host=host,
                        kind="closed")
    return SSHError(f"{label}: {what} failed: {type(exc).__name__}: {_said(exc)}", host=host, kind="error")


def via_jump_error(exc: SSHError, params: SSHParams, hop: SSHParams) -> SSHError:
    """A jump host's failure, as seen by a node behind it: the same kind and hint, naming both."""
    prefix = f"{hop.label}: "
    message = exc.message[len(prefix):] if exc.message.startswith(prefix) else exc.message
    return SSHError(
        f"{params.label} via jump host {hop.label}: {message}",
        host=params.host,
        kind=exc.kind,
        hint=exc.hint,
    )


def map_jump_channel_error(exc: Any, *, label: str, host: str, jump: str) -> SSHError:
    """The jump host would not open the channel to the node (its sshd's direct-tcpip answer)."""
    code = getattr(exc, "code", None)
    reason = _said(getattr(exc, "reason", exc))
    if code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
        return SSHError(
            f"{label}: jump host {jump} forbids forwarding to the node ({reason})",
            host=host,
            kind="tunnel",
            hint="set AllowTcpForwarding yes in the jump host's sshd_config",
        )
    if code == asyncssh.OPEN_CONNECT_FAILED and "refused" in str(reason).lower():
        return SSHError(
            f"{label}: jump host {jump} cannot reach the node: {reason}",
            host=host,
            kind="refused",
            hint="is sshd running on the node, and is the port right?",
        )
    return SSHError(f"{label}: jump host {jump} cannot reach the node: {reason}", host=host, kind="error")
