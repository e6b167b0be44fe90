"""The `--json` documents of `flow health`: stable, versioned, described in docs/json.md."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from flow.health.snapshot import Snapshot, format_time, utcnow
from flow.views.summary import summarise

__all__ = ["JSON_SCHEMA_VERSION", "fleet_document", "history_document", "task_document"]

JSON_SCHEMA_VERSION = 1


def _base(kind: str, generated_at: datetime | None) -> dict[str, Any]:
    return {"schema": JSON_SCHEMA_VERSION, "kind": kind,
            "generated_at": format_time(generated_at or utcnow())}


def fleet_document(
    snapshots: Sequence[Snapshot], *, elapsed_s: float | None = None, generated_at: datetime | None = None
) -> dict[str, Any]:
    """`flow health --gpu --json`: every node's snapshot and verdict, and the fleet summary."""
    doc = _base("fleet", generated_at)
    doc["elapsed_s"] = None if elapsed_s is None else round(elapsed_s, 3)
    doc["summary"] = summarise(snapshots).to_dict()
    doc["nodes"] = [s.to_dict() for s in snapshots]
    return doc


def task_document(
    task: Mapping[str, Any], snapshots: Sequence[Snapshot], *, generated_at: datetime | None = None
) -> dict[str, Any]:
    """`flow health --task ID --json`: one task's nodes in depth."""
    doc = _base("task", generated_at)
    doc["task"] = dict(task)
    doc["summary"] = summarise(snapshots).to_dict()
    doc["nodes"] = [s.to_dict() for s in snapshots]
    return doc


def history_document(
    task: Mapping[str, Any], snapshots: Sequence[Snapshot], *, hours: float, source: str,
    summary: Mapping[str, Any], generated_at: datetime | None = None,
) -> dict[str, Any]:
    """`flow health --task ID --history H --json`: the window's summary and its snapshots."""
    doc = _base("history", generated_at)
    doc["task"] = dict(task)
    doc["hours"] = hours
    doc["source"] = source
    doc["summary"] = dict(summary)
    doc["snapshots"] = [s.to_dict() for s in snapshots]
    return doc
