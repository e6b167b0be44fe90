"""`flow health cleanup` and `flow health store-stats`: the local metrics store on demand."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from flow.cli.common import EXIT_PROBLEMS, get_config
from flow.cli.numbers import CLEANUP_COMPRESS_AFTER_DAYS_RANGE, Bounded
from flow.config import RETENTION_DAYS_RANGE
from flow.health.storage import CleanupResult, MetricsStore, StoreStats

__all__ = ["cleanup_cmd", "store_stats_cmd"]


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop always returns


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _echo_cleanup(result: CleanupResult, store: MetricsStore) -> None:
    click.echo(f"metrics store: {store.root} (compress after {store.compress_after_days} d, "
               f"delete after {store.retention_days} d)")
    for (dry, done), paths in ((("would compress", "compressed"), result.compressed),
                               (("would delete", "deleted"), result.deleted)):
        if paths:
            verb = dry if result.dry_run else done
            click.echo(f"{verb} {_plural(len(paths), 'file')}:")
            for path in paths:
                click.echo(f"  {_rel(path, store.root)}")
    if result.kept:
        click.echo(f"kept {_plural(len(result.kept), 'file')} past retention (protected):")
        for path in result.kept:
            click.echo(f"  {_rel(path, store.root)}")
    for note in result.undelivered:
        click.echo(f"  {note}")
    if result.undelivered:
        click.echo("(--drop-undelivered deletes them anyway; the destinations never receive them)")
    if result.dropped_undelivered:
        verb = "would drop" if result.dry_run else "dropped"
        click.echo(f"{verb} {result.dropped_records} undelivered record(s) in "
                   f"{_plural(len(result.dropped_undelivered), 'file')} (--drop-undelivered)")
    if not result.changed:
        click.echo("nothing to do")
    elif result.dry_run:
        click.echo(f"would free at least {_human_bytes(result.bytes_freed)} "
                   "(deletions; compression savings are known once done)")
    else:
        click.echo(f"freed {_human_bytes(result.bytes_freed)}")


@click.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Show what would be compressed and deleted; change nothing.")
@click.option("--retention-days", type=Bounded(RETENTION_DAYS_RANGE), default=None, metavar="N",
              help="Delete day files whose day ended N days ago, 1-3650 (default: health.retention_days).")
@click.option("--compress-after-days", type=Bounded(CLEANUP_COMPRESS_AFTER_DAYS_RANGE), default=None,
              metavar="N",
              help="Compress day files whose day ended N days ago, 0-3650 (default: "
                   "health.compress_after_days). Today's file is never compressed.")
@click.option("--drop-undelivered", is_flag=True,
              help="Also delete past-retention files that a stream destination has not yet "
                   "received (logged, with counts). Without it they are kept.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def cleanup_cmd(dry_run: bool, retention_days: int | None, compress_after_days: int | None,
                drop_undelivered: bool, as_json: bool) -> None:
    """Compress and delete old files of the local metrics store now.

    \b
    The store keeps one JSONL file per task per UTC day under FLOW_METRICS_DIR
    (default $FLOW_HOME/metrics). A file whose day ended more than
    compress_after_days ago becomes .jsonl.gz; one whose day ended more than
    retention_days ago is deleted, unless a stream destination of the collector
    (a cursor under <store>/.collector/) has not received it yet: such files are
    kept and named. Writers already do this by themselves at most once an hour;
    this runs it on demand and prints what it did.

    \b
    Exit codes: 0 done (or nothing to do), 1 some files could not be handled,
    2 usage or configuration error.
    """
    config = get_config()
    store = MetricsStore(config=config, retention_days=retention_days,
                         compress_after_days=compress_after_days, auto_cleanup=False)
    result = store.cleanup(dry_run=dry_run, drop_undelivered=drop_undelivered)
    if as_json:
        click.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _echo_cleanup(result, store)
    for error in result.errors:
        click.echo(f"ERROR: {error}", err=True)
    if result.errors:
        # sys.exit, as common.fail does: run_cli maps SystemExit to the return code.
        sys.exit(EXIT_PROBLEMS)


def _echo_stats(stats: StoreStats) -> None:
    rows = [
        ("store", str(stats.root)),
        ("tasks", str(stats.tasks)),
        ("files", f"{stats.files} ({stats.plain_files} plain, {stats.compressed_files} compressed)"),
        ("size", _human_bytes(stats.bytes)),
    ]
    if stats.snapshots is not None:
        rows.append(("snapshots", str(stats.snapshots)))
        rows.append(("corrupt lines", str(stats.corrupt_lines)))
        rows.append(("oldest", stats.oldest.isoformat() if stats.oldest else "none"))
        rows.append(("newest", stats.newest.isoformat() if stats.newest else "none"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@click.command("store-stats")
@click.option("--quick", is_flag=True,
              help="Count files and bytes only; skip reading every line (snapshots, corrupt lines, "
                   "oldest/newest).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def store_stats_cmd(quick: bool, as_json: bool) -> None:
    """What the local metrics store holds: tasks, files, bytes, snapshots, corrupt lines.

    \b
    Exit codes: 0 ok, 2 usage or configuration error.
    """
    config = get_config()
    store = MetricsStore(config=config, auto_cleanup=False)
    stats = store.stats(scan=not quick)
    if as_json:
        click.echo(orjson.dumps(stats.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _echo_stats(stats)
