"""Private directories: what the product writes (metrics, cursors, keys, inventories) lives in
directories only their owner can read, whatever the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "ensure_private_dir"]

DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> None:
    """Create `path` and every missing parent with mode exactly 0700; existing directories
    are left as they are (a `FLOW_METRICS_DIR` the user made keeps its mode).

    `Path.mkdir(parents=True, mode=0o700)` gives the *parents* the umask's mode (0755 under
    umask 022): `~/.flow` would then be world-readable. This creates each level itself.

    Raises:
        OSError: it cannot be created, or it exists and is not a directory.
    """
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(f"{path} exists and is not a directory") from None
        return
    except FileNotFoundError:
        ensure_private_dir(path.parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            return
    # mkdir's mode is filtered by the umask (a umask of 077 is fine, one of 0277 is not).
    os.chmod(path, DIR_MODE)
