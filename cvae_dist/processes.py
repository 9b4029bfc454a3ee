"""Facts about the processes of this host, for telling a folder's live writer from one that is gone."""

from __future__ import annotations

import os
from pathlib import Path


def running(pid: int) -> bool:
    """Whether a process with this id exists on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def start_time(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc; None elsewhere), which tells a reused PID from its first owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
