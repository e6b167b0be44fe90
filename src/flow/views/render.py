"""Rich views of snapshots: the fleet table, its summary and issues, one task in depth, history.

What they say is computed in `summary` (pure); this module lays it out. Views are small renderables
(`__rich_console__`) over plain snapshots; the CLI decides where they go. Colour thresholds are
class constants the CLI may override. "N/A" is shown here, and only here, for a None reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from flow.health.snapshot import (
    GpuReading,
    HealthStatus,
    Reason,
    Severity,
    Snapshot,
    hottest,
)
from flow.health.xid import classify_xid
from flow.views.gpu_table import NA, GpuTable, bytes2human
from flow.views.gpu_table import fmt_num as _num
from flow.views.summary import FleetSummary, changes_between, gpu_list, group_reasons, label, summarise

__all__ = [
    "FleetSummary",
    "FleetTable",
    "HistoryView",
    "IssuesTable",
    "SummaryView",
    "TaskDetail",
    "bytes2human",
    "changes_between",
    "fleet_view",
    "group_reasons",
    "sparkline",
    "summarise",
]

STATUS_STYLE = {
    HealthStatus.HEALTHY: "green",
    HealthStatus.DEGRADED: "yellow",
    HealthStatus.CRITICAL: "bold red",
    HealthStatus.UNKNOWN: "magenta",
}
SEVERITY_STYLE = {Severity.INFO: "dim", Severity.WARNING: "yellow", Severity.UNKNOWN: "magenta",
                  Severity.CRITICAL: "bold red"}
_SPARK = "▁▂▃▄▅▆▇█"


def _status_text(status: HealthStatus) -> Text:
    return Text(status.value, style=STATUS_STYLE[status])


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def sparkline(values: Sequence[float | None], width: int = 48) -> str:
    """Unicode sparkline of `values` resampled to at most `width` buckets; gaps show as spaces."""
    if not values:
        return ""
    buckets: list[float | None] = []
    step = max(1, -(-len(values) // width))
    for i in range(0, len(values), step):
        buckets.append(_mean(values[i:i + step]))
    known = [b for b in buckets if b is not None]
    if not known:
        return " " * len(buckets)
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return "".join(
        " " if b is None else _SPARK[min(len(_SPARK) - 1, int((b - low) / span * (len(_SPARK) - 1)))]
        for b in buckets
    )


def _with_more(reason: Reason, gpus: Sequence[int]) -> str:
    return reason.message + (f" (+{len(gpus) - 1} more GPUs)" if len(gpus) > 1 else "")


class FleetTable:
    """One row per node: task, node, GPUs, hottest GPU, utilization, memory, status, main reason."""

    TEMP_WARN_C = 75.0
    TEMP_CRIT_C = 85.0

    def __init__(self, snapshots: Sequence[Snapshot], *, title: str | None = "GPU fleet health") -> None:
        self.snapshots = snapshots
        self.title = title

    def _temp(self, gpu: GpuReading | None) -> Text:
        if gpu is None or gpu.temp_c is None:
            return Text(NA, style="dim")
        style = ("bold red" if gpu.temp_c > self.TEMP_CRIT_C
                 else "yellow" if gpu.temp_c > self.TEMP_WARN_C else "")
        return Text(f"{gpu.temp_c:.0f}°C (GPU {gpu.index})", style=style)

    #: Below FULL_WIDTH the table drops the fleet-wide columns (utilization, memory); below
    #: NARROW_WIDTH also the GPU count and the hottest GPU (a hot GPU is named in the reason) and
    #: its outer edge, so that on an 80-column terminal the identifiers and the reason stay
    #: readable instead of being folded a few letters per line.
    FULL_WIDTH = 120
    NARROW_WIDTH = 100

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        wide, narrow = width >= self.FULL_WIDTH, width < self.NARROW_WIDTH
        table = Table(title=self.title, show_lines=False, expand=False, show_edge=not narrow)
        # Identifiers and the reason fold when they must; short readings never wrap.
        table.add_column("Task", overflow="fold")
        table.add_column("Node", overflow="fold")
        if not narrow:
            table.add_column("GPUs", justify="right", no_wrap=True)
            table.add_column("Hottest", justify="right", no_wrap=True)
        if wide:
            table.add_column("Util", justify="right", no_wrap=True)
            table.add_column("Memory", justify="right", no_wrap=True)
        table.add_column("Score", justify="right", no_wrap=True)
        table.add_column("Status", no_wrap=True)
        table.add_column("Main reason", overflow="fold")
        for s in self.snapshots:
            grouped = group_reasons(s.verdict.reasons) if s.verdict else []
            reason, reason_gpus = grouped[0] if grouped else (None, [])
            score = s.verdict.score if s.verdict else None
            cells: list[RenderableType] = [label(s), s.node]
            if not narrow:
                cells += [str(len(s.gpus)) if s.gpus else "0", self._temp(hottest(s.gpus))]
            if wide:
                util = _mean(g.util_gpu_pct for g in s.gpus)
                used = sum(g.mem_used_bytes or 0 for g in s.gpus)
                total = sum(g.mem_total_bytes or 0 for g in s.gpus)
                cells += [_num(util, "%"), f"{100 * used / total:.0f}%" if total else NA]
            cells += [
                NA if score is None else str(score), _status_text(s.status),
                Text(_with_more(reason, reason_gpus), style=SEVERITY_STYLE[reason.severity])
                if reason else Text(""),
            ]
            table.add_row(*cells)
        yield table


class SummaryView:
    def __init__(self, summary: FleetSummary, *, elapsed_s: float | None = None) -> None:
        self.summary = summary
        self.elapsed_s = elapsed_s

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.summary
        text = Text()
        text.append(f"Nodes: {s.nodes}  ")
        text.append(f"healthy {s.healthy}", style="green")
        text.append("  ")
        text.append(f"degraded {s.degraded}", style="yellow")
        text.append("  ")
        text.append(f"critical {s.critical}", style="bold red")
        text.append("  ")
        text.append(f"unknown {s.unknown}", style="magenta")
        text.append(f"   GPUs healthy: {s.gpus_healthy}/{s.gpus_total}")
        if self.elapsed_s is not None:
            text.append(f"   swept in {self.elapsed_s:.1f}s", style="dim")
        yield text


class IssuesTable:
    """Every warning or critical reason (and every XID), with its meaning and the action to take."""

    def __init__(self, snapshots: Sequence[Snapshot], *, min_severity: Severity = Severity.WARNING) -> None:
        self.snapshots = snapshots
        self.min_severity = min_severity

    def rows(self) -> list[tuple[Snapshot, Reason, list[int]]]:
        out: list[tuple[Snapshot, Reason, list[int]]] = []
        for s in self.snapshots:
            for r, gpus in group_reasons(s.verdict.reasons) if s.verdict else ():
                if r.severity.rank >= self.min_severity.rank or r.code.startswith("xid_"):
                    out.append((s, r, gpus))
        return out

    #: Six columns only when the issue and the action would each get this many characters;
    #: otherwise task and node share a cell (two lines), and so do the issue and its action;
    #: narrower still (the issue under NARROW_TEXT_WIDTH), severity and GPUs join task and node.
    #: Either way identifiers never wrap (a node address cut at its port reads as another
    #: node): past the terminal's width they end in "…". The issue wraps at spaces.
    MIN_TEXT_WIDTH = 40
    NARROW_TEXT_WIDTH = 30

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = self.rows()
        if not rows:
            yield Text("No issues.", style="green")
            return
        name_w = max(len(label(s)) for s, _, _ in rows)
        node_w = max(len(s.node) for s, _, _ in rows)
        gpu_w = max(3, *(len(gpu_list(g)) for _, _, g in rows))
        # Borders and padding: 3 per column plus 1 (the severity is at most 8 characters).
        split = options.max_width - (name_w + node_w + gpu_w + 8 + 19) >= 2 * self.MIN_TEXT_WIDTH
        compact = options.max_width - (max(name_w, node_w) + gpu_w + 8 + 13) < self.NARROW_TEXT_WIDTH
        table = Table(title="Issues", expand=False)
        if split:
            table.add_column("Task", no_wrap=True, overflow="ellipsis")
            table.add_column("Node", no_wrap=True, overflow="ellipsis")
        else:
            table.add_column("Task / node", no_wrap=True, overflow="ellipsis")
        if not compact:
            table.add_column("GPU", no_wrap=True, overflow="ellipsis")
            table.add_column("Severity", no_wrap=True)
        if split:
            table.add_column("Issue", overflow="fold")
            table.add_column("Suggested action", overflow="fold")
        else:
            table.add_column("Issue / suggested action", overflow="fold")
        for s, r, gpus in rows:
            severity = Text(r.severity.value, style=SEVERITY_STYLE[r.severity])
            issue, action = _with_more(r, gpus), r.action or ""
            if split:
                table.add_row(label(s), s.node, gpu_list(gpus), severity, issue, action)
                continue
            where = Text(label(s))
            where.append("\n" + s.node, style="dim")
            what = Text(issue)
            if action:
                what.append("\n→ " + action, style="dim")
            if compact:
                where.append("\n")
                where.append_text(severity)
                if gpus:
                    where.append(f" GPU {gpu_list(gpus)}")
                table.add_row(where, what)
            else:
                table.add_row(where, gpu_list(gpus), severity, what)
        yield table


class TaskDetail:
    """One node in depth: identity, per-GPU table, GPUd components, recent events, reasons."""

    def __init__(self, snapshot: Snapshot, *, max_events: int = 15) -> None:
        self.snapshot = snapshot
        self.max_events = max_events

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.snapshot
        head = Text()
        head.append(f"{label(s)} ({s.task_id})  node {s.node}  ", style="bold")
        head.append_text(_status_text(s.status))
        score = s.verdict.score if s.verdict else None
        head.append(f"  score {NA if score is None else score}")
        g = s.gpud
        head.append(f"\nGPUd: {'reachable' if g.reachable else 'unreachable'} ({g.state})")
        if g.version:
            head.append(f"  version {g.version}")
        if g.driver_version:
            head.append(f"  driver {g.driver_version}")
        if g.error:
            head.append(f"  error: {g.error}", style="red")
        yield head

        if s.gpus:
            yield GpuTable(s.gpus)

        if s.components:
            comps = Table(title="GPUd components")
            comps.add_column("Component", overflow="fold")
            comps.add_column("Health")
            comps.add_column("Reason", overflow="fold")
            for c in sorted(s.components, key=lambda c: (c.health == "Healthy", c.component)):
                style = {"Healthy": "green", "Degraded": "yellow", "Unhealthy": "bold red"}.get(c.health, "")
                comps.add_row(c.component, Text(c.health, style=style), c.reason or c.error)
            yield comps

        if s.events or s.xids:
            events = Table(title="Recent events")
            for name in ("Time", "Component", "Type", "Message"):
                events.add_column(name, overflow="fold")
            for e in sorted(s.events, key=lambda e: e.time or datetime.min.replace(tzinfo=timezone.utc),
                            reverse=True)[: self.max_events]:
                when = e.time.strftime("%Y-%m-%d %H:%M:%S") if e.time else NA
                events.add_row(when, e.component, e.type, e.message)
            for x in s.xids:
                if x.source == "state":
                    info = classify_xid(x.code)
                    events.add_row(NA if x.time is None else x.time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "error_xid (state)", info.xid_class, f"XID {x.code}: {info.name}")
            yield events

        reasons = s.verdict.reasons if s.verdict else ()
        if reasons:
            # A rule's penalty counts once per node, so its GPUs share one line.
            table = Table(title="Why this score")
            for name in ("Severity", "Penalty", "GPUs", "Reason", "Suggested action"):
                table.add_column(name, overflow="fold")
            for r, hit in group_reasons(reasons):
                table.add_row(Text(r.severity.value, style=SEVERITY_STYLE[r.severity]), str(r.penalty),
                              gpu_list(hit), _with_more(r, hit), r.action or "")
            yield table
        else:
            yield Text("No penalties: score 100.", style="green")


@dataclass(frozen=True)
class HistoryView:
    """A task's history: sparklines of score, hottest temperature and mean utilization."""

    snapshots: Sequence[Snapshot]
    summary: dict[str, object]
    source: str

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(f"History from {self.source}: {_count(len(self.snapshots), 'snapshot')}", style="bold")
        if not self.snapshots:
            yield Text("No snapshots in this window.", style="yellow")
            return
        first, last = self.snapshots[0].timestamp, self.snapshots[-1].timestamp
        width = max(10, min(60, options.max_width - 28))
        scores = [float(s.verdict.score) if s.verdict and s.verdict.score is not None else None
                  for s in self.snapshots]
        temps = [(h.temp_c if (h := hottest(s.gpus)) else None) for s in self.snapshots]
        utils = [_mean(g.util_gpu_pct for g in s.gpus) for s in self.snapshots]
        table = Table(title=f"{first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M} UTC", show_header=True)
        for name in ("Series", "Trend", "Min", "Max", "Last"):
            table.add_column(name)
        for name, series, unit in (("Score", scores, ""), ("Hottest °C", temps, ""),
                                   ("Util %", utils, "")):
            known = [v for v in series if v is not None]
            table.add_row(name, sparkline(series, width),
                          _num(min(known) if known else None, unit),
                          _num(max(known) if known else None, unit),
                          _num(series[-1], unit))
        yield table
        periods = self.summary.get("unhealthy_periods") or []
        if isinstance(periods, list) and periods:
            p = Table(title="Unhealthy periods")
            # A task of several nodes: each period is one node's.
            by_node = len({str(q.get("node", "")) for q in periods if isinstance(q, dict)}) > 1
            for name in ("Node", "Start", "End", "Duration", "Reasons")[0 if by_node else 1:]:
                p.add_column(name, overflow="fold")
            for period in periods:
                if isinstance(period, dict):
                    cells = [str(period.get("start", "")), str(period.get("end", "")),
                             f"{float(period.get('duration_s', 0) or 0) / 60:.0f} min",
                             "; ".join(str(r) for r in period.get("reasons", [])[:3])]
                    p.add_row(*([str(period.get("node", ""))] if by_node else []), *cells)
            yield p
        else:
            yield Text("No unhealthy periods.", style="green")
        for line in _summary_lines(self.summary):
            yield Text(line, style="dim")


