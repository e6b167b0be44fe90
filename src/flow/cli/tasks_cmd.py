"""`flow tasks add|list|show|remove|import`: the task inventory ($FLOW_HOME/tasks.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from flow.cli.common import get_config
from flow.errors import InventoryError
from flow.fleet import (
    FieldError,
    ImportedHost,
    Inventory,
    Node,
    Task,
    new_task_id,
    parse_node_spec,
    read_hosts_file,
    read_ssh_config,
)

__all__ = ["tasks_group"]


def _parse_labels(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not key=value", param_hint="'--label'")
        labels[key.strip()] = text.strip()
    return labels


def _task_json(task: Task) -> dict[str, Any]:
    data = task.to_dict()
    spec = task.gpu_spec
    data["gpu_model"] = spec.model
    data["gpu_count"] = spec.count
    return data


def _gpus_text(task: Task) -> str:
    spec = task.gpu_spec
    if spec.count is None:
        return "?"
    if spec.count == 0:
        return "-"
    return f"{spec.count}x {spec.model}" if spec.model else str(spec.count)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _echo_json(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@click.group("tasks")
def tasks_group() -> None:
    """The task inventory: the machines flow checks ($FLOW_HOME/tasks.yaml).

    \b
    flow tasks add train-a --host 10.0.0.5 --user ubuntu --instance-type h100.8xlarge
    flow tasks add big --host n1 --node n2 --node n3:2222 --instance-type a100.8xlarge
    flow tasks import --ssh-config --match 'gpu-*'
    flow tasks import --hosts hosts.txt --instance-type l4.xlarge
    flow tasks list
    flow tasks remove train-a

    A task is named by its id (task-xxxxxx), its name, or a unique id prefix.
    """


@tasks_group.command("add")
@click.argument("name")
@click.option("--host", help="The first node: HOST, [USER@]HOST[:PORT] (IPv6: [ADDR]:PORT).")
@click.option("--node", "nodes", multiple=True, metavar="HOST[:PORT]",
              help="Another node of a multi-node task (repeatable); same syntax as --host.")
@click.option("--user", help="SSH user for every node (default: ~/.ssh/config, else your user name).")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port for every node (default 22).")
@click.option("--key", type=click.Path(dir_okay=False),
              help="Private key file (default: agent and ~/.ssh keys).")
@click.option("--instance-type", help="e.g. h100.8xlarge (8 GPUs), a10g.xlarge (1), cpu.4xlarge (none).")
@click.option("--gpus", type=click.IntRange(0, 1024), help="GPUs per node, overriding the instance type.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (repeatable).")
@click.option("--gpud-port", type=click.IntRange(1, 65535),
              help="GPUd's port on these nodes (default: FLOW_GPUD_PORT).")
@click.option("--scheduler-node", "scheduler_nodes", multiple=True, metavar="NAME",
              help="The node's name in the scheduler (Slurm NodeName) when it is not the host's "
                   "short name; repeat it once per node, in the order --host, --node ...")
@click.option("--json", "as_json", is_flag=True, help="Print the new task as JSON.")
def add(
    name: str,
    host: str | None,
    nodes: tuple[str, ...],
    user: str | None,
    port: int | None,
    key: str | None,
    instance_type: str | None,
    gpus: int | None,
    labels: tuple[str, ...],
    gpud_port: int | None,
    scheduler_nodes: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add a task NAME with one node (--host) or several (--host plus --node ...)."""
    specs = ([host] if host else []) + list(nodes)
    if not specs:
        raise click.UsageError("give the task's node: --host HOST (and --node HOST for more nodes)")
    if scheduler_nodes and len(scheduler_nodes) != len(specs):
        raise click.BadParameter(
            f"{len(scheduler_nodes)} given for {len(specs)} node(s); allowed: one per node, in the "
            "order --host, --node ...", param_hint="'--scheduler-node'")
    if key is not None and not Path(key).expanduser().is_file():
        raise click.BadParameter(f"{key!r} is not a file; allowed: a private key file", param_hint="'--key'")
    parsed_labels = _parse_labels(labels)
    node_list: list[Node] = []
    for index, spec in enumerate(specs):
        try:
            node = parse_node_spec(spec, user=user, port=port)
        except FieldError as exc:
            raise click.BadParameter(exc.message, param_hint="'--host' / '--node'") from None
        try:
            node_list.append(Node(host=node.host, port=node.port, user=node.user, identity_file=key,
                                  scheduler_node=scheduler_nodes[index] if scheduler_nodes else None))
        except FieldError as exc:
            hint = "'--scheduler-node'" if exc.field == "scheduler_node" else "'--host' / '--node'"
            raise click.BadParameter(exc.message, param_hint=hint) from None
    config = get_config()
    with Inventory.edit(config.tasks_file) as inventory:
        try:
            task = Task(
                id=new_task_id(inventory.ids()),
                name=name,
                nodes=tuple(node_list),
                instance_type=instance_type,
                gpus=gpus,
                labels=parsed_labels,
                gpud_port=gpud_port,
            )
        except FieldError as exc:
            option = {"name": "NAME", "instance_type": "--instance-type"}.get(exc.field, f"--{exc.field}")
            raise click.BadParameter(exc.message, param_hint=f"'{option}'") from None
        inventory.add(task)
    if as_json:
        _echo_json(_task_json(task))
    else:
        click.echo(f"added {task.name} ({task.id}): {', '.join(n.label for n in task.nodes)}")


