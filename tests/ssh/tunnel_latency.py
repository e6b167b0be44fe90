"""Sequential-request latency through a flow.ssh tunnel (not a test: run it by hand).

    .venv/bin/python tests/ssh/tunnel_latency.py [--no-warmup] [--requests N]

Starts a real sshd and a keep-alive HTTPS server whose sockets set TCP_NODELAY (as GPUd's Go
server does) and whose responses go out in two writes (headers, then body), then times N
sequential GETs over one HTTP connection, directly and through `SSHConnection.tunnel`.
`--no-warmup` skips the session that makes sshd set TCP_NODELAY on its side, to show the
Nagle / delayed-ACK stall (~40 ms a request) it removes. Figures are in docs/ssh.md.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]

import httpx  # noqa: E402

from conftest import HTTPSServer, _Handler  # noqa: E402
from flow.ssh import SSHOptions, connect  # noqa: E402
from sshd_support import SshdFactory  # noqa: E402


class _NoDelayHandler(_Handler):
    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()


async def _measure(url: str, count: int) -> list[float]:
    async with httpx.AsyncClient(base_url=url, verify=False) as client:
        await client.get("/warm")
        times = []
        for i in range(count):
            started = time.perf_counter()
            (await client.get(f"/v1/states?i={i}")).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times


def _line(label: str, times: list[float]) -> str:
    slow = sum(t > 35 for t in times) * 100 / len(times)
    p90 = sorted(times)[len(times) * 9 // 10]
    return f"{label:<8} median {statistics.median(times):6.2f} ms  p90 {p90:6.2f} ms  >35 ms: {slow:3.0f}%"


async def _main(args: argparse.Namespace, sshd_params: object, web_port: int, options: SSHOptions) -> None:
    print(_line("direct", await _measure(f"https://127.0.0.1:{web_port}", args.requests)))
    async with await connect(sshd_params, options) as conn:  # type: ignore[arg-type]
        if args.no_warmup:
            conn._session_started = True  # pretend a session ran: sshd keeps Nagle on
        tunnel = await conn.tunnel("127.0.0.1", web_port)
        label = "tunnel" if not args.no_warmup else "tunnel*"
        print(_line(label, await _measure(tunnel.url(), args.requests)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="flow-latency-"))
    factory = SshdFactory(base / "sshd")
    sshd = factory.start()
    web = HTTPSServer(base)
    web.server.RequestHandlerClass = _NoDelayHandler
    options = SSHOptions(
        known_hosts_file=base / "known_hosts", user_known_hosts_files=(), ssh_config_files=()
    )
    try:
        asyncio.run(_main(args, sshd.params(), web.port, options))
    finally:
        web.close()
        factory.stop_all()


if __name__ == "__main__":
    main()
