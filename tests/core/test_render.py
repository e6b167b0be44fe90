"""The fleet table at the widths people's terminals have: nothing cropped, words kept whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from flow.health.render import FleetTable
from sinks.snapshots import snapshot


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