@tasks_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of tasks) instead of a table.")
def list_tasks(as_json: bool) -> None:
    """List every task: id, name, nodes, instance type, GPUs per node and labels.

    GPUS shows `N x MODEL`, `-` for none, `?` when neither the instance type nor --gpus says.
    """
    inventory = Inventory.from_config(get_config())
    if as_json:
        _echo_json([_task_json(t) for t in inventory])
        return
    if not len(inventory):
        click.echo(f"no tasks in {inventory.path}; add one: flow tasks add NAME --host HOST", err=True)
        return
    rows: list[tuple[str, ...]] = [("ID", "NAME", "NODES", "INSTANCE TYPE", "GPUS", "LABELS")]
    for task in inventory:
        nodes = task.nodes[0].label + (f" (+{len(task.nodes) - 1})" if len(task.nodes) > 1 else "")
        labels = ",".join(f"{k}={v}" for k, v in sorted(task.labels.items()))
        rows.append((task.id, task.name, nodes, task.instance_type or "-", _gpus_text(task), labels))
    _table(rows)


@tasks_group.command("show")
@click.argument("task")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(task: str, as_json: bool) -> None:
    """Show one task (by id, name or id prefix) with all its nodes."""
    found = Inventory.from_config(get_config()).resolve(task)
    if as_json:
        _echo_json(_task_json(found))
        return
    click.echo(f"{found.id}  {found.name}")
    click.echo(f"  instance type: {found.instance_type or '-'}   gpus per node: {_gpus_text(found)}")
    if found.gpud_port is not None:
        click.echo(f"  gpud port:     {found.gpud_port}")
    for key, value in sorted(found.labels.items()):
        click.echo(f"  label:         {key}={value}")
    for index, node in enumerate(found.nodes):
        key_text = f"  key {node.identity_file}" if node.identity_file else ""
        click.echo(f"  node {index}:        {node.label}{key_text}  scheduler node {node.scheduler_name}")


@tasks_group.command("remove")
@click.argument("task")
def remove(task: str) -> None:
    """Remove a task, named by id, name or unique id prefix."""
    with Inventory.edit(get_config().tasks_file) as inventory:
        removed = inventory.remove(task)
    click.echo(f"removed {removed.name} ({removed.id})")


@tasks_group.command("import")
@click.option("--ssh-config", "ssh_config", is_flag=False, flag_value="~/.ssh/config", default=None,
              metavar="[FILE]", help="Import the Host entries of FILE (default ~/.ssh/config).")
@click.option("--hosts", "hosts_file", type=click.Path(dir_okay=False),
              help="Import a host list: one [USER@]HOST[:PORT] [NAME] per line, # comments.")
@click.option("--match", "pattern", help="Only aliases matching this glob (with --ssh-config).")
@click.option("--instance-type", help="Instance type for every imported task.")
@click.option("--gpus", type=click.IntRange(0, 1024), help="GPUs per node for every imported task.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A label for every imported task.")
@click.option("--dry-run", is_flag=True, help="Show what would be imported; change nothing.")
def import_tasks(
    ssh_config: str | None,
    hosts_file: str | None,
    pattern: str | None,
    instance_type: str | None,
    gpus: int | None,
    labels: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Import tasks from an ssh_config file or a host list (one task per host).

    ssh_config: each concrete Host alias becomes a task of that name, with the HostName, User,
    Port and IdentityFile OpenSSH would use; wildcard-only entries and Match blocks are skipped.
    A name already in the inventory is skipped, not replaced.
    """
    if (ssh_config is None) == (hosts_file is None):
        raise click.UsageError("give exactly one of --ssh-config [FILE] or --hosts FILE")
    if pattern is not None and ssh_config is None:
        raise click.UsageError("--match works with --ssh-config")
    parsed_labels = _parse_labels(labels)
    found: list[ImportedHost]
    if ssh_config is not None:
        path = Path(ssh_config).expanduser()
        if not path.is_file():
            raise click.BadParameter(f"{ssh_config!r} is not a file", param_hint="'--ssh-config'")
        found = read_ssh_config(path, match=pattern)
    else:
        found = read_hosts_file(Path(str(hosts_file)))
    if not found:
        click.echo("nothing to import: no concrete hosts found", err=True)
        return
    config = get_config()
    added: list[Task] = []
    with Inventory.edit(config.tasks_file) as inventory:
        taken = {t.name for t in inventory} | inventory.ids()
        for host in found:
            if host.name in taken:
                click.echo(f"skipped {host.name}: a task of that name exists ({host.source})", err=True)
                continue
            try:
                task = Task(
                    id=new_task_id(inventory.ids()),
                    name=host.name,
                    nodes=(host.node,),
                    instance_type=instance_type,
                    gpus=gpus,
                    labels=parsed_labels,
                )
            except FieldError as exc:
                raise InventoryError(f"{host.source}: {exc.field}: {exc.message}") from None
            inventory.add(task)
            taken.add(task.name)
            added.append(task)
        if dry_run:
            for task in added:
                inventory.remove(task.id)
    verb = "would add" if dry_run else "added"
    for task in added:
        click.echo(f"{verb} {task.name} ({task.id}): {task.nodes[0].label}")
    click.echo(f"{verb} {len(added)} task(s)" + (f" to {config.tasks_file}" if not dry_run else ""))
