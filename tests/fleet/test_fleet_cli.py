"""`flow tasks ...` in-process (main(argv)) and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flow.cli.main import main
from flow.fleet import Inventory


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_show_remove(capsys: pytest.CaptureFixture[str], flow_home: Path) -> None:
    code, out, _ = run(
        capsys, "tasks", "add", "train-a", "--host", "ubuntu@10.0.0.5", "--instance-type", "h100.8xlarge",
        "--label", "team=ml",
    )  # fmt: skip
    assert code == 0 and out.startswith("added train-a (task-") and out.endswith("ubuntu@10.0.0.5\n")
    code, out, _ = run(
        capsys, "tasks", "add", "big", "--host", "n1", "--node", "n2:2222", "--user", "root",
        "--instance-type", "cpu.4xlarge", "--gpus", "2", "--gpud-port", "15133",
    )  # fmt: skip
    assert code == 0
    code, out, _ = run(capsys, "tasks", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "NODES", "INSTANCE", "TYPE", "GPUS", "LABELS"]
    assert "train-a  ubuntu@10.0.0.5  h100.8xlarge   8x H100  team=ml" in lines[1]
    assert "big      root@n1 (+1)     cpu.4xlarge    2" in lines[2]
    code, out, _ = run(capsys, "tasks", "list", "--json")
    doc = json.loads(out)
    assert [t["name"] for t in doc] == ["train-a", "big"]
    assert doc[1]["nodes"] == [{"host": "n1", "user": "root"}, {"host": "n2", "port": 2222, "user": "root"}]
    assert (doc[0]["gpu_model"], doc[0]["gpu_count"], doc[1]["gpud_port"]) == ("H100", 8, 15133)
    code, out, _ = run(capsys, "tasks", "show", "big")
    assert "node 1:        root@n2:2222" in out
    code, out, _ = run(capsys, "tasks", "remove", doc[0]["id"])
    assert code == 0 and out == f"removed train-a ({doc[0]['id']})\n"
    assert [t.name for t in Inventory.load(flow_home / "tasks.yaml")] == ["big"]


def test_unknown_task_is_an_error_with_near_matches(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "tasks", "add", "train-a", "--host", "h")
    code, out, err = run(capsys, "tasks", "remove", "trian-a")
    assert code == 2 and out == ""
    assert err.startswith("ERROR: no task 'trian-a' in ")
    assert "did you mean: train-a (task-" in err
    assert "HINT: flow tasks list shows every task" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tasks", "add", "x"], "give the task's node: --host HOST"),
        (["tasks", "add", "x", "--host", "h", "--port", "0"], "Invalid value for '--port'"),
        (["tasks", "add", "x", "--host", "h:ssh"], "'ssh' in 'h:ssh' is not a port"),
        (["tasks", "add", "x", "--host", "h", "--label", "novalue"], "'novalue' is not key=value"),
        (["tasks", "add", "bad name", "--host", "h"], "Invalid value for 'NAME'"),
        (["tasks", "add", "x", "--host", "h", "--key", "/no/such/key"], "'/no/such/key' is not a file"),
        (["tasks", "import"], "give exactly one of --ssh-config [FILE] or --hosts FILE"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_a_duplicate_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "tasks", "add", "a", "--host", "h")
    code, _, err = run(capsys, "tasks", "add", "a", "--host", "h2")
    assert code == 2 and "ERROR: a task named 'a' exists already" in err


def test_import_ssh_config_skips_existing_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flow_home: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host gpu-1\n  HostName 10.0.0.1\n  User ubuntu\nHost gpu-2 cpu-1\nHost *\n  Port 2222\n"
    )
    run(capsys, "tasks", "add", "gpu-2", "--host", "elsewhere")
    code, out, err = run(
        capsys, "tasks", "import", "--ssh-config", str(config), "--match", "gpu-*",
        "--instance-type", "a100.8xlarge", "--label", "src=ssh",
    )  # fmt: skip
    assert code == 0
    assert "added gpu-1 (task-" in out and "10.0.0.1" in out and "added 1 task(s)" in out
    assert "skipped gpu-2: a task of that name exists" in err
    task = Inventory.load(flow_home / "tasks.yaml").resolve("gpu-1")
    assert (task.nodes[0].host, task.nodes[0].port, task.nodes[0].user) == ("10.0.0.1", 2222, "ubuntu")
    assert (task.instance_type, dict(task.labels)) == ("a100.8xlarge", {"src": "ssh"})


def test_import_hosts_dry_run_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flow_home: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.5\nroot@10.0.0.6:2200 six\n")
    code, out, _ = run(capsys, "tasks", "import", "--hosts", str(hosts), "--dry-run")
    assert code == 0 and "would add six (task-" in out and "would add 2 task(s)" in out
    assert not (flow_home / "tasks.yaml").exists()
    code, out, _ = run(capsys, "tasks", "import", "--hosts", str(hosts))
    assert [t.name for t in Inventory.load(flow_home / "tasks.yaml")] == ["10.0.0.5", "six"]


def test_a_malformed_tasks_file_is_reported_with_its_line(
    capsys: pytest.CaptureFixture[str], flow_home: Path
) -> None:
    (flow_home / "tasks.yaml").write_text(
        "tasks:\n  - id: task-abc123\n    name: a\n    nodes: [h]\n    gpus: lots\n"
    )
    code, _, err = run(capsys, "tasks", "list")
    assert code == 2
    assert err == (
        f"ERROR: {flow_home / 'tasks.yaml'} line 5: task 'a' (task-abc123): gpus: 'lots' is not a GPU count; "
        "allowed: 0-1024\n"
    )


@pytest.mark.slow
def test_concurrent_adds_in_real_processes_lose_nothing(flow_home: Path) -> None:
    """The lock around read-modify-write: six `flow tasks add` at once, six tasks."""
    env = {**os.environ, "FLOW_HOME": str(flow_home)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "flow.cli.main", "tasks", "add", f"node-{i}", "--host", f"10.0.0.{i}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(6)
    ]  # fmt: skip
    results = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, results
    names = sorted(t.name for t in Inventory.load(flow_home / "tasks.yaml"))
    assert names == [f"node-{i}" for i in range(6)]
    listed = subprocess.run(
        [sys.executable, "-m", "flow.cli.main", "tasks", "list", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert len(json.loads(listed.stdout)) == 6
