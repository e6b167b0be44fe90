"""The task model: a task is a named group of nodes reached over SSH, with an instance type.

Records are frozen dataclasses with explicit `to_dict()` / `from_dict()`; `from_dict` validates
every field and raises `FieldError` naming the field, which the inventory turns into an
`InventoryError` naming the file, line and task.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow.fleet.instance_types import GpuSpec, lookup_instance_type

__all__ = [
    "ID_PREFIX",
    "FieldError",
    "Node",
    "Task",
    "new_task_id",
    "parse_node_spec",
    "validate_name",
]

ID_PREFIX = "task-"
_ID_RE = re.compile(r"^task-[a-z0-9][a-z0-9-]{2,31}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:%-]+$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")
# A scheduler's node name (Slurm NodeName): no spaces, commas or brackets, which its host lists use.
_SCHEDULER_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NODE_FIELDS = ("host", "port", "user", "identity_file", "scheduler_node")


class FieldError(ValueError):
    """A field of a task has a value that is not allowed; `field` is its path (`nodes[0].port`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def new_task_id(taken: Collection[str] = ()) -> str:
    """A fresh `task-` + 6 hex characters id, not in `taken`."""
    while True:
        candidate = ID_PREFIX + secrets.token_hex(3)
        if candidate not in taken:
            return candidate


def validate_name(name: object, *, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FieldError(
            field, f"{name!r} is not a task name; allowed: letters, digits, '.', '_', '-' (at most 64)"
        )
    return name


def _port(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise FieldError(field, f"{value!r} is not a port; allowed: 1-65535")
    return value


def _optional_str(value: object, field: str, pattern: re.Pattern[str] | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or (pattern is not None and not pattern.match(value)):
        raise FieldError(field, f"{value!r} is not allowed here")
    return value


@dataclass(frozen=True, kw_only=True)
class Node:
    """One machine of a task. `None` fields fall back to ~/.ssh/config, then SSH defaults.

    `identity_file` is kept as written (`~` unexpanded); without one, the agent and the default
    keys are offered. `scheduler_node` is the node's name in the scheduler (Slurm's NodeName),
    when it is not the host's short name (`scheduler_name`).
    """

    host: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    scheduler_node: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not _HOST_RE.match(self.host):
            raise FieldError("host", f"{self.host!r} is not a host name or address")
        _port(self.port, "port")
        _optional_str(self.user, "user", _USER_RE)
        _optional_str(self.identity_file, "identity_file")
        name = self.scheduler_node
        if name is not None and (not isinstance(name, str) or not _SCHEDULER_NODE_RE.match(name)):
            raise FieldError("scheduler_node", f"{self.scheduler_node!r} is not a scheduler node name; "
                             "allowed: letters, digits, '.', '_', '-' (at most 64)")

    @property
    def scheduler_name(self) -> str:
        """The node's name in the scheduler: `scheduler_node`, else the host's short name
        (`gpu001` for `gpu001.cluster.local`; an address stays whole)."""
        if self.scheduler_node is not None:
            return self.scheduler_node
        if ":" in self.host or self.host.replace(".", "").isdigit():
            return self.host
        return self.host.split(".", 1)[0]

    @property
    def label(self) -> str:
        """`user@host:port`, as much as is set."""
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port is not None else text

    @property
    def identity_path(self) -> Path | None:
        return Path(self.identity_file).expanduser() if self.identity_file else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"host": self.host}
        for key in _NODE_FIELDS[1:]:
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    @classmethod
    def from_dict(cls, raw: object, *, field: str = "node") -> Node:
        if isinstance(raw, str):
            try:
                return parse_node_spec(raw)
            except FieldError as exc:
                raise FieldError(field, exc.message) from None
        if not isinstance(raw, Mapping):
            raise FieldError(field, f"{raw!r} is not a mapping with " + ", ".join(_NODE_FIELDS))
        unknown = set(raw) - set(_NODE_FIELDS)
        if unknown:
            raise FieldError(
                f"{field}.{sorted(unknown)[0]}",
                "is not a node field; allowed: " + ", ".join(_NODE_FIELDS),
            )
        try:
            return cls(
                host=raw.get("host"),  # type: ignore[arg-type]
                port=raw.get("port"),
                user=raw.get("user"),
                identity_file=raw.get("identity_file"),
                scheduler_node=raw.get("scheduler_node"),
            )
        except FieldError as exc:
            raise FieldError(f"{field}.{exc.field}", exc.message) from None


def parse_node_spec(spec: str, *, user: str | None = None, port: int | None = None) -> Node:
    """`[user@]host[:port]` (IPv6 as `[addr]:port`) -> Node; `user`/`port` fill what the spec lacks.

    Raises:
        FieldError: the spec is malformed, or it contradicts `user`/`port`.
    """
    text = spec.strip()
    spec_user: str | None = None
    if "@" in text:
        spec_user, _, text = text.rpartition("@")
    spec_port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise FieldError("host", f"{spec!r} is not [user@]host[:port]")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None  # a bare IPv6 address, or no port
    if port_text is not None:
        if not port_text.isdigit():
            raise FieldError("port", f"{port_text!r} in {spec!r} is not a port; allowed: 1-65535")
        spec_port = int(port_text)
    if spec_user is not None and user is not None and spec_user != user:
        raise FieldError("user", f"{spec!r} names user {spec_user!r} but --user is {user!r}")
    if spec_port is not None and port is not None and spec_port != port:
        raise FieldError("port", f"{spec!r} names port {spec_port} but --port is {port}")
    return Node(
        host=host,
        user=spec_user if spec_user is not None else user,
        port=spec_port if spec_port is not None else port,
    )


@dataclass(frozen=True, kw_only=True)
class Task:
    """A named group of nodes. `gpus` overrides the count the instance type implies.

    Attributes:
        id: `task-` + a short id, unique in the inventory.
        gpud_port: GPUd's port on the nodes; None means the configured FLOW_GPUD_PORT.
    """

    id: str
    name: str
    nodes: tuple[Node, ...]
    instance_type: str | None = None
    gpus: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    gpud_port: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise FieldError("id", f"{self.id!r} is not a task id; allowed: task- followed by 3-32 [a-z0-9-]")
        validate_name(self.name)
        if not self.nodes:
            raise FieldError("nodes", "a task needs at least one node")
        if self.instance_type is not None and (
            not isinstance(self.instance_type, str) or not re.match(r"^[A-Za-z0-9._-]+$", self.instance_type)
        ):
            raise FieldError("instance_type", f"{self.instance_type!r} is not an instance type name")
        if self.gpus is not None and (
            isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or not 0 <= self.gpus <= 1024
        ):
            raise FieldError("gpus", f"{self.gpus!r} is not a GPU count; allowed: 0-1024")
        _port(self.gpud_port, "gpud_port")
        for key, value in self.labels.items():
            if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
                raise FieldError(f"labels.{key}", "is not a label key; allowed: letters, digits, '._/-'")
            if not isinstance(value, str) or "\n" in value:
                raise FieldError(f"labels.{key}", f"{value!r} is not a one-line string")

    @property
    def gpu_spec(self) -> GpuSpec:
        """Model and count: the instance-type table, with `gpus` overriding the count."""
        spec = lookup_instance_type(self.instance_type)
        return GpuSpec(spec.model, self.gpus if self.gpus is not None else spec.count)

    @property
    def gpu_count(self) -> int | None:
        """GPUs per node; None when neither `gpus` nor the instance type says."""
        return self.gpu_spec.count

    @property
    def has_gpu(self) -> bool | None:
        """True / False when known; None when unknown (the checker treats unknown as maybe-GPU)."""
        count = self.gpu_count
        return None if count is None else count > 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.instance_type is not None:
            data["instance_type"] = self.instance_type
        if self.gpus is not None:
            data["gpus"] = self.gpus
        if self.gpud_port is not None:
            data["gpud_port"] = self.gpud_port
        if self.labels:
            data["labels"] = dict(sorted(self.labels.items()))
        data["nodes"] = [node.to_dict() for node in self.nodes]
        return data

    @classmethod
    def from_dict(cls, raw: object) -> Task:
        """Validate one task mapping (as read from tasks.yaml).

        Raises:
            FieldError: naming the field (e.g. `nodes[1].port`) and what is allowed.
        """
        if not isinstance(raw, Mapping):
            raise FieldError("task", f"{raw!r} is not a mapping")
        allowed = {"id", "name", "nodes", "instance_type", "gpus", "labels", "gpud_port"}
        unknown = set(raw) - allowed
        if unknown:
            raise FieldError(
                sorted(unknown)[0], "is not a task field; allowed: " + ", ".join(sorted(allowed))
            )
        for required in ("id", "name", "nodes"):
            if raw.get(required) is None:
                raise FieldError(required, "is missing")
        nodes_raw = raw["nodes"]
        if not isinstance(nodes_raw, list):
            raise FieldError("nodes", f"{nodes_raw!r} is not a list of nodes")
        nodes = tuple(Node.from_dict(item, field=f"nodes[{i}]") for i, item in enumerate(nodes_raw))
        labels_raw = raw.get("labels") or {}
        if not isinstance(labels_raw, Mapping):
            raise FieldError("labels", f"{labels_raw!r} is not a mapping of key: value")
        labels: dict[str, str] = {}
        for key, value in labels_raw.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise FieldError(f"labels.{key}", f"{value!r} is not a string")
            labels[str(key)] = str(value)
        instance_type = raw.get("instance_type")
        return cls(
            id=raw["id"],
            name=raw["name"],
            nodes=nodes,
            instance_type=str(instance_type) if isinstance(instance_type, (int, float)) else instance_type,
            gpus=raw.get("gpus"),
            labels=labels,
            gpud_port=raw.get("gpud_port"),
        )
