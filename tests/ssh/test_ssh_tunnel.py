"""Tunnels and the pool against real sshd: HTTPS through a forward, closed ports, reuse."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from flow.errors import SSHError
from flow.ssh import SSHOptions, SSHParams, SSHPool, connect
from sshd_support import SshdFactory, SshdServer, free_port


def test_https_requests_through_a_tunnel(sshd: SshdServer, options: SSHOptions, https_server: Any) -> None:
    async def go() -> list[str]:
        async with await connect(sshd.params(), options) as conn:
            tunnel = await conn.tunnel("127.0.0.1", https_server.port)
            assert tunnel.url() == f"https://127.0.0.1:{tunnel.local_port}"
            assert tunnel.local_port != https_server.port
            # Sequential requests over one keep-alive connection, as the checker makes them.
            async with httpx.AsyncClient(base_url=tunnel.url(), verify=False) as client:
                paths = []
                for i in range(20):
                    response = await client.get(f"/v1/states?i={i}")
                    response.raise_for_status()
                    paths.append(response.json()["path"])
            return paths

    assert asyncio.run(go()) == [f"/v1/states?i={i}" for i in range(20)]


def test_a_tunnel_is_reused_and_closed_with_its_connection(
    sshd: SshdServer, options: SSHOptions, https_server: Any
) -> None:
    async def go() -> int:
        conn = await connect(sshd.params(), options)
        first, second = await asyncio.gather(
            conn.tunnel("127.0.0.1", https_server.port), conn.tunnel("127.0.0.1", https_server.port)
        )
        assert first is second
        await conn.close()
        assert conn.closed
        return first.local_port

    local_port = asyncio.run(go())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", local_port), timeout=2).close()


def test_forward_to_a_closed_remote_port_is_gpud_not_listening(sshd: SshdServer, options: SSHOptions) -> None:
    closed_port = free_port()

    async def go() -> None:
        async with await connect(sshd.params(), options) as conn:
            await conn.tunnel("127.0.0.1", closed_port)

    with pytest.raises(SSHError) as info:
        asyncio.run(go())
    assert info.value.kind == "gpud_not_listening"
    assert f"127.0.0.1:{closed_port}" in str(info.value)
    assert info.value.hint is not None and "GPUd" in info.value.hint


def test_forwarding_forbidden_by_the_server_is_kind_tunnel(
    sshd_factory: SshdFactory, options: SSHOptions, https_server: Any
) -> None:
    server = sshd_factory.start(extra_config=["DisableForwarding yes"])

    async def go() -> None:
        async with await connect(server.params(), options) as conn:
            await conn.tunnel("127.0.0.1", https_server.port)

    with pytest.raises(SSHError) as info:
        asyncio.run(go())
    assert info.value.kind == "tunnel"
    assert "forbids port forwarding" in str(info.value)


def test_pool_shares_one_connection_per_endpoint(sshd: SshdServer, options: SSHOptions) -> None:
    import asyncssh

    calls: list[str] = []

    async def counting_factory(host: str, **kwargs: object) -> asyncssh.SSHClientConnection:
        calls.append(host)
        return await asyncssh.connect(host, **kwargs)  # type: ignore[arg-type]

    async def go() -> None:
        async with SSHPool(options, connect_factory=counting_factory) as pool:
            conns = await asyncio.gather(*(pool.connect(sshd.params()) for _ in range(5)))
            assert all(c is conns[0] for c in conns)
            assert len(pool) == 1
            assert (await conns[0].run("echo shared")).stdout == "shared\n"
            # A connection that dropped is replaced on the next request.
            await conns[0].close()
            again = await pool.connect(sshd.params())
            assert again is not conns[0]
            assert (await again.run("echo again")).stdout == "again\n"
        assert again.closed  # the pool closed it

    asyncio.run(go())
    assert calls == ["127.0.0.1", "127.0.0.1"]


def test_pool_failures_are_per_endpoint_and_not_cached(
    sshd: SshdServer, options: SSHOptions
) -> None:
    dead = SSHParams(host="127.0.0.1", port=free_port(), user="x", use_agent=False)

    async def go() -> None:
        async with SSHPool(options) as pool:
            results = await asyncio.gather(
                pool.connect(dead), pool.connect(sshd.params()), return_exceptions=True
            )
            assert isinstance(results[0], SSHError) and results[0].kind == "refused"
            assert (await results[1].run("echo alive")).stdout == "alive\n"  # type: ignore[union-attr]
            with pytest.raises(SSHError):
                await pool.connect(dead)  # tried again, not a cached failure
        with pytest.raises(SSHError) as info:
            await pool.connect(sshd.params())
        assert info.value.kind == "closed"

    asyncio.run(go())


def test_pool_sweeps_ten_real_servers_concurrently(sshd_factory: SshdFactory, options: SSHOptions) -> None:
    servers = sshd_factory.start_many(10)

    async def go() -> list[str]:
        async with SSHPool(options) as pool:
            async def one(server: SshdServer) -> str:
                conn = await pool.connect(server.params())
                return (await conn.run("echo $SSH_CONNECTION")).stdout.split()[-1]

            return await asyncio.gather(*(one(s) for s in servers))

    assert asyncio.run(go()) == [str(s.port) for s in servers]
    assert options.known_hosts_file is not None
    recorded = options.known_hosts_file.read_text().splitlines()
    assert sorted(recorded) == sorted(s.known_hosts_line() for s in servers)


def test_a_cancelled_caller_does_not_cancel_the_shared_attempt(
    sshd: SshdServer, options: SSHOptions
) -> None:
    async def go() -> None:
        async with SSHPool(options) as pool:
            impatient = asyncio.ensure_future(pool.connect(sshd.params()))
            patient = asyncio.ensure_future(pool.connect(sshd.params()))
            await asyncio.sleep(0)
            impatient.cancel()
            conn = await patient
            assert (await conn.run("echo ok")).stdout == "ok\n"

    asyncio.run(go())


def test_a_tunnel_starts_one_session_so_sshd_turns_nagle_off(
    sshd: SshdServer, options: SSHOptions, https_server: Any
) -> None:
    """sshd sets TCP_NODELAY only when a session starts; a forward-only connection would stall
    ~40 ms a request (tests/ssh/tunnel_latency.py measures it). Checked here by what sshd logs."""

    async def go() -> None:
        async with await connect(sshd.params(), options) as conn:
            await conn.tunnel("127.0.0.1", https_server.port)
            await conn.tunnel("127.0.0.1", https_server.port)  # reused: no second session

    asyncio.run(go())
    sessions = [line for line in sshd.log().splitlines() if "Starting session: command" in line]
    assert len(sessions) == 1
