"""Atomic file writes: a crash or kill at any moment leaves the old file or the new one, never a
torn one. Every file the project saves goes through here."""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cllm.pids import pid_alive


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX only; elsewhere the rename stands as is)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> None:
    """Delete the temporary files that killed writes of ``path`` left behind: those whose
    writer process is gone, or (where that cannot be asked) that are over an hour old."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            pid = int(tmp.name[len(path.name) + 2 :].split(".")[0])
        except ValueError:
            pid = 0
        try:
            if os.name == "posix" and pid > 0:
                if pid_alive(pid):
                    continue
            elif time.time() - tmp.stat().st_mtime < 3600:
                continue
            tmp.unlink()
        except OSError:
            pass  # already gone, or not ours to remove


@contextmanager
def atomic_open(path: Path | str, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Write to a temporary file in ``path``'s folder (``.NAME.PID.*.tmp``); when the block ends
    without an error it is flushed, fsynced (``durable``), renamed over ``path`` and the folder
    fsynced. On an error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        text = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path | str, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path``'s contents with ``data`` atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", durable=durable) as f:
        f.write(data)
