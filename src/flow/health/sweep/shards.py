"""A fleet sweep spread over several processes, one per core.

One asyncio loop checks nodes on one core: the SSH handshake, TLS, parsing and scoring of a
node cost 15-20 ms of CPU, so a single process tops out near 60 nodes a second however many
cores the machine has. `sweep_in_shards` splits the targets into `workers` shards: this
process sweeps the first while each of the others is swept by a worker process
(`python -m flow.health.sweep.shard_worker`), which streams back each node's snapshot as soon as it
is read. The result is the same `SweepResult`, in the order of the targets.

A worker that dies, or overruns the time its shard can take, costs only the nodes it had not
reported: each becomes an `unknown` row naming what happened to the worker. Nothing is lost
and nothing stalls the sweep.

Wire format (private to this module and `shard_worker`): the parent writes one pickle of
(`SSHOptions`, `SweepOptions`, targets) to the worker's stdin (parent to its own child, never
anything received from outside); the worker writes one line per node to stdout:
`<index> <snapshot JSON>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import orjson

from flow.health.snapshot import Snapshot, utcnow
from flow.health.sweep.checker import Checker, NodeTarget, SweepResult, failure_snapshot

__all__ = [
    "MIN_NODES_PER_WORKER",
    "SWEEP_WORKER_STATE",
    "WORKER_MODULE",
    "WORKER_SLACK_S",
    "auto_workers",
    "sweep_in_shards",
]

#: A worker costs an interpreter start and flow's imports (~0.3-0.5 s of CPU): below this many
#: nodes for each, one process is faster.
MIN_NODES_PER_WORKER = 100
WORKER_MODULE = "flow.health.sweep.shard_worker"
#: `gpud.state` of a node whose worker process failed before reporting it.
SWEEP_WORKER_STATE = "sweep_worker"
#: Beyond the per-node deadlines, what a worker may take to start and to report.
WORKER_SLACK_S = 30.0
_STDERR_TAIL = 300
#: The longest line (one snapshot) read from a worker; an 8-GPU snapshot is ~10-20 KB.
_LINE_LIMIT = 16 * 1024 * 1024
#: How long a worker that closed its stdout may take to exit before it is killed.
_EXIT_GRACE_S = 5.0


def auto_workers(nodes: int, cpus: int | None = None) -> int:
    """Processes for a sweep of `nodes`: one per core, but at least MIN_NODES_PER_WORKER nodes each."""
    cores = cpus if cpus is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                           else os.cpu_count() or 1)
    return max(1, min(cores, nodes // MIN_NODES_PER_WORKER))


def _shards(count: int, workers: int) -> list[list[int]]:
    """Indexes dealt round-robin: a run of slow nodes (one rack, one region) is spread out."""
    return [list(range(start, count, workers)) for start in range(workers)]


async def sweep_in_shards(
    checker: Checker,
    targets: Sequence[NodeTarget],
    *,
    workers: int,
    progress: Callable[[int, int], None] | None = None,
    worker_argv: Sequence[str] | None = None,
    worker_slack_s: float = WORKER_SLACK_S,
) -> SweepResult:
    """Sweep `targets` over `workers` processes (this one included); see the module docstring.

    `checker.options.concurrency` stays the total number of nodes checked at once, shared out
    among the processes. A checker with a custom connect factory sweeps in this process only.
    A worker is stopped once its nodes' deadlines plus `worker_slack_s` have passed.
    `worker_argv` replaces the worker command (tests).

    Raises:
        ValueError: `workers` is below 1.
    """
    if workers < 1:
        raise ValueError(f"workers={workers!r} is not allowed; allowed: 1 or more")
    workers = min(workers, max(1, len(targets)))
    if workers == 1 or checker.in_process_only:
        return await checker.sweep(targets, progress=progress)

    started_at, start = utcnow(), time.monotonic()
    total = len(targets)
    results: list[Snapshot | None] = [None] * total
    done = 0

    def record(index: int, snapshot: Snapshot) -> None:
        nonlocal done
        if results[index] is None:
            done += 1
        results[index] = snapshot
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    per_process = max(1, math.ceil(checker.options.concurrency / workers))
    options = replace(checker.options, concurrency=per_process)
    local = checker.with_options(options)
    shards = _shards(total, workers)
    argv = list(worker_argv) if worker_argv is not None else [sys.executable, "-m", WORKER_MODULE]

    async def sweep_local(indexes: list[int]) -> None:
        await local.sweep([targets[i] for i in indexes],
                          on_snapshot=lambda j, snap: record(indexes[j], snap))

    runs = [sweep_local(shards[0])]
    runs += [_run_worker(argv, local, targets, indexes, record, worker_slack_s) for indexes in shards[1:]]
    await asyncio.gather(*runs)
    snapshots = tuple(s for s in results if s is not None)
    assert len(snapshots) == total, "every node has a snapshot"  # _run_worker fills the gaps
    return SweepResult(snapshots, started_at, time.monotonic() - start)


async def _run_worker(
    argv: Sequence[str],
    checker: Checker,
    targets: Sequence[NodeTarget],
    indexes: list[int],
    record: Callable[[int, Snapshot], None],
    slack_s: float,
) -> None:
    """One worker process for `indexes`; every node it does not report becomes `unknown`."""
    shard = [targets[i] for i in indexes]
    reported: set[int] = set()
    # Its nodes are checked `concurrency` at a time, each within the node deadline.
    rounds = math.ceil(len(shard) / max(1, checker.options.concurrency))
    limit_s = rounds * checker.options.timeout_s + slack_s
    why: str
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=_LINE_LIMIT,
        )
    except OSError as exc:
        why = f"the sweep worker could not start: {exc}"
    else:
        why = await _collect(proc, pickle.dumps((checker.ssh_options, checker.options, shard)),
                             indexes, reported, record, limit_s)
    for local_index, index in enumerate(indexes):
        if local_index not in reported:
            record(index, failure_snapshot(shard[local_index], SWEEP_WORKER_STATE,
                                           f"{why}; this node was not checked",
                                           thresholds=checker.options.thresholds))


async def _collect(
    proc: asyncio.subprocess.Process,
    job: bytes,
    indexes: list[int],
    reported: set[int],
    record: Callable[[int, Snapshot], None],
    limit_s: float,
) -> str:
    """Feed the job, record each line the worker writes; returns why nodes may be missing."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.ensure_future(proc.stderr.read())

    async def read_lines() -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(job)
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        async for line in proc.stdout:
            parsed = _parse_line(line, len(indexes))
            if parsed is not None:
                local_index, snapshot = parsed
                reported.add(local_index)
                record(indexes[local_index], snapshot)

    overran = False
    unreadable: str | None = None
    try:
        await asyncio.wait_for(read_lines(), limit_s)
    except asyncio.TimeoutError:
        overran = True
    except (ValueError, OSError) as exc:  # a line over the reader's limit, a broken pipe
        unreadable = f"{type(exc).__name__}: {exc}"
    except BaseException:  # the sweep was cancelled (Ctrl-C): stop the worker with it
        stderr_task.cancel()
        await asyncio.shield(_reap(proc, kill=True))
        raise
    code = await _reap(proc, kill=overran or unreadable is not None)
    err = (await stderr_task).decode("utf-8", "replace").strip()
    if overran:
        return f"the sweep worker did not finish within {limit_s:g} s and was stopped"
    if unreadable is not None:
        return f"the sweep worker's output could not be read ({unreadable}) and it was stopped"
    if code != 0:
        tail = err[-_STDERR_TAIL:].replace("\n", " | ")
        return f"the sweep worker exited with status {code}" + (f": {tail}" if tail else "")
    return "the sweep worker ended without reporting it"


async def _reap(proc: asyncio.subprocess.Process, *, kill: bool) -> int:
    """The worker's exit status. Killed only when it overran, or lingers after closing stdout:
    killing an exited child makes subprocess reap it behind asyncio's back (status lost)."""
    if not kill:
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(proc.wait(), _EXIT_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    return await proc.wait()


def _parse_line(line: bytes, count: int) -> tuple[int, Snapshot] | None:
    head, _, body = line.partition(b" ")
    try:
        local_index = int(head)
        snapshot = Snapshot.from_dict(orjson.loads(body))
    except (ValueError, TypeError, KeyError, AttributeError, orjson.JSONDecodeError):
        return None  # not ours (a stray print); the node counts as unreported
    return (local_index, snapshot) if 0 <= local_index < count else None
