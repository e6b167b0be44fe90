"""Real servers for the sink tests: Prometheus, Pushgateway, moto (CloudWatch), loopback receivers.

Each binary runs as a subprocess on a free loopback port, with its state in a temp dir, and is
stopped by its PID. A missing binary skips the test with the reason (CI installs them:
Debian packages `prometheus`, `prometheus-pushgateway`; PyPI `moto[server]`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

PROMETHEUS_BIN = "/usr/bin/prometheus"
PUSHGATEWAY_BIN = "/usr/bin/prometheus-pushgateway"
START_DEADLINE_S = 30.0
#: The Pushgateway's basic-auth test user: its password, and that password's bcrypt hash (cost 4,
#: made once with Python's `crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))`).
PUSHGATEWAY_TEST_USER = "flow"
PUSHGATEWAY_TEST_PASSWORD = "s3cret-for-tests"
PUSHGATEWAY_TEST_BCRYPT = "$2b$04$F.CTnvVIxkg/nOQFy3ccouRg0ev/zSEy5dx5bgbXfQ3TENaRWtX1i"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binary(path: str, name: str) -> str:
    """The binary's path, or skip the test saying which package provides it."""
    found = path if Path(path).is_file() else shutil.which(Path(path).name)
    if not found:
        pytest.skip(f"{path} is not installed (Debian package {name}); CI installs it")
    return found


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], log: Path, *, auth: httpx.Auth | None = None
) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0, auth=auth).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {START_DEADLINE_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def run_pushgateway(
    tmp: Path, *, basic_auth: tuple[str, str] | None = None, port: int | None = None
) -> Iterator[Server]:
    """A Pushgateway without persistence on a free loopback port (or on `port`: the same
    gateway address again after a restart).

    `basic_auth` is (user, bcrypt hash): the gateway then answers 401 without those credentials,
    on every path (its own web config, exporter-toolkit's `basic_auth_users`).
    """
    exe = binary(PUSHGATEWAY_BIN, "prometheus-pushgateway")
    port = port or free_port()
    log = tmp / "pushgateway.log"
    args = [exe, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=warn"]
    auth = None
    if basic_auth is not None:
        web_config = tmp / "pushgateway-web.yml"
        web_config.write_text(f"basic_auth_users:\n  {basic_auth[0]}: '{basic_auth[1]}'\n")
        args.append(f"--web.config.file={web_config}")
        auth = httpx.BasicAuth(basic_auth[0], PUSHGATEWAY_TEST_PASSWORD)
    with log.open("wb") as out:
        # Debian's default persists to /var/lib/prometheus: an empty file name keeps it in memory.
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + "/-/ready", proc, log, auth=auth)
        yield Server(url, port, proc, log)
    finally:
        _stop(proc)


@dataclass
class PrometheusServer(Server):
    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query via the HTTP API; raises on an error answer (a bad expression)."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0).json()
        if answer.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(
        self, promql: str, *, timeout_s: float = 30.0, until: Callable[[list[dict[str, Any]]], bool] = bool
    ) -> list[dict[str, Any]]:
        """Poll a query until `until(result)` holds (default: any result)."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if until(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql!r} gave {result!r} after {timeout_s} s")
            time.sleep(0.25)


@contextlib.contextmanager
def run_prometheus(
    tmp: Path, targets: dict[str, str], *, honor_labels: tuple[str, ...] = (),
    remote_write_receiver: bool = False, port: int | None = None,
) -> Iterator[PrometheusServer]:
    """Prometheus scraping each `job: host:port` every second, TSDB in `tmp`; with
    `remote_write_receiver`, also taking remote writes at `/api/v1/write`."""
    exe = binary(PROMETHEUS_BIN, "prometheus")
    port = port or free_port()
    jobs = []
    for job, target in targets.items():
        jobs.append(
            f"  - job_name: {job}\n"
            f"    honor_labels: {'true' if job in honor_labels else 'false'}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        + ("scrape_configs:\n" + "".join(jobs) if jobs else "")
    )
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
                *(["--web.enable-remote-write-receiver"] if remote_write_receiver else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + "/-/ready", proc, log)
        yield PrometheusServer(url, port, proc, log)
    finally:
        _stop(proc)


@contextlib.contextmanager
def run_moto(tmp: Path) -> Iterator[Server]:
    """moto in server mode (`python -m moto.server`) on a free loopback port."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("moto[server] is not installed (pip install 'moto[server]'); CI installs it")
    port = free_port()
    log = tmp / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url + "/moto-api/", proc, log)
        yield Server(url, port, proc, log)
    finally:
        _stop(proc)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def receiver(handler: Handler, path: str = "/{tail:.*}") -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1:0 in the running loop; yields its base URL.

    Bodies reach the handler as sent (no automatic gzip decoding), so it can measure them.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", path, handle)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