def _count(n: int, noun: str) -> str:
    """`1 snapshot`, `2 snapshots`, `0 snapshots`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _summary_lines(summary: Mapping[str, object]) -> list[str]:
    """A task summary's figures in words, one line per kind (`TaskSummary.to_dict()` keys):

    Score: now 92, average 95.5, range 60-100
    Snapshots by status: healthy 40, degraded 2, critical 0, unknown 0
    Events: 3 status changes, 1 XID, 2 new corrected ECC errors
    """
    lines: list[str] = []
    now, avg = summary.get("score_current"), summary.get("score_avg")
    low, high = summary.get("score_min"), summary.get("score_max")
    if now is not None or avg is not None:
        score = f"Score: now {NA if now is None else now}"
        if isinstance(avg, (int, float)):
            score += f", average {avg:.1f}"
        if low is not None and high is not None:
            score += f", range {low}-{high}"
        lines.append(score)
    counts = summary.get("status_counts")
    if isinstance(counts, dict) and counts:
        order = [st.value for st in HealthStatus]
        keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), str(k)))
        lines.append("Snapshots by status: " + ", ".join(f"{k} {counts[k]}" for k in keys))
    events = []
    for key, noun in (("status_changes", "status change"), ("xid_count", "XID"),
                      ("ecc_uncorrected_increase", "new uncorrected ECC error"),
                      ("ecc_corrected_increase", "new corrected ECC error")):
        value = summary.get(key)
        # Status changes and XIDs always (0 is news too); ECC increases only when there are some.
        if isinstance(value, int) and (value or key in ("status_changes", "xid_count")):
            events.append(_count(value, noun))
    if events:
        lines.append("Events: " + ", ".join(events))
    return lines


def fleet_view(snapshots: Sequence[Snapshot], *, elapsed_s: float | None = None) -> Group:
    """The whole `flow health --gpu` screen: table, summary, issues."""
    return Group(FleetTable(snapshots), SummaryView(summarise(snapshots), elapsed_s=elapsed_s),
                 IssuesTable(snapshots))
