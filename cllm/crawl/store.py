"""The crawler's URL store: one SQLite file per model, `models/<name>.crawl.sqlite`.

Every URL the crawl has seen is one row with its state (pending, crawling, crawled, failed,
blocked) and the reason; the URL is the primary key, so a URL is fetched at most once until the
user resets it. A crawl killed mid-request leaves a 'crawling' row, put back to pending when the
next crawl takes the store's lock, so a restart resumes where the crawl was. The store also keeps
the downloaded pages (for the Downloaded view), the block patterns and a log of events.

One connection, guarded by a lock, serves every thread of a process (the crawler thread writes,
the UI reads); WAL lets another process read while this one writes. One crawl at a time: the
crawler holds an flock on `<store>-lock` (the kernel drops it when the process dies, however it
dies), so a second crawler of the same model, in this process or another, is refused.
"""

from __future__ import annotations

import fnmatch
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cllm.errors import BusyError, ValidationError
from cllm.models import locks

STATES = ("pending", "crawling", "crawled", "failed", "blocked")
# URLs a reset may free: all but those a block pattern holds (unblock frees those)
_FREE = "NOT (state='blocked' AND reason LIKE 'blocked by pattern%')"
MAX_EVENTS = 2000  # the event log is trimmed to about this many rows

SCHEMA = """
CREATE TABLE IF NOT EXISTS urls (
    url TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    depth INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    added REAL NOT NULL,
    fetched_at REAL,
    status INTEGER,
    content_type TEXT,
    size INTEGER,
    sha256 TEXT,
    parent TEXT
);
CREATE INDEX IF NOT EXISTS urls_by_state ON urls (state, depth);
CREATE INDEX IF NOT EXISTS urls_by_depth ON urls (depth, host);
CREATE TABLE IF NOT EXISTS pages (
    url TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    preview TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    content_type TEXT NOT NULL DEFAULT '',
    fetched_at REAL NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS blocks (pattern TEXT PRIMARY KEY, added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    url TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
"""


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A URL pattern as a predicate.

    ``re:<regex>`` is a regular expression searched in the URL; anything else is a glob matched
    against the whole URL, and a glob without wildcards matches any URL that contains it.
    """
    if not pattern or not pattern.strip():
        raise ValidationError("a URL pattern cannot be empty")
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as err:
            raise ValidationError(f"bad regular expression {pattern[3:]!r}: {err}") from None
        return lambda url: rx.search(url) is not None
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    rx = re.compile(fnmatch.translate(glob))
    return lambda url: rx.match(url) is not None


def exact_pattern(url: str) -> str:
    """A block pattern that matches this one URL and nothing else."""
    return f"re:^{re.escape(url)}$"


@dataclass
class UrlRow:
    url: str
    host: str
    depth: int
    state: str
    reason: str
    attempts: int
    added: float
    fetched_at: float | None
    status: int | None
    content_type: str | None
    size: int | None
    sha256: str | None
    parent: str | None


@dataclass
class PageRow:
    url: str
    title: str
    preview: str  # the start of the extracted text
    path: str  # the stored copy under models/<name>_crawl/, '' once pruned or for binaries
    size: int
    content_type: str
    fetched_at: float
    truncated: bool
    tokens: int  # tokens added to the queue (0: duplicate, empty or not text)


@dataclass
class EventRow:
    time: float
    kind: str
    url: str
    detail: str


class CrawlDB:
    """The URL list, downloaded pages, block patterns and events of one model's crawl."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # autocommit: each statement is durable on its own, so a kill loses at most one
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._blocks = self._load_blocks()
        self.lock_path = self.path.with_name(self.path.name + "-lock")
        self._lock_fd: int | None = None

    def close(self) -> None:
        self.unlock()
        with self._lock:
            self._db.close()

    def try_lock(self) -> bool:
        """Become the one crawler of this store; False if another crawl holds it. URLs left
        'crawling' by a killed crawl go back to pending, since no one else is crawling now."""
        if self._lock_fd is not None:
            return True
        try:  # the models folder's one lock protocol (cllm.models.locks)
            self._lock_fd = locks.FileLock(self.lock_path, "crawl", "crawling").acquire()
        except BusyError:
            return False
        self.requeue_crawling()
        return True

    def lock_holder(self) -> str:
        """The pid of the crawler holding the lock ('' if unknown)."""
        info = locks.holder(self.lock_path)
        return str(info.get("pid", "")) if info else ""

    def unlock(self) -> None:
        if self._lock_fd is not None:
            self._lock_fd.release()  # unlinks, then closes
            self._lock_fd = None

    def __enter__(self) -> CrawlDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- URLs ---

    def add(self, url: str, depth: int, parent: str | None = None) -> str | None:
        """Record a new URL as pending (or blocked by a pattern); None if it is already known."""
        pattern = self.blocked_by(url)
        state, reason = ("blocked", f"blocked by pattern {pattern}") if pattern else ("pending", "")
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO urls (url, host, depth, state, reason, added, parent)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (url, _host(url), depth, state, reason, time.time(), parent),
            )
            return state if cur.rowcount else None

    def add_many(self, urls: list[str], depth: int, parent: str | None = None) -> int:
        """`add` for the links of one page, in one transaction; returns how many were new."""
        now = time.time()
        rows = []
        for url in urls:
            pattern = self.blocked_by(url)
            state, reason = (
                ("blocked", f"blocked by pattern {pattern}") if pattern else ("pending", "")
            )
            rows.append((url, _host(url), depth, state, reason, now, parent))
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO urls (url, host, depth, state, reason, added, parent)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def claim_next(self) -> UrlRow | None:
        """Take the next pending URL (shallowest first, then first in) and mark it crawling."""
        with self._lock:
            row = self._db.execute(
                "SELECT url FROM urls WHERE state='pending' ORDER BY depth, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE urls SET state='crawling' WHERE url=?", row)
            return self.get(row[0])

    def claim(self, url: str, depth: int, parent: str | None = None) -> bool:
        """Mark a URL crawling if it was never fetched (new or pending); False if already seen."""
        with self._lock:
            self.add(url, depth, parent)
            cur = self._db.execute(
                "UPDATE urls SET state='crawling' WHERE url=? AND state='pending'", (url,)
            )
            return cur.rowcount == 1

    def finish(self, url: str, state: str, reason: str = "", **fields) -> None:
        """Record the outcome of a URL: its state, why, and any of attempts, status,
        content_type, size, sha256."""
        assert state in STATES, state
        allowed = {"attempts", "status", "content_type", "size", "sha256"}
        assert set(fields) <= allowed, fields
        cols = ["state=?", "reason=?", "fetched_at=?"] + [f"{k}=?" for k in fields]
        args = (state, reason, time.time(), *fields.values(), url)
        self._exec(f"UPDATE urls SET {', '.join(cols)} WHERE url=?", args)

    def requeue_crawling(self) -> None:
        """Put URLs left 'crawling' (by a stop or a kill mid-request) back to pending."""
        self._exec("UPDATE urls SET state='pending' WHERE state='crawling'")

    def get(self, url: str) -> UrlRow | None:
        rows = self._all("SELECT * FROM urls WHERE url=?", (url,))
        return UrlRow(*rows[0]) if rows else None

    def urls(
        self, state: str | None = None, limit: int = 500, offset: int = 0, search: str = ""
    ) -> list[UrlRow]:
        """URLs in the order they were found, optionally of one state or containing `search`."""
        where, args = [], []
        if state:
            where.append("state=?")
            args.append(state)
        if search:
            where.append("instr(url, ?) > 0")
            args.append(search)
        sql = "SELECT * FROM urls" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._all(sql + " ORDER BY rowid LIMIT ? OFFSET ?", (*args, limit, offset))
        return [UrlRow(*r) for r in rows]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        counts.update(self._all("SELECT state, COUNT(*) FROM urls GROUP BY state"))
        return counts

    def start_hosts(self) -> set[str]:
        """Hosts of the start URLs (depth 0): the hosts a same-host crawl may visit."""
        return {r[0] for r in self._all("SELECT DISTINCT host FROM urls WHERE depth=0")}

    def remove(self, url: str) -> None:
        self._exec("DELETE FROM urls WHERE url=?", (url,))

    def reset(self, url: str) -> None:
        """Put one URL back to pending so it is fetched again (unless a pattern blocks it)."""
        self._exec(
            f"UPDATE urls SET state='pending', reason='', attempts=0 WHERE url=? AND {_FREE}",
            (url,),
        )

    def reset_all(self) -> None:
        """Start the crawl over: every URL not blocked by a pattern goes back to pending."""
        self._exec(f"UPDATE urls SET state='pending', reason='', attempts=0 WHERE {_FREE}")

    def clear(self) -> None:
        """Forget every URL (the downloaded pages and block patterns stay)."""
        self._exec("DELETE FROM urls")

    # --- block patterns ---

    def _load_blocks(self) -> dict[str, Callable[[str], bool]]:
        rows = self._all("SELECT pattern FROM blocks ORDER BY added")
        return {p: compile_pattern(p) for (p,) in rows}

    def block(self, pattern: str) -> int:
        """Block a URL pattern (see `compile_pattern`); pending URLs it matches become blocked.
        Returns how many were."""
        match = compile_pattern(pattern)
        with self._lock:
            self._exec("INSERT OR IGNORE INTO blocks VALUES (?, ?)", (pattern, time.time()))
            self._blocks[pattern] = match
            hits = [
                u for (u,) in self._all("SELECT url FROM urls WHERE state='pending'") if match(u)
            ]
            for url in hits:
                self.finish(url, "blocked", f"blocked by pattern {pattern}")
            return len(hits)

    def unblock(self, pattern: str) -> int:
        """Remove a block pattern; URLs it blocked go back to pending (unless another pattern
        still blocks them). Returns how many did."""
        with self._lock:
            self._exec("DELETE FROM blocks WHERE pattern=?", (pattern,))
            self._blocks.pop(pattern, None)
            rows = self._all(
                "SELECT url FROM urls WHERE state='blocked' AND reason=?",
                (f"blocked by pattern {pattern}",),
            )
            freed = 0
            for (url,) in rows:
                other = self.blocked_by(url)
                if other:
                    self.finish(url, "blocked", f"blocked by pattern {other}")
                else:
                    self._exec(
                        "UPDATE urls SET state='pending', reason='', attempts=0 WHERE url=?", (url,)
                    )
                    freed += 1
            return freed

    def blocks(self) -> list[str]:
        with self._lock:
            return list(self._blocks)

    def blocked_by(self, url: str) -> str | None:
        """The first block pattern that matches the URL, or None."""
        with self._lock:
            return next((p for p, match in self._blocks.items() if match(url)), None)

    # --- downloaded pages ---

    def add_page(self, page: PageRow) -> None:
        self._exec(
            "INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                page.url,
                page.title,
                page.preview,
                page.path,
                page.size,
                page.content_type,
                page.fetched_at,
                int(page.truncated),
                page.tokens,
            ),
        )

    def pages(self, limit: int = 500, offset: int = 0) -> list[PageRow]:
        """Downloaded pages, newest first."""
        rows = self._all(
            "SELECT * FROM pages ORDER BY fetched_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [PageRow(*r[:7], bool(r[7]), r[8]) for r in rows]

    def page_count(self) -> int:
        return self._all("SELECT COUNT(*) FROM pages")[0][0]

    def prune_pages(self, keep: int) -> list[str]:
        """Forget the stored copies of all but the newest `keep` pages; returns their paths for
        the caller to delete (the rows stay, so the Downloaded view still lists them)."""
        with self._lock:
            rows = self._all(
                "SELECT url, path FROM pages WHERE path != ''"
                " ORDER BY fetched_at DESC, rowid DESC LIMIT -1 OFFSET ?",
                (keep,),
            )
            for url, _ in rows:
                self._exec("UPDATE pages SET path='' WHERE url=?", (url,))
            return [p for _, p in rows]

    # --- events ---

    def log(self, kind: str, url: str = "", detail: str = "") -> None:
        with self._lock:
            cur = self._exec(
                "INSERT INTO events (time, kind, url, detail) VALUES (?, ?, ?, ?)",
                (time.time(), kind, url, detail),
            )
            if cur.lastrowid and cur.lastrowid % 500 == 0:  # trim now and then, not every time
                self._exec("DELETE FROM events WHERE id <= ?", (cur.lastrowid - MAX_EVENTS,))

    def events(self, limit: int = 100) -> list[EventRow]:
        """The most recent events, oldest first."""
        rows = self._all(
            "SELECT time, kind, url, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [EventRow(*r) for r in reversed(rows)]


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()
