"""The logs a node keeps for flow, and the remote command that prints (or follows) each.

| source | where |
|---|---|
| gpud | `journalctl -u gpud`; without systemd, `/var/log/flow/gpud.log` |
| collector | `journalctl -u flow-metrics-streamer`; without systemd, `/var/log/flow/collector.log` |
| startup | `/var/log/flow/startup.log` (`$FLOW_STARTUP_LOG` on the node overrides) |

Nodes without systemd run GPUd and the collector under the installer's fallback, which logs to
files in `/var/log/flow` (`$FLOW_LOG_DIR` on the node overrides): when the node has no
`/run/systemd/system` and the first source's file exists, those files are read instead.

Each command runs under `sh -c` (whatever the login shell) and through `sudo -n` when the user is
not root and has password-less sudo, because the system journal is often root/adm-only. It `exec`s
the reader, so a TERM sent when `--follow` stops reaches it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

__all__ = [
    "DEFAULT_LOG_SOURCES",
    "LOG_DIR",
    "LOG_FILES",
    "LOG_SOURCES",
    "STARTUP_LOG",
    "UNITS",
    "log_command",
]

STARTUP_LOG = "/var/log/flow/startup.log"
LOG_DIR = "/var/log/flow"
#: The installer's log files for the journald sources, on nodes without systemd.
LOG_FILES = {"gpud": "gpud.log", "collector": "collector.log"}
UNITS = {"gpud": "gpud", "collector": "flow-metrics-streamer"}
LOG_SOURCES = ("startup", "gpud", "collector")
#: What `flow logs TASK` shows without --source (with --follow: the two journald units).
DEFAULT_LOG_SOURCES = LOG_SOURCES

_SUDO = 'S=; if [ "$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then S="sudo -n"; fi; '


def log_command(sources: Sequence[str], *, lines: int, follow: bool) -> str:
    """The remote shell command printing the last `lines` lines of `sources` (following if asked).

    Several journald sources are merged by one journalctl (in time order); `startup` cannot be
    merged with them and must be asked for alone.

    Raises:
        ValueError: an unknown source, or `startup` mixed with journald sources.
    """
    unknown = [s for s in sources if s not in LOG_SOURCES]
    if unknown or not sources:
        raise ValueError(f"unknown log source {unknown or sources!r}; allowed: {', '.join(LOG_SOURCES)}")
    if "startup" in sources:
        if len(sources) > 1:
            raise ValueError("the startup log is a file: ask for it alone")
        path = '"${FLOW_STARTUP_LOG:-' + STARTUP_LOG + '}"'
        reader = f"tail -n {int(lines)}{' -F' if follow else ''} {path}"
    else:
        units = " ".join(f"-u {UNITS[s]}" for s in sources)
        journal = f"journalctl {units} --no-pager -o short-iso -n {int(lines)}{' -f' if follow else ''}"
        files = " ".join(f'"$D/{LOG_FILES[s]}"' for s in sources)
        tail = f"tail -n {int(lines)}{' -F' if follow else ''} {files}"
        first = f'"$D/{LOG_FILES[sources[0]]}"'
        return "sh -c " + shlex.quote(
            _SUDO + 'D="${FLOW_LOG_DIR:-' + LOG_DIR + '}"; '
            f"if [ ! -d /run/systemd/system ] && [ -f {first} ]; then exec $S {tail}; "
            f"else exec $S {journal}; fi")
    return "sh -c " + shlex.quote(_SUDO + "exec $S " + reader)
