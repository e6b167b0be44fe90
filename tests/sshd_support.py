"""Real OpenSSH `sshd` servers on loopback ports, for end-to-end tests of anything that uses SSH.

```python
def test_something(sshd):                 # one server, stopped after the test
    params = sshd.params()                # flow.ssh.SSHParams for it (user + key)
def test_fleet(sshd_factory):
    servers = sshd_factory.start_many(10) # started in parallel, stopped at teardown
def test_hang(hanging_server):            # accepts TCP, never sends an SSH banner
```
Each server has its own temp dir, generated ed25519 host key, `authorized_keys` holding the
factory's client key, and runs `sshd -D -e -f <config>` as the current user (root in CI) with
`StrictModes no`, `UsePAM no` and forwarding allowed. Servers are stopped by PID. The fixtures
skip, saying why, only when /usr/sbin/sshd is missing.

Sessions get `HOME=<server dir>/home` (sshd's `SetEnv`), so the test user's own shell start-up
files do not run: a `pyenv init` in root's ~/.bashrc costs ~0.4 s per remote command. `env=`
adds variables (e.g. `PATH` with fake tools, `FLOW_STARTUP_LOG`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "SSHD_PATH",
    "HangingServer",
    "KeyPair",
    "SshdFactory",
    "SshdServer",
    "free_port",
    "sshd_missing_reason",
]

SSHD_PATH = Path(os.environ.get("FLOW_TEST_SSHD", "/usr/sbin/sshd"))
_START_DEADLINE_S = 15.0


def sshd_missing_reason() -> str | None:
    """Why real-sshd tests cannot run here, or None when they can."""
    if not SSHD_PATH.is_file():
        return f"{SSHD_PATH} is missing: install Debian's openssh-server to run the real-sshd tests"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair on disk: `path` (private, 0600) and its OpenSSH public line."""

    path: Path
    public: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def generate(cls, path: Path, comment: str = "flow-test") -> KeyPair:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
        path.with_name(path.name + ".pub").write_text(f"{public} {comment}\n")
        return cls(path, public)


@dataclass
class SshdServer:
    """One running sshd. `host_key.public` is what a client should see."""

    host: str
    port: int
    user: str
    client_key: KeyPair
    host_key: KeyPair
    directory: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path
    extra_config: Sequence[str] = field(default_factory=tuple)
    env: Mapping[str, str] = field(default_factory=dict)

    def known_hosts_line(self) -> str:
        """The line OpenSSH would record for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`."""
        return f"[{self.host}]:{self.port} {self.host_key.public}"

    def params(self, **overrides: object):  # type: ignore[no-untyped-def]
        """flow.ssh.SSHParams reaching this server with the authorized key, agent off."""
        from flow.ssh import SSHParams

        values: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_paths": (self.client_key.path,),
            "use_agent": False,
        }
        values.update(overrides)
        return SSHParams(**values)  # type: ignore[arg-type]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop this sshd (and its session children) by PID."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def _banner_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.settimeout(1.0)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


