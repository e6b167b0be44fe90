"""Fleet sweep benchmark: `flow health --gpu --json` vs the ssh+curl loop an operator would script.

For each fleet size N it starts N real OpenSSH sshd servers on loopback (one per node) and a
simulated GPUd per node (`flow health sim` in its own process), writes an inventory, then times:

- flow: `flow health --gpu --json` end to end (a subprocess: start-up, SSH, tunnels, GPUd, scoring,
  the local store, JSON), with its default `--workers auto`, and again with `--workers 1`;
- flow `--watch`: the time of each sweep as `flow health --gpu --json --watch` reports it, the
  first one (logging in to every node) and the next ones (on the kept connections);
- baseline: eight parallel workers running `ssh node curl -sk https://127.0.0.1:PORT/v1/states`,
  one ssh process per node, as one would script it by hand.

Prints nodes/s for both and the ratio. Run: `.venv/bin/python benchmarks/sweep.py [--nodes 10,100,500]`.
Needs /usr/sbin/sshd and curl. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from flow.fleet.inventory import Inventory  # noqa: E402
from flow.fleet.model import Node, Task  # noqa: E402
from flow.health.sweep.shards import auto_workers  # noqa: E402
from sshd_support import SshdFactory  # noqa: E402

FLOW = [sys.executable, "-m", "flow.cli.main"]


def start_sim(n: int, workdir: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    log = open(workdir / "sim.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([*FLOW, "health", "sim", "--nodes", str(n), "--base-port", "0",
                             "--scenario", "healthy"], stdout=subprocess.PIPE, stderr=log)
    ports: list[int] = []
    assert proc.stdout is not None
    while len(ports) < n:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError("simulator exited: " + (workdir / "sim.log").read_text())
        match = re.match(r"https://127\.0\.0\.1:(\d+)", line)
        if match:
            ports.append(int(match.group(1)))
    return proc, ports


def run_flow(
    home: Path, env_home: Path, timeout_s: float, workers: str = "auto"
) -> tuple[float, dict[str, int]]:
    env = {**os.environ, "FLOW_HOME": str(home), "HOME": str(env_home)}
    env.pop("SSH_AUTH_SOCK", None)
    start = time.perf_counter()
    argv = [*FLOW, "health", "--gpu", "--json", "--timeout", str(timeout_s), "--workers", workers]
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode())
    import orjson

    doc = orjson.loads(proc.stdout)
    return elapsed, doc["summary"]


def run_watch(home: Path, env_home: Path, timeout_s: float, sweeps: int = 4) -> list[float]:
    """`flow health --gpu --json --watch`: each sweep's own `elapsed_s`, first one included.

    In one process --watch keeps its SSH connections, so every sweep after the first costs no
    login. The documents are read as they come, then Ctrl-C ends the watch."""
    import json
    import select
    import signal

    env = {**os.environ, "FLOW_HOME": str(home), "HOME": str(env_home)}
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.Popen([*FLOW, "health", "--gpu", "--json", "--no-store", "--watch", "0.1",
                             "--timeout", str(timeout_s)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    buf, elapsed = b"", []
    deadline = time.monotonic() + 600
    try:
        while len(elapsed) < sweeps and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            buf += chunk
            # Each document ends with a "}" alone on its line (indented JSON): decode only whole
            # ones, so that this process's parsing stays small beside the sweep it measures.
            while (end := buf.find(b"\n}\n")) >= 0:
                doc = json.loads(buf[: end + 2])
                elapsed.append(float(doc["elapsed_s"]))
                buf = buf[end + 3 :]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    return elapsed


def run_baseline(servers: list, ports: list[int], key: Path, known_hosts: Path, parallel: int) -> float:
    errors: list[str] = []

    def one(i: int) -> int:
        s = servers[i]
        cmd = ["ssh", "-p", str(s.port), "-i", str(key), "-l", s.user, "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
               "-o", "LogLevel=ERROR", "127.0.0.1",
               f"curl -sk https://127.0.0.1:{ports[i]}/v1/states"]
        proc = subprocess.run(cmd, capture_output=True, timeout=120)
        if proc.returncode == 0 and proc.stdout.startswith(b"["):
            return 0
        errors.append(f"rc={proc.returncode} stdout={proc.stdout[:80]!r} stderr={proc.stderr[-300:]!r}")
        return 1

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        failures = sum(1 for rc in pool.map(one, range(len(servers))) if rc != 0)
    elapsed = time.perf_counter() - start
    if failures:
        print(f"  baseline: {failures} nodes failed; first: {errors[0]}", file=sys.stderr)
    return elapsed


def bench(n: int, parallel: int, timeout_s: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"flow-bench-sweep-{n}-"))
    factory = SshdFactory(workdir / "sshd")
    sim = None
    try:
        t = time.perf_counter()
        servers = factory.start_many(n, extra_config=["LogLevel ERROR", f"MaxStartups {max(200, n)}"])
        sim, ports = start_sim(n, workdir)
        print(f"N={n}: started {n} sshd + {n} simulated GPUd in {time.perf_counter() - t:.1f}s")
        home, user_home = workdir / "flow-home", workdir / "user-home"
        home.mkdir()
        user_home.mkdir()
        key = factory.client_key.path
        tasks = [Task(id=f"task-b{i:05d}", name=f"bench-{i}", instance_type="h100.8xlarge",
                      gpud_port=ports[i], nodes=(Node(host="127.0.0.1", port=s.port, user=s.user,
                                                      identity_file=str(key)),))
                 for i, s in enumerate(servers)]
        Inventory(home / "tasks.yaml", tasks).save()

        cold, summary = run_flow(home, user_home, timeout_s)
        warm, summary = run_flow(home, user_home, timeout_s)
        single, _ = run_flow(home, user_home, timeout_s, workers="1")
        watch = run_watch(home, user_home, timeout_s)
        ok = summary["healthy"] + summary["degraded"] + summary["critical"]
        base = run_baseline(servers, ports, key, workdir / "baseline_known_hosts", parallel)
        flow_rate, base_rate = n / warm, n / base
        print(f"  flow health --gpu --json: {warm:.2f}s ({flow_rate:.0f} nodes/s; first run with "
              f"new host keys {cold:.2f}s); {ok}/{n} nodes read")
        print(f"  the same with --workers 1 (one process): {single:.2f}s; --workers auto = "
              f"{auto_workers(n)} here, {single / warm:.2f}x faster")
        again = sorted(watch[1:])[len(watch[1:]) // 2] if len(watch) > 1 else float("nan")
        print(f"  --watch (connections kept): first sweep {watch[0]:.2f}s, then {again:.2f}s per sweep "
              f"(median of {len(watch) - 1}; {watch[0] / again:.1f}x faster, no new SSH login)")
        print(f"  baseline ({parallel} parallel ssh+curl): {base:.2f}s ({base_rate:.1f} nodes/s)")
        print(f"  ratio: {flow_rate / base_rate:.1f}x the baseline")
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(10)
        factory.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10,100,500", help="comma-separated fleet sizes")
    parser.add_argument("--parallel", type=int, default=8, help="baseline workers")
    parser.add_argument("--timeout", type=float, default=60.0, help="flow's per-node deadline, s")
    args = parser.parse_args()
    for n in (int(x) for x in args.nodes.split(",")):
        bench(n, args.parallel, args.timeout)


if __name__ == "__main__":
    main()
