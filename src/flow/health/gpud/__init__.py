"""The GPUd client and the adapters from each GPUd schema (v0.4.x, v0.5+) to the snapshot.

`GpudClient` / `read_gpud` do the I/O (client.py); `snapshot_from_responses` is the pure
adapter the client feeds (adapt.py, with blobs.py, metrics.py, xids.py). See docs/gpud-client.md.
"""

from flow.health.gpud.adapt import SCHEMA_V04, SCHEMA_V05, detect_schema, snapshot_from_responses
from flow.health.gpud.client import (
    DEFAULT_DEADLINE_S,
    DEFAULT_EVENTS_WINDOW_S,
    DEFAULT_METRICS_SINCE_S,
    DEFAULT_TIMEOUT_S,
    GpudClient,
    MachineInfoCache,
    local_boot_id,
    read_gpud,
)
from flow.health.gpud.xids import ParsedXid, parse_xid_text

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_EVENTS_WINDOW_S",
    "DEFAULT_METRICS_SINCE_S",
    "DEFAULT_TIMEOUT_S",
    "SCHEMA_V04",
    "SCHEMA_V05",
    "GpudClient",
    "MachineInfoCache",
    "ParsedXid",
    "detect_schema",
    "local_boot_id",
    "parse_xid_text",
    "read_gpud",
    "snapshot_from_responses",
]
