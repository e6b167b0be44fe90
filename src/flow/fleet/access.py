"""How to reach a task's nodes: the bridge from the task model to `flow.ssh`'s plain parameters.

`flow.ssh` knows nothing of tasks; the checker, `flow ssh` and `flow logs` call these.
"""

from __future__ import annotations

from flow.config import Config
from flow.errors import InventoryError
from flow.fleet.model import Node, Task
from flow.ssh.params import SSHParams

__all__ = ["gpud_address", "node_params", "pick_node"]


def node_params(node: Node) -> SSHParams:
    """SSHParams for a node: its host, port, user and identity file; the agent is always offered."""
    identity = node.identity_path
    return SSHParams(
        host=node.host,
        port=node.port,
        user=node.user,
        key_paths=(identity,) if identity is not None else (),
        use_agent=True,
    )


def gpud_address(task: Task, config: Config) -> tuple[str, int]:
    """(bind address, port) of GPUd on the task's nodes: FLOW_GPUD_BIND and the task's own
    `gpud_port`, else FLOW_GPUD_PORT. The tunnel's remote end."""
    port = task.gpud_port if task.gpud_port is not None else config.health.gpud_port
    return config.health.gpud_bind, port


def pick_node(task: Task, selector: str | None) -> Node:
    """The node `selector` names: an index (0-based) or a host; the first node when None.

    Raises:
        InventoryError: no such node, listing the task's nodes.
    """
    if selector is None:
        return task.nodes[0]
    if selector.isdigit() and int(selector) < len(task.nodes):
        return task.nodes[int(selector)]
    for node in task.nodes:
        if selector in (node.host, node.label):
            return node
    listed = ", ".join(f"{i}: {n.label}" for i, n in enumerate(task.nodes))
    raise InventoryError(
        f"task {task.name} ({task.id}) has no node {selector!r}; its nodes: {listed}",
        hint="--node takes a 0-based index or a host",
    )
