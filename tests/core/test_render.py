"""The fleet and GPU tables at the widths people's terminals have: nothing cropped, words kept whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from flow.health.snapshot import GpuReading
from flow.views.gpu_table import GpuTable
from flow.views.render import FleetTable, HistoryView, IssuesTable
from sinks.snapshots import gpu, snapshot


def _render(width: int) -> list[str]:
    rows = [
        snapshot("task-train-llama-70b", "gpu-node-017.cluster.internal", temp_c=88.0, gpus=8),
        snapshot("task-eval", "gpu-node-018", gpus=8),
        snapshot("task-dead", "gpu-node-019", reachable=False),
    ]
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(FleetTable(rows))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [60, 80, 100, 120, 160])
def test_every_line_fits_and_statuses_stay_whole(width: int) -> None:
    lines = _render(width)
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    for word in ("critical", "healthy", "unknown", "Status", "Score"):
        assert word in text, f"{word!r} folded or missing at {width} columns"
    # The hot node's reason, every word of it: a table wider than the terminal is cropped on
    # the right, and the reason is the column that goes.
    words = set(text.replace("│", " ").replace("┃", " ").split())
    for word in ["at", "88", "°C", "(critical", "above", "85", "°C)", "(+7", "more", "GPUs)"]:
        assert word in words, f"{word!r} of the reason cut at {width} columns"


def test_columns_give_way_in_order_as_the_terminal_narrows() -> None:
    def header(width: int) -> str:
        return next(line for line in _render(width) if "Task" in line)

    assert all(c in header(160) for c in ("GPUs", "Hottest", "Util", "Memory", "Main reason"))
    assert "Hottest" in header(100) and "Util" not in header(100) and "Memory" not in header(100)
    assert "Hottest" not in header(80) and "GPUs" not in header(80) and "Main reason" in header(80)


def _gpu_table(gpus: list[GpuReading], width: int) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(GpuTable(gpus))
    return console.export_text()


def _header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if "GPU ┃" in line or line.startswith("┃ GPU"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


@pytest.mark.parametrize("width", [60, 80, 100, 140])
def test_gpu_table_keeps_whole_columns_and_says_which_it_left_out(width: int) -> None:
    text = _gpu_table([gpu(i) for i in range(8)], width)
    assert max(len(line) for line in text.splitlines()) <= width
    shown = _header(text)
    assert shown[:2] == ["GPU", "Temp"]  # the first to stay; no header folded into pieces
    every = ["GPU", "Temp", "HBM", "Slowdown", "Power", "Memory", "Util", "Clocks", "Throttle",
             "ECC c/u", "Remap", "NVLink err"]
    assert all(name in every for name in shown)
    flat = " ".join(text.split())
    for name in every:
        assert name in shown or name in flat.split("┘", 1)[1], f"{name} neither shown nor named"


def test_a_column_with_something_to_report_beats_a_quiet_one_at_80_columns() -> None:
    hot = [gpu(i, throttle_reasons=("hw_slowdown",), ecc_aggregate_corrected=0) for i in range(8)]
    text = _gpu_table(hot, 80)
    assert "Throttle" in _header(text) and "hw_slowdown" in text
    assert "nothing to report" in text and "NVLink err" in text.split("┘", 1)[1]


def test_the_model_goes_to_the_title_unless_the_gpus_differ() -> None:
    same = _gpu_table([gpu(i) for i in range(2)], 200)
    assert "GPUs: 2 x NVIDIA H100 80GB HBM3" in same and "Model" not in _header(same)
    mixed = _gpu_table([gpu(0), gpu(1, model="NVIDIA A100-SXM4-80GB")], 200)
    assert "Model" in _header(mixed)
    assert "not shown" not in mixed  # 200 columns hold every reading


# --- the Issues table (issue 13 item 10: at 80 columns it folded nearly every word) -----------

_ISSUE_NODES = ("flow@10.0.12.201:2222", "gpu-node-019.cluster.internal:22")


def _issues(width: int) -> str:
    rows = [
        snapshot("task-train-llama-70b", _ISSUE_NODES[0], temp_c=88.0, gpus=8),
        snapshot("task-dead", _ISSUE_NODES[1], reachable=False),
    ]
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(IssuesTable(rows))
    text = console.export_text()
    assert IssuesTable(rows).rows(), "nothing to show: the test would prove nothing"
    return text


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_issues_keep_words_and_node_addresses_whole(width: int) -> None:
    text = _issues(width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for node in _ISSUE_NODES:  # never split at the port: on one line, whole
        assert any(node in line for line in lines), f"{node} split at {width} columns"
    assert any("task-train-llama-70b-name" in line for line in lines)
    words = set(text.replace("│", " ").replace("┃", " ").split())
    rows = [snapshot("task-train-llama-70b", _ISSUE_NODES[0], temp_c=88.0, gpus=8),
            snapshot("task-dead", _ISSUE_NODES[1], reachable=False)]
    for _, reason, _ in IssuesTable(rows).rows():
        for word in (reason.message + " " + (reason.action or "")).split():
            assert word in words, f"{word!r} folded at {width} columns"
        assert reason.severity.value in words


def test_issues_table_shows_six_columns_where_there_is_room() -> None:
    header = next(line for line in _issues(200).splitlines() if "Task" in line)
    assert all(name in header for name in ("Node", "GPU", "Severity", "Issue", "Suggested action"))
    header = next(line for line in _issues(80).splitlines() if "Task" in line)
    assert "Task / node" in header and "Issue / suggested action" in header


# --- the history view's summary ----------------------------------------------------------------

def test_history_summary_is_words_and_counts_are_plural_correct() -> None:
    summary = {"score_current": 92, "score_avg": 95.456, "score_min": 60, "score_max": 100,
               "status_counts": {"unknown": 0, "healthy": 40, "critical": 0, "degraded": 2},
               "xid_count": 1, "status_changes": 3, "ecc_corrected_increase": 2,
               "ecc_uncorrected_increase": 0}
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    console.print(HistoryView([snapshot()], summary, "the local store"))
    text = console.export_text()
    assert text.splitlines()[0] == "History from the local store: 1 snapshot"
    assert "Snapshots by status: healthy 40, degraded 2, critical 0, unknown 0" in text
    assert "Score: now 92, average 95.5, range 60-100" in text
    assert "Events: 3 status changes, 1 XID, 2 new corrected ECC errors" in text
    assert "{" not in text and "=" not in text and "uncorrected" not in text
    console = Console(width=80, file=io.StringIO(), record=True, color_system=None)
    console.print(HistoryView([snapshot(), snapshot()], summary, "x"))
    assert console.export_text().splitlines()[0] == "History from x: 2 snapshots"


def test_unhealthy_periods_name_their_node_when_the_task_has_several() -> None:
    def period(node: str, start: str) -> dict[str, object]:
        return {"node": node, "start": start, "end": start, "duration_s": 120.0,
                "reasons": ["temp_warning"]}

    def periods_text(periods: list[dict[str, object]]) -> str:
        console = Console(width=120, file=io.StringIO(), record=True, color_system=None)
        console.print(HistoryView([snapshot()], {"unhealthy_periods": periods}, "x"))
        text = console.export_text()
        return text[text.index("Unhealthy periods"):]

    several = periods_text([period("gpu-a", "10:00"), period("gpu-b", "10:05")])
    assert "Node" in several and "gpu-a" in several and "gpu-b" in several
    one = periods_text([period("gpu-a", "10:00"), period("gpu-a", "10:05")])
    assert "Node" not in one and "gpu-a" not in one and "10:05" in one
