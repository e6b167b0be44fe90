"""This machine's boot id: what GPUd on it reports as `bootID` (Linux only)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["local_boot_id"]

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def local_boot_id(path: Path = _BOOT_ID_PATH) -> str | None:
    """This machine's boot id, or None where there is none.

    The collector runs on the node itself and passes it to the GPUd client, so that
    /machine-info is fetched once per boot; the simulator reports it for a node standing in for
    this host's GPUd.
    """
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
