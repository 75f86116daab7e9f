"""A model's data queue: its training set, in ``models/<name>_queue/``.

Layout: ``queue.sqlite`` (the index: one row per item) and ``items/<sha256[:16]>.tok`` (each
item's tokens, raw little-endian int32, in the model's tokenizer). Items hold only their text's
tokens; whoever streams them to the model separates documents with the end-of-text token.

Crash safety and sharing between processes (the app, a headless trainer, the crawler):
- SQLite in WAL mode serialises writers; readers never block.
- A token file is written to ``items/*.part``, fsynced, and renamed to its final name inside the
  same write transaction that inserts its row. A kill at any moment leaves either no row (the
  file, if any, is an orphan) or a row whose file is complete.
- Orphans are swept on open, under the write lock, so another process's item in flight (which
  holds that lock from rename to commit) is never taken for one. ``.part`` files are swept only
  once old, since another process may still be writing them.

Order is deterministic: priority (higher first), then first in, first out. The same text (by
SHA-256 of its UTF-8) is stored once; a second add reports it as ``duplicate``.

Tokenizer changes: the queue keeps the JSON of the tokenizer its tokens were made with. Opened
with a different tokenizer (``on_mismatch="retokenize"``, the default), it re-encodes every item
in one transaction (decoding with the stored tokenizer, so nothing is lost); with
``on_mismatch="refuse"`` it raises ``ValidationError`` instead.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cllm.atomic import abandoned, fsync_dir
from cllm.data.extract import Skipped, iter_file_text
from cllm.errors import CLLMError, NotFoundError, ValidationError

FORMAT, VERSION = "cllm-queue", 1
MEMMAP_BYTES = 64 << 20  # token files above this are memory-mapped by tokens()
PART_MAX_AGE = 3600.0  # seconds before an unfinished .part file counts as abandoned

Progress = Callable[[int, int, str], None]  # (files done, files in all, current source)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    n_tokens INTEGER NOT NULL,
    added TEXT NOT NULL,
    file TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'text'
);
CREATE INDEX IF NOT EXISTS items_order ON items (priority DESC, seq);
"""
_COLUMNS = "id, seq, priority, source, sha256, n_tokens, added, kind"
_ORDER = "ORDER BY priority DESC, seq"


