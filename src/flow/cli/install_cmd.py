"""`flow health startup-script | install | uninstall | status`: GPUd and the collector on nodes.

Thin: options become an `InstallOptions`, the library writes the scripts and runs them over
SSH, and this module prints the scripts, the per-node result table or the status table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from flow.cli.common import EXIT_OK, EXIT_PROBLEMS, get_config
from flow.cli.numbers import EXPECTED_GPUS_RANGE, INSTALL_TIMEOUT_RANGE, Bounded
from flow.config import (
    BATCH_SIZE_RANGE,
    COMPRESS_AFTER_DAYS_RANGE,
    METRICS_INTERVAL_RANGE,
    RETENTION_DAYS_RANGE,
    Config,
)
from flow.fleet import Inventory, Task, node_params
from flow.health.install import (
    GpudSource,
    InstallOptions,
    NodeReport,
    NodeStatus,
    Target,
    read_statuses,
    read_token_file,
    run_scripts,
    ssh_runner,
    startup_script,
    status_script,
    uninstall_script,
)
from flow.health.install.options import SYSTEMD_MODES
from flow.health.install.remote import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S
from flow.secrets import redact_url, scrub, url_secrets
from flow.ssh import SSHOptions, SSHPool

__all__ = ["install_cmd", "startup_script_cmd", "status_cmd", "uninstall_cmd"]

_F = TypeVar("_F", bound=Callable[..., Any])
_REDACTED = "<redacted>"


def _install_options(func: _F) -> _F:
    """The options shared by `startup-script` and `install` (defaults come from the config)."""
    options = [
        click.option("--gpud-version", metavar="VERSION",
                     help="GPUd release tag to install, e.g. v0.5.1 [default: FLOW_GPUD_VERSION]."),
        click.option("--endpoint", metavar="URL",
                     help="Where the collector streams metrics [default: FLOW_METRICS_ENDPOINT]."),
        # The node's collector reads these back through flow.config: the same ranges.
        click.option("--interval", type=Bounded(METRICS_INTERVAL_RANGE), metavar="SECONDS",
                     help="Sampling interval, 0.05-86400 [default: FLOW_METRICS_INTERVAL]."),
        click.option("--batch-size", type=Bounded(BATCH_SIZE_RANGE), metavar="N",
                     help="Snapshots per POST, 1-10000 [default: FLOW_METRICS_BATCH_SIZE]."),
        click.option("--retention-days", type=Bounded(RETENTION_DAYS_RANGE), metavar="DAYS",
                     help="Days of metrics kept on the node, 1-3650 "
                          "[default: FLOW_METRICS_RETENTION_DAYS]."),
        click.option("--compress-after-days", type=Bounded(COMPRESS_AFTER_DAYS_RANGE), metavar="DAYS",
                     help="Days before stored files are gzipped, 1-3650 "
                          "[default: FLOW_METRICS_COMPRESS_AFTER_DAYS]."),
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
                     help="A 0600 file holding the endpoint's bearer token [default: "
                          "FLOW_METRICS_AUTH_TOKEN or health.metrics_auth_token_file]."),
        click.option("--gpud-tarball", metavar="PATH",
                     help="Air-gapped: a path ON THE NODE to gpud_<ver>_linux_<arch>.tgz, or to a "
                          "directory holding them (picked by the node's architecture)."),
        click.option("--gpud-mirror", metavar="URL",
                     help="Air-gapped: an internal mirror URL; {version}, {arch}, {file} are "
                          "substituted, else the tarball name is appended."),
        click.option("--gpud-sha256", metavar="HEX",
                     help="Expected SHA-256 of the tarball: a mismatch installs nothing."),
        click.option("--package", metavar="SPEC",
                     help="What the collector's venv pip-installs: a requirement or a wheel/sdist "
                          "path on the node; 'none' skips the pip install [default: this flow version]."),
        click.option("--python", "python_cmd", metavar="CMD",
                     help="The node's Python 3.10+ that creates /opt/flow/venv [default: python3]."),
        click.option("--root", metavar="DIR",
                     help="Install under DIR instead of / (image builds, tests); sets $FLOW_ROOT."),
        click.option("--systemd", type=click.Choice(SYSTEMD_MODES), default=None,
                     help="Use systemd (yes), the pid-file fallback (no) or detect it [default: auto]."),
        click.option("--healthz-timeout", type=click.IntRange(1, 3600), metavar="SECONDS",
                     help="How long to wait for GPUd's /healthz after starting it [default: 60]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _build_options(config: Config, values: dict[str, Any]) -> InstallOptions:
    """CLI values over the config's defaults. Raises ConfigError naming the option."""
    overrides: dict[str, Any] = {}
    simple = {
        "gpud_version": "gpud_version",
        "endpoint": "metrics_endpoint",
        "interval": "metrics_interval",
        "batch_size": "metrics_batch_size",
        "retention_days": "retention_days",
        "compress_after_days": "compress_after_days",
        "python_cmd": "python",
        "root": "root",
        "systemd": "systemd",
        "healthz_timeout": "healthz_timeout_s",
        "task_id": "task_id",
        "task_name": "task_name",
        "instance_type": "instance_type",
        "expected_gpus": "expected_gpus",
    }
    for key, field_name in simple.items():
        if values.get(key) is not None:
            overrides[field_name] = values[key]
    if values.get("token_file") is not None:
        overrides["auth_token"] = read_token_file(values["token_file"])
    package = values.get("package")
    if package is not None:
        overrides["package"] = None if package.strip().lower() == "none" else package
    overrides["gpud_source"] = GpudSource(
        tarball=values.get("gpud_tarball"), mirror=values.get("gpud_mirror"), sha256=values.get("gpud_sha256")
    )
    return InstallOptions.from_config(config, **overrides)


