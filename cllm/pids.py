"""Processes by id: whether one still runs. Locks and temporary-file sweeps ask it."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether a process of this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