@dataclass(frozen=True)
class QueueItem:
    id: int
    seq: int
    priority: int
    source: str
    sha256: str
    n_tokens: int
    added: str  # ISO 8601, UTC
    kind: str  # text, code, html, markdown

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class AddResult:
    added: list[QueueItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    @property
    def tokens(self) -> int:
        return sum(it.n_tokens for it in self.added)

    def extend(self, other: AddResult) -> None:
        self.added += other.added
        self.skipped += other.skipped

    def to_dict(self) -> dict:
        return {
            "added": [it.to_dict() for it in self.added],
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "tokens": self.tokens,
        }


def fingerprint(tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_json().encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Case-insensitive shell patterns: ``*.txt`` matches ``notes.TXT``."""
    name = name.lower()
    return any(fnmatch.fnmatchcase(name, p.lower()) for p in patterns)


def walk_files(root: Path, patterns: Iterable[str] = ("*",), recursive: bool = True) -> list[Path]:
    """Files under ``root`` matching ``patterns``, in sorted order; hidden entries skipped.

    Symbolic links are followed, but each directory is entered once (by device and inode), so a
    link loop ends the walk instead of running forever.
    """
    patterns = tuple(patterns) or ("*",)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        subdirs = []
        for e in entries:
            if e.name.startswith("."):  # .git, .venv, editor files: not training text
                continue
            try:
                is_dir = e.is_dir()  # follows links
            except OSError:
                continue
            if is_dir:
                subdirs.append(Path(e.path))
            elif matches(e.name, patterns):
                found.append(Path(e.path))
        if recursive:
            for d in subdirs:
                if (d / "queue.sqlite").exists():  # never ingest a queue's own token files
                    continue
                visit(d)

    visit(root)
    return found


class DataQueue:
    """One model's queue. Safe to share between threads; processes share it through SQLite."""

    def __init__(self, queue_dir: str | Path, tokenizer, *, on_mismatch: str = "retokenize"):
        if on_mismatch not in ("retokenize", "refuse"):
            raise ValueError(f"on_mismatch must be 'retokenize' or 'refuse', not {on_mismatch!r}")
        self.dir = Path(queue_dir)
        self.items_dir = self.dir / "items"
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint(tokenizer)
        self._lock = threading.RLock()
        try:
            self.items_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CLLMError(f"cannot create queue folder {self.dir}: {err.strerror}") from None
        db = self.dir / "queue.sqlite"
        try:
            self._db = sqlite3.connect(
                db, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._open(on_mismatch)
        except sqlite3.OperationalError as err:
            self.close()
            if "locked" in str(err):
                raise CLLMError(f"queue database {db} is locked by another process") from None
            raise CLLMError(f"queue database {db} is unreadable ({err})") from None
        except sqlite3.DatabaseError as err:
            self.close()
            raise CLLMError(f"queue database {db} is unreadable or corrupted ({err})") from None

    # -------------------------------------------------------------------------- housekeeping

    def _open(self, on_mismatch: str) -> None:
        with self._write():
            meta = dict(self._db.execute("SELECT key, value FROM meta"))
            if not meta:
                self._set_meta(format=FORMAT, version=str(VERSION), created=_now())
                self._set_tokenizer()
            elif meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
                raise CLLMError(
                    f"{self.dir} is not a version {VERSION} queue "
                    f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
                )
            self._sweep()
            old = meta.get("tokenizer_fingerprint")
        if old and old != self.fingerprint:
            if on_mismatch == "refuse":
                raise ValidationError(
                    f"queue {self.dir} was tokenized with a different tokenizer; "
                    "open it with on_mismatch='retokenize' to re-encode its items"
                )
            self._retokenize()

    def _set_meta(self, **kv: str) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(kv.items()),
        )

    def _set_tokenizer(self) -> None:
        self._set_meta(
            tokenizer_fingerprint=self.fingerprint, tokenizer_json=self.tokenizer.to_json()
        )

    class _Txn:
        """``BEGIN IMMEDIATE`` (the write lock, across processes) ... ``COMMIT``/``ROLLBACK``."""

        def __init__(self, q: DataQueue) -> None:
            self.q = q

        def __enter__(self) -> sqlite3.Connection:
            self.q._lock.acquire()
            try:
                self.q._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.q._lock.release()
                raise
            return self.q._db

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.q._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.q._lock.release()

    def _write(self) -> DataQueue._Txn:
        return DataQueue._Txn(self)

    def _sweep(self) -> None:
        """Delete token files no row names (left by a crash); call under the write lock."""
        known = {f for (f,) in self._db.execute("SELECT file FROM items")}
        for e in os.scandir(self.items_dir):
            try:
                if e.name.endswith(".tok") and e.name not in known:
                    os.unlink(e.path)
                elif e.name.endswith(".part") and abandoned(e.path, PART_MAX_AGE):
                    os.unlink(e.path)
            except OSError:
                pass

    def _retokenize(self) -> None:
        from cllm.engine.tokenizer import tokenizer_from_json

        with self._write():
            meta = dict(self._db.execute("SELECT key, value FROM meta"))
            if meta.get("tokenizer_fingerprint") == self.fingerprint:
                return  # another process did it meanwhile
            try:
                old = tokenizer_from_json(meta.get("tokenizer_json", ""))
            except CLLMError as err:
                raise CLLMError(
                    f"queue {self.dir} holds tokens of an unreadable tokenizer ({err}); "
                    "clear it and add the data again"
                ) from None
            rows = self._db.execute("SELECT id, sha256, file, n_tokens FROM items").fetchall()
            done = []
            for item_id, sha, fname, n in rows:
                text = old.decode(self._load(fname, n, old.vocab_size, item_id))
                part, count = self._write_part([text])
                new_name = f"{sha[:16]}.{self.fingerprint[:8]}.tok"
                os.replace(part, self.items_dir / new_name)
                self._db.execute(
                    "UPDATE items SET file = ?, n_tokens = ? WHERE id = ?",
                    (new_name, count, item_id),
                )
                done.append(fname)
            fsync_dir(self.items_dir)
            self._set_tokenizer()
        for fname in done:  # committed: the old files are now orphans
            try:
                os.unlink(self.items_dir / fname)
            except OSError:
                pass

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None

    def __enter__(self) -> DataQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------- adding

    def _write_part(self, pieces: Iterable[str]) -> tuple[Path, int]:
        """Encode text pieces into a fsynced ``.part`` file; return it and its token count."""
        part = self.items_dir / f"{os.getpid()}.{uuid.uuid4().hex}.part"  # swept once its PID dies
        n = 0
        try:
            with open(part, "wb") as f:
                for piece in pieces:
                    ids = np.asarray(self.tokenizer.encode(piece), dtype="<i4")
                    f.write(ids.tobytes())
                    n += ids.size
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return part, n

    def _commit(
        self, part: Path, n: int, sha: str, source: str, priority: int, kind: str
    ) -> QueueItem | None:
        """Move a finished ``.part`` into place and insert its row; None if a duplicate."""
        try:
            with self._write() as db:
                if db.execute("SELECT 1 FROM items WHERE sha256 = ?", (sha,)).fetchone():
                    return None
                name = f"{sha[:16]}.tok"
                if db.execute("SELECT 1 FROM items WHERE file = ?", (name,)).fetchone():
                    name = f"{sha}.tok"  # a 64-bit prefix collision: use the whole hash
                os.replace(part, self.items_dir / name)
                fsync_dir(self.items_dir)
                (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM items").fetchone()
                cur = db.execute(
                    "INSERT INTO items (seq, priority, source, sha256, n_tokens, added, file, kind)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, priority, source, sha, n, _now(), name, kind),
                )
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM items WHERE id = ?", (cur.lastrowid,)
                ).fetchone()
            return QueueItem(*row)
        finally:
            part.unlink(missing_ok=True)

    def _add_pieces(
        self, pieces: Iterator[str], source: str, priority: int, kind: str
    ) -> AddResult:
        result = AddResult()
        sha = hashlib.sha256()
        blank = True

        def hashed() -> Iterator[str]:
            nonlocal blank
            for piece in pieces:
                sha.update(piece.encode("utf-8"))  # a lone surrogate fails here: caught below
                blank = blank and not piece.strip()
                yield piece

        try:
            part, n = self._write_part(hashed())
        except Skipped as err:
            result.skipped.append((source, err.reason))
            return result
        except UnicodeEncodeError:
            result.skipped.append((source, "undecodable (a lone surrogate has no UTF-8 form)"))
            return result
        except ValidationError as err:  # the tokenizer refused the text
            result.skipped.append((source, f"undecodable ({err})"))
            return result
        if blank:
            part.unlink(missing_ok=True)
            result.skipped.append((source, "empty"))
            return result
        item = self._commit(part, n, sha.hexdigest(), source, priority, kind)
        if item is None:
            result.skipped.append((source, "duplicate"))
        else:
            result.added.append(item)
        return result

    def add_text(self, text: str, source: str, priority: int = 0, kind: str = "text") -> AddResult:
        """Add a text (a crawled page, a pasted document); ``source`` is its path or URL."""
        return self._add_pieces(iter([text]), str(source), int(priority), kind)

    def add_file(self, path: str | Path, priority: int = 0) -> AddResult:
        """Add one file's text, streamed; skipped files come back with their reason."""
        path = Path(path)
        if not path.exists():
            raise NotFoundError(f"no such file: {path}")
        if path.is_dir():
            return self.add_folder(path, priority=priority)
        source = str(path.resolve())
        if not path.is_file():  # a FIFO or a device would block or never end
            return AddResult(skipped=[(source, "not a regular file")])
        try:
            kind, pieces = iter_file_text(path)
        except Skipped as err:
            return AddResult(skipped=[(source, err.reason)])
        return self._add_pieces(pieces, source, int(priority), kind)

    def add_folder(
        self,
        path: str | Path,
        patterns: Iterable[str] = ("*",),
        recursive: bool = True,
        priority: int = 0,
        progress: Progress | None = None,
    ) -> AddResult:
        """Add every matching file under a folder, in sorted order."""
        path = Path(path)
        if not path.is_dir():
            raise NotFoundError(f"no such folder: {path}")
        files = walk_files(path, patterns, recursive)
        return self.add_files(files, priority=priority, progress=progress)

    def add_files(
        self, files: Iterable[str | Path], priority: int = 0, progress: Progress | None = None
    ) -> AddResult:
        files = list(files)
        result = AddResult()
        for i, f in enumerate(files):
            if progress:
                progress(i, len(files), str(f))
            result.extend(self.add_file(f, priority=priority))
        if progress and files:
            progress(len(files), len(files), "")
        return result

    def import_from(self, other: DataQueue, progress: Progress | None = None) -> AddResult:
        """Copy another queue's items in its order; re-tokenize when the tokenizers differ."""
        if self.dir.resolve() == other.dir.resolve():
            raise ValidationError("cannot import a queue into itself")
        same = other.fingerprint == self.fingerprint
        items = other.items()
        result = AddResult()
        for i, it in enumerate(items):
            if progress:
                progress(i, len(items), it.source)
            with self._lock:
                if self._db.execute(
                    "SELECT 1 FROM items WHERE sha256 = ?", (it.sha256,)
                ).fetchone():
                    result.skipped.append((it.source, "duplicate"))
                    continue
            ids = other.tokens(it.id)
            if same:
                part, n = self._copy_part(ids)
            else:
                part, n = self._write_part([other.tokenizer.decode(ids)])
            item = self._commit(part, n, it.sha256, it.source, it.priority, it.kind)
            if item is None:
                result.skipped.append((it.source, "duplicate"))
            else:
                result.added.append(item)
        if progress and items:
            progress(len(items), len(items), "")
        return result

    def _copy_part(self, ids: np.ndarray) -> tuple[Path, int]:
        part = self.items_dir / f"{os.getpid()}.{uuid.uuid4().hex}.part"  # swept once its PID dies
        try:
            with open(part, "wb") as f:
                f.write(np.asarray(ids, dtype="<i4").tobytes())
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return part, int(ids.size)

    # ------------------------------------------------------------------------------- reading

    def items(self) -> list[QueueItem]:
        """All items in training order: priority (high first), then first in, first out."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM items {_ORDER}").fetchall()
        return [QueueItem(*r) for r in rows]

    def item(self, item_id: int) -> QueueItem:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM items WHERE id = ?", (int(item_id),)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"queue {self.dir.name} has no item {item_id}")
        return QueueItem(*row)

    def size(self) -> tuple[int, int]:
        """(items, tokens)."""
        with self._lock:
            n, t = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_tokens), 0) FROM items"
            ).fetchone()
        return int(n), int(t)

    def __len__(self) -> int:
        return self.size()[0]

    def tokens(self, item_id: int) -> np.ndarray:
        """The item's tokens, int32, checked against its row and the tokenizer's vocabulary."""
        with self._lock:
            row = self._db.execute(
                "SELECT file, n_tokens FROM items WHERE id = ?", (int(item_id),)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"queue {self.dir.name} has no item {item_id}")
        return self._load(row[0], row[1], self.tokenizer.vocab_size, item_id)

    def _load(self, fname: str, n: int, vocab_size: int, item_id: int) -> np.ndarray:
        path = self.items_dir / fname
        try:
            size = path.stat().st_size
            if size != 4 * n:
                raise CLLMError(
                    f"queue item {item_id} ({path}) is damaged: {size} bytes, expected {4 * n}"
                )
            if n == 0:
                return np.empty(0, np.int32)
            if size > MEMMAP_BYTES:  # a huge item is paged in as it is read, never loaded whole
                ids = np.memmap(path, dtype="<i4", mode="r")
            else:
                ids = np.fromfile(path, dtype="<i4").astype(np.int32, copy=False)
        except OSError as err:
            raise CLLMError(
                f"queue item {item_id} ({path}) is unreadable: {err.strerror}"
            ) from None
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise CLLMError(f"queue item {item_id} ({path}) holds token ids outside the vocabulary")
        return ids

    def text(self, item_id: int) -> str:
        return self.tokenizer.decode(self.tokens(item_id))

    # ------------------------------------------------------------------------------ removing

    def remove(self, item_id: int) -> QueueItem:
        with self._write() as db:
            row = db.execute(
                f"SELECT {_COLUMNS}, file FROM items WHERE id = ?", (int(item_id),)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"queue {self.dir.name} has no item {item_id}")
            db.execute("DELETE FROM items WHERE id = ?", (int(item_id),))
        (self.items_dir / row[-1]).unlink(missing_ok=True)  # after the commit: an orphan at worst
        return QueueItem(*row[:-1])

    def clear(self) -> int:
        """Remove every item; returns how many there were."""
        with self._write() as db:
            files = [f for (f,) in db.execute("SELECT file FROM items")]
            db.execute("DELETE FROM items")
        for f in files:
            (self.items_dir / f).unlink(missing_ok=True)
        return len(files)
