"""Cross-process locks: one protocol for the model lock (``NAME.lock``), the crawl lock
(``NAME.crawl.sqlite-lock``) and any other file lock of the models folder.

A lock is a file holding JSON that names its holder (pid, host, start time, purpose, command),
with an ``flock`` on it while held. The kernel drops the flock the moment the holder dies, however
it dies, so a lock file whose flock can be taken is free whatever it says.

Taking: open (creating if needed) -> flock, non-blocking -> check the path still names the file
we locked (the last holder unlinks it on release; whoever opened it before the unlink must try
again) -> write the holder's JSON. Releasing: unlink, then close. A file whose flock is held but
whose JSON names a dead process on this host was inherited by a forked child that outlived its
parent; it is unlinked and the lock taken afresh.
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
from cllm.models import paths
from cllm.pids import pid_alive

_held: dict[str, FileLock] = {}  # lock paths this process holds, for held_here()
_held_guard = threading.Lock()
# A contender that finds the flock taken by someone who has not written its JSON yet (or by a
# reader looking at the holder) waits this long in total before calling the lock busy.
_SETTLE_S = 0.25


def lock_path(models_dir: Path, name: str) -> Path:
    return paths.lock_file(models_dir, name)


def _read_info(fd: int) -> dict | None:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return info if isinstance(info, dict) else None


def _dead_here(info: dict | None) -> bool:
    pid = info.get("pid") if info else None
    return (
        info is not None
        and info.get("host") == socket.gethostname()
        and type(pid) is int
        and pid > 0
        and not pid_alive(pid)
    )


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _describe(what: str, info: dict | None) -> str:
    if not info:
        return f"{what} is busy: another process is taking its lock"
    return (
        f"{what} is busy: {info.get('purpose', 'in use')} by pid {info.get('pid')} "
        f"on host {info.get('host')} since {info.get('started')}"
    )


class FileLock:
    """An exclusive lock on ``path``, held until ``release()`` or the end of a ``with`` block.
    ``what`` names the locked thing in the BusyError (``model 'a'``)."""

    def __init__(self, path: Path | str, what: str, purpose: str = "in use"):
        self.path = Path(path)
        self.what = what
        self.purpose = purpose
        self.fd: int | None = None
        self.recovered: dict | None = None  # the dead holder this lock replaced, if any

    def acquire(self) -> FileLock:
        deadline = time.monotonic() + _SETTLE_S
        for _ in range(1000):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_info(fd)
                if _dead_here(info):  # held through a descriptor its dead owner's child inherited?
                    time.sleep(0.05)  # or a new holder that has not written its JSON yet
                    if _read_info(fd) == info and _same_file(fd, self.path):
                        self.path.unlink(missing_ok=True)
                        self.recovered = info
                    os.close(fd)
                    continue
                os.close(fd)
                if info is None and time.monotonic() < deadline:
                    time.sleep(0.005)  # being taken or looked at right now
                    continue
                raise BusyError(_describe(self.what, info)) from None
            if not _same_file(fd, self.path):  # released and unlinked meanwhile: try again
                os.close(fd)
                continue
            old = _read_info(fd)
            if old and old.get("pid") is not None:
                self.recovered = old  # left behind by a holder that died
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "purpose": self.purpose,
                "command": " ".join(sys.argv)[:500],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
            self.fd = fd
            with _held_guard:
                _held[str(self.path.resolve())] = self
            return self
        raise BusyError(f"{self.what} is busy: its lock keeps changing hands")

    def release(self) -> None:
        if self.fd is None:
            return
        with _held_guard:
            _held.pop(str(self.path.resolve()), None)
        # Unlink before closing: a contender that opened this file sees its inode gone and retries.
        try:
            if _same_file(self.fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass  # a file left behind is free once the flock goes: the next taker reuses it
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FileLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: Path | str) -> dict | None:
    """The live holder's info ({pid, host, started, purpose, command}) of the lock at ``path``,
    or None if it is free. Never changes the file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            if _dead_here(info):
                return None
            return info or {"purpose": "locking"}
        return None  # we could lock it: nobody holds it
    finally:
        os.close(fd)


def held_path(path: Path | str) -> bool:
    """True if this process holds the lock at ``path``."""
    with _held_guard:
        return str(Path(path).resolve()) in _held


# ---------------------------------------------------------------------------- the model lock


class ModelLock(FileLock):
    """The lock of one model (``NAME.lock``): training, saving, renaming, ... take it."""

    def __init__(self, models_dir: Path, name: str, purpose: str = "in use"):
        super().__init__(lock_path(models_dir, name), f"model {name!r}", purpose)
        self.name = name


def acquire(models_dir: Path, name: str, purpose: str = "in use") -> ModelLock:
    """Take the lock of model ``name`` now, or raise ``BusyError`` naming the holder."""
    lock = ModelLock(models_dir, name, purpose)
    lock.acquire()
    return lock


def lock_holder(models_dir: Path, name: str) -> dict | None:
    """The live holder's info of model ``name``'s lock, or None if not locked."""
    return holder(lock_path(models_dir, name))


def held_here(models_dir: Path, name: str) -> bool:
    """True if this process holds the lock (the trainer saving the model it trains)."""
    return held_path(lock_path(models_dir, name))


def crawl_lock(models_dir: Path, name: str, purpose: str = "crawling") -> FileLock:
    """The crawl lock of model ``name`` (not taken yet): one crawl per model at a time."""
    return FileLock(paths.crawl_lock(models_dir, name), f"model {name!r}", purpose)
