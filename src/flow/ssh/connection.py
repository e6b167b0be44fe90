"""One SSH connection: remote commands, streamed output and local port forwards (tunnels).

`connect(params, options)` opens it; errors of any layer below come out as `SSHError` with a
`kind` (see `flow.ssh.errors`). The asyncssh call is injectable (`connect_factory`, STYLE item 7)
so tests and the demo can point it at an in-process asyncssh server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

from flow.errors import SSHError
from flow.ssh.errors import (
    map_channel_error,
    map_connect_error,
    map_jump_channel_error,
    map_session_error,
    via_jump_error,
)
from flow.ssh.jump import jump_chain
from flow.ssh.known_hosts import HostKeyCheck, KnownHostsStore
from flow.ssh.params import CommandResult, SSHOptions, SSHParams
from flow.text import clean_text

__all__ = [
    "HOP_ATTEMPTS",
    "KEEPALIVE_INTERVAL_S",
    "ConnectFactory",
    "SSHConnection",
    "Tunnel",
    "connect",
    "connect_hop",
    "connect_via",
]

#: Seconds between SSH keepalive probes on an idle connection.
KEEPALIVE_INTERVAL_S = 15.0

#: Tries at a jump host that closes the connection before login. OpenSSH's default
#: `MaxStartups 10:30:100` drops 30 %+ of the logins past 10 arriving at once: a sharded sweep
#: (one hop connection per worker process) or other users of the bastion can meet it.
HOP_ATTEMPTS = 4
#: First pause before trying the hop again (doubled each time, with up to as much jitter).
HOP_RETRY_DELAY_S = 0.25

#: `async (host, **asyncssh_connect_kwargs) -> asyncssh.SSHClientConnection`; default asyncssh.connect.
ConnectFactory = Callable[..., Awaitable[Any]]

LineCallback = Callable[[str], None]


class _PolicyClient(asyncssh.SSHClient):
    """Hands asyncssh's "is this unknown key acceptable?" question to the HostKeyCheck."""

    def __init__(self, check: HostKeyCheck) -> None:
        self._check = check

    def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
        return self._check.validate(host, addr, port, key)


def _exit_status(result: Any) -> int:
    if result.exit_status is not None and result.exit_status >= 0:
        return int(result.exit_status)
    if result.exit_signal:
        try:
            return 128 + int(signal.Signals[f"SIG{result.exit_signal[0]}"])
        except KeyError:
            pass
    return 255


class Tunnel:
    """A local port forward: 127.0.0.1:`local_port` reaches `remote_host:remote_port` on the node.

    Latency: asyncssh sets TCP_NODELAY on the accepted local sockets and on the SSH socket, but
    OpenSSH's sshd sets it on its side only when a session (exec/shell) starts on the connection.
    A connection that only forwards therefore has Nagle on at sshd, and a response written in
    two pieces stalls ~40 ms on the client's delayed ACK, on every request. `SSHConnection.tunnel`
    starts one trivial session first (see `_start_session`), which removes the stall.
    """

    local_host = "127.0.0.1"

    def __init__(self, listener: Any, remote_host: str, remote_port: int) -> None:
        self._listener = listener
        self.local_port: int = int(listener.get_port())
        self.remote_host = remote_host
        self.remote_port = remote_port

    def url(self, scheme: str = "https") -> str:
        """`https://127.0.0.1:<local_port>`: the base URL a client uses through the tunnel."""
        return f"{scheme}://{self.local_host}:{self.local_port}"

    async def close(self) -> None:
        self._listener.close()
        await self._listener.wait_closed()

    def __repr__(self) -> str:
        return f"Tunnel(127.0.0.1:{self.local_port} -> {self.remote_host}:{self.remote_port})"