def _redact(script: str, options: InstallOptions) -> str:
    """The script as a dry run shows it: no token, and the endpoint's credentials hidden."""
    if options.auth_token:
        script = script.replace(options.auth_token, _REDACTED)
    endpoint = options.metrics_endpoint
    if endpoint:
        script = script.replace(endpoint, redact_url(endpoint))
        # In case quoting spelled the URL differently; short values would hit unrelated text.
        script = scrub(script, [s for s in url_secrets(endpoint) if len(s) >= 6])
    return script


def _tasks(config: Config, task_ref: str | None, all_tasks: bool) -> list[Task]:
    if (task_ref is None) == (not all_tasks):
        raise click.UsageError("name one TASK, or pass --all (not both)")
    inventory = Inventory.from_config(config)
    if all_tasks:
        tasks = list(inventory.tasks)
        if not tasks:
            raise click.UsageError(f"the inventory {config.tasks_file} holds no tasks (flow tasks add)")
        return tasks
    assert task_ref is not None
    return [inventory.resolve(task_ref)]


def _task_options(options: InstallOptions, task: Task) -> InstallOptions:
    return options.for_task(task_id=task.id, task_name=task.name, instance_type=task.instance_type,
                            gpud_port=task.gpud_port, expected_gpus=task.gpus)


def _targets(tasks: Sequence[Task], script_for: Callable[[Task], str]) -> list[Target]:
    targets: list[Target] = []
    for task in tasks:
        script = script_for(task)
        for node in task.nodes:
            targets.append(Target(label=f"{task.name}/{node.label}", params=node_params(node), script=script))
    return targets


def _run(
    config: Config, targets: Sequence[Target], *, concurrency: int, timeout_s: float
) -> list[NodeReport]:
    async def go() -> list[NodeReport]:
        async with SSHPool(SSHOptions.from_config(config)) as pool:
            return await run_scripts(targets, runner=ssh_runner(pool), concurrency=concurrency,
                                     timeout_s=timeout_s)

    return asyncio.run(go())


