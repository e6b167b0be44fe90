"""The per-GPU table of a node, fitted to the terminal's width.

Thirteen readings per GPU do not fit 80 columns; folding each into three-letter slices (what a
plain table does) makes none of them readable. Instead every column has a priority, a column
with nothing to report (all zeros, all "ok") yields to any that has something, and the table
keeps the most important ones that fit whole, in their usual order, and says in its caption
which were left out (`--json` has them all). The model moves to the title when every
GPU has the same one, as it nearly always does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table

from flow.health.snapshot import GpuReading

__all__ = ["GpuTable", "bytes2human", "fmt_num"]

NA = "N/A"
#: Columns narrower than this may still be shown folded (the throttle reasons wrap by words).
_WRAP_MIN = 12
#: Per column: the cell padding (one space each side) and its share of the borders.
_CELL_EXTRA = 3
#: Cells that say "nothing wrong here": a column made only of these yields its place to any
#: column that has something to show (a throttled GPU's reasons before an all-zero ECC count).
_QUIET = frozenset({"-", "0", "ok", NA, "0/0 · 0/0", f"{NA}/{NA} · {NA}/{NA}"})
_QUIET_DEMOTION = 100


def bytes2human(n: int | None) -> str:
    """`80.0GiB`-style sizes; `N/A` for an unknown one."""
    if n is None:
        return NA
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit in ("B", "KiB") else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"


def fmt_num(value: float | None, unit: str = "", fmt: str = ".0f") -> str:
    """A reading with its unit; `N/A` for an unknown one (never 0)."""
    return NA if value is None else f"{value:{fmt}}{unit}"


def _ecc(g: GpuReading) -> str:
    return (f"{fmt_num(g.ecc_volatile_corrected, fmt='d')}/{fmt_num(g.ecc_volatile_uncorrected, fmt='d')} · "
            f"{fmt_num(g.ecc_aggregate_corrected, fmt='d')}/{fmt_num(g.ecc_aggregate_uncorrected, fmt='d')}")


def _remap(g: GpuReading) -> str:
    if g.remap_failed:
        return "FAILED"
    if g.remap_pending:
        return "pending"
    return NA if g.remap_failed is None else "ok"


@dataclass(frozen=True)
class _Column:
    name: str
    priority: int  # 0 is kept first
    cell: Callable[[GpuReading], str]
    justify: str = "right"
    wraps: bool = False


# In display order; the priority says which go first when the terminal is narrow.
_COLUMNS: tuple[_Column, ...] = (
    _Column("GPU", 0, lambda g: str(g.index), justify="left"),
    _Column("Model", 12, lambda g: g.model or NA, justify="left", wraps=True),
    _Column("Temp", 1, lambda g: fmt_num(g.temp_c, "°C")),
    _Column("HBM", 9, lambda g: fmt_num(g.temp_hbm_c, "°C")),
    _Column("Slowdown", 11, lambda g: fmt_num(g.slowdown_temp_c, "°C")),
    _Column("Power", 4, lambda g: f"{fmt_num(g.power_w, 'W')}/{fmt_num(g.power_limit_w, 'W')}"),
    _Column("Memory", 3, lambda g: f"{bytes2human(g.mem_used_bytes)}/{bytes2human(g.mem_total_bytes)}"),
    _Column("Util", 2, lambda g: fmt_num(g.util_gpu_pct, "%")),
    _Column("Clocks", 10, lambda g: f"{fmt_num(g.clock_graphics_mhz)}/{fmt_num(g.clock_mem_mhz)} MHz"),
    _Column("Throttle", 7, lambda g: ", ".join(g.throttle_reasons) or "-", justify="left", wraps=True),
    _Column("ECC c/u", 5, _ecc),
    _Column("Remap", 6, _remap, justify="left"),
    _Column("NVLink err", 8, lambda g: fmt_num(g.nvlink_errors, fmt="d")),
)


class GpuTable:
    """A node's GPUs, one row each, with as many readings as the width allows."""

    def __init__(self, gpus: Sequence[GpuReading]) -> None:
        self.gpus = gpus

    @staticmethod
    def _choose(columns: Sequence[_Column], cells: dict[str, list[str]], quiet: set[str],
                width: int) -> list[_Column]:
        def need(c: _Column) -> int:
            longest = max(len(text) for text in cells[c.name])
            content = max(len(c.name), min(longest, _WRAP_MIN) if c.wraps else longest)
            return content + _CELL_EXTRA

        kept: set[str] = set()
        used = 1  # the table's closing border
        for c in sorted(columns, key=lambda c: c.priority + (_QUIET_DEMOTION if c.name in quiet else 0)):
            if used + need(c) <= width:
                kept.add(c.name)
                used += need(c)
        return [c for c in columns if c.name in kept]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        models = {g.model for g in self.gpus}
        shared_model = models.pop() if len(models) == 1 else None
        columns = [c for c in _COLUMNS if not (c.name == "Model" and shared_model is not None)]
        cells = {c.name: [c.cell(g) for g in self.gpus] for c in columns}
        quiet = {name for name, texts in cells.items() if all(text in _QUIET for text in texts)}
        shown = self._choose(columns, cells, quiet, options.max_width)
        left_out = [c.name for c in columns if c not in shown]
        busy = [name for name in left_out if name not in quiet]
        idle = [name for name in left_out if name in quiet]
        title = f"GPUs: {len(self.gpus)} x {shared_model}" if shared_model else "GPUs"
        notes = []
        if any(c.name == "ECC c/u" for c in shown):
            notes.append("ECC: corrected/uncorrected since boot · over the GPU's life")
        if busy:
            notes.append(f"not shown at this width: {', '.join(busy)} (--json has every reading)")
        if idle:
            notes.append(f"nothing to report (0, ok, - or N/A on every GPU): {', '.join(idle)}")
        table = Table(title=title, caption="\n".join(notes) or None, caption_justify="left")
        for c in shown:
            table.add_column(c.name, justify=c.justify,  # type: ignore[arg-type]
                             no_wrap=not c.wraps, overflow="fold")
        for i in range(len(self.gpus)):
            table.add_row(*(cells[c.name][i] for c in shown))
        yield table
