"""Cross-process model locks: ``models/<name>.lock``.

The lock file is created with O_CREAT|O_EXCL and holds JSON naming the holder (pid, host, start
time, purpose, command). While held, the holder also keeps an ``flock`` on it: the kernel drops
that the moment the process dies, however it dies, so a lock file whose flock can be taken was left
by a dead process and is recovered. The pid check catches the rarer case where the file system
does not support flock but the holder ran on this host.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from cllm.errors import BusyError
from cllm.pids import pid_alive

# A lock file younger than this with no JSON yet is being created, not abandoned.
_FRESH_S = 2.0
_held: dict[str, ModelLock] = {}  # lock paths this process holds, for held_here()
_held_guard = threading.Lock()


def lock_path(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.lock"


def _read_info(fd: int) -> dict | None:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode("utf-8"))
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _describe(name: str, info: dict | None) -> str:
    if not info:
        return f"model {name!r} is busy: another process is taking its lock"
    return (
        f"model {name!r} is busy: {info.get('purpose', 'in use')} by pid {info.get('pid')} "
        f"on host {info.get('host')} since {info.get('started')}"
    )


def _probe(path: Path) -> tuple[str, dict | None, int | None]:
    """Look at an existing lock file: ("free" | "busy" | "stale" | "retry", holder info, fd).

    On "stale" the returned fd holds the flock on the stale file (the caller removes the file, then
    closes the fd); otherwise no fd is left open.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return "free", None, None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _read_info(fd)
        pid = info.get("pid") if info else None
        if info and info.get("host") == socket.gethostname() and isinstance(pid, int):
            if not pid_alive(pid):  # flock held by an inherited descriptor, holder gone
                return "stale", info, fd
        os.close(fd)
        return "busy", info, None
    # We hold the flock, so the holder is gone, unless the file is being created right now.
    info = _read_info(fd)
    st = os.fstat(fd)
    try:
        same = os.stat(path).st_ino == st.st_ino
    except FileNotFoundError:
        same = False
    if not same:  # someone recovered and replaced it meanwhile: look again
        os.close(fd)
        return "retry", None, None
    if info is None and time.time() - st.st_mtime < _FRESH_S:
        os.close(fd)
        return "busy", None, None
    return "stale", info, fd


class ModelLock:
    """An exclusive lock on one model, held until ``release()`` or the end of a ``with`` block."""

    def __init__(self, models_dir: Path, name: str, purpose: str = "in use"):
        self.path = lock_path(models_dir, name)
        self.name = name
        self.purpose = purpose
        self.fd: int | None = None
        self.recovered: dict | None = None  # the stale holder this lock replaced, if any

    def acquire(self) -> ModelLock:
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                state, info, stale_fd = _probe(self.path)
                if state == "busy":
                    raise BusyError(_describe(self.name, info)) from None
                if state == "stale":
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    finally:
                        os.close(stale_fd)
                    self.recovered = info or {}
                continue  # free, stale (now removed) or retry: try to create again
            # Contenders hold the flock only for an instant while probing: a blocking wait is short.
            fcntl.flock(fd, fcntl.LOCK_EX)
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "purpose": self.purpose,
                "command": " ".join(sys.argv)[:500],
            }
            os.write(fd, json.dumps(info).encode("utf-8"))
            os.fsync(fd)
            self.fd = fd
            with _held_guard:
                _held[str(self.path.resolve())] = self
            return self
        raise BusyError(f"model {self.name!r} is busy: its lock keeps changing hands")

    def release(self) -> None:
        if self.fd is None:
            return
        with _held_guard:
            _held.pop(str(self.path.resolve()), None)
        # Unlink before closing: a contender that opened this file sees its inode gone and retries.
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass  # a file left behind is stale once the flock goes: the next taker recovers it
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> ModelLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(models_dir: Path, name: str, purpose: str = "in use") -> ModelLock:
    """Take the lock of model ``name`` now, or raise ``BusyError`` naming the holder."""
    return ModelLock(models_dir, name, purpose).acquire()


def lock_holder(models_dir: Path, name: str) -> dict | None:
    """The live holder's info ({pid, host, started, purpose, command}), or None if not locked."""
    path = lock_path(models_dir, name)
    for _ in range(10):
        state, info, fd = _probe(path)
        if fd is not None:
            os.close(fd)
        if state == "busy":
            return info or {"purpose": "locking"}
        if state != "retry":
            return None
    return None


def held_here(models_dir: Path, name: str) -> bool:
    """True if this process holds the lock (the trainer saving the model it trains)."""
    with _held_guard:
        return str(lock_path(models_dir, name).resolve()) in _held