def _print_dry_run(tasks: Sequence[Task], script_for: Callable[[Task], str]) -> None:
    for index, task in enumerate(tasks):
        nodes = ", ".join(node.label for node in task.nodes)
        if index:
            click.echo()
        click.echo(f"# ---- task {task.name} ({task.id}): {nodes} ----")
        click.echo(script_for(task), nl=False)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _print_reports(reports: Sequence[NodeReport], *, as_json: bool) -> int:
    if as_json:
        data = [
            {
                "node": r.node,
                "outcome": r.outcome,
                "failed_step": r.failed_step,
                "message": r.message,
                "steps": [{"step": s.step, "status": s.status, "message": s.message} for s in r.steps],
                "log_tail": list(r.log_tail),
            }
            for r in reports
        ]
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        rows = [["NODE", "RESULT", "DETAIL"]]
        for r in reports:
            detail = f"{r.failed_step}: {r.message}" if r.outcome == "failed" and r.failed_step else r.message
            rows.append([r.node, r.outcome, detail])
        for line in _table(rows):
            click.echo(line)
        for r in reports:
            if r.outcome == "failed" and r.log_tail:
                click.echo(f"\n--- {r.node}: last log lines of step {r.failed_step or '?'}:")
                for line in r.log_tail:
                    click.echo(f"    {line}")
        counts = {o: sum(1 for r in reports if r.outcome == o) for o in ("changed", "ok", "failed")}
        click.echo(f"\n{len(reports)} node(s): {counts['changed']} changed, {counts['ok']} unchanged, "
                   f"{counts['failed']} failed")
    return EXIT_PROBLEMS if any(r.outcome == "failed" for r in reports) else EXIT_OK


_TARGET_ARGS = [
    click.argument("task", required=False),
    click.option("--all", "all_tasks", is_flag=True, help="Every task in the inventory."),
    click.option("--concurrency", type=click.IntRange(1, 1024), default=DEFAULT_CONCURRENCY,
                 show_default=True, help="Nodes worked on at once."),
]


def _target_options(func: _F) -> _F:
    for option in reversed(_TARGET_ARGS):
        func = option(func)
    return func


@click.command("startup-script")
@_install_options
@click.option("--task-id", metavar="ID", help="The task id the collector reports (FLOW_TASK_ID).")
@click.option("--task-name", metavar="NAME", help="The task name the collector reports (FLOW_TASK_NAME).")
@click.option("--instance-type", metavar="TYPE", help="The instance type (FLOW_INSTANCE_TYPE).")
@click.option("--expected-gpus", type=Bounded(EXPECTED_GPUS_RANGE), metavar="N",
              help="GPUs the node should have, 0-1024 (FLOW_EXPECTED_GPUS) [default: the "
                   "instance type's count].")
def startup_script_cmd(**values: Any) -> None:
    """Print a POSIX sh script that installs GPUd and the collector on the machine it runs on.

    Use it as cloud-init user data or in any boot hook; it runs as root, logs to
    /var/log/flow/startup.log and is safe to run again (it changes only what differs). With
    FLOW_HEALTH_MONITORING=false the script is a no-op that logs why.

    The script holds the metrics auth token when one is configured: treat it as a secret.
    See docs/install.md.
    """
    config = get_config()
    options = _build_options(config, values)
    click.echo(startup_script(options), nl=False)
    if options.enabled and options.auth_token:
        click.echo("note: the script holds the metrics auth token; keep it secret", err=True)


@click.command("install")
@_target_options
@_install_options
@click.option("--dry-run", is_flag=True, help="Print the script for each task (token redacted); run nothing.")
@click.option("--timeout", "timeout_s", type=Bounded(INSTALL_TIMEOUT_RANGE), default=DEFAULT_TIMEOUT_S,
              show_default=True, metavar="SECONDS", help="Deadline for each node's run, 1-3600.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-node results as JSON.")
def install_cmd(task: str | None, all_tasks: bool, concurrency: int, dry_run: bool, timeout_s: float,
                as_json: bool, **values: Any) -> None:
    """Install (or upgrade) GPUd and the collector on a task's nodes over SSH.

    Runs the startup script on every node at once (sudo -n when the SSH user is not root) and
    prints one line per node: ok (nothing to change), changed, or failed with the failing
    step and its last log lines. Exit status 1 when a node failed.
    """
    config = get_config()
    options = _build_options(config, values)
    tasks = _tasks(config, task, all_tasks)
    if dry_run:
        _print_dry_run(tasks, lambda t: _redact(startup_script(_task_options(options, t)), options))
        return
    if not options.enabled:
        click.echo("health monitoring is disabled (FLOW_HEALTH_MONITORING=false): nothing to install")
        return
    targets = _targets(tasks, lambda t: startup_script(_task_options(options, t)))
    reports = _run(config, targets, concurrency=concurrency, timeout_s=timeout_s)
    click.get_current_context().exit(_print_reports(reports, as_json=as_json))


@click.command("uninstall")
@_target_options
@click.option("--purge", is_flag=True,
              help="Also delete the stored metrics (/var/lib/flow) and GPUd's state.")
