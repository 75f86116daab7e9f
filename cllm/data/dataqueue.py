"""A model's data queue: its training set, in ``models/<name>_queue/``.

Layout: ``queue.sqlite`` (the index: one row per item) and ``items/<sha256[:16]>.tok`` (each
item's tokens, raw little-endian int32, in the model's tokenizer). Items whose tokens fit in
``INLINE_BYTES`` keep them in the index itself (the row's ``data``), so a folder of many tiny files
costs one transaction per batch, not two fsyncs per file. Items hold only their text's tokens
(records of a data file are separated by end-of-text); whoever streams them to the model separates
documents with the end-of-text token.

Adding many files commits them in batches (``BATCH_ITEMS`` files or ``BATCH_SECONDS``): a kill
loses at most the batch in flight, never a committed item. All the members of one archive go in
one transaction: an archive is added whole or not at all.

Reading: ``read(item, start, stop)`` reads a window of an item's tokens with ``pread``, so a huge
item is never mapped or loaded whole; ``tokens(item)`` returns whole items up to ``WHOLE_BYTES``.

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

An item flagged ``validation`` (``set_validation``) is held out whole: a trainer measures it and
never trains on it. The flag is a column of the item's row, changed in one transaction with the
queue's ``stamp`` (a counter in ``meta``), which removals and ``clear`` move too: a running trainer
reads the stamp before each step and drops what left training.

Tokenizer changes: the queue keeps the JSON of the tokenizer its tokens were made with. Opened
with a different tokenizer (``on_mismatch="retokenize"``, the default), it re-encodes every item
in one transaction (decoding with the stored tokenizer, so nothing is lost); with
``on_mismatch="refuse"`` it raises ``ValidationError`` instead.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import itertools
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cllm.atomic import abandoned, fsync_dir
from cllm.data.extract import (
    END_OF_TEXT,
    ArchiveRefused,
    Limits,
    Skipped,
    iter_documents,
    stream_documents,
)
from cllm.engine.tokenizer import CHUNKED_FROM
from cllm.errors import CLLMError, NotFoundError, ValidationError

FORMAT, VERSION = "cllm-queue", 2  # 2: inline token data and the source's encoding
MEMMAP_BYTES = 64 << 20  # token files above this are memory-mapped by tokens()
WHOLE_BYTES = 512 << 20  # tokens() refuses items above this: read them in windows with read()
INLINE_BYTES = 64 << 10  # token data up to this size lives in the index row
INLINE = "="  # the file column of an inline item: "=" + its hash (no token file has this name)
BATCH_ITEMS = 2048  # files per transaction when adding many
BATCH_SECONDS = 2.0
DEFER_CHARS = 16384  # a one-piece text up to this long is tokenized with its batch, in one call
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
    kind TEXT NOT NULL DEFAULT 'text',
    validation INTEGER NOT NULL DEFAULT 0,
    encoding TEXT NOT NULL DEFAULT '',
    data BLOB
);
CREATE INDEX IF NOT EXISTS items_order ON items (priority DESC, seq);
CREATE INDEX IF NOT EXISTS items_seq ON items (seq);
"""
_ADDED_COLUMNS = {  # columns newer than version 1, added when an older queue is opened
    "validation": "validation INTEGER NOT NULL DEFAULT 0",
    "encoding": "encoding TEXT NOT NULL DEFAULT ''",
    "data": "data BLOB",
}
_COLUMNS = "id, seq, priority, source, sha256, n_tokens, added, kind, validation, encoding"
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
    kind: str  # text, code, html, markdown, pdf, docx, epub, records
    validation: bool = False  # held out whole: measured, never trained on
    encoding: str = ""  # the source's text encoding where it was decoded from bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "validation", bool(self.validation))  # SQLite stores 0 / 1

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class AddResult:
    added: list[QueueItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (source, what was dropped in it)

    @property
    def tokens(self) -> int:
        return sum(it.n_tokens for it in self.added)

    def extend(self, other: AddResult) -> None:
        self.added += other.added
        self.skipped += other.skipped
        self.notes += other.notes

    def to_dict(self) -> dict:
        return {
            "added": [it.to_dict() for it in self.added],
            "skipped": [{"source": s, "reason": r} for s, r in self.skipped],
            "notes": [{"source": s, "note": n} for s, n in self.notes],
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


def matches_filter(item: QueueItem, text: str) -> bool:
    """The studio's and ``queue list --filter``'s test: ``text`` in the item's source or kind
    (case-insensitive), or a shell pattern (``*.pdf``) matching its file name."""
    text = text.strip().lower()
    if not text:
        return True
    source = item.source.lower()
    if any(c in text for c in "*?["):
        name = source.replace("!", "/").rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(name, text) or fnmatch.fnmatchcase(source, text)
    return text in source or text == item.kind.lower()


def walk_files(
    root: Path,
    patterns: Iterable[str] = ("*",),
    recursive: bool = True,
    *,
    exclude: Iterable[str] = (),
    skipped: list[tuple[str, str]] | None = None,
) -> list[Path]:
    """Files under ``root`` matching ``patterns`` and no ``exclude`` pattern, in sorted order;
    hidden entries skipped.

    Symbolic links are followed, but each directory is entered once (by device and inode), so a
    link loop ends the walk instead of running forever. An entry that cannot be used (a dangling
    link, a folder that cannot be listed) is left out and, when ``skipped`` is a list, appended
    to it as ``(path, reason)``; the walk goes on.
    """
    patterns = tuple(patterns) or ("*",)
    exclude = tuple(exclude)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def skip(path: str, reason: str) -> None:
        if skipped is not None:
            skipped.append((path, reason))

    def visit(folder: str) -> None:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            skip(folder, f"unreadable folder ({err.strerror or err})")
            return
        subdirs = []
        for e in entries:
            if e.name.startswith("."):  # .git, .venv, editor files: not training text
                continue
            try:
                is_dir = e.is_dir()  # follows links
                if not is_dir and e.is_symlink() and not os.path.exists(e.path):
                    if matches(e.name, patterns) and not matches(e.name, exclude):
                        skip(e.path, "dangling symbolic link")
                    continue
            except OSError as err:
                skip(e.path, f"unreadable ({err.strerror or err})")
                continue
            if matches(e.name, exclude):
                continue
            if is_dir:
                subdirs.append(e.path)
            elif matches(e.name, patterns):
                found.append(Path(e.path))
        if recursive:
            for d in subdirs:
                try:  # never ingest a queue's own token files
                    if os.path.lexists(os.path.join(d, "queue.sqlite")):
                        continue
                except OSError:
                    pass
                visit(d)

    visit(os.fspath(root))
    return found


@dataclass
class _Pending:
    """An item encoded and ready to commit: its tokens inline (``blob``) or in a ``.part``."""

    source: str
    priority: int
    kind: str
    encoding: str
    sha: str
    n: int
    blob: bytes | None
    part: Path | None
    text: str | None = None  # a short text whose tokens the batch makes in one call (n = -1)
    validation: bool = False  # held out for validation from its first commit


class _Batch:
    """Items waiting for one transaction; committed every ``BATCH_ITEMS`` or ``BATCH_SECONDS``.
    A group (the members of one archive) always lands in a single transaction."""

    def __init__(
        self,
        q: DataQueue,
        on_tokens: Callable[[int], None] | None = None,
        validation: bool = False,
    ) -> None:
        self.q = q
        self.validation = bool(validation)  # every item of this add is held out for validation
        self.result = AddResult()
        self.pending: list[_Pending] = []
        self.order: list[tuple[str, _Pending | str]] = []  # to report in the files' order
        self.since = time.monotonic()
        # the running token count of an add (``on_tokens``): tokens of the items committed, of
        # those waiting for the batch's commit (duplicates left out), and, of a big document,
        # those made so far (of the file in hand's earlier documents: ``group``)
        self.on_tokens = on_tokens
        self.committed = self.waiting = self.group = self.inflight = 0
        self.shas: set[str] = set()  # of the items waiting, to leave duplicates out of the count

    def tick(self, n: int) -> None:
        """``n`` more tokens of the document being tokenized."""
        self.inflight += n
        self._report()

    def prepared(self) -> None:
        """A document of the file in hand is tokenized (or skipped): the tokens shown while it
        was read stay shown until the file's documents are added (or turn out duplicates)."""
        self.group += self.inflight
        self.inflight = 0

    def _report(self) -> None:
        if self.on_tokens is not None:
            self.on_tokens(self.committed + self.waiting + self.group + self.inflight)

    def _is_new(self, sha: str) -> bool:
        if sha in self.shas:
            return False
        with self.q._lock:
            row = self.q._db.execute("SELECT 1 FROM items WHERE sha256 = ?", (sha,)).fetchone()
        return row is None

    def skip(self, source: str, reason: str) -> None:
        self.order.append((source, reason))
        self.group = self.inflight = 0
        self._maybe_flush()

    def add_group(self, group: list[tuple[str, _Pending | str]]) -> None:
        for source, p in group:
            self.order.append((source, p))
            if isinstance(p, _Pending):
                p.validation = p.validation or self.validation
                self.pending.append(p)
                if self.on_tokens is not None and p.n > 0 and self._is_new(p.sha):
                    self.waiting += p.n
                self.shas.add(p.sha)
        self.group = self.inflight = 0
        self._report()
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self.pending) >= BATCH_ITEMS or (
            self.pending and time.monotonic() - self.since >= BATCH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        try:
            self.q._encode_deferred(self.pending)
            items = iter(self.q._commit_many(self.pending))
        except BaseException:
            self.pending = []
            self.order = [(s, p) for s, p in self.order if not isinstance(p, _Pending)]
            raise
        for source, p in self.order:
            if isinstance(p, str):
                self.result.skipped.append((source, p))
            else:
                item = next(items)
                if item is None:
                    self.result.skipped.append((source, "duplicate"))
                else:
                    self.result.added.append(item)
                    self.committed += item.n_tokens
        self.pending, self.order = [], []
        self.waiting, self.shas = 0, set()
        self.since = time.monotonic()
        self._report()

    def finish(self) -> AddResult:
        self.flush()
        return self.result


class DataQueue:
    """One model's queue. Safe to share between threads; processes share it through SQLite."""

    def __init__(self, queue_dir: str | Path, tokenizer, *, on_mismatch: str = "retokenize"):
        if on_mismatch not in ("retokenize", "refuse"):
            raise ValueError(f"on_mismatch must be 'retokenize' or 'refuse', not {on_mismatch!r}")
        self.dir = Path(queue_dir)
        self.items_dir = self.dir / "items"
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint(tokenizer)
        self.limits = Limits()  # caps on archives and on files parsed whole
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
            elif meta.get("format") != FORMAT or meta.get("version") not in ("1", str(VERSION)):
                raise CLLMError(
                    f"{self.dir} is not a version {VERSION} queue "
                    f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
                )
            else:
                cols = {r[1] for r in self._db.execute("PRAGMA table_info(items)")}
                for name, decl in _ADDED_COLUMNS.items():
                    if name not in cols:
                        self._db.execute(f"ALTER TABLE items ADD COLUMN {decl}")
                self._set_meta(version=str(VERSION))
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
                pieces = self._pieces_of(old, item_id, fname, n)
                _, _, count, blob, part = self._encode(pieces)
                if part is None:
                    new_name = INLINE + sha
                else:
                    new_name = f"{sha[:16]}.{self.fingerprint[:8]}.tok"
                    os.replace(part, self.items_dir / new_name)
                self._db.execute(
                    "UPDATE items SET file = ?, n_tokens = ?, data = ? WHERE id = ?",
                    (new_name, count, blob, item_id),
                )
                if not fname.startswith(INLINE):
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

    def _encode_runs(self, pieces: Iterable) -> Iterator[np.ndarray]:
        """Token ids of text pieces in order; ``END_OF_TEXT`` becomes the end-of-text id. Short
        pieces (records of a data file) are encoded together through the engine's batch call."""
        tok = self.tokenizer
        eot = getattr(tok, "eot_id", None)
        hf = getattr(tok, "hf", None)
        batch = getattr(hf, "encode_batch_fast", None) or getattr(hf, "encode_batch", None)
        held: list = []
        held_chars = 0

        def flush() -> Iterator[np.ndarray]:
            nonlocal held_chars
            strs = [p for p in held if p is not END_OF_TEXT]
            if batch is not None and len(strs) > 1:
                encs = iter(batch(strs, add_special_tokens=False))
                ids = [None if p is END_OF_TEXT else next(encs).ids for p in held]
            else:
                ids = [None if p is END_OF_TEXT else tok.encode(p) for p in held]
            for p, i in zip(held, ids, strict=True):
                if p is END_OF_TEXT:
                    if eot is None:
                        yield np.asarray(tok.encode("\n\n"), dtype="<i4")
                    else:
                        yield np.array([eot], dtype="<i4")
                else:
                    yield np.asarray(i, dtype="<i4")
            held.clear()
            held_chars = 0

        for piece in pieces:
            if piece is not END_OF_TEXT and len(piece) >= CHUNKED_FROM:
                yield from flush()  # a long piece: the tokenizer splits it in parallel itself
                yield np.asarray(tok.encode(piece), dtype="<i4")
                continue
            held.append(piece)
            held_chars += 1 if piece is END_OF_TEXT else len(piece)
            if held_chars >= 1 << 20 or len(held) >= 4096:
                yield from flush()
        yield from flush()

    def _encode(
        self, pieces: Iterable, tick: Callable[[int], None] | None = None
    ) -> tuple[str, bool, int, bytes | None, Path | None]:
        """Hash and tokenize text pieces: (sha256, blank, count, inline bytes, ``.part`` file);
        once the tokens spill to the file (a big document), ``tick(n)`` hears of them as they
        are made.

        Tokens stay in memory up to ``INLINE_BYTES``, then spill to a fsynced ``.part`` file
        (exactly one of the two is returned). Raises ``Skipped`` (from the source),
        ``UnicodeEncodeError`` (a lone surrogate) or ``ValidationError`` (the tokenizer).
        """
        sha = hashlib.sha256()
        blank = True

        def watched() -> Iterator:
            nonlocal blank
            for p in pieces:
                if p is END_OF_TEXT:
                    sha.update(b"\xff")  # never a byte of UTF-8
                else:
                    sha.update(p.encode("utf-8"))
                    blank = blank and not p.strip()
                yield p

        buf = bytearray()
        part: Path | None = None
        f = None
        n = 0
        try:
            for ids in self._encode_runs(watched()):
                n += ids.size
                if f is None:
                    buf += ids.tobytes()
                    if len(buf) > INLINE_BYTES:
                        # named for its writer: swept once that process is gone
                        part = self.items_dir / f"{os.getpid()}.{uuid.uuid4().hex}.part"
                        f = open(part, "wb")
                        f.write(buf)
                        buf = bytearray()
                        if tick is not None:
                            tick(n)
                else:
                    f.write(ids.tobytes())
                    if tick is not None:
                        tick(int(ids.size))
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
                f.close()
                f = None
        except BaseException:
            if f is not None:
                f.close()
            if part is not None:
                part.unlink(missing_ok=True)
            raise
        return sha.hexdigest(), blank, n, (None if part else bytes(buf)), part

    def _batch_call(self):
        """The tokenizer engine's batch call (``tokenizers``: parallel over its threads)."""
        hf = getattr(self.tokenizer, "hf", None)
        return getattr(hf, "encode_batch_fast", None) or getattr(hf, "encode_batch", None)

    def _deferred(
        self, pieces: Iterable, source: str, priority: int, kind: str, encoding: str
    ) -> tuple[_Pending | str | None, Iterable]:
        """A short one-piece text left for its batch's single tokenizer call, or (None, the
        pieces to stream) when the document is longer than that."""
        if self._batch_call() is None:
            return None, pieces
        it = iter(pieces)
        head: list = []
        for piece in it:
            head.append(piece)
            if len(head) > 1 or piece is END_OF_TEXT or len(piece) > DEFER_CHARS:
                return None, itertools.chain(head, it)
        if not head:
            return None, head
        text = head[0]
        try:
            sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        except UnicodeEncodeError:
            return "undecodable (a lone surrogate has no UTF-8 form)", ()
        if not text.strip():
            return "empty", ()
        return _Pending(source, priority, kind, encoding, sha, -1, None, None, text), ()

    def _encode_deferred(self, pending: list[_Pending]) -> None:
        """Tokenize the batch's short texts in one call."""
        waiting = [p for p in pending if p.text is not None]
        if not waiting:
            return
        batch = self._batch_call()
        encs = batch([p.text for p in waiting], add_special_tokens=False)
        for p, e in zip(waiting, encs, strict=True):
            ids = np.asarray(e.ids, dtype="<i4")
            p.blob, p.n, p.text = ids.tobytes(), int(ids.size), None

    def _prepare(
        self,
        pieces: Iterable,
        source: str,
        priority: int,
        kind: str,
        encoding: str = "",
        tick: Callable[[int], None] | None = None,
    ) -> _Pending | str:
        """An item ready to commit, or the reason it is skipped."""
        try:
            early, pieces = self._deferred(pieces, source, priority, kind, encoding)
            if early is not None:
                return early
            sha, blank, n, blob, part = self._encode(pieces, tick)
        except ArchiveRefused:
            raise  # the whole archive goes, not this member alone
        except Skipped as err:
            return err.reason
        except UnicodeEncodeError:
            return "undecodable (a lone surrogate has no UTF-8 form)"
        except ValidationError as err:  # the tokenizer refused the text
            return f"undecodable ({err})"
        if blank:
            if part is not None:
                part.unlink(missing_ok=True)
            return "empty"
        return _Pending(source, priority, kind, encoding, sha, n, blob, part)

    def _commit_many(self, pending: list[_Pending]) -> list[QueueItem | None]:
        """Insert items in one transaction (all or none); None for each duplicate."""
        out: list[QueueItem | None] = []
        if not pending:
            return out
        try:
            with self._write() as db:
                (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM items").fetchone()
                shas = [p.sha for p in pending]
                seen: set[str] = set()
                for i in range(0, len(shas), 500):  # the duplicates, in a few queries
                    part = shas[i : i + 500]
                    marks = ",".join("?" * len(part))
                    seen.update(
                        r[0]
                        for r in db.execute(
                            f"SELECT sha256 FROM items WHERE sha256 IN ({marks})", part
                        )
                    )
                moved = False
                now = _now()
                for p in pending:
                    if p.sha in seen:
                        out.append(None)
                        continue
                    seen.add(p.sha)
                    if p.part is None:
                        name = INLINE + p.sha
                    else:
                        name = f"{p.sha[:16]}.tok"
                        if db.execute("SELECT 1 FROM items WHERE file = ?", (name,)).fetchone():
                            name = f"{p.sha}.tok"  # a 64-bit prefix collision: the whole hash
                        os.replace(p.part, self.items_dir / name)
                        moved = True
                    seq += 1
                    cur = db.execute(
                        "INSERT INTO items (seq, priority, source, sha256, n_tokens, added, file,"
                        " kind, validation, encoding, data)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            seq,
                            p.priority,
                            p.source,
                            p.sha,
                            p.n,
                            now,
                            name,
                            p.kind,
                            int(p.validation),
                            p.encoding,
                            p.blob,
                        ),
                    )
                    out.append(
                        QueueItem(
                            cur.lastrowid,
                            seq,
                            p.priority,
                            p.source,
                            p.sha,
                            p.n,
                            now,
                            p.kind,
                            validation=p.validation,
                            encoding=p.encoding,
                        )
                    )
                if moved:
                    fsync_dir(self.items_dir)
        finally:
            for p in pending:
                if p.part is not None:
                    p.part.unlink(missing_ok=True)  # moved ones are gone; the rest are orphans
        return out

    def add_text(
        self,
        text: str,
        source: str,
        priority: int = 0,
        kind: str = "text",
        *,
        validation: bool = False,
    ) -> AddResult:
        """Add a text (a crawled page, a pasted document); ``source`` is its path or URL.
        ``validation=True`` (every add takes it) holds the new items out for validation from the
        transaction that adds them."""
        batch = _Batch(self, validation=validation)
        source = str(source)
        batch.add_group([(source, self._prepare(iter([text]), source, int(priority), kind))])
        return batch.finish()

    def add_file(
        self,
        path: str | Path,
        priority: int = 0,
        *,
        field: str | None = None,
        validation: bool = False,
    ) -> AddResult:
        """Add one file's text, streamed; skipped files come back with their reason."""
        batch = _Batch(self, validation=validation)
        self._file_into(batch, path, int(priority), field)
        return batch.finish()

    def _file_into(self, batch: _Batch, path: str | Path, priority: int, field: str | None) -> None:
        path = os.fspath(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                batch.skip(str(path), "dangling symbolic link")
                return
            raise NotFoundError(f"no such file: {path}") from None
        except OSError as err:
            batch.skip(str(path), f"unreadable ({err.strerror or err})")
            return
        if stat.S_ISDIR(st.st_mode):
            batch.result.extend(
                self.add_folder(path, priority=priority, field=field, validation=batch.validation)
            )
            return
        source = os.path.abspath(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
            batch.skip(source, "not a regular file")
            return
        self._docs_into(
            batch,
            iter_documents(path, source=source, field=field, limits=self.limits),
            source,
            priority,
        )

    def _docs_into(self, batch: _Batch, docs: Iterator, source: str, priority: int) -> None:
        """Prepare a file's documents as one group: all of them go in one transaction."""
        group: list[tuple[str, _Pending | str]] = []
        notes: list[tuple[str, str]] = []
        try:
            for doc in docs:
                if doc.skipped:
                    group.append((doc.source, doc.skipped))
                    continue
                tick = batch.tick if batch.on_tokens is not None else None
                p = self._prepare(doc.pieces, doc.source, priority, doc.kind, doc.encoding, tick)
                batch.prepared()
                group.append((doc.source, p))
                notes += [(doc.source, note) for note in doc.notes]
        except Skipped as err:  # the whole file (an archive: all its members) is refused
            for _, p in group:
                if isinstance(p, _Pending) and p.part is not None:
                    p.part.unlink(missing_ok=True)
            batch.skip(source, err.reason)
            return
        batch.result.notes += notes
        batch.add_group(group)

    def add_stream(
        self,
        f,
        name: str = "stdin",
        source: str = "<stdin>",
        priority: int = 0,
        *,
        field: str | None = None,
        validation: bool = False,
    ) -> AddResult:
        """Add what a binary stream holds (standard input): text in any encoding, or any kind
        of file ``iter_documents`` reads, by its first bytes."""
        batch = _Batch(self, validation=validation)
        docs = stream_documents(f, name, source, field=field, limits=self.limits)
        self._docs_into(batch, docs, source, int(priority))
        return batch.finish()

    def add_folder(
        self,
        path: str | Path,
        patterns: Iterable[str] = ("*",),
        recursive: bool = True,
        priority: int = 0,
        progress: Progress | None = None,
        exclude: Iterable[str] = (),
        field: str | None = None,
        *,
        validation: bool = False,
    ) -> AddResult:
        """Add every matching file under a folder, in sorted order; each entry that cannot be
        read is skipped with its reason and the rest still go in."""
        path = Path(path)
        if not path.is_dir():
            raise NotFoundError(f"no such folder: {path}")
        skipped: list[tuple[str, str]] = []
        files = walk_files(path, patterns, recursive, exclude=exclude, skipped=skipped)
        result = self.add_files(
            files, priority=priority, progress=progress, field=field, validation=validation
        )
        result.skipped[:0] = skipped
        return result

    def add_files(
        self,
        files: Iterable[str | Path],
        priority: int = 0,
        progress: Progress | None = None,
        *,
        field: str | None = None,
        cancel: Callable[[], bool] | None = None,
        tokens: Callable[[int], None] | None = None,
        validation: bool = False,
    ) -> AddResult:
        """Add files in order, committed in batches; ``cancel()`` returning True stops after the
        file in hand (what was added stays). ``tokens(n)`` hears the add's running token count as
        the files are tokenized: the new items' tokens so far, a big file's counted while it is
        read (a duplicate is not counted: a big one leaves the count when its end shows it is
        one; a short text counts when its batch is tokenized, at most ``BATCH_SECONDS`` later).
        It ends at the result's ``tokens``."""
        files = list(files)
        batch = _Batch(self, tokens, validation)
        for i, f in enumerate(files):
            if cancel is not None and cancel():
                break
            if progress:
                progress(i, len(files), str(f))
            try:
                self._file_into(batch, f, int(priority), field)
            except NotFoundError:  # listed by a walk, deleted before its turn came
                batch.skip(str(f), "disappeared before it was read")
            except OSError as err:
                batch.skip(str(f), f"unreadable ({err.strerror or err})")
        result = batch.finish()
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
            if same:
                pend = self._copy_pending(other, it)
            else:
                fname, n = other._file_of(it.id)
                pend = self._prepare(
                    other._pieces_of(other.tokenizer, it.id, fname, n),
                    it.source,
                    it.priority,
                    it.kind,
                    it.encoding,
                )
                if isinstance(pend, str):
                    result.skipped.append((it.source, pend))
                    continue
            pend.sha = it.sha256  # the identity of the text, whatever its tokens
            pend.validation = it.validation  # held out there, held out here
            (item,) = self._commit_many([pend])
            if item is None:
                result.skipped.append((it.source, "duplicate"))
            else:
                result.added.append(item)
        if progress and items:
            progress(len(items), len(items), "")
        return result

    def _copy_pending(self, other: DataQueue, it: QueueItem) -> _Pending:
        """The same tokens, copied window by window."""
        if 4 * it.n_tokens <= INLINE_BYTES:
            blob = other.read(it.id).astype("<i4").tobytes()
            return _Pending(
                it.source, it.priority, it.kind, it.encoding, it.sha256, it.n_tokens, blob, None
            )
        part = self.items_dir / f"{os.getpid()}.{uuid.uuid4().hex}.part"  # swept once its PID dies
        try:
            with open(part, "wb") as f:
                for ids in other.iter_tokens(it.id):
                    f.write(np.asarray(ids, dtype="<i4").tobytes())
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return _Pending(
            it.source, it.priority, it.kind, it.encoding, it.sha256, it.n_tokens, None, part
        )

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

    def _file_of(self, item_id: int) -> tuple[str, int]:
        with self._lock:
            row = self._db.execute(
                "SELECT file, n_tokens FROM items WHERE id = ?", (int(item_id),)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"queue {self.dir.name} has no item {item_id}")
        return row[0], int(row[1])

    def tokens(self, item_id: int) -> np.ndarray:
        """The whole item's tokens, int32, checked against its row and the vocabulary. Items
        above ``WHOLE_BYTES`` are refused: read those in windows with ``read``."""
        fname, n = self._file_of(item_id)
        if 4 * n > WHOLE_BYTES:
            raise ValidationError(
                f"queue item {item_id} holds {n:,} tokens, too many to load whole; "
                "read it in windows"
            )
        return self._load(fname, n, self.tokenizer.vocab_size, item_id)

    def read(self, item_id: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tokens ``[start:stop]`` of an item, read from disk into a new int32 array (never a
        mapping of the whole file), checked against the vocabulary."""
        fname, n = self._file_of(item_id)
        return self._read(fname, n, self.tokenizer.vocab_size, item_id, start, stop)

    def iter_tokens(
        self, item_id: int, start: int = 0, stop: int | None = None, window: int = 1 << 20
    ) -> Iterator[np.ndarray]:
        """An item's tokens in windows of at most ``window`` tokens."""
        fname, n = self._file_of(item_id)
        stop = n if stop is None else min(int(stop), n)
        for a in range(int(start), stop, window):
            yield self._read(fname, n, self.tokenizer.vocab_size, item_id, a, min(a + window, stop))

    def _read(
        self, fname: str, n: int, vocab_size: int, item_id: int, start: int, stop: int | None
    ) -> np.ndarray:
        stop = n if stop is None else int(stop)
        start = int(start)
        if not 0 <= start <= stop <= n:
            raise ValidationError(
                f"queue item {item_id} has {n} tokens; cannot read [{start}:{stop}]"
            )
        if fname.startswith(INLINE):
            with self._lock:
                (blob,) = self._db.execute(
                    "SELECT data FROM items WHERE id = ?", (int(item_id),)
                ).fetchone() or (None,)
            if blob is None or len(blob) != 4 * n:
                raise CLLMError(f"queue item {item_id} is damaged: its inline tokens are missing")
            ids = np.frombuffer(blob, dtype="<i4", count=stop - start, offset=4 * start)
            ids = ids.astype(np.int32)
        else:
            path = self.items_dir / fname
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size != 4 * n:
                        raise CLLMError(
                            f"queue item {item_id} ({path}) is damaged: {size} bytes, "
                            f"expected {4 * n}"
                        )
                    raw = np.empty(stop - start, "<i4")
                    f.seek(4 * start)
                    if f.readinto(memoryview(raw).cast("B")) != 4 * (stop - start):
                        raise CLLMError(f"queue item {item_id} ({path}) is damaged: short read")
                    ids = raw.astype(np.int32, copy=False)
            except OSError as err:
                raise CLLMError(
                    f"queue item {item_id} ({path}) is unreadable: {err.strerror}"
                ) from None
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise CLLMError(f"queue item {item_id} holds token ids outside the vocabulary")
        return ids

    def _load(self, fname: str, n: int, vocab_size: int, item_id: int) -> np.ndarray:
        if fname.startswith(INLINE) or 4 * n <= MEMMAP_BYTES:
            return self._read(fname, n, vocab_size, item_id, 0, n)
        path = self.items_dir / fname
        try:
            size = path.stat().st_size
            if size != 4 * n:
                raise CLLMError(
                    f"queue item {item_id} ({path}) is damaged: {size} bytes, expected {4 * n}"
                )
            ids = np.memmap(path, dtype="<i4", mode="r")  # paged in as it is read
        except OSError as err:
            raise CLLMError(
                f"queue item {item_id} ({path}) is unreadable: {err.strerror}"
            ) from None
        for a in range(0, n, 1 << 22):  # checked window by window: nothing copied whole
            w = ids[a : a + (1 << 22)]
            if w.min() < 0 or w.max() >= vocab_size:
                raise CLLMError(
                    f"queue item {item_id} ({path}) holds token ids outside the vocabulary"
                )
        return ids

    def token_file(self, item_id: int) -> tuple[Path | None, int]:
        """The item's token file and its token count, for reading it piece by piece (raw
        little-endian int32; the file's size is checked against its row); ``None`` for an item
        small enough to live in the index, which ``read`` reads."""
        fname, n = self._file_of(item_id)
        if fname.startswith(INLINE):
            return None, n
        path = self.items_dir / fname
        try:
            size = path.stat().st_size
        except OSError as err:
            raise CLLMError(
                f"queue item {item_id} ({path}) is unreadable: {err.strerror}"
            ) from None
        if size != 4 * n:
            raise CLLMError(
                f"queue item {item_id} ({path}) is damaged: {size} bytes, expected {4 * n}"
            )
        return path, n

    def set_validation(self, item_ids: Iterable[int], validation: bool = True) -> int:
        """Hold items out for validation (measured whole, never trained on) or give them back to
        training; returns how many. One transaction: an unknown id refuses them all. Moves the
        queue's ``stamp``, which a running trainer watches."""
        ids = sorted({int(i) for i in item_ids})
        with self._write() as db:
            known: set[int] = set()
            for a in range(0, len(ids), 500):
                part = ids[a : a + 500]
                marks = ",".join("?" * len(part))
                known.update(
                    r[0] for r in db.execute(f"SELECT id FROM items WHERE id IN ({marks})", part)
                )
            missing = [i for i in ids if i not in known]
            if missing:
                raise NotFoundError(f"queue {self.dir.name} has no item {missing[0]}")
            db.executemany(
                "UPDATE items SET validation = ? WHERE id = ?",
                [(int(bool(validation)), i) for i in ids],
            )
            self._bump_stamp()
        return len(ids)

    def set_item_validation(self, item_id: int, validation: bool) -> QueueItem:
        """``set_validation`` for one item; returns it as it is now."""
        self.set_validation([item_id], validation)
        return self.item(item_id)

    def _bump_stamp(self) -> None:
        """Move the stamp; call inside a write transaction (it commits with the change)."""
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('stamp', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def stamp(self) -> int:
        """A counter moved by every change that takes items out of training or changes what is
        held out: validation flags, removals, clearing (adds do not move it: new items join a
        trainer's next epoch). One indexed read, cheap enough to ask before every step."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'stamp'").fetchone()
        return int(row[0]) if row else 0

    def _pieces_of(self, tok, item_id: int, fname: str, n: int) -> Iterator:
        """An item's text as pieces (``END_OF_TEXT`` where its records are separated), decoded
        with ``tok`` window by window."""
        eot = getattr(tok, "eot_id", None)
        table = getattr(tok, "token_bytes", None)
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if table is None:  # a tokenizer with only decode(): one piece
            yield tok.decode(self._read(fname, n, tok.vocab_size, item_id, 0, n))
            return
        for a in range(0, n, 1 << 20):
            ids = self._read(fname, n, tok.vocab_size, item_id, a, min(a + (1 << 20), n))
            cuts = np.flatnonzero(ids == eot) if eot is not None else np.empty(0, np.int64)
            lo = 0
            for c in [*cuts.tolist(), ids.size]:
                text = dec.decode(b"".join([table[i] for i in ids[lo:c].tolist()]))
                if c < ids.size:
                    text += dec.decode(b"", final=True)
                if text:
                    yield text
                if c < ids.size:
                    yield END_OF_TEXT
                lo = c + 1
        tail = dec.decode(b"", final=True)
        if tail:
            yield tail

    def iter_text(self, item_id: int) -> Iterator[str]:
        """An item's decoded text in pieces; records are separated by a blank line."""
        fname, n = self._file_of(item_id)
        for p in self._pieces_of(self.tokenizer, item_id, fname, n):
            yield "\n\n" if p is END_OF_TEXT else p

    def text(self, item_id: int) -> str:
        return "".join(self.iter_text(item_id))

    # ------------------------------------------------------------------------------ removing

    def remove(self, item_id: int) -> QueueItem:
        with self._write() as db:
            row = db.execute(
                f"SELECT {_COLUMNS}, file FROM items WHERE id = ?", (int(item_id),)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"queue {self.dir.name} has no item {item_id}")
            db.execute("DELETE FROM items WHERE id = ?", (int(item_id),))
            self._bump_stamp()
        if not row[-1].startswith(INLINE):  # after the commit: an orphan at worst
            (self.items_dir / row[-1]).unlink(missing_ok=True)
        return QueueItem(*row[:-1])

    def set_priority(self, item_id: int, priority: int) -> QueueItem:
        """Change an item's priority (higher trains first)."""
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError(f"priority must be an integer, got {priority!r}")
        with self._write() as db:
            cur = db.execute(
                "UPDATE items SET priority = ? WHERE id = ?", (int(priority), int(item_id))
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"queue {self.dir.name} has no item {item_id}")
        return self.item(item_id)

    def clear(self) -> int:
        """Remove every item; returns how many there were."""
        with self._write() as db:
            files = [f for (f,) in db.execute("SELECT file FROM items")]
            db.execute("DELETE FROM items")
            self._bump_stamp()
        for f in files:
            if not f.startswith(INLINE):
                (self.items_dir / f).unlink(missing_ok=True)
        return len(files)