class SshdFactory:
    """Starts sshd servers under `base_dir`, all trusting one client key; stops them all."""

    def __init__(self, base_dir: Path) -> None:
        reason = sshd_missing_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.base_dir = base_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.client_key = KeyPair.generate(base_dir / "client_ed25519", "flow-test-client")
        self.wrong_key = KeyPair.generate(base_dir / "wrong_ed25519", "flow-test-wrong")
        self.servers: list[SshdServer] = []
        self._count = 0
        if os.getuid() == 0:
            # sshd refuses to start as root without its privilege-separation directory.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def _spawn(
        self,
        *,
        extra_config: Sequence[str],
        host_key: KeyPair | None,
        port: int | None,
        env: Mapping[str, str] | None,
        default_limits: bool = False,
    ) -> SshdServer:
        self._count += 1
        directory = self.base_dir / f"sshd{self._count}"
        directory.mkdir()
        home = directory / "home"
        home.mkdir()
        session_env = {"HOME": str(home), **(env or {})}
        host_key = host_key or KeyPair.generate(directory / "ssh_host_ed25519_key", "host")
        authorized = directory / "authorized_keys"
        authorized.write_text(self.client_key.public + "\n")
        port = port or free_port()
        config = directory / "sshd_config"
        lines = [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key.path}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            "UseDNS no",
            # Raised so that a fleet's worth of logins may arrive at once; `default_limits`
            # leaves OpenSSH's own (MaxStartups 10:30:100, MaxSessions 10), as on a bastion.
            *([] if default_limits else ["MaxStartups 200", "MaxSessions 50"]),
            "LogLevel VERBOSE",
            *(["Subsystem sftp internal-sftp"] if not any("Subsystem" in c for c in extra_config) else []),
            "SetEnv " + " ".join(f"{key}={value}" for key, value in session_env.items()),
            *extra_config,
        ]
        config.write_text("\n".join(lines) + "\n")
        log_path = directory / "sshd.log"
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            [str(SSHD_PATH), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches session children
        )
        log.close()
        server = SshdServer(
            host="127.0.0.1",
            port=port,
            user=self.user,
            client_key=self.client_key,
            host_key=host_key,
            directory=directory,
            process=process,
            log_path=log_path,
            home=home,
            extra_config=tuple(extra_config),
            env=dict(env or {}),
        )
        self.servers.append(server)
        return server

    def _wait_ready(self, servers: Sequence[SshdServer]) -> list[SshdServer]:
        """Wait for each banner; returns the servers that died (e.g. their port was taken)."""
        deadline = time.monotonic() + _START_DEADLINE_S
        pending = list(servers)
        dead: list[SshdServer] = []
        while pending:
            for server in list(pending):
                if not server.running:
                    pending.remove(server)
                    dead.append(server)
                elif _banner_ready(server.host, server.port):
                    pending.remove(server)
            if pending:
                if time.monotonic() > deadline:
                    logs = "\n".join(s.log() for s in pending)
                    raise RuntimeError(f"sshd did not start within {_START_DEADLINE_S} s:\n{logs}")
                time.sleep(0.02)
        return dead

    def start_many(
        self,
        count: int,
        *,
        extra_config: Sequence[str] = (),
        host_key: KeyPair | None = None,
        env: Mapping[str, str] | None = None,
        default_limits: bool = False,
    ) -> list[SshdServer]:
        """Start `count` servers in parallel and wait until each sends its banner."""
        servers = [
            self._spawn(extra_config=extra_config, host_key=host_key, port=None, env=env,
                        default_limits=default_limits)
            for _ in range(count)
        ]
        for _attempt in range(3):
            dead = self._wait_ready(servers)
            if not dead:
                return servers
            for server in dead:
                self.servers.remove(server)
                log = server.log()
                if "Address already in use" not in log:
                    raise RuntimeError(f"sshd exited with {server.process.returncode}:\n{log}")
                index = servers.index(server)
                servers[index] = self._spawn(
                    extra_config=extra_config, host_key=server.host_key, port=None, env=env,
                    default_limits=default_limits,
                )
        raise RuntimeError("sshd could not find a free port after 3 tries")

    def start(
        self,
        *,
        extra_config: Sequence[str] = (),
        host_key: KeyPair | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        default_limits: bool = False,
    ) -> SshdServer:
        """Start one server (on `port` if given: e.g. to replace a server with a new host key).

        `default_limits` keeps OpenSSH's default MaxStartups and MaxSessions (a jump host as
        shipped) instead of the raised ones every other test server gets.
        """
        if port is not None:
            server = self._spawn(extra_config=extra_config, host_key=host_key, port=port, env=env,
                                 default_limits=default_limits)
            dead = self._wait_ready([server])
            if dead:
                raise RuntimeError(f"sshd exited with {server.process.returncode}:\n{server.log()}")
            return server
        return self.start_many(
            1, extra_config=extra_config, host_key=host_key, env=env, default_limits=default_limits
        )[0]

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


class HangingServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: no SSH banner, no close."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.host = "127.0.0.1"
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hanging-sshd", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never written to

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.accepted:
            conn.close()
        self._sock.close()


def sshd_servers(base_dir: Path) -> Iterator[SshdFactory]:
    """Generator behind the `sshd_factory` fixture: a factory whose servers stop at the end."""
    factory = SshdFactory(base_dir)
    try:
        yield factory
    finally:
        factory.stop_all()


def which_ssh() -> str | None:
    """The system ssh client, for tests of `flow ssh`."""
    return shutil.which("ssh")
