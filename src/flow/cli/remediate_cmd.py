"""`flow health remediate|drain|undrain|actions|set-healthy|check-node`: acting on verdicts.

The policy, brake, marker and audit log live in `flow.health.remediate`; docs/remediation.md
explains them. Dry run is the default everywhere: only `--apply` changes the scheduler.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import socket
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from flow.cli.common import EXIT_OK, EXIT_PROBLEMS, get_config, print_json, run_async
from flow.cli.numbers import HISTORY_HOURS_RANGE, NODE_TIMEOUT_RANGE, Bounded
from flow.config import Config
from flow.errors import ConfigError, FlowError, InventoryError

if TYPE_CHECKING:
    from flow.fleet.inventory import Inventory
    from flow.fleet.model import Node, Task
    from flow.health.remediate import (
        AuditLog,
        Brake,
        NodeState,
        Plan,
        PlanItem,
        RemediationSettings,
        SchedulerBackend,
    )
    from flow.health.remediate.act import Outcome
    from flow.health.snapshot import Snapshot

__all__ = ["actions_cmd", "check_node_cmd", "drain_cmd", "remediate_cmd", "set_healthy_cmd",
           "undrain_cmd"]

DEFAULT_TIMEOUT_S = 20.0
#: How far back the local store is read for the sweeps-in-a-row rules.
HISTORY_WINDOW = timedelta(hours=24)
_STATE_READS = 16  # scheduler reads at once


def _settings(config: Config, max_nodes: int | None = None,
              max_fraction: float | None = None) -> RemediationSettings:
    from dataclasses import replace

    from flow.health.remediate import RemediationSettings

    try:
        settings = RemediationSettings.from_mapping(config.remediation)
    except ConfigError as exc:
        raise ConfigError(f"{config.config_file}: {exc.message}", path=config.config_file) from None
    if max_nodes is not None:
        settings = replace(settings, max_nodes=max_nodes)
    if max_fraction is not None:
        settings = replace(settings, max_fraction=max_fraction)
    return settings


def _fleet_size(inventory: Inventory) -> int:
    """Nodes of the GPU tasks (the fleet the brake's fraction is of)."""
    return sum(len(t.nodes) for t in inventory.tasks if t.has_gpu is not False)


def _audit(config: Config) -> AuditLog:
    from flow.health.remediate import AuditLog

    return AuditLog.in_home(config.home)


def _backend(settings: RemediationSettings, audit: AuditLog) -> SchedulerBackend:
    from flow.health.remediate import build_backend
    from flow.ssh import SSHOptions

    return build_backend(settings, audit=audit, ssh_options=SSHOptions.from_config(get_config()))


async def _read_states(backend: SchedulerBackend, names: Iterable[str]) -> dict[str, NodeState]:
    limit = asyncio.Semaphore(_STATE_READS)

    async def one(name: str) -> tuple[str, NodeState]:
        async with limit:
            return name, await backend.node_state(name)

    return dict(await asyncio.gather(*(one(n) for n in sorted(set(names)))))


async def _close(backend: SchedulerBackend) -> None:
    close = getattr(backend, "close", None)  # not part of the Protocol: Slurm's login connection
    if close is not None:
        await close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (containers)
        return "unknown"


# -- flow health remediate ------------------------------------------------------------------


@click.command("remediate")
@click.option("--apply", "apply", is_flag=True,
              help="Change the scheduler. Without it nothing changes anywhere (the plan is "
                   "shown and recorded as dry-run).")
@click.option("--filter", "filter_text", metavar="TEXT",
              help="Only tasks whose id, name, instance type, label or host contains TEXT.")
@click.option("--max-nodes", type=click.IntRange(0, 100000), metavar="N",
              help="The brake: at most N nodes drained by flow per window "
                   "(default: health.remediation.max_nodes, 5).")
@click.option("--max-fraction", type=click.FloatRange(0, 1), metavar="F",
              help="The brake: at most this fraction of the fleet, 0-1 "
                   "(default: health.remediation.max_fraction, 0.1).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan and outcomes as one JSON document.")
@click.option("--timeout", "timeout_s", type=Bounded(NODE_TIMEOUT_RANGE), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Deadline per node in seconds, 0.1-3600.")
def remediate_cmd(apply: bool, filter_text: str | None, max_nodes: int | None,
                  max_fraction: float | None, as_json: bool, timeout_s: float) -> None:
    """Sweep the fleet, decide per node, and drain or resume nodes in the scheduler.

    \b
    flow health remediate                 the plan (dry run: nothing changes)
    flow health remediate --apply         carry it out
    flow health remediate --max-nodes 2   a tighter brake for this run

    Each node's row: its scheduler name, task, action (drain, undrain or none) and the
    verdict's reasons, or why nothing is done. Every planned action is recorded in
    $FLOW_HOME/actions.jsonl (flow health actions).

    \b
    Exit codes: 0 nothing needed doing, or all was done; 1 the brake held, an action failed
    or a node could not be read in the scheduler; 2 usage or configuration error.
    """
    from flow.cli.health_cmd import _checker, _select_tasks, _store, _sweep
    from flow.fleet.inventory import Inventory
    from flow.health.remediate import Brake, NodeView, drain_reasons, held_by_us, make_plan
    from flow.health.remediate.act import carry_out
    from flow.health.snapshot import utcnow
    from flow.health.storage import MetricsStore
    from flow.health.sweep.checker import DEFAULT_CONCURRENCY, targets_for

    config = get_config()
    settings = _settings(config, max_nodes, max_fraction)
    inventory = Inventory.from_config(config)
    tasks = _select_tasks(inventory, include_all=False, text=filter_text)
    if not tasks:
        raise ConfigError(
            f"no GPU tasks to check in {inventory.path}"
            + (f" matching {filter_text!r}" if filter_text else ""),
            hint="add one with: flow tasks add NAME --host HOST --instance-type h100.8xlarge")
    audit = _audit(config)
    backend = _backend(settings, audit)
    names = {(t.id, n.label): n.scheduler_name for t in tasks for n in t.nodes}

    result = _sweep(_checker(config, timeout_s, DEFAULT_CONCURRENCY), targets_for(tasks, config),
                    show_progress=not as_json)
    # The sweeps-in-a-row rules read the local store: this sweep is kept there first.
    _store(config, result.snapshots)
    store = MetricsStore(config.metrics_dir, retention_days=config.health.retention_days,
                         compress_after_days=config.health.compress_after_days)
    now = utcnow()
    depth = max(settings.consecutive_sweeps, settings.healthy_sweeps)
    views = [NodeView(snapshot=s, scheduler_node=names.get((s.task_id, s.node), s.node),
                      history=_history(store, s, depth, now)) for s in result.snapshots]

    window_start = now - timedelta(hours=settings.window_hours)
    records = audit.read().records
    ever_drained = {r.node for r in records if r.action == "drain" and r.mode == "applied"}
    wanted = {v.scheduler_node for v in views
              if drain_reasons(v.snapshot, settings) or v.scheduler_node in ever_drained}
    fleet = _fleet_size(inventory)

    async def decide_and_act() -> tuple[Brake, Plan, list[Outcome]]:
        # One event loop for every scheduler call: a login node's SSH connection is kept.
        try:
            states = await _read_states(backend, wanted)
            brake = Brake(settings.brake_limit(fleet), held_by_us(records, states, since=window_start),
                          settings.window_hours)
            plan = make_plan(views, states, settings, brake=brake, fleet_size=fleet)
            outcomes = await carry_out(plan.items, backend, audit, apply=apply, user=_user(), now=now)
            return brake, plan, outcomes
        finally:
            await _close(backend)

    brake, plan, outcomes = run_async(decide_and_act())
    failed = any(o.mode == "failed" for o in outcomes)
    problems = plan.brake_held or failed or any(i.problem for i in plan.items)

    if as_json:
        print_json({
            "schema": 1, "kind": "remediation", "apply": apply, "scheduler": backend.name,
            "fleet_size": fleet,
            "brake": {"limit": brake.limit, "held": sorted(brake.held),
                      "window_hours": brake.window_hours, "held_back": plan.brake_held},
            "nodes": [_item_json(i, outcomes) for i in plan.items],
        })
    else:
        _print_plan(plan.items, outcomes, apply=apply, scheduler=backend.name)
        if plan.brake_held:
            refused = [i.node for i in plan.items if i.refused]
            click.echo(f"the brake held: {brake.describe()}; refused: {', '.join(refused)}", err=True)
        if not apply and any(i.action != "none" for i in plan.items):
            click.echo("dry run: nothing was changed; run with --apply to act", err=True)
    raise SystemExit(EXIT_PROBLEMS if problems else EXIT_OK)


def _history(store: Any, snapshot: Snapshot, depth: int, now: Any) -> tuple[Snapshot, ...]:
    """The node's last `depth` stored snapshots (oldest first), the newest being this sweep's."""
    mine = [s for s in store.read_snapshots(task_id=snapshot.task_id, start=now - HISTORY_WINDOW,
                                            end=now + timedelta(minutes=1))
            if s.node == snapshot.node]
    from flow.health.snapshot import format_time

    # Stored times keep milliseconds: compare them as stored.
    if not mine or format_time(mine[-1].timestamp) != format_time(snapshot.timestamp):
        mine.append(snapshot)  # not stored (an unwritable store): the sweep still counts
    return tuple(mine[-depth:])


def _item_json(item: PlanItem, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    data = item.to_dict()
    for outcome in outcomes:
        if outcome.item is item:
            data["mode"] = outcome.mode
            data["reason_sent"] = outcome.record.reason
            data["answer"] = outcome.record.answer
    return data


def _mode_of(item: PlanItem, outcomes: Sequence[Outcome]) -> str:
    for outcome in outcomes:
        if outcome.item is item:
            return outcome.mode
    return ""


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _print_plan(items: Sequence[PlanItem], outcomes: Sequence[Outcome], *, apply: bool,
                scheduler: str) -> None:
    rows: list[tuple[str, ...]] = [("NODE", "TASK", "STATUS", "ACTION", "RESULT", "REASONS / WHY")]
    for item in items:
        status = item.status or "-"
        if item.score is not None:
            status += f" {item.score}"
        reasons = "; ".join(r.message for r in item.reasons[:3])
        why = item.note
        text = f"{reasons} [{why}]" if reasons and why else (reasons or why or "-")
        rows.append((item.node, item.task_name or item.task_id, status, item.action,
                     _mode_of(item, outcomes) or "-", text))
    click.echo(f"scheduler: {scheduler}   mode: {'apply' if apply else 'dry run'}")
    _table(rows)


# -- flow health drain / undrain ------------------------------------------------------------

_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _resolve_nodes(inventory: Inventory, ref: str) -> list[tuple[Task, Node]]:
    """TASK (all its nodes) or NODE (a scheduler name or host in the inventory)."""
    try:
        task = inventory.resolve(ref)
    except InventoryError as missing:
        found = [(t, n) for t in inventory.tasks for n in t.nodes
                 if ref in (n.scheduler_name, n.host, n.label)]
        if found:
            return found
        raise InventoryError(f"{ref!r} is neither a task nor a node in {inventory.path}",
                             hint=missing.hint or "flow tasks list shows tasks and nodes") from None
    return [(task, n) for n in task.nodes]


def _manual_items(pairs: Sequence[tuple[Task, Node]], action: str) -> list[PlanItem]:
    from flow.health.remediate import PlanItem

    return [PlanItem(node=n.scheduler_name, task_id=t.id, task_name=t.name, host=n.label,
                     action=action) for t, n in pairs]


def _manual(ref: str, action: str, apply: bool, reason: str | None) -> int:
    from flow.fleet.inventory import Inventory
    from flow.health.remediate import Brake, held_by_us
    from flow.health.remediate.act import carry_out
    from flow.health.snapshot import utcnow

    config = get_config()
    settings = _settings(config)
    inventory = Inventory.from_config(config)
    items = _manual_items(_resolve_nodes(inventory, ref), action)
    audit = _audit(config)
    backend = _backend(settings, audit)
    now = utcnow()
    records = audit.read().records
    limit = settings.brake_limit(_fleet_size(inventory))

    async def act() -> tuple[list[Outcome], bool]:
        try:
            states = await _read_states(backend, [i.node for i in items])
            since = now - timedelta(hours=settings.window_hours)
            brake = Brake(limit, held_by_us(records, states, since=since), settings.window_hours)
            planned, problems = _manual_plan(items, states, brake, action, backend.name)
            outcomes = await carry_out(planned, backend, audit, apply=apply, user=_user(), now=now,
                                       manual_reason=reason)
            return outcomes, problems
        finally:
            await _close(backend)

    outcomes, problems = asyncio.run(act())
    for outcome in outcomes:
        record = outcome.record
        line = f"{record.node}: {record.action} {record.mode}"
        if record.reason:
            line += f" (reason: {record.reason})"
        if record.why:
            line += f": {record.why}"
        if record.answer and record.mode == "failed":
            line += f"; {backend.name} said: {record.answer}"
        click.echo(line, err=record.mode in ("failed", "refused"))
        problems = problems or record.mode in ("failed", "refused")
    if not apply and any(o.mode == "dry-run" for o in outcomes):
        click.echo("dry run: nothing was changed; run with --apply to act", err=True)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _manual_plan(items: Sequence[PlanItem], states: dict[str, NodeState], brake: Brake, action: str,
                 scheduler: str) -> tuple[list[PlanItem], bool]:
    """What a manual drain/undrain does per node: someone else's drains are refused, flow's own
    drains are not drained again, and drains pass the brake."""
    from dataclasses import replace

    from flow.health.remediate import is_ours

    planned: list[PlanItem] = []
    problems = False
    for item in items:
        state = states[item.node]
        if state.error is not None:
            click.echo(f"{item.node}: cannot read the node in {scheduler}: {state.error}", err=True)
            problems = True
            continue
        ours = state.drained and is_ours(state.reason)
        if action == "drain" and ours:
            click.echo(f"{item.node}: already drained by flow ({state.reason})")
            continue
        if state.drained and not ours:
            verb = "left alone" if action == "drain" else "not resumed: flow resumes only its own drains"
            planned.append(replace(item, refused=True, note=f"drained by someone else "
                                   f"({state.reason or 'no reason given'}): {verb}"))
            continue
        if action == "undrain" and not state.drained:
            click.echo(f"{item.node}: not drained; nothing to do")
            continue
        planned.append(item)
    drains = [i for i in planned if i.action == "drain" and not i.refused]
    _, held_back = brake.split(drains)
    held_ids = {id(i) for i in held_back}
    planned = [replace(i, refused=True, note=f"brake: {brake.describe()}") if id(i) in held_ids else i
               for i in planned]
    return planned, problems


@click.command("drain")
@click.argument("target", metavar="TASK|NODE")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why; the scheduler gets 'flow: TEXT (UTC time)'.")
@click.option("--apply", "apply", is_flag=True, help="Change the scheduler (default: dry run).")
def drain_cmd(target: str, reason: str, apply: bool) -> None:
    """Drain a task's nodes (or one node, by scheduler name or host) with flow's marker.

    The brake and the audit log apply as for `flow health remediate`; a node drained by
    someone else keeps its reason. Exit codes: 0 done (or planned, without --apply); 1 the
    brake held, the node is someone else's or the scheduler failed; 2 usage error.
    """
    if not reason.strip():
        raise click.BadParameter("is empty; allowed: a short text", param_hint="'--reason'")
    raise SystemExit(_manual(target, "drain", apply, reason))


@click.command("undrain")
@click.argument("target", metavar="TASK|NODE")
@click.option("--apply", "apply", is_flag=True, help="Change the scheduler (default: dry run).")
def undrain_cmd(target: str, apply: bool) -> None:
    """Resume a task's nodes (or one node) that flow drained: only a node whose scheduler
    reason carries flow's marker. Exit codes: 0 done (or planned); 1 a node is someone else's
    or the scheduler failed; 2 usage error."""
    raise SystemExit(_manual(target, "undrain", apply, None))


# -- flow health actions --------------------------------------------------------------------


@click.command("actions")
@click.option("--since", "since_hours", type=Bounded(HISTORY_HOURS_RANGE), metavar="HOURS",
              help="Only the last HOURS (default: everything in the log).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as one JSON document.")
def actions_cmd(since_hours: float | None, as_json: bool) -> None:
    """The audit log of remediation ($FLOW_HOME/actions.jsonl): every drain and resume,
    applied, dry-run, refused or failed, who ran it and what the scheduler said."""
    from flow.health.snapshot import format_time, utcnow

    config = get_config()
    since = utcnow() - timedelta(hours=since_hours) if since_hours is not None else None
    read = _audit(config).read(since=since)
    if as_json:
        print_json({"schema": 1, "kind": "actions", "path": str(_audit(config).path),
                    "damaged_lines": read.damaged, "actions": [r.to_dict() for r in read.records]})
        return
    if read.damaged:
        click.echo(f"note: {read.damaged} damaged line(s) in {_audit(config).path} skipped", err=True)
    if not read.records:
        click.echo("no actions recorded" + (f" in the last {since_hours:g} h" if since_hours else ""))
        return
    rows: list[tuple[str, ...]] = [("TIME", "NODE", "ACTION", "MODE", "SCHEDULER", "USER", "REASON / WHY")]
    for r in read.records:
        text = "; ".join(x for x in (r.reason, r.why, r.answer if r.mode == "failed" else "") if x)
        rows.append((format_time(r.time)[:19] + "Z", r.node, r.action, r.mode, r.scheduler, r.user,
                     text or "-"))
    _table(rows)


# -- flow health set-healthy ----------------------------------------------------------------


@click.command("set-healthy")
@click.argument("task")
@click.option("--node", help="Which node of a multi-node task: 0-based index or host (default 0).")
@click.option("--component", "components", multiple=True, metavar="NAME",
              help="A GPUd component to clear (repeatable). Default: every component GPUd "
                   "reports Unhealthy or Degraded.")
@click.option("--timeout", "timeout_s", type=Bounded(NODE_TIMEOUT_RANGE), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Deadline in seconds, 0.1-3600.")
def set_healthy_cmd(task: str, node: str | None, components: tuple[str, ...], timeout_s: float) -> None:
    """After a repair: clear GPUd's sticky unhealthy states on a task's node (GPUd v0.8+).

    Calls GPUd's POST /v1/health-states/set-healthy through the node's SSH tunnel. Exit codes:
    0 cleared (or nothing to clear); 1 GPUd is older than v0.8, refused, or failed for a
    component; 2 usage error.
    """
    from flow.fleet import Inventory, gpud_address, node_params, pick_node
    from flow.ssh import SSHOptions

    config = get_config()
    found = Inventory.from_config(config).resolve(task)
    picked = pick_node(found, node)
    host, port = gpud_address(found, config)
    where = f"{found.name} node {picked.label}"

    async def run() -> tuple[list[str], Any]:
        from flow.health.gpud.client import GpudClient
        from flow.health.remediate.repair import SetHealthyUnsupported, set_healthy, supports_set_healthy
        from flow.ssh import connect

        async with await connect(node_params(picked), SSHOptions.from_config(config)) as conn:
            tunnel = await conn.tunnel(host, port)
            url = tunnel.url("https")
            async with GpudClient(url, timeout_s=timeout_s, deadline_s=timeout_s) as client:
                info = await client.get("/machine-info")
                version = None
                if info.status_code == 200:
                    body = _json_object(info.body)
                    version = str(body.get("gpudVersion") or "") or None
                if info.status_code == 404 or supports_set_healthy(version) is False:
                    from flow.text import clean_text

                    shown = clean_text(version, limit=40) if version else "v0.4 (no /machine-info)"
                    raise SetHealthyUnsupported(
                        f"the GPUd on {where} is {shown}: set-healthy needs GPUd v0.8.0 or later",
                        hint="upgrade GPUd on the node (FLOW_GPUD_VERSION=v0.8.0 or later; "
                             f"flow health install {found.name})")
                names = list(components)
                if not names:
                    states = await client.get_json("/v1/states")
                    names = _unhealthy_components(states)
                if not names:
                    return [], None
            return names, await set_healthy(url, names, timeout_s=timeout_s, where=where)

    async def bounded() -> tuple[list[str], Any]:
        try:
            return await asyncio.wait_for(run(), timeout_s)
        except asyncio.TimeoutError:
            raise FlowError(f"{where} did not finish set-healthy within {timeout_s:g} s") from None

    _, result = asyncio.run(bounded())
    if result is None:
        click.echo(f"{where}: every GPUd component is healthy; nothing to clear")
        raise SystemExit(EXIT_OK)
    if result.successful:
        click.echo(f"{where}: set healthy: {', '.join(result.successful)}")
    for name, why in sorted(result.failed.items()):
        click.echo(f"{where}: {name}: {why}", err=True)
    raise SystemExit(EXIT_PROBLEMS if result.failed else EXIT_OK)


def _json_object(body: bytes | bytearray) -> dict[str, Any]:
    import orjson

    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _unhealthy_components(states: Any) -> list[str]:
    """Components of a `/v1/states` answer with a state that is Unhealthy or Degraded."""
    from flow.text import clean_text

    names: list[str] = []
    for entry in states if isinstance(states, list) else []:
        if not isinstance(entry, dict):
            continue
        bad = any(isinstance(s, dict) and s.get("health") in ("Unhealthy", "Degraded")
                  for s in entry.get("states") or [])
        if bad and isinstance(entry.get("component"), str):
            names.append(clean_text(entry["component"], limit=200))
    return names


# -- flow health check-node -----------------------------------------------------------------


@click.command("check-node")
@click.option("--timeout", "timeout_s", type=Bounded(NODE_TIMEOUT_RANGE), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Deadline in seconds, 0.1-3600.")
def check_node_cmd(timeout_s: float) -> None:
    """On a node: read the local GPUd (https://127.0.0.1:FLOW_GPUD_PORT), print one line.

    For Slurm's HealthCheckProgram, an NHC check or a node-problem-detector custom plugin
    (docs/remediation.md shows each). The line starts with flow's marker, `flow:`, and is fit
    for a scheduler reason as it is.

    \b
    Exit codes: 0 healthy or degraded; 1 critical, unknown or GPUd unreachable; 2 usage error.
    """
    from flow.health.gpud.client import read_gpud
    from flow.health.remediate.marker import MAX_REASON_CHARS, scheduler_safe
    from flow.health.scoring import score_snapshot
    from flow.health.snapshot import HealthStatus

    config = get_config()
    bind = config.health.gpud_bind
    host = "127.0.0.1" if bind in ("0.0.0.0", "::", "[::]") else bind
    url = f"https://{'[' + host + ']' if ':' in host else host}:{config.health.gpud_port}"

    async def bounded() -> Snapshot:
        return await asyncio.wait_for(
            read_gpud(url, task_id="local", node=socket.gethostname(), timeout_s=timeout_s,
                      deadline_s=timeout_s), timeout_s + 1)

    try:
        snapshot = asyncio.run(bounded())
    except asyncio.TimeoutError:
        click.echo(f"flow: unknown: GPUd at {url} did not answer within {timeout_s:g} s")
        raise SystemExit(EXIT_PROBLEMS) from None
    verdict = score_snapshot(snapshot, config.thresholds)
    status = verdict.status
    line = f"flow: {status.value}"
    if verdict.score is not None:
        line += f" (score {verdict.score})"
    main = verdict.main_reason
    if main is not None and status is not HealthStatus.HEALTHY:
        line += f": {main.message}"
    click.echo(scheduler_safe(line)[:MAX_REASON_CHARS])
    ok = status in (HealthStatus.HEALTHY, HealthStatus.DEGRADED)
    raise SystemExit(EXIT_OK if ok else EXIT_PROBLEMS)
