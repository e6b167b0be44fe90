"""The worker process of a sharded sweep (`flow.health.sweep.shards`), run as
`python -m flow.health.sweep.shard_worker`.

Reads one job from stdin (a pickle of SSHOptions, SweepOptions and the node targets, written by
the parent flow process), sweeps it, and writes one line per node to stdout as soon as the node
is read: `<index> <snapshot JSON>`. Exits 0 once every node is reported; any other exit, or a
missing line, becomes an `unknown` row in the parent.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from typing import BinaryIO

import orjson

from flow.health.snapshot import Snapshot
from flow.health.sweep.checker import Checker

__all__ = ["run_job"]


def run_job(job: BinaryIO, out: BinaryIO) -> int:
    """Sweep the pickled job read from `job`, writing each node's line to `out`; returns 0."""
    ssh_options, options, targets = pickle.load(job)  # from our parent process only

    def write(index: int, snapshot: Snapshot) -> None:
        out.write(b"%d %s\n" % (index, orjson.dumps(snapshot.to_dict())))
        out.flush()  # the parent counts progress from these lines

    async def sweep() -> None:
        # Not asyncio.run(checker.sweep(...)): asyncio.run would repr() its finished main task,
        # the whole sweep result, on the way out (see flow.cli.common.run_async).
        await Checker(ssh_options, options).sweep(targets, on_snapshot=write)

    asyncio.run(sweep())
    return 0


if __name__ == "__main__":
    sys.exit(run_job(sys.stdin.buffer, sys.stdout.buffer))
