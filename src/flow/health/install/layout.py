"""Where the install puts things on a node: one list that the script, the units, `status` and
`uninstall` all read, so the paths cannot drift apart.

Every path is absolute on the node. The generated scripts prefix each one with `$FLOW_ROOT`
(empty by default), which lets a test, or an image build, install into another root directory.
"""

from __future__ import annotations

__all__ = [
    "COLLECTOR_LOG",
    "COLLECTOR_PID",
    "COLLECTOR_UNIT",
    "COLLECTOR_UNIT_NAME",
    "CURSOR_FILE",
    "ENV_DIR",
    "ENV_FILE",
    "GPUD_BIN",
    "GPUD_DEFAULTS",
    "GPUD_LOG",
    "GPUD_PID",
    "GPUD_STATE_DIR",
    "GPUD_UNIT",
    "GPUD_UNIT_NAME",
    "LOCK_DIR",
    "LOG_DIR",
    "OPT_DIR",
    "RUN_DIR",
    "STARTUP_LOG",
    "STATE_DIR",
    "STORE_DIR",
    "VENV_DIR",
    "VENV_FLOW",
    "VENV_MARKER",
]

GPUD_BIN = "/usr/local/bin/gpud"
GPUD_DEFAULTS = "/etc/default/gpud"
GPUD_UNIT_NAME = "gpud.service"
GPUD_UNIT = f"/etc/systemd/system/{GPUD_UNIT_NAME}"
#: GPUd's own SQLite state; kept by `uninstall`, removed by `uninstall --purge`.
GPUD_STATE_DIR = "/var/lib/gpud"

COLLECTOR_UNIT_NAME = "flow-metrics-streamer.service"
COLLECTOR_UNIT = f"/etc/systemd/system/{COLLECTOR_UNIT_NAME}"
ENV_DIR = "/etc/flow"
ENV_FILE = f"{ENV_DIR}/metrics.env"

OPT_DIR = "/opt/flow"
VENV_DIR = f"{OPT_DIR}/venv"
VENV_FLOW = f"{VENV_DIR}/bin/flow"
#: Records the package spec (and the SHA-256 of a local file spec) that the venv holds.
VENV_MARKER = f"{VENV_DIR}/.flow-package"

#: The collector's home (FLOW_HOME on the node): the store and the streaming cursor live here.
STATE_DIR = "/var/lib/flow"
STORE_DIR = f"{STATE_DIR}/metrics"
#: Where the collector keeps its stream cursor: `flow.health.collector.daemon.default_cursor_path`
#: of the store (a dot-directory, which the store never reads as a task).
CURSOR_FILE = f"{STORE_DIR}/.collector/stream-cursor.json"

LOG_DIR = "/var/log/flow"
STARTUP_LOG = f"{LOG_DIR}/startup.log"
#: Used only by the no-systemd fallback; under systemd both services log to the journal.
GPUD_LOG = f"{LOG_DIR}/gpud.log"
COLLECTOR_LOG = f"{LOG_DIR}/collector.log"

RUN_DIR = "/run/flow"
GPUD_PID = f"{RUN_DIR}/gpud.pid"
COLLECTOR_PID = f"{RUN_DIR}/collector.pid"
LOCK_DIR = f"{RUN_DIR}/install.lock"
