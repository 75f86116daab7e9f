"""Atomic file writes: a crash or kill at any moment leaves the old file or the new one, never a
torn one. Every file the project saves goes through here.

A write goes to ``.NAME.PID.RANDOM.tmp`` beside ``NAME`` (PID: the writer's process id), which is
renamed over ``NAME`` when complete. A kill leaves the temporary file behind: ``sweep_folder`` and
``remove_stale_temps`` delete those whose writer is dead. Files get the permissions any new file
gets (0666 less the umask), not the 0600 of a bare temporary file. A full disk raises
``DiskFullError`` naming the file, with the old one untouched.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cllm.errors import DiskFullError
from cllm.pids import pid_alive

FULL = (errno.ENOSPC, errno.EDQUOT)
# .NAME.PID.RANDOM.tmp, NAME possibly holding dots; the PID is the last all-digit part but one
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_umask_guard = threading.Lock()


def disk_full(path: Path | str) -> DiskFullError:
    return DiskFullError(f"no space left on device while writing {path}; nothing was changed")


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in FULL


def current_umask() -> int:
    """The process's umask (read without changing it where the system allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_guard:  # elsewhere: set and restore (briefly visible to other threads)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


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


def abandoned(path: Path | str, max_age: float = 3600.0) -> bool:
    """Whether a temporary file named ``[.]...PID.*`` was left by a dead writer: its PID (the
    first all-digit dot-separated part) is not running, or, where no PID can be found or asked,
    it is older than ``max_age`` seconds."""
    path = Path(path)
    pid = next((int(p) for p in path.name.split(".") if p.isdigit()), 0)
    if os.name == "posix" and pid > 0:
        return not pid_alive(pid)
    try:
        return time.time() - path.stat().st_mtime >= max_age
    except OSError:
        return False


def _temp_pid(file_name: str) -> int | None:
    m = _TEMP.match(file_name)
    return int(m.group("pid")) if m else None


def _unlink_if_dead(tmp: Path, pid: int | None) -> bool:
    try:
        if os.name == "posix" and pid:
            if pid_alive(pid):
                return False
        elif time.time() - tmp.stat().st_mtime < 3600:
            return False
        tmp.unlink()
        return True
    except OSError:
        return False  # already gone, or not ours to remove


def remove_stale_temps(path: Path) -> None:
    """Delete the temporary files that killed writes of ``path`` left behind: those whose
    writer process is gone, or (where that cannot be asked) that are over an hour old."""
    for tmp in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.tmp"):
        pid = _temp_pid(tmp.name)
        if pid is not None and tmp.name.startswith(f".{Path(path).name}.{pid}."):
            _unlink_if_dead(tmp, pid)


def sweep_folder(folder: Path | str) -> list[Path]:
    """Delete every temporary file of an atomic write in ``folder`` whose writer is dead;
    returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if e.name.startswith(".") and e.name.endswith(".tmp"):
            pid = _temp_pid(e.name)
            if pid is not None and e.is_file(follow_symlinks=False):
                if _unlink_if_dead(Path(e.path), pid):
                    removed.append(Path(e.path))
    return removed


@contextmanager
def atomic_open(path: Path | str, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Write to a temporary file in ``path``'s folder (``.NAME.PID.*.tmp``); when the block ends
    without an error it is flushed, fsynced (``durable``), renamed over ``path`` and the folder
    fsynced. On an error the temporary file is removed and ``path`` is untouched; a full disk
    raises ``DiskFullError``."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # as open() would have created it
        except OSError:
            pass  # a file system without modes
        text = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full(path) from None
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path | str, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path``'s contents with ``data`` atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", durable=durable) as f:
        f.write(data)
