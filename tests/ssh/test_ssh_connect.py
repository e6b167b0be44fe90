"""flow.ssh against a real OpenSSH sshd: keys, commands, host-key policies and every error kind."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from flow.errors import SSHError
from flow.ssh import SSH_ERROR_KINDS, SSHOptions, SSHParams, connect
from sshd_support import HangingServer, KeyPair, SshdFactory, SshdServer, free_port


def _connect_error(params: SSHParams, options: SSHOptions) -> SSHError:
    async def attempt() -> None:
        conn = await connect(params, options)
        await conn.close()

    with pytest.raises(SSHError) as info:
        asyncio.run(attempt())
    assert info.value.kind in SSH_ERROR_KINDS
    return info.value


def _run(params: SSHParams, options: SSHOptions, command: str) -> tuple[int, str, str]:
    async def go() -> tuple[int, str, str]:
        async with await connect(params, options) as conn:
            return await conn.run(command)

    return asyncio.run(go())


def test_connects_with_a_key_and_runs_a_command(sshd: SshdServer, options: SSHOptions) -> None:
    status, out, err = _run(sshd.params(), options, "echo out; echo err >&2; exit 3")
    assert (status, out, err) == (3, "out\n", "err\n")


def test_run_reports_death_by_signal_as_128_plus_signal(sshd: SshdServer, options: SSHOptions) -> None:
    status, _, _ = _run(sshd.params(), options, "kill -TERM $$")
    assert status == 128 + 15


def test_stream_hands_over_lines_as_they_come(sshd: SshdServer, options: SSHOptions) -> None:
    out: list[str] = []
    err: list[str] = []

    async def go() -> int:
        async with await connect(sshd.params(), options) as conn:
            return await conn.stream(
                "for i in 1 2 3; do echo line$i; done; echo oops >&2; exit 4",
                on_stdout=out.append,
                on_stderr=err.append,
            )

    assert asyncio.run(go()) == 4
    assert out == ["line1\n", "line2\n", "line3\n"]
    assert err == ["oops\n"]


def test_run_timeout_is_kind_timeout(sshd: SshdServer, options: SSHOptions) -> None:
    async def go() -> None:
        async with await connect(sshd.params(), options) as conn:
            await conn.run("sleep 30", timeout_s=0.5)

    started = time.monotonic()
    with pytest.raises(SSHError) as info:
        asyncio.run(go())
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 10


def test_accept_new_records_the_key_in_flows_known_hosts(sshd: SshdServer, options: SSHOptions) -> None:
    assert options.known_hosts_file is not None
    _run(sshd.params(), options, "true")
    recorded = options.known_hosts_file.read_text()
    assert recorded == sshd.known_hosts_line() + "\n"
    assert stat.S_IMODE(options.known_hosts_file.stat().st_mode) == 0o600
    # Now known: a second connection is accepted without recording it again.
    _run(sshd.params(), options, "true")
    assert options.known_hosts_file.read_text() == recorded


def test_a_changed_key_is_refused_with_a_loud_message(sshd_factory: SshdFactory, options: SSHOptions) -> None:
    first = sshd_factory.start()
    _run(first.params(), options, "true")  # records the first host key
    first.stop()
    # The "same host" comes back with another key: a reinstall, or a man in the middle.
    second = sshd_factory.start(port=first.port)
    error = _connect_error(second.params(), options)
    assert error.kind == "host_key_changed"
    text = str(error)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
    assert f"[127.0.0.1]:{first.port}" in text
    assert f"{options.known_hosts_file}:1" in text  # the offending file and line
    assert error.hint is not None and f"ssh-keygen -R '[127.0.0.1]:{first.port}'" in error.hint
    assert error.host == "127.0.0.1"
    # Nothing new was recorded.
    assert options.known_hosts_file is not None
    assert options.known_hosts_file.read_text() == first.known_hosts_line() + "\n"


def test_a_changed_key_in_the_users_known_hosts_names_that_file(
    sshd: SshdServer, options: SSHOptions, tmp_path: Path
) -> None:
    other = KeyPair.generate(tmp_path / "other_host_key")
    user_file = tmp_path / "user_known_hosts"
    user_file.write_text(f"# comment\n[127.0.0.1]:{sshd.port} {other.public}\n")
    strict_user = dataclasses.replace(options, user_known_hosts_files=(user_file,))
    error = _connect_error(sshd.params(), strict_user)
    assert error.kind == "host_key_changed"
    assert f"{user_file}:2" in str(error)


def test_changed_key_is_refused_under_strict_and_allowed_only_with_off(
    sshd: SshdServer, options: SSHOptions, tmp_path: Path
) -> None:
    other = KeyPair.generate(tmp_path / "other_host_key")
    assert options.known_hosts_file is not None
    options.known_hosts_file.write_text(f"[127.0.0.1]:{sshd.port} {other.public}\n")
    strict = dataclasses.replace(options, host_key_policy="strict")
    assert _connect_error(sshd.params(), strict).kind == "host_key_changed"
    off = dataclasses.replace(options, host_key_policy="off")
    assert _run(sshd.params(), off, "echo ok")[1] == "ok\n"


def test_strict_refuses_an_unknown_key_and_records_nothing(sshd: SshdServer, options: SSHOptions) -> None:
    strict = dataclasses.replace(options, host_key_policy="strict")
    error = _connect_error(sshd.params(), strict)
    assert error.kind == "host_key_unknown"
    assert f"[127.0.0.1]:{sshd.port}" in str(error)
    assert error.hint is not None and "ssh-keyscan" in error.hint
    assert options.known_hosts_file is not None and not options.known_hosts_file.exists()


def test_strict_accepts_a_key_known_from_the_users_file(
    sshd: SshdServer, options: SSHOptions, tmp_path: Path
) -> None:
    user_file = tmp_path / "user_known_hosts"
    user_file.write_text(sshd.known_hosts_line() + "\n")
    strict = dataclasses.replace(options, host_key_policy="strict", user_known_hosts_files=(user_file,))
    assert _run(sshd.params(), strict, "echo ok")[1] == "ok\n"


def test_wrong_key_is_kind_auth(sshd: SshdServer, sshd_factory: SshdFactory, options: SSHOptions) -> None:
    error = _connect_error(sshd.params(key_paths=(sshd_factory.wrong_key.path,)), options)
    assert error.kind == "auth"
    assert "authentication failed" in str(error)
    # The host key was genuinely exchanged before authentication, so it is recorded.
    assert options.known_hosts_file is not None
    assert options.known_hosts_file.read_text() == sshd.known_hosts_line() + "\n"


def test_missing_identity_file_is_kind_auth(sshd: SshdServer, options: SSHOptions, tmp_path: Path) -> None:
    error = _connect_error(sshd.params(key_paths=(tmp_path / "nope",)), options)
    assert error.kind == "auth"
    assert "does not exist" in str(error)


def test_refused_port_is_kind_refused(options: SSHOptions) -> None:
    error = _connect_error(SSHParams(host="127.0.0.1", port=free_port(), user="x", use_agent=False), options)
    assert error.kind == "refused"
    assert "connection refused" in str(error)


def test_unresolvable_host_is_kind_dns(options: SSHOptions) -> None:
    error = _connect_error(SSHParams(host="no-such-node.invalid", port=22, use_agent=False), options)
    assert error.kind == "dns"
    assert "no-such-node.invalid" in str(error)


def test_a_server_that_never_answers_times_out_within_the_deadline(
    hanging_server: HangingServer, options: SSHOptions
) -> None:
    quick = dataclasses.replace(options, connect_timeout_s=1.0)
    started = time.monotonic()
    error = _connect_error(
        SSHParams(host=hanging_server.host, port=hanging_server.port, user="x", use_agent=False), quick
    )
    elapsed = time.monotonic() - started
    assert error.kind == "timeout"
    assert "1 s" in str(error)
    assert elapsed < 1.0 + 3.0  # the deadline plus generous slack, never a hang
    assert hanging_server.accepted  # it really connected, then waited for a banner


def test_connection_killed_by_the_server_is_kind_closed(sshd: SshdServer, options: SSHOptions) -> None:
    async def go() -> None:
        async with await connect(sshd.params(), options) as conn:
            # The shell's parent is this connection's sshd process: killing it drops the link.
            status, _, _ = await conn.run("kill -9 $PPID", timeout_s=5)
            assert status == 255  # no exit status came back: what OpenSSH's client reports
            await conn.run("true", timeout_s=5)

    with pytest.raises(SSHError) as info:
        asyncio.run(go())
    assert info.value.kind == "closed"


def test_ssh_config_aliases_are_honoured(sshd: SshdServer, options: SSHOptions, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host gpu-box\n"
        "  HostName 127.0.0.1\n"
        f"  Port {sshd.port}\n"
        f"  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key.path}\n"
    )
    with_config = dataclasses.replace(options, ssh_config_files=(config,))
    assert _run(SSHParams(host="gpu-box", use_agent=False), with_config, "echo via-alias")[1] == "via-alias\n"
    # The key is filed under the real address, as OpenSSH files it.
    assert options.known_hosts_file is not None
    assert options.known_hosts_file.read_text() == sshd.known_hosts_line() + "\n"


@pytest.fixture
def ssh_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent on a temp socket, exported as SSH_AUTH_SOCK (skips if not installed)."""
    agent, add = shutil.which("ssh-agent"), shutil.which("ssh-add")
    if agent is None or add is None:
        pytest.skip("ssh-agent / ssh-add are not installed (Debian openssh-client)")
    socket_path = tmp_path / "agent.sock"
    process = subprocess.Popen([agent, "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not socket_path.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.01)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_agent_keys_are_offered(sshd: SshdServer, options: SSHOptions, ssh_agent: Path) -> None:
    subprocess.run(["ssh-add", str(sshd.client_key.path)], check=True, capture_output=True)
    params = sshd.params(key_paths=(), use_agent=True)
    assert _run(params, options, "echo agent")[1] == "agent\n"
    # Without the agent (and no key) the same login fails: the agent's key is what worked.
    assert _connect_error(sshd.params(key_paths=(), use_agent=False), options).kind == "auth"


def test_in_process_server_through_an_injected_connect_factory(tmp_path: Path) -> None:
    """The demo's way in: fake host names routed to an in-process asyncssh server."""
    server_key = asyncssh.generate_private_key("ssh-ed25519")
    seen_hosts: list[str] = []

    class AnyClient(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False  # no authentication needed

    def handle(process: asyncssh.SSHServerProcess) -> None:
        process.stdout.write(f"hello from {process.command}\n")
        process.exit(0)

    async def go() -> tuple[int, str, str]:
        server = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[server_key], server_factory=AnyClient, process_factory=handle
        )
        port = server.sockets[0].getsockname()[1]

        async def factory(host: str, **kwargs: object) -> asyncssh.SSHClientConnection:
            seen_hosts.append(host)
            kwargs["port"] = port
            return await asyncssh.connect("127.0.0.1", **kwargs)  # type: ignore[arg-type]

        options = SSHOptions(host_key_policy="off", user_known_hosts_files=(), ssh_config_files=())
        try:
            params = SSHParams(host="gpu-node-7.demo", user="demo", use_agent=False)
            async with await connect(params, options, connect_factory=factory) as conn:
                return await conn.run("nvidia-smi")
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(go()) == (0, "hello from nvidia-smi\n", "")
    assert seen_hosts == ["gpu-node-7.demo"]


def test_a_broken_ssh_config_is_kind_error_naming_it(options: SSHOptions, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host x\n  Port notanumber\n")
    error = _connect_error(
        SSHParams(host="x", use_agent=False), dataclasses.replace(options, ssh_config_files=(config,))
    )
    assert error.kind == "error"
    assert "ssh_config" in str(error)


def test_download_copies_the_files_that_exist(sshd: SshdServer, options: SSHOptions, tmp_path: Path) -> None:
    remote = tmp_path / "remote-store"
    remote.mkdir()
    (remote / "2025-03-01.jsonl.gz").write_bytes(b"\x1f\x8bcompressed")
    (remote / "2025-03-02.jsonl").write_text('{"schema": 1}\n')
    dest = tmp_path / "mirror"
    dest.mkdir()
    names = ["2025-03-01.jsonl.gz", "2025-03-01.jsonl", "2025-03-02.jsonl.gz", "2025-03-02.jsonl"]

    async def go() -> tuple[int, int]:
        async with await connect(sshd.params(), options) as conn:
            copied = await conn.download(str(remote), names, dest)
            missing_dir = await conn.download(str(tmp_path / "nope"), names, dest)
            with pytest.raises(ValueError, match="not a plain file name"):
                await conn.download(str(remote), ["../etc/passwd"], dest)
            return copied, missing_dir

    assert asyncio.run(go()) == (2, 0)
    assert sorted(p.name for p in dest.iterdir()) == ["2025-03-01.jsonl.gz", "2025-03-02.jsonl"]
    assert (dest / "2025-03-02.jsonl").read_text() == '{"schema": 1}\n'


def test_download_without_a_working_sftp_subsystem_is_an_ssh_error(
    sshd_factory: SshdFactory, options: SSHOptions, tmp_path: Path
) -> None:
    server = sshd_factory.start(extra_config=["Subsystem sftp /nonexistent/sftp-server"])

    async def go() -> None:
        async with await connect(server.params(), options) as conn:
            await conn.download(str(tmp_path), ["x"], tmp_path)

    with pytest.raises(SSHError) as info:
        asyncio.run(go())
    assert info.value.kind == "error"
    assert "SFTP subsystem did not start" in str(info.value)
    assert info.value.hint is not None and "Subsystem sftp" in info.value.hint
