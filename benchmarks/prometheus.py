"""Benchmark `flow health --source prometheus` against a real Prometheus holding a large fleet.

    .venv/bin/python benchmarks/prometheus.py                  # 10,000 8-GPU nodes
    .venv/bin/python benchmarks/prometheus.py --nodes 1000     # a quick run

Builds a Prometheus TSDB with `promtool tsdb create-blocks-from openmetrics`: every node's full
metric vocabulary (docs/metrics.md: node, host and per-GPU families, counted in
`series per node` below) at three snapshot times a minute apart, the newest a few seconds old,
each sample stamped with its snapshot's time as the remote_write sink sends it; tasks have 8
nodes, except the history task (`--history-nodes`, default 1), which has 24 hours of history
at one snapshot a minute, as the collector writes it. Nodes come from a few scored
snapshot templates (healthy, hot, ECC errors, GPUd unreachable); the OpenMetrics text is made
by splicing each node's identity into the templates' label sets, so generation stays fast.

Then, Prometheus started on that TSDB, it times (median of `--repeat` runs):

- `flow health --gpu --source prometheus --json` for the whole fleet, end to end (a subprocess:
  start-up, queries, assembling snapshots, the JSON document); goal under 3 s;
- the same PromQL queries with plain httpx (issued at once, answers read whole, nothing
  parsed): the floor the command stands on; goal: the command within 2x of it;
- `flow health --task ID --history 24 --source prometheus --json` for the history task; goal
  under 1 s; and its bare range queries likewise.

Prints the figures and the ratios. Needs Debian's `prometheus` (prometheus and promtool).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx

from flow.health.scoring import score_snapshot
from flow.health.sinks.vocabulary import METRICS, metric_families
from flow.health.snapshot import DiskUsage, GpudStatus, GpuReading, HostMetrics, Snapshot
from flow.health.sources.prometheus import fleet_queries, history_queries, history_step

FLOW = [sys.executable, "-m", "flow.cli.main"]
GIB = 1024**3
GPUS = 8
TASK_NODES = 8
HISTORY_TASK = "task-00000"
_SNAP = "flow_node_snapshot_timestamp_seconds"


def _gpu(index: int, **changes: object) -> GpuReading:
    values: dict[str, object] = dict(
        index=index, uuid="UUID", model="NVIDIA H100 80GB HBM3", temp_c=55.0 + index,
        temp_hbm_c=60.0, slowdown_temp_c=89.0, mem_max_temp_c=95.0, power_w=420.5,
        power_limit_w=700.0, mem_used_bytes=60 * GIB, mem_total_bytes=80 * GIB, util_gpu_pct=88.0,
        util_mem_pct=40.0, clock_graphics_mhz=1980.0, clock_mem_mhz=2619.0,
        ecc_volatile_corrected=0, ecc_volatile_uncorrected=0, ecc_aggregate_corrected=0,
        ecc_aggregate_uncorrected=0, remapped_rows_uncorrectable=0, remap_pending=False,
        remap_failed=False, nvlink_replay_errors=0, nvlink_recovery_errors=0, nvlink_crc_errors=0,
        processes=1,
    )
    values.update(changes)
    return GpuReading(**values)  # type: ignore[arg-type]


def templates() -> list[Snapshot]:
    """Scored snapshots of one node, identity left as placeholders: healthy, hot, ECC, down."""
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    host = HostMetrics(cpu_pct=20.0, load1=4.0, load5=3.0, load15=2.0, mem_total_bytes=2048 * GIB,
                       mem_used_bytes=300 * GIB, disks=(DiskUsage(mount="/", total_bytes=2000 * GIB,
                                                                  used_bytes=500 * GIB),),
                       net_rx_bytes_per_s=1e6, net_tx_bytes_per_s=2e6, processes=700)
    gpud = GpudStatus(reachable=True, version="v0.5.1", api_schema="v0.5+", driver_version="550.54.15",
                      cuda_version="12.4", latency_ms=15.0)
    base = dict(timestamp=when, task_id="@T@", task_name="@N@", node="@H@", instance_type="8xH100",
                gpud=gpud, host=host)
    out = []
    for gpus in (
        tuple(_gpu(i) for i in range(GPUS)),
        tuple(_gpu(i, temp_c=88.0 if i < 2 else 60.0) for i in range(GPUS)),
        tuple(_gpu(i, ecc_volatile_uncorrected=3 if i == 5 else 0) for i in range(GPUS)),
    ):
        s = Snapshot(**base, gpus=gpus)  # type: ignore[arg-type]
        out.append(s.with_verdict(score_snapshot(s)))
    down = Snapshot(**{**base, "gpud": GpudStatus(reachable=False, state="timeout")})  # type: ignore[arg-type]
    out.append(down.with_verdict(score_snapshot(down)))
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def family_lines(template: Snapshot) -> dict[str, list[str]]:
    """Per family name, the template's sample lines as `%`-format strings (`%(t)s` task id,
    `%(n)s` task name, `%(h)s` node, `%(u)s` a GPU-unique uuid prefix) without timestamp."""
    out: dict[str, list[str]] = {}
    for family in metric_families([template]):
        lines = out.setdefault(family.spec.name, [])
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
            labels = (labels.replace("%", "%%").replace("@T@", "%(t)s").replace("@N@", "%(n)s")
                      .replace("@H@", "%(h)s").replace('"UUID"', '"GPU-%(h)s-' + 'g"'))
            # The snapshot-time family's value is its sample's time, spliced in per stamp.
            value = "@V@" if family.spec.name == _SNAP else repr(sample.value)
            lines.append(f"{family.spec.name}{{{labels}}} {value}")
    return out


def node_identity(i: int, history_nodes: int) -> dict[str, str]:
    """Node i's labels: the first `history_nodes` nodes are the history task, the others come
    in tasks of TASK_NODES."""
    task = 0 if i < history_nodes else 1 + (i - history_nodes) // TASK_NODES
    return {"t": f"task-{task:05d}", "n": f"train-{task:05d}", "h": f"gpu-{i:05d}"}


def template_of(i: int) -> int:
    if i % 100 == 7:
        return 1  # hot
    if i % 250 == 11:
        return 2  # ECC
    if i % 500 == 13:
        return 3  # GPUd unreachable
    return 0


def write_openmetrics(path: Path, nodes: int, times: list[float], history_nodes: int,
                      node_filter: Callable[[int], bool] = lambda i: True) -> int:
    """Every family of every node at `times`; returns the series written."""
    per_template = [family_lines(t) for t in templates()]
    identities = [node_identity(i, history_nodes) for i in range(nodes)]
    stamps = [f"{t:.3f}" for t in times]
    series = 0
    with path.open("w", buffering=16 * 1024 * 1024) as out:
        for spec in METRICS:
            out.write(f"# TYPE {spec.family_name} {spec.type.value}\n")
            for i in range(nodes):
                if not node_filter(i):
                    continue
                ident = identities[i]
                chunk: list[str] = []
                for line in per_template[template_of(i)].get(spec.name, ()):
                    text = line % ident
                    if text.endswith("@V@"):
                        text = text[:-3]
                        chunk.extend(f"{text}{stamp} {stamp}\n" for stamp in stamps)
                    else:
                        chunk.extend(f"{text} {stamp}\n" for stamp in stamps)
                    series += 1
                out.write("".join(chunk))
        out.write("# EOF\n")
    return series


def promtool(source: Path, tsdb: Path, *, max_block: str) -> None:
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                    f"--max-block-duration={max_block}", str(source), str(tsdb)], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def prometheus(tmp: Path, tsdb: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError((tmp / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def bare(url: str, path: str, queries: dict[str, str], params: dict[str, str]) -> tuple[float, int]:
    """The queries at once with plain httpx, answers read whole; (seconds, bytes)."""
    async def run() -> int:
        headers = {"Accept-Encoding": "identity"}  # as flow asks a loopback Prometheus
        async with httpx.AsyncClient(headers=headers, timeout=120) as client:
            answers = await asyncio.gather(*(client.get(url + path, params={"query": q, **params})
                                             for q in queries.values()))
        for a in answers:
            a.raise_for_status()
        return sum(len(a.content) for a in answers)

    started = time.perf_counter()
    size = asyncio.run(run())
    return time.perf_counter() - started, size


def command(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed, len(done.stdout)


def cpu_seconds(pid: int) -> float:
    """A process' CPU time so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds spent by Prometheus and by this process' children, per timed call."""

    def __init__(self, prometheus_pid: int) -> None:
        self.pid = prometheus_pid
        self.prometheus: dict[str, list[float]] = {}
        self.flow: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def measure(self, name: str) -> Iterator[None]:
        prom, children = cpu_seconds(self.pid), children_cpu()
        yield
        self.prometheus.setdefault(name, []).append(cpu_seconds(self.pid) - prom)
        self.flow.setdefault(name, []).append(children_cpu() - children)


def median(runs: list[float]) -> float:
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--history-nodes", type=int, default=1,
                        help="nodes of the task whose 24 h history is timed (default 1)")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the TSDB here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flow-bench-prom-"))
    tsdb = (args.keep or tmp) / "tsdb"
    now = time.time()
    if not tsdb.exists():
        tsdb.mkdir(parents=True)
        started = time.perf_counter()
        fleet_file = tmp / "fleet.om"
        # The history task's last three snapshots are in the fleet's block, its older ones in
        # blocks that end before it: blocks that overlap in time would be merged by Prometheus
        # (vertical compaction, rewriting the whole fleet's block) a minute after it starts,
        # in the middle of the timed runs.
        series = write_openmetrics(fleet_file, args.nodes, [now - 125, now - 65, now - 5],
                                   args.history_nodes)
        history_file = tmp / "history.om"
        write_openmetrics(history_file, args.history_nodes,
                                           [now - 5 - 60 * k for k in range(24 * 60, 2, -1)],
                                           args.history_nodes)
        generated = time.perf_counter() - started
        size = fleet_file.stat().st_size + history_file.stat().st_size
        promtool(fleet_file, tsdb, max_block="2h")
        promtool(history_file, tsdb, max_block="25h")
        loaded = time.perf_counter() - started - generated
        print(f"TSDB: {args.nodes} nodes x {GPUS} GPUs, {series} series "
              f"({series / args.nodes:.0f} per node), {size / 1e9:.2f} GB of "
              f"OpenMetrics generated in {generated:.1f} s, loaded by promtool in {loaded:.1f} s")
        fleet_file.unlink()
        history_file.unlink()
    env = {**os.environ, "FLOW_HOME": str(tmp / "home")}
    with prometheus(tmp, tsdb) as (url, pid):
        meter = CpuMeter(pid)
        env["FLOW_PROMETHEUS_URL"] = url
        fleet_cmd = [*FLOW, "health", "--gpu", "--json", "--source", "prometheus"]
        history_cmd = [*FLOW, "health", "--task", HISTORY_TASK, "--history", "24", "--json",
                       "--source", "prometheus"]
        # Warm the page cache and Prometheus' own caches once, as a second look would.
        command(fleet_cmd, env)
        command(history_cmd, env)
        fleet_runs, bare_runs, history_runs, bare_history_runs = [], [], [], []
        fleet_bytes = answer_bytes = history_bytes = 0
        for _ in range(args.repeat):
            with meter.measure("fleet"):
                t, fleet_bytes = command(fleet_cmd, env)
            fleet_runs.append(t)
            with meter.measure("bare"):
                t, answer_bytes = bare(url, "/api/v1/query", fleet_queries(),
                                       {"time": f"{time.time():.3f}"})
            bare_runs.append(t)
            t, _ = command(history_cmd, env)
            history_runs.append(t)
            end = time.time()
            step = history_step(24, 60.0)
            t, history_bytes = bare(url, "/api/v1/query_range", history_queries(HISTORY_TASK, step),
                                    {"start": f"{end - 86400:.3f}", "end": f"{end:.3f}", "step": f"{step}s"})
            bare_history_runs.append(t)
        start_up, _ = command([*FLOW, "--help"], env)
    fleet, floor = median(fleet_runs), median(bare_runs)
    history, history_floor = median(history_runs), median(bare_history_runs)
    print(f"fleet view ({args.nodes} nodes, {len(fleet_queries())} queries): "
          f"flow {fleet:.2f} s end to end (goal < 3 s), {fleet_bytes / 1e6:.1f} MB of JSON out")
    print(f"  bare PromQL with httpx: {floor:.2f} s, {answer_bytes / 1e6:.1f} MB of answers "
          f"; ratio flow/bare {fleet / floor:.2f} (goal <= 2)")
    print(f"  of which Python start-up (flow --help): {start_up:.2f} s")
    print(f"  CPU per fleet read: Prometheus {median(meter.prometheus['fleet']):.2f} s "
          f"(bare queries: {median(meter.prometheus['bare']):.2f} s), flow "
          f"{median(meter.flow['fleet']):.2f} s; {os.cpu_count()} CPUs shared by both")
    queries = len(history_queries(HISTORY_TASK, history_step(24, 60.0)))
    print(f"history 24 h of {HISTORY_TASK} ({args.history_nodes} node(s), {queries} "
          f"range queries): flow {history:.2f} s end to end (goal < 1 s), {history_bytes / 1e6:.1f} MB")
    print(f"  bare PromQL with httpx: {history_floor:.2f} s; ratio flow/bare {history / history_floor:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
