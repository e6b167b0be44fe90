"""What a summary reads from one snapshot: a `Sample`, built from a `Snapshot` or, on the
store's fast path, straight from the decoded JSON object (skipping the cost of building every GPU
reading). Both give the same sample, by Snapshot.from_dict's rules for odd values; the tests
hold them to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from flow.health.snapshot import (
    HealthStatus,
    Snapshot,
    coerce_float,
    coerce_int,
    format_time,
    parse_time,
)

__all__ = ["GpuSample", "Sample"]


_num = coerce_float
_int = coerce_int


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment is not None else None


class GpuSample(NamedTuple):
    gpu_index: int
    temp_c: float | None
    util_gpu_pct: float | None
    ecc_corrected: int | None
    ecc_uncorrected: int | None
    ecc_aggregate_corrected: int | None
    ecc_aggregate_uncorrected: int | None


@dataclass(frozen=True)
class Sample:
    """What a summary reads from one snapshot."""

    time: datetime
    task_name: str
    status: HealthStatus
    score: int | None
    reasons: tuple[str, ...]
    gpus: tuple[GpuSample, ...]
    xids: frozenset[tuple[int, str | None, str | None]]
    # The node it was taken on: a task's nodes each have their GPUs, counters and status.
    node: str = ""

    @classmethod
    def from_snapshot(cls, s: Snapshot) -> Sample:
        verdict = s.verdict
        return cls(
            time=s.timestamp,
            task_name=s.task_name,
            status=s.status,
            score=verdict.score if verdict else None,
            reasons=tuple(r.code for r in verdict.reasons) if verdict else (),
            gpus=tuple(
                GpuSample(g.index, g.temp_c, g.util_gpu_pct, g.ecc_volatile_corrected,
                          g.ecc_volatile_uncorrected, g.ecc_aggregate_corrected,
                          g.ecc_aggregate_uncorrected)
                for g in s.gpus
            ),
            xids=frozenset(
                (x.code, x.gpu if x.gpu is not None else _gpu_name(x.gpu_index), _time(x.time))
                for x in s.xids
            ),
            node=s.node,
        )

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> Sample:
        """From a decoded snapshot object, with Snapshot.from_dict's rules for odd values.

        Raises:
            ValueError: no usable timestamp (as Snapshot.from_dict).
        """
        ts = d.get("timestamp")
        if not isinstance(ts, str):
            raise ValueError("snapshot has no timestamp")
        verdict = d.get("verdict")
        status = HealthStatus.UNKNOWN
        score: int | None = None
        reasons: tuple[str, ...] = ()
        if isinstance(verdict, Mapping):
            try:
                status = HealthStatus(verdict.get("status", "unknown"))
            except ValueError:
                status = HealthStatus.UNKNOWN
            score = _int(verdict.get("score"))
            raw_reasons = verdict.get("reasons")
            if isinstance(raw_reasons, list):
                reasons = tuple(str(r.get("code", "")) for r in raw_reasons if isinstance(r, Mapping))
        gpus: list[GpuSample] = []
        raw_gpus = d.get("gpus")
        if isinstance(raw_gpus, list):
            for g in raw_gpus:
                if isinstance(g, Mapping):
                    gpus.append(_gpu_sample(g))
        xids: set[tuple[int, str | None, str | None]] = set()
        raw_xids = d.get("xids")
        if isinstance(raw_xids, list):
            for x in raw_xids:
                if isinstance(x, Mapping):
                    gpu = x.get("gpu")
                    xids.add((
                        _int(x.get("code")) or 0,
                        str(gpu) if gpu is not None else _gpu_name(_int(x.get("gpu_index"))),
                        _norm_time(x.get("time")),
                    ))
        return cls(time=parse_time(ts), task_name=str(d.get("task_name") or ""), status=status,
                   score=score, reasons=reasons, gpus=tuple(gpus), xids=frozenset(xids),
                   node=str(d.get("node") or ""))


def _gpu_sample(g: Mapping[str, Any]) -> GpuSample:
    # The common types take the short way: this runs for every GPU of every snapshot read,
    # and is most of a summary's time after JSON decoding.
    get = g.get
    index, temp, util = get("index"), get("temp_c"), get("util_gpu_pct")
    vc, vu = get("ecc_volatile_corrected"), get("ecc_volatile_uncorrected")
    ac, au = get("ecc_aggregate_corrected"), get("ecc_aggregate_uncorrected")
    return GpuSample(
        index if type(index) is int else (_int(index) or 0),
        temp if type(temp) is float else _num(temp),
        util if type(util) is float else _num(util),
        vc if type(vc) is int else _int(vc),
        vu if type(vu) is int else _int(vu),
        ac if type(ac) is int else _int(ac),
        au if type(au) is int else _int(au),
    )


def _gpu_name(index: int | None) -> str | None:
    return f"GPU {index}" if index is not None else None


def _norm_time(value: Any) -> str | None:
    if not value:
        return None
    try:
        return format_time(parse_time(str(value)))
    except ValueError:
        return None
