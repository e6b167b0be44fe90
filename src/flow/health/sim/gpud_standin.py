"""A stand-in `gpud` executable for the installer's tests: `gpud run --listen-address=H:P`.

    python -m flow.health.sim.gpud_standin run --listen-address=127.0.0.1:15132 [--scenario S]
    python -m flow.health.sim.gpud_standin --version     (or: version)

`run` serves one simulated node at the address until SIGTERM/SIGINT. The version it reports is
`$FLOW_SIM_GPUD_VERSION`, else v0.5.1. Unknown GPUd flags after `run` are accepted and ignored,
as the installer may pass real GPUd flags through.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from flow.health.sim.scenarios import SCENARIOS
from flow.health.sim.server import DEFAULT_GPUD_VERSION, SimNode, host_boot_id

__all__ = ["main"]


def _version() -> str:
    return os.environ.get("FLOW_SIM_GPUD_VERSION", DEFAULT_GPUD_VERSION)


async def _run(host: str, port: int, scenario: str, gpus: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # It stands in for this host's GPUd, so it reports this host's boot id, as GPUd does.
    async with SimNode(scenario=scenario, host=host, port=port, gpu_count=gpus,
                       gpud_version=_version(), boot_id=host_boot_id()) as node:
        print(f"gpud (simulated) {node.gpud_version} listening on {node.url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpud", description="simulated GPUd (flow.health.sim)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("version", help="print the version")
    run = sub.add_parser("run", help="serve the GPUd API until SIGTERM")
    run.add_argument("--listen-address", default="0.0.0.0:15132")
    run.add_argument("--scenario", default="healthy", choices=SCENARIOS)
    run.add_argument("--gpus", type=int, default=8)
    args, _unknown = parser.parse_known_args(argv)
    if args.version or args.command == "version":
        print(f"gpud version {_version()}")
        return 0
    if args.command != "run":
        parser.print_help(sys.stderr)
        return 2
    host, sep, port_text = args.listen_address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        print(f"ERROR: --listen-address must be HOST:PORT, got {args.listen_address!r}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(host.strip("[]") or "0.0.0.0", int(port_text), args.scenario, args.gpus))
    except OSError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
