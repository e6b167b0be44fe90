"""What every command shares: one place that turns errors into messages and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import click
import orjson

from flow.config import Config, load_config
from flow.errors import FlowError

__all__ = [
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "fail",
    "get_config",
    "print_json",
    "raise_open_file_limit",
    "run_async",
    "run_cli",
    "stop_on_signals",
]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def get_config(ctx: click.Context | None = None) -> Config:
    """Load (once per invocation) and return the validated configuration."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    root.ensure_object(dict)
    if "config" not in root.obj:
        root.obj["config"] = load_config(os.environ)
    config: Config = root.obj["config"]
    return config


def raise_open_file_limit() -> None:
    """Lift the soft open-files limit to the hard one: a sweep holds ~3 sockets per node, and
    the common default soft limit of 1024 would cap a sweep near 300 nodes."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                        else max(soft, 65536), hard))
    except (ImportError, ValueError, OSError):
        pass  # not fatal: the sweep reports the nodes it could not open sockets for


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT/SIGTERM (systemd's stop), so a foreground service ends cleanly.

    Where the loop cannot take signal handlers (not the main thread, Windows), Ctrl-C still
    raises KeyboardInterrupt as usual.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def print_json(doc: Mapping[str, Any]) -> None:
    """One indented JSON document on stdout."""
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def fail(message: str, *, hint: str | None = None, code: int = EXIT_USAGE) -> None:
    """Print `ERROR:` (and `HINT:`) to stderr and exit with `code`."""
    click.echo(f"ERROR: {message}", err=True)
    if hint:
        click.echo(f"HINT: {hint}", err=True)
    sys.exit(code)


def run_cli(group: click.Command, argv: Sequence[str] | None = None, *, prog_name: str = "flow") -> int:
    """Run a click command, mapping FlowError to ERROR/HINT lines and its exit code."""
    try:
        # Without standalone mode click returns ctx.exit()'s code instead of exiting.
        result = group.main(args=list(argv) if argv is not None else None, prog_name=prog_name,
                            standalone_mode=False)
    except FlowError as exc:
        click.echo(f"ERROR: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"HINT: {exc.hint}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


T = TypeVar("T")


def run_async(awaitable: Awaitable[T]) -> T:
    """`asyncio.run(awaitable)`, returning its result without letting the main task hold it.

    On its way out `asyncio.run` asks `signal.getsignal(SIGINT)`, which tries the handler (a
    partial naming the main task) as a `signal.Handlers` value and builds the ValueError text
    with `repr()` of that partial: the finished task and its whole result. A sweep's or a
    Prometheus read's result is thousands of snapshots; that repr cost 1.1 s of a 5 s
    10,000-node fleet view. The main task here returns None.
    """
    box: list[T] = []

    async def main() -> None:
        box.append(await awaitable)

    asyncio.run(main())
    return box[0]