class SSHConnection:
    """An open SSH connection. Use as `async with await connect(...) as conn:` or close()."""

    def __init__(
        self, conn: Any, params: SSHParams, options: SSHOptions, *, jump: SSHConnection | None = None
    ) -> None:
        self._conn = conn
        self.params = params
        self.options = options
        #: The jump host connection this one runs through as a channel (None: direct).
        self.jump = jump
        #: Hops this connection opened for itself (`connect()` without a pool): closed with it.
        self.owned_hops: list[SSHConnection] = []
        #: When it was opened (time.monotonic()): a pool kept between sweeps tells old from new.
        self.opened_at = time.monotonic()
        self._tunnels: dict[tuple[str, int], asyncio.Task[Tunnel]] = {}
        self._closed = False
        self._session_started = False

    @property
    def label(self) -> str:
        return self.params.label

    def _error(self, exc: BaseException, what: str) -> SSHError:
        if self._conn.is_closed() and not isinstance(exc, SSHError):
            # asyncssh reports a channel on a dead connection as a channel-open failure.
            return SSHError(
                f"{self.label}: the connection is closed ({clean_text(str(exc))}); {what} did not run",
                host=self.params.host,
                kind="closed",
            )
        return map_session_error(exc, label=self.label, host=self.params.host, what=what)

    @property
    def closed(self) -> bool:
        """True once closed here or lost (the pool then opens a new one)."""
        return self._closed or self._conn.is_closed()

    async def run(
        self, command: str, *, timeout_s: float | None = None, input: str | None = None
    ) -> CommandResult:
        """Run `command` through the remote user's shell and collect its output.

        A non-zero exit status is returned, not raised.

        Raises:
            SSHError: kind `timeout` past `timeout_s`, `closed` if the connection drops,
                `tunnel`/`error` if the server refuses a session channel.
        """
        self._session_started = True
        try:
            result = await self._conn.run(
                command, check=False, timeout=timeout_s, input=input, encoding="utf-8", errors="replace"
            )
        except Exception as exc:
            raise self._error(exc, f"{command!r}") from exc
        return CommandResult(_exit_status(result), result.stdout or "", result.stderr or "")

    async def stream(
        self, command: str, *, on_stdout: LineCallback, on_stderr: LineCallback | None = None
    ) -> int:
        """Run `command`, handing each output line (with its newline) to the callbacks as it
        arrives; returns the exit status. Cancelling the caller signals and closes the command.
        """
        self._session_started = True
        try:
            process = await self._conn.create_process(command, encoding="utf-8", errors="replace")
        except Exception as exc:
            raise self._error(exc, f"{command!r}") from exc

        async def pump(reader: Any, callback: LineCallback | None) -> None:
            async for line in reader:
                # asyncssh's iterator can yield a final "" at EOF; a real line is never empty.
                if line and callback is not None:
                    callback(line)

        try:
            await asyncio.gather(pump(process.stdout, on_stdout), pump(process.stderr, on_stderr))
            result = await process.wait()
        except asyncio.CancelledError:
            # Without a TTY the remote command would live until its next write; TERM it now.
            with contextlib.suppress(Exception):  # best effort: the channel may be gone already
                process.send_signal("TERM")
            process.close()
            raise
        except Exception as exc:
            raise self._error(exc, f"{command!r}") from exc
        finally:
            process.close()
        return _exit_status(result)

    async def download(self, remote_dir: str, names: Sequence[str], dest: Path) -> int:
        """Copy those of `names` that exist in `remote_dir` on the node into `dest` (SFTP).

        Returns how many files were copied. A missing directory or file is skipped, not an error
        (a collector store has no file for a day without data).

        Raises:
            ValueError: a name is not a plain file name.
            SSHError: kind `error` if the node has no SFTP subsystem or refuses a read
                (permission), `closed` if the connection drops.
        """
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"{name!r} is not a plain file name")
        self._session_started = True
        try:
            sftp = await self._conn.start_sftp_client()
        except (asyncssh.SFTPError, asyncio.IncompleteReadError, asyncssh.ChannelOpenError) as exc:
            if self._conn.is_closed():
                raise self._error(exc, f"download from {remote_dir}") from exc
            raise SSHError(
                f"{self.label}: the node's SFTP subsystem did not start ({clean_text(str(exc))})",
                host=self.params.host,
                kind="error",
                hint="enable it in the node's sshd_config: Subsystem sftp internal-sftp",
            ) from exc
        except Exception as exc:
            raise self._error(exc, f"download from {remote_dir}") from exc
        copied = 0
        try:
            for name in names:
                try:
                    await sftp.get(f"{remote_dir.rstrip('/')}/{name}", str(dest / name))
                except asyncssh.SFTPNoSuchFile:
                    continue
                copied += 1
        except asyncssh.SFTPError as exc:
            raise SSHError(
                f"{self.label}: cannot copy from {remote_dir}: {clean_text(str(exc.reason))}",
                host=self.params.host,
                kind="error",
            ) from exc
        except Exception as exc:
            raise self._error(exc, f"download from {remote_dir}") from exc
        finally:
            sftp.exit()
        return copied

    async def probe(self, remote_host: str, remote_port: int) -> None:
        """Check that something accepts TCP at `remote_host:remote_port` on the node.

        Raises:
            SSHError: kind `gpud_not_listening` if the port is closed there, `tunnel` if the
                server forbids forwarding, `timeout` past the connect timeout.
        """
        try:
            _, writer = await asyncio.wait_for(
                self._conn.open_connection(remote_host, remote_port), self.options.connect_timeout_s
            )
        except asyncssh.ChannelOpenError as exc:
            raise map_channel_error(
                exc, label=self.label, host=self.params.host, remote=(remote_host, remote_port)
            ) from exc
        except Exception as exc:
            raise map_session_error(
                exc, label=self.label, host=self.params.host, what=f"probe of {remote_host}:{remote_port}"
            ) from exc
        writer.close()

    async def tunnel(self, remote_host: str, remote_port: int, *, probe: bool = True) -> Tunnel:
        """A local forward to `remote_host:remote_port` on the node, listening on 127.0.0.1:0.

        One tunnel per remote address per connection: later calls return the same one. With
        `probe` (the default) the remote port is checked first, so a closed port is reported
        here as kind `gpud_not_listening` rather than as a reset on the first request.

        Raises:
            SSHError: kinds `gpud_not_listening`, `tunnel`, `timeout`, `closed`.
        """
        key = (remote_host, remote_port)
        task = self._tunnels.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(self._open_tunnel(remote_host, remote_port, probe))
            self._tunnels[key] = task
        return await asyncio.shield(task)

    async def _start_session(self) -> None:
        """Start (and drop) one `exit 0` session so sshd turns TCP_NODELAY on for the connection.

        sshd sets it when it handles the exec request, so there is no need to wait for the remote
        shell. Best effort: a server that refuses sessions only costs latency.
        """
        if self._session_started:
            return
        self._session_started = True
        try:
            process = await asyncio.wait_for(
                self._conn.create_process("exit 0"), self.options.connect_timeout_s
            )
        except Exception:
            return
        process.close()

    async def _open_tunnel(self, remote_host: str, remote_port: int, probe: bool) -> Tunnel:
        await self._start_session()
        if probe:
            await self.probe(remote_host, remote_port)
        try:
            listener = await self._conn.forward_local_port("127.0.0.1", 0, remote_host, remote_port)
        except Exception as exc:
            if isinstance(exc, asyncssh.ChannelOpenError):
                raise map_channel_error(
                    exc, label=self.label, host=self.params.host, remote=(remote_host, remote_port)
                ) from exc
            raise SSHError(
                f"{self.label}: cannot open a local listener for the tunnel: {exc}",
                host=self.params.host,
                kind="tunnel",
            ) from exc
        return Tunnel(listener, remote_host, remote_port)

    async def close(self) -> None:
        """Close the tunnels and the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for task in self._tunnels.values():
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None:
                await task.result().close()
        self._tunnels.clear()
        self._conn.close()
        with contextlib.suppress(Exception):  # closing a broken connection must not raise
            await self._conn.wait_closed()
        for hop in reversed(self.owned_hops):  # innermost first: each carries the next
            await hop.close()

    async def __aenter__(self) -> SSHConnection:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"SSHConnection({self.label}{', closed' if self.closed else ''})"


def _connect_kwargs(
    params: SSHParams, options: SSHOptions, check: HostKeyCheck | None, jump: SSHConnection | None
) -> dict[str, Any]:
    config_files = options.existing_config_files()
    kwargs: dict[str, Any] = {
        # Never asyncssh's own ProxyJump: it would open a hop per node, outside flow's host-key
        # policy. flow.ssh.jump resolved the chain; None here means "direct".
        "tunnel": jump._conn if jump is not None else None,
        "port": params.port if params.port is not None else (),
        "username": params.user if params.user is not None else (),
        "client_keys": [str(p.expanduser()) for p in params.key_paths] or (),
        "agent_path": () if params.use_agent else None,
        "config": [str(p) for p in config_files] or None,
        # One deadline, applied by connect() around the whole attempt.
        "connect_timeout": None,
        # AES-GCM runs in one OpenSSL call per packet (chacha20-poly1305 takes several through
        # Python); compression only costs CPU on the short hops a sweep makes. Measured with
        # 100 nodes: ~15% less client CPU. Both are offered by every OpenSSH since 6.2.
        "encryption_algs": ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                            "chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr"],
        "compression_algs": ["none", "zlib@openssh.com"],
        # A connection kept between sweeps (`--watch`, `serve`) learns within one interval
        # that its node went away (a rebooted node answers the probe with a reset), and after
        # three unanswered probes that it is unreachable; the pool then opens a new one.
        "keepalive_interval": KEEPALIVE_INTERVAL_S,
        "keepalive_count_max": 3,
    }
    if check is None:
        kwargs["known_hosts"] = None
    else:
        kwargs["known_hosts"] = check.match
        kwargs["client_factory"] = lambda: _PolicyClient(check)
    return kwargs


def _check_key_files(params: SSHParams) -> None:
    for path in params.key_paths:
        expanded = Path(path).expanduser()
        if not expanded.is_file():
            raise SSHError(
                f"{params.label}: identity file {str(path)!r} does not exist",
                host=params.host,
                kind="auth",
                hint="fix the task's key (flow tasks add --key) or leave it out to use the agent",
            )


async def connect(
    params: SSHParams,
    options: SSHOptions,
    *,
    connect_factory: ConnectFactory | None = None,
    known_hosts: KnownHostsStore | None = None,
) -> SSHConnection:
    """Open one authenticated SSH connection within `options.connect_timeout_s` per hop.

    A node behind ssh_config's `ProxyJump` is reached through its jump hosts, each opened here
    under the same host-key policy and owned by the returned connection (closed with it).
    `SSHPool` shares the hops among nodes instead.

    Args:
        known_hosts: a store shared across connections (the pool passes its own); by default
            one is built from `options`.

    Raises:
        SSHError: with `kind` dns, refused, timeout, auth, host_key_changed, host_key_unknown,
            closed or error; the message names the host and what to do, and the hop when a
            jump host failed.
    """
    if options.host_key_policy != "off" and known_hosts is None:
        known_hosts = KnownHostsStore(options.user_known_hosts_files, options.known_hosts_file)
    chain = jump_chain(params, options)
    hops: list[SSHConnection] = []
    try:
        for hop in chain:
            try:
                hops.append(await connect_hop(
                    hop, options, jump=hops[-1] if hops else None,
                    connect_factory=connect_factory, known_hosts=known_hosts,
                ))
            except SSHError as exc:
                raise via_jump_error(exc, params, hop) from exc
        connection = await connect_via(
            params, options, jump=hops[-1] if hops else None,
            connect_factory=connect_factory, known_hosts=known_hosts,
        )
    except BaseException:
        for opened in reversed(hops):
            await opened.close()
        raise
    connection.owned_hops = hops
    return connection


async def connect_hop(
    params: SSHParams,
    options: SSHOptions,
    *,
    jump: SSHConnection | None,
    connect_factory: ConnectFactory | None = None,
    known_hosts: KnownHostsStore | None = None,
) -> SSHConnection:
    """Open a jump host connection (`connect_via(..., hop=True)`), trying again up to
    `HOP_ATTEMPTS` times, after a growing jittered pause, while the hop closes the connection
    before login (kind `closed`: sshd's MaxStartups drop). Other failures are final at once.

    Raises:
        SSHError: as `connect_via`, the last attempt's.
    """
    delay = HOP_RETRY_DELAY_S
    for attempt in range(1, HOP_ATTEMPTS + 1):
        try:
            return await connect_via(params, options, jump=jump, connect_factory=connect_factory,
                                     known_hosts=known_hosts, hop=True)
        except SSHError as exc:
            if exc.kind != "closed" or attempt == HOP_ATTEMPTS:
                raise
        # Jitter: the processes that were dropped together must not come back together.
        await asyncio.sleep(delay * (1 + random.random()))
        delay *= 2
    raise AssertionError("unreachable")  # the last attempt returned or raised


async def connect_via(
    params: SSHParams,
    options: SSHOptions,
    *,
    jump: SSHConnection | None,
    connect_factory: ConnectFactory | None = None,
    known_hosts: KnownHostsStore | None = None,
    hop: bool = False,
) -> SSHConnection:
    """Open one connection to `params` directly (`jump=None`) or as a channel through `jump`,
    ignoring ssh_config's ProxyJump (the caller resolved it: `flow.ssh.jump.jump_chain`).
    `hop=True` for a jump host: it carries the nodes' traffic, so it gets the session that
    turns TCP_NODELAY on at its sshd too (see `Tunnel`).

    Raises:
        SSHError: as `connect`; through a jump host that cannot reach the node, kind `refused`
            (nothing listens there), `tunnel` (forwarding forbidden on the hop) or `error`.
    """
    _check_key_files(params)
    factory = connect_factory or asyncssh.connect
    check: HostKeyCheck | None = None
    if options.host_key_policy != "off":
        store = known_hosts or KnownHostsStore(options.user_known_hosts_files, options.known_hosts_file)
        check = HostKeyCheck(store, options.host_key_policy)
    kwargs = _connect_kwargs(params, options, check, jump)
    try:
        conn = await asyncio.wait_for(factory(params.host, **kwargs), options.connect_timeout_s)
    except asyncssh.PermissionDenied as exc:
        # Authentication comes after the key exchange, so a newly accepted key is genuine.
        _commit(check, params)
        raise map_connect_error(
            exc, label=params.label, host=params.host, port=params.port,
            timeout_s=options.connect_timeout_s, check=check,
        ) from exc
    except asyncssh.ChannelOpenError as exc:
        if jump is None:
            raise map_connect_error(
                exc, label=params.label, host=params.host, port=params.port,
                timeout_s=options.connect_timeout_s, check=check,
            ) from exc
        raise map_jump_channel_error(exc, label=params.label, host=params.host, jump=jump.label) from exc
    except Exception as exc:
        raise map_connect_error(
            exc, label=params.label, host=params.host, port=params.port,
            timeout_s=options.connect_timeout_s, check=check,
        ) from exc
    connection = SSHConnection(conn, params, options, jump=jump)
    try:
        _commit(check, params)
    except SSHError:
        await connection.close()
        raise
    if hop:
        await connection._start_session()
    return connection


def _commit(check: HostKeyCheck | None, params: SSHParams) -> None:
    if check is None:
        return
    try:
        check.commit()
    except OSError as exc:
        raise SSHError(
            f"{params.label}: cannot record the new host key: {exc.strerror or exc}",
            host=params.host,
            kind="error",
        ) from exc
