"""The task model: node specs, validation, and what the instance type says about GPUs."""

from __future__ import annotations

import pytest

from flow.fleet import FieldError, Node, Task, lookup_instance_type, new_task_id, parse_node_spec
from flow.fleet.instance_types import GpuSpec


@pytest.mark.parametrize(
    ("instance_type", "model", "count"),
    [
        ("h100.8xlarge", "H100", 8),
        ("H200.8XLARGE", "H200", 8),
        ("a100.4xlarge", "A100", 4),
        ("a10g.xlarge", "A10G", 1),
        ("l4.2xlarge", "L4", 2),
        ("p5.48xlarge", "H100", 8),
        ("cpu.4xlarge", None, 0),
        ("m5.2xlarge", None, 0),
        ("h100.weird", "H100", None),
        ("zz9.8xlarge", None, None),
        (None, None, None),
    ],
)
def test_instance_type_table(instance_type: str | None, model: str | None, count: int | None) -> None:
    assert lookup_instance_type(instance_type) == GpuSpec(model, count)


def _task(**changes: object) -> Task:
    values: dict[str, object] = {"id": "task-abc123", "name": "train-a", "nodes": (Node(host="10.0.0.5"),)}
    values.update(changes)
    return Task(**values)  # type: ignore[arg-type]


def test_gpus_override_the_instance_type_and_unknown_stays_unknown() -> None:
    assert _task(instance_type="h100.8xlarge").gpu_count == 8
    assert _task(instance_type="h100.8xlarge", gpus=4).gpu_spec == GpuSpec("H100", 4)
    assert _task(instance_type="cpu.4xlarge").has_gpu is False
    assert _task(instance_type="cpu.4xlarge", gpus=1).has_gpu is True
    assert _task().has_gpu is None  # nothing says: the checker treats it as maybe-GPU


@pytest.mark.parametrize(
    ("spec", "node"),
    [
        ("10.0.0.5", Node(host="10.0.0.5")),
        ("ubuntu@10.0.0.5:2222", Node(host="10.0.0.5", user="ubuntu", port=2222)),
        ("gpu-1.example.com:22", Node(host="gpu-1.example.com", port=22)),
        ("[fe80::1]:2222", Node(host="fe80::1", port=2222)),
        ("root@fe80::1", Node(host="fe80::1", user="root")),
    ],
)
def test_parse_node_spec(spec: str, node: Node) -> None:
    assert parse_node_spec(spec) == node


def test_parse_node_spec_fills_and_checks_user_and_port() -> None:
    assert parse_node_spec("h", user="u", port=2) == Node(host="h", user="u", port=2)
    with pytest.raises(FieldError, match="--port is 2"):
        parse_node_spec("h:3", port=2)
    with pytest.raises(FieldError, match="not a port"):
        parse_node_spec("h:ssh")
    with pytest.raises(FieldError, match="not a port"):
        parse_node_spec("h:70000")


def test_node_label_brackets_ipv6_with_a_port() -> None:
    assert Node(host="fe80::1", user="root", port=22).label == "root@[fe80::1]:22"
    assert Node(host="h", user="u").label == "u@h"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "abc"}, "id"),
        ({"name": "has space"}, "name"),
        ({"nodes": ()}, "nodes"),
        ({"gpus": -1}, "gpus"),
        ({"gpus": True}, "gpus"),
        ({"gpud_port": 0}, "gpud_port"),
        ({"labels": {"bad key": "v"}}, "labels.bad key"),
    ],
)
def test_bad_fields_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(FieldError) as info:
        _task(**changes)
    assert info.value.field == field


def test_round_trip_through_dict() -> None:
    task = _task(
        instance_type="h100.8xlarge",
        gpus=4,
        gpud_port=15133,
        labels={"team": "ml"},
        nodes=(Node(host="a", port=2222, user="u", identity_file="~/.ssh/id"), Node(host="b")),
    )
    assert Task.from_dict(task.to_dict()) == task


def test_new_ids_are_short_and_fresh() -> None:
    task_id = new_task_id()
    assert task_id.startswith("task-") and len(task_id) == 11
    assert _task(id=task_id).id == task_id
