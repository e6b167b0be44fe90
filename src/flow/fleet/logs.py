"""The logs a node keeps for flow, and the remote command that prints (or follows) each.

| source | where |
|---|---|
| gpud | `journalctl -u gpud` |
| collector | `journalctl -u flow-metrics-streamer` |
| startup | `/var/log/flow/startup.log` (`$FLOW_STARTUP_LOG` on the node overrides) |

Each command runs under `sh -c` (whatever the login shell) and through `sudo -n` when the user is
not root and has password-less sudo, because the system journal is often root/adm-only. It `exec`s
the reader, so a TERM sent when `--follow` stops reaches it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

__all__ = ["DEFAULT_LOG_SOURCES", "LOG_SOURCES", "STARTUP_LOG", "UNITS", "log_command"]

STARTUP_LOG = "/var/log/flow/startup.log"
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
        reader = f"journalctl {units} --no-pager -o short-iso -n {int(lines)}{' -f' if follow else ''}"
    return "sh -c " + shlex.quote(_SUDO + "exec $S " + reader)