@click.option("--keep-gpud", is_flag=True,
              help="Remove only the collector; leave GPUd installed and running.")
@click.option("--root", metavar="DIR", help="Uninstall from DIR instead of / (as install --root).")
@click.option("--systemd", type=click.Choice(SYSTEMD_MODES), default=None,
              help="Use systemd (yes), the pid-file fallback (no) or detect it [default: auto].")
@click.option("--dry-run", is_flag=True, help="Print the uninstall script; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-node results as JSON.")
def uninstall_cmd(task: str | None, all_tasks: bool, concurrency: int, purge: bool, keep_gpud: bool,
                  root: str | None, systemd: str | None, dry_run: bool, as_json: bool) -> None:
    """Stop and remove GPUd and the collector from a task's nodes.

    Removes both services, their units, /etc/default/gpud, the gpud binary, /etc/flow,
    /opt/flow and /var/log/flow. The stored metrics (/var/lib/flow) are kept unless --purge.
    """
    config = get_config()
    options = _build_options(config, {"root": root, "systemd": systemd})
    tasks = _tasks(config, task, all_tasks)
    script = uninstall_script(options, purge=purge, keep_gpud=keep_gpud)
    if dry_run:
        _print_dry_run(tasks[:1], lambda _t: script)
        return
    targets = _targets(tasks, lambda _t: script)
    reports = _run(config, targets, concurrency=concurrency, timeout_s=300.0)
    click.get_current_context().exit(_print_reports(reports, as_json=as_json))


def _age(status: NodeStatus) -> str:
    if status.last_sample is None:
        return "-"
    return status.last_sample.strftime("%Y-%m-%d %H:%M:%SZ")


def _print_statuses(statuses: Sequence[NodeStatus], *, as_json: bool) -> int:
    if as_json:
        click.echo(orjson.dumps([s.to_dict() for s in statuses], option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    rows = [["NODE", "GPUD", "GPUD VERSION", "HEALTHZ", "COLLECTOR", "FLOW VERSION", "LAST SAMPLE",
             "BACKLOG"]]
    errors = []
    for s in statuses:
        if s.error:
            # The reason goes under the table: in a cell it would widen every row to its length.
            rows.append([s.node, "error", "(below)", "", "", "", "", ""])
            errors.append(f"{s.node}: {s.error}")
            continue
        healthz = "-" if s.gpud_healthy is None else ("ok" if s.gpud_healthy else "unreachable")
        rows.append([
            s.node,
            (s.gpud_service or "-") if s.gpud_installed else "not installed",
            s.gpud_version or "-",
            healthz,
            (s.collector_service or "-") if s.collector_installed else "not installed",
            (s.collector_version or "-").removeprefix("flow, version "),
            _age(s),
            "-" if s.backlog_records is None else f"{s.backlog_records} snapshot(s)",
        ])
    for line in _table(rows):
        click.echo(line)
    if errors:
        click.echo("")
        for line in errors:
            click.echo(line)
    return EXIT_OK


@click.command("status")
@_target_options
@click.option("--root", metavar="DIR", help="Read the install under DIR instead of / (as install --root).")
@click.option("--systemd", type=click.Choice(SYSTEMD_MODES), default=None,
              help="Use systemd (yes), the pid-file fallback (no) or detect it [default: auto].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(task: str | None, all_tasks: bool, concurrency: int, root: str | None, systemd: str | None,
               as_json: bool) -> None:
    """Show what is installed on a task's nodes: GPUd and collector service state, versions,
    GPUd's /healthz, the last stored sample and the delivery backlog (read over SSH)."""
    config = get_config()
    options = _build_options(config, {"root": root, "systemd": systemd})
    tasks = _tasks(config, task, all_tasks)
    targets = _targets(tasks, lambda t: status_script(_task_options(options, t)))

    async def go() -> list[NodeStatus]:
        async with SSHPool(SSHOptions.from_config(config)) as pool:
            return await read_statuses(targets, runner=ssh_runner(pool), concurrency=concurrency)

    statuses = asyncio.run(go())
    code = _print_statuses(statuses, as_json=as_json)
    if any(s.error for s in statuses):
        code = EXIT_PROBLEMS
    click.get_current_context().exit(code)
