"""The inventory file: CRUD, naming tasks, and the errors a hand-edited file gets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from flow.errors import InventoryError
from flow.fleet import Inventory, Node, Task


def _task(task_id: str, name: str, host: str = "10.0.0.5") -> Task:
    return Task(id=task_id, name=name, nodes=(Node(host=host),))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "tasks.yaml"


def test_missing_file_is_an_empty_inventory(path: Path) -> None:
    assert len(Inventory.load(path)) == 0


def test_add_save_load_remove_round_trip(path: Path) -> None:
    with Inventory.edit(path) as inventory:
        inventory.add(_task("task-aaa111", "train-a"))
        inventory.add(
            Task(
                id="task-bbb222",
                name="big",
                nodes=(Node(host="n1", user="u", port=2222, identity_file="~/.ssh/k"), Node(host="n2")),
                instance_type="h100.8xlarge",
                labels={"team": "ml"},
                gpud_port=15133,
            )
        )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tasks-")] == []  # no temp left
    loaded = Inventory.load(path)
    assert [t.name for t in loaded] == ["train-a", "big"]
    assert loaded.resolve("big").nodes[0] == Node(host="n1", user="u", port=2222, identity_file="~/.ssh/k")
    with Inventory.edit(path) as inventory:
        assert inventory.remove("train-a").id == "task-aaa111"
    assert [t.name for t in Inventory.load(path)] == ["big"]


def test_add_refuses_a_taken_name_or_id(path: Path) -> None:
    inventory = Inventory(path, [_task("task-aaa111", "train-a")])
    with pytest.raises(InventoryError, match="'train-a' exists already"):
        inventory.add(_task("task-ccc333", "train-a"))
    with pytest.raises(InventoryError, match="exists already"):
        inventory.add(_task("task-aaa111", "other"))
    with pytest.raises(InventoryError, match="exists already"):
        inventory.add(_task("task-ddd444", "task-aaa111"))  # a name that is another task's id


def test_resolve_by_id_name_case_and_id_prefix(path: Path) -> None:
    inventory = Inventory(path, [_task("task-abc123", "train-a"), _task("task-abd456", "Train-B")])
    assert inventory.resolve("task-abc123").name == "train-a"
    assert inventory.resolve("train-a").id == "task-abc123"
    assert inventory.resolve("train-b").id == "task-abd456"  # any case, when unique
    assert inventory.resolve("task-abc").id == "task-abc123"
    assert inventory.resolve("abd").id == "task-abd456"  # prefix without "task-"


def test_ambiguous_prefix_lists_the_candidates(path: Path) -> None:
    inventory = Inventory(path, [_task("task-abc123", "train-a"), _task("task-abd456", "train-b")])
    with pytest.raises(InventoryError) as info:
        inventory.resolve("task-ab")
    assert "ambiguous" in str(info.value)
    assert "train-a (task-abc123)" in str(info.value) and "train-b (task-abd456)" in str(info.value)
    assert info.value.exit_code == 2


def test_unknown_name_lists_near_matches(path: Path) -> None:
    inventory = Inventory(path, [_task("task-abc123", "train-a"), _task("task-fff000", "inference")])
    with pytest.raises(InventoryError) as info:
        inventory.resolve("trian-a")
    assert "no task 'trian-a'" in str(info.value)
    assert "did you mean: train-a (task-abc123)" in str(info.value)
    assert "inference" not in str(info.value)
    assert info.value.hint == "flow tasks list shows every task"


def test_unknown_name_in_an_empty_inventory_says_how_to_add(path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        Inventory(path).resolve("x")
    assert "is empty" in str(info.value)
    assert info.value.hint is not None and "flow tasks add" in info.value.hint


def test_gpu_tasks_keep_unknown_and_drop_cpu_only(path: Path) -> None:
    inventory = Inventory(
        path,
        [
            Task(id="task-aaa111", name="gpu", nodes=(Node(host="a"),), instance_type="h100.8xlarge"),
            Task(id="task-bbb222", name="cpu", nodes=(Node(host="b"),), instance_type="cpu.4xlarge"),
            Task(id="task-ccc333", name="unknown", nodes=(Node(host="c"),)),
        ],
    )
    assert [t.name for t in inventory.gpu_tasks()] == ["gpu", "unknown"]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_malformed_yaml_names_file_and_line(path: Path) -> None:
    _write(path, "version: 1\ntasks:\n  - id: task-abc123\n    name: [unclosed\n")
    with pytest.raises(InventoryError) as info:
        Inventory.load(path)
    assert str(info.value).startswith(f"{path} line ")
    assert "malformed YAML" in str(info.value)


def test_bad_field_names_file_line_task_and_field(path: Path) -> None:
    _write(
        path,
        "version: 1\n"
        "tasks:\n"
        "  - id: task-abc123\n"
        "    name: train-a\n"
        "    nodes:\n"
        "      - host: 10.0.0.5\n"
        "      - host: 10.0.0.6\n"
        "        port: 99999\n",
    )
    with pytest.raises(InventoryError) as info:
        Inventory.load(path)
    assert str(info.value) == (
        f"{path} line 8: task 'train-a' (task-abc123): nodes[1].port: 99999 is not a port; allowed: 1-65535"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "top level must be a mapping"),
        ("version: 2\ntasks: []\n", "line 1: version 2 is not supported"),
        ("tasks: {}\n", "line 1: 'tasks' must be a list"),
        ("taks: []\n", "line 1: 'taks' is not a top-level key"),
        ("tasks:\n  - id: task-abc123\n    name: a\n", "line 2: task 'a' (task-abc123): nodes: is missing"),
        (
            "tasks:\n  - {id: task-abc123, name: a, nodes: [h1], colour: red}\n",
            "task 'a' (task-abc123): colour: is not a task field",
        ),
        (
            "tasks:\n  - {id: task-abc123, name: a, nodes: [h1]}\n"
            "  - {id: task-abc123, name: b, nodes: [h2]}\n",
            "line 3: task id 'task-abc123' is used twice (first on line 2)",
        ),
        (
            "tasks:\n  - id: task-abc123\n    name: a\n    name: b\n    nodes: [h]\n",
            "line 4: malformed YAML: duplicate key 'name' (first on line 3)",
        ),
    ],
)
def test_file_errors_are_precise(path: Path, text: str, expected: str) -> None:
    _write(path, text)
    with pytest.raises(InventoryError) as info:
        Inventory.load(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_nodes_may_be_written_as_specs_by_hand(path: Path) -> None:
    _write(path, "tasks:\n  - {id: task-abc123, name: a, nodes: ['ubuntu@10.0.0.5:2222', h2]}\n")
    task = Inventory.load(path).resolve("a")
    assert task.nodes == (Node(host="10.0.0.5", user="ubuntu", port=2222), Node(host="h2"))


def test_an_edit_that_fails_changes_nothing(path: Path) -> None:
    with Inventory.edit(path) as inventory:
        inventory.add(_task("task-aaa111", "a"))
    before = path.read_text()
    with pytest.raises(RuntimeError), Inventory.edit(path) as inventory:
        inventory.add(_task("task-bbb222", "b"))
        raise RuntimeError("boom")
    assert path.read_text() == before
