"""The task inventory: `$FLOW_HOME/tasks.yaml` (config.tasks_file), validated on every read.

```yaml
version: 1
tasks:
  - id: task-3f9a1c
    name: train-a
    instance_type: h100.8xlarge
    labels: {team: ml}
    nodes:
      - {host: 10.0.0.5, user: ubuntu, port: 22, identity_file: ~/.ssh/id_ed25519}
```
A malformed file names the file and line; a bad field names the file, line, task and field. A
task is named by its id, its name, a unique id prefix or (if unique) its name in any case; an
unknown or ambiguous name raises `InventoryError` listing the near matches. Writes are atomic
(temp file + rename, mode 0600) and `Inventory.edit()` holds a lock across read-modify-write so
two `flow tasks add` never lose each other's task.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from flow.config import Config, read_regular_file
from flow.errors import InventoryError
from flow.fleet.model import ID_PREFIX, FieldError, Task
from flow.fs import ensure_private_dir

__all__ = ["FORMAT_VERSION", "MAX_INVENTORY_BYTES", "Inventory"]

FORMAT_VERSION = 1
#: The most tasks.yaml may hold: about 50,000 tasks of one node each.
MAX_INVENTORY_BYTES = 16 * 1024 * 1024
_HEADER = (
    "# flow task inventory: written by `flow tasks`, safe to edit by hand (see docs/inventory.md).\n"
)


class _LineDict(dict[Any, Any]):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line = 0
    key_lines: dict[Any, int]


class _LineList(list[Any]):
    line = 0
    item_lines: list[int]


# libyaml's parser when PyYAML has it (its wheels do): loading a 1,000-task inventory on every
# sweep takes about 10x less time than with the pure-Python scanner. Same safe constructors.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that keeps line numbers and rejects duplicate keys (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        result = _LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in result:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {result.key_lines[key]})",
                    key_node.start_mark,
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
        result = _LineList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_sequence)


def _field_line(raw: Any, field: str) -> int:
    """The line of `field` (e.g. `nodes[1].port`) inside a task mapping, as deep as known."""
    line = getattr(raw, "line", 0)
    node = raw
    for part in field.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("[") and isinstance(node, _LineList):
            index = int(part[1:-1])
            if index >= len(node):
                break
            line, node = node.item_lines[index], node[index]
        elif isinstance(node, _LineDict) and part in node:
            line, node = node.key_lines[part], node[part]
        else:
            break
    return line


def _task_label(raw: Any, index: int) -> str:
    if isinstance(raw, dict):
        name, task_id = raw.get("name"), raw.get("id")
        if name and task_id:
            return f"task {name!r} ({task_id})"
        if name or task_id:
            return f"task {name or task_id!r}"
    return f"task #{index + 1}"


class Inventory:
    """The tasks of one tasks.yaml. `load()` reads and validates; `save()` writes atomically."""

    def __init__(self, path: Path, tasks: Sequence[Task] = ()) -> None:
        self.path = path
        self._tasks: list[Task] = list(tasks)

    # --- reading -----------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config) -> Inventory:
        """Load `config.tasks_file` ($FLOW_HOME/tasks.yaml)."""
        return cls.load(config.tasks_file)

    @classmethod
    def load(cls, path: Path) -> Inventory:
        """Read and validate `path`; a missing file is an empty inventory.

        Raises:
            InventoryError: unreadable or malformed file, bad field, duplicate id or name.
        """
        text = read_regular_file(path, max_bytes=MAX_INVENTORY_BYTES, error=InventoryError)
        if text is None:
            return cls(path)
        return cls(path, cls._parse(text, path))

    @staticmethod
    def _parse(text: str, path: Path) -> list[Task]:
        try:
            data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InventoryError(f"{path}{where}: malformed YAML: {problem}", path=path) from None
        except RecursionError:
            # The constructors recurse once per level; libyaml stops at 1,000 levels, PyYAML's
            # pure-Python parser (where libyaml is missing) does not stop at all.
            raise InventoryError(
                f"{path}: YAML nested too deeply; allowed: tasks a few levels deep", path=path
            ) from None
        if data is None:
            return []
        if not isinstance(data, dict):
            raise InventoryError(
                f"{path}: the top level must be a mapping with 'version' and 'tasks'", path=path
            )
        key_lines: dict[Any, int] = getattr(data, "key_lines", {})
        unknown = set(data) - {"version", "tasks"}
        if unknown:
            key = sorted(map(str, unknown))[0]
            raise InventoryError(
                f"{path} line {key_lines.get(key, 1)}: {key!r} is not a top-level key; "
                "allowed: version, tasks",
                path=path,
            )
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise InventoryError(
                f"{path} line {key_lines.get('version', 1)}: version {version!r} is not supported; "
                f"allowed: {FORMAT_VERSION}",
                path=path,
            )
        raw_tasks = data.get("tasks")
        if raw_tasks is None:
            raw_tasks = []
        if not isinstance(raw_tasks, list):
            raise InventoryError(
                f"{path} line {key_lines.get('tasks', 1)}: 'tasks' must be a list of tasks", path=path
            )
        tasks: list[Task] = []
        seen_ids: dict[str, int] = {}
        seen_names: dict[str, int] = {}
        for index, raw in enumerate(raw_tasks):
            line: int = getattr(raw, "line", 0) or key_lines.get("tasks", 1)
            try:
                task = Task.from_dict(raw)
            except FieldError as exc:
                field_line = _field_line(raw, exc.field) or line
                raise InventoryError(
                    f"{path} line {field_line}: {_task_label(raw, index)}: {exc.field}: {exc.message}",
                    path=path,
                ) from None
            for what, value, seen in (("id", task.id, seen_ids), ("name", task.name, seen_names)):
                if value in seen:
                    raise InventoryError(
                        f"{path} line {line}: task {what} {value!r} is used twice "
                        f"(first on line {seen[value]})",
                        path=path,
                    )
                seen[value] = line
            if task.name in seen_ids or task.id in seen_names:
                raise InventoryError(
                    f"{path} line {line}: task name {task.name!r} is another task's id", path=path
                )
            tasks.append(task)
        return tasks

    # --- the collection ----------------------------------------------------------------------

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def gpu_tasks(self) -> list[Task]:
        """Tasks with GPUs, plus those whose GPU count is unknown (GPUd will tell)."""
        return [t for t in self._tasks if t.has_gpu is not False]

    def resolve(self, ref: str) -> Task:
        """The task named by `ref`: exact id, exact name, name in any case, or id prefix.

        Raises:
            InventoryError: no such task (listing near matches), or `ref` names several.
        """
        ref = ref.strip()
        for task in self._tasks:
            if ref in (task.id, task.name):
                return task
        folded = [t for t in self._tasks if t.name.lower() == ref.lower()]
        if len(folded) == 1:
            return folded[0]
        prefix = ref if ref.startswith(ID_PREFIX) else ID_PREFIX + ref
        by_prefix = [t for t in self._tasks if t.id.startswith(prefix)] if len(ref) >= 2 else []
        candidates = folded or by_prefix
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            listed = ", ".join(f"{t.name} ({t.id})" for t in candidates)
            raise InventoryError(
                f"task {ref!r} is ambiguous: it matches {len(candidates)} tasks: {listed}",
                path=self.path,
                hint="name the task by its full id",
            )
        if not self._tasks:
            raise InventoryError(
                f"no task {ref!r}: the inventory {self.path} is empty",
                path=self.path,
                hint="add one: flow tasks add NAME --host HOST, or flow tasks import --ssh-config",
            )
        keys = {t.name: t for t in self._tasks} | {t.id: t for t in self._tasks}
        near = difflib.get_close_matches(ref, list(keys), n=5, cutoff=0.5)
        near_tasks = list({keys[k].id: keys[k] for k in near}.values())
        if near_tasks:
            listed = ", ".join(f"{t.name} ({t.id})" for t in near_tasks)
            message = f"no task {ref!r} in {self.path}; did you mean: {listed}?"
        else:
            message = f"no task {ref!r} in {self.path}"
        raise InventoryError(message, path=self.path, hint="flow tasks list shows every task")

    def add(self, task: Task) -> Task:
        """Add `task`; its id and name must be new (and the name no other task's id).

        Raises:
            InventoryError: the id or name is taken.
        """
        for other in self._tasks:
            if task.name in (other.name, other.id):
                raise InventoryError(
                    f"a task named {task.name!r} exists already ({other.id})",
                    path=self.path,
                    hint=f"pick another name, or remove it first: flow tasks remove {other.id}",
                )
            if task.id in (other.id, other.name):
                raise InventoryError(f"task id {task.id!r} exists already", path=self.path)
        self._tasks.append(task)
        return task

    def remove(self, ref: str) -> Task:
        """Remove and return the task `ref` names (see `resolve`)."""
        task = self.resolve(ref)
        self._tasks.remove(task)
        return task

    def ids(self) -> set[str]:
        return {t.id for t in self._tasks}

    # --- writing -----------------------------------------------------------------------------

    def dumps(self) -> str:
        """The file's text (pure)."""
        doc = {"version": FORMAT_VERSION, "tasks": [t.to_dict() for t in self._tasks]}
        return _HEADER + yaml.dump(doc, Dumper=_SafeDumper, sort_keys=False, default_flow_style=False,
                                   allow_unicode=True)

    def save(self) -> None:
        """Write atomically: a 0600 temp file in the same directory, fsync, rename over.

        Raises:
            InventoryError: the directory or file cannot be written.
        """
        text = self.dumps()
        try:
            ensure_private_dir(self.path.parent)
            fd, tmp = tempfile.mkstemp(prefix=".tasks-", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise InventoryError(
                f"{self.path}: cannot write: {exc.strerror or exc}", path=self.path
            ) from None

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: Path) -> Iterator[Inventory]:
        """Load under an exclusive lock, yield, and save if the block ends without error."""
        try:
            ensure_private_dir(path.parent)
            fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InventoryError(f"{path}: cannot lock: {exc.strerror or exc}", path=path) from None
        with os.fdopen(fd, "r+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            inventory = cls.load(path)
            before = inventory.dumps()
            yield inventory
            if inventory.dumps() != before:
                inventory.save()
