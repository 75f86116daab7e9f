"""The crawler: a polite, resumable web crawler that feeds a model's queue.

It fetches http and https pages one at a time in a background thread, obeys robots.txt, waits a
randomised delay between requests to the same host, follows redirects itself (so it can see
loops and never fetch a URL twice), caps the size and time of each response, retries transient
failures with backoff, and keeps its URL list in SQLite (`cllm.crawl.store`) so a stopped or killed
crawl resumes. Each page's text goes to the target model's queue with its URL as the source.

The parts: `cllm.crawl.urls` (spelling, start URLs, which addresses may be reached, robots.txt
delays), `cllm.crawl.http` (one bounded request), `cllm.crawl.pages` (a body to text and links),
`cllm.crawl.store` (the URL list) and this loop. Work that follows the pages as they arrive, such
as training the model on them (`cllm.train.continuous`), plugs in as a `Follower`.

Threading follows the trainer's discipline: the crawl thread owns the work, publishes a snapshot
under a lock, and reads its commands (stop, pause, resume) from a queue.
"""

from __future__ import annotations

import hashlib
import http.client
import queue
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from cllm.crawl.http import (
    REDIRECTS,
    TRANSIENT_ERRORS,
    TRANSIENT_STATUS,
    USER_AGENT,
    AddressRefused,
    Response,
    content_type,
    decode_content,
    describe,
    fetch,
    retry_after,
)
from cllm.crawl.pages import decode, read_page
from cllm.crawl.store import CrawlDB, PageRow, UrlRow, compile_pattern
from cllm.crawl.urls import MAX_CRAWL_DELAY, check_start_url, crawl_delay, host_of, normalize_url
from cllm.errors import BusyError, ValidationError
from cllm.models import paths

FILTERS = ("all", "text", "metadata", "mixed")
MAX_ROBOTS_BYTES = 500_000  # RFC 9309 asks crawlers to read at least 500 KiB
PREVIEW_CHARS = 500
EVENTS_KEPT = 200


@dataclass
class CrawlConfig:
    max_pages: int = 100  # pages downloaded per run (a resumed run may download as many again)
    max_depth: int = 3  # link hops from a start URL
    min_delay: float = 1.0  # seconds between requests to one host, drawn in [min, max]
    max_delay: float = 3.0
    max_bytes: int = 2_000_000  # a response is cut here and marked truncated
    timeout: float = 10.0  # seconds for a whole request
    retries: int = 2  # extra attempts after a transient failure
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_redirects: int = 5
    same_host: bool = True  # stay on the hosts of the start URLs
    include: tuple[str, ...] = ()  # a followed link must match one of these (when any)
    exclude: tuple[str, ...] = ()  # and none of these; see crawldb.compile_pattern
    filter: str = "text"  # "all" | "text" | "metadata" | "mixed", passed to extract_html
    user_agent: str = USER_AGENT
    ca_file: str = ""  # extra certificate authorities (PEM) to trust, e.g. an intranet's
    keep_pages: int = 500  # downloaded copies kept on disk for the Downloaded view

    def validate(self) -> None:
        """Raise ValidationError naming the first setting out of range."""
        ints = {
            "max_pages": (1, 10_000_000),
            "max_depth": (0, 1000),
            "max_bytes": (1, 1 << 30),
            "retries": (0, 10),
            "max_redirects": (0, 30),
            "keep_pages": (0, 10_000_000),
        }
        for name, (lo, hi) in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValidationError(f"{name} must be an integer from {lo} to {hi}, got {v!r}")
        for name in ("min_delay", "max_delay", "backoff"):
            v = getattr(self, name)
            if not 0 <= v <= 3600:
                raise ValidationError(f"{name} must be from 0 to 3600 seconds, got {v!r}")
        if self.max_delay < self.min_delay:
            raise ValidationError(
                f"the maximum delay {self.max_delay} s is below the minimum {self.min_delay} s"
            )
        if not 0 < self.timeout <= 600:
            raise ValidationError(
                f"timeout must be above 0 and at most 600 s, got {self.timeout!r}"
            )
        if self.filter not in FILTERS:
            raise ValidationError(
                f"filter must be one of {', '.join(FILTERS)}, got {self.filter!r}"
            )
        for pattern in (*self.include, *self.exclude):
            compile_pattern(pattern)
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ValidationError(f"certificate file {self.ca_file} does not exist")


@dataclass
class CrawlEvent:
    time: float  # time.time()
    kind: str  # downloaded, extracted, queued, skipped, trained (by a follower), error
    url: str
    detail: str = ""


@dataclass
class CrawlSnapshot:
    state: str = "idle"  # idle, running, paused, stopped, done, error
    message: str = ""
    pages: int = 0  # downloaded this run
    tokens: int = 0  # added to the queue this run
    bytes: int = 0  # received this run
    current_url: str = ""
    pending: int = 0  # the URL store's counts
    crawled: int = 0
    failed: int = 0
    blocked: int = 0
    errors: int = 0  # error events this run
    training: str = ""  # the follower's work (continuous training), in a line; '' when none
    elapsed: float = 0.0
    events: list[CrawlEvent] = field(default_factory=list)  # recent, oldest first


class FetchError(Exception):
    """A request that failed for good (after any retries); the message is the reason, `state`
    the URL's state: 'failed', or 'blocked' for an address the crawler may not reach."""

    def __init__(self, reason: str, state: str = "failed") -> None:
        super().__init__(reason)
        self.state = state


Report = Callable[[str, str], None]


class Follower(Protocol):
    """Work that follows a crawl in its thread as pages arrive; cllm.train.continuous trains the
    model on them. Each call gets `report(kind, text)`: kind 'trained' or 'error' logs an event,
    'status' sets the snapshot's `training` line and 'message' its message."""

    def queued(self, items: int) -> None:
        """A page added `items` items to the queue."""

    def poll(self, report: Report) -> None:
        """After each page: start or watch the work."""

    def finish(self, report: Report, wait: Callable[[float], None]) -> None:
        """The crawl has ended: catch up with the last pages. `wait(s)` sleeps while the crawl's
        commands are read; a stop command ends `finish` (and then `stop` is called)."""

    def stop(self, report: Report) -> None:
        """The crawl was stopped or failed: end the work now, keeping what it did."""


class _Stopped(Exception):
    pass


# --- the crawler ---


class Crawler:
    """Crawls into the queue of model `model_name` in `models_dir`, in a background thread.

    `queue_factory()` returns the DataQueue that receives the text (called in the crawl thread);
    by default the model's own queue from the registry. `follower` works as pages arrive (see
    Follower), in the crawl thread.
    """

    def __init__(
        self,
        models_dir: str | Path,
        model_name: str,
        config: CrawlConfig | None = None,
        queue_factory: Callable[[], object] | None = None,
        follower: Follower | None = None,
    ):
        self.config = config or CrawlConfig()
        self.config.validate()
        self.models_dir = Path(models_dir)
        self.name = model_name
        self.db = CrawlDB(paths.crawl_store(self.models_dir, model_name))
        self.pages_dir = paths.crawl_pages(self.models_dir, model_name)
        self._queue_factory = queue_factory or self._registry_queue
        self._owns_queue = queue_factory is None  # a queue passed in stays open for its owner
        self._queue = None
        self._include = [compile_pattern(p) for p in self.config.include]
        self._exclude = [compile_pattern(p) for p in self.config.exclude]
        self._cmds: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._snap = CrawlSnapshot()
        self._events: deque[CrawlEvent] = deque(maxlen=EVENTS_KEPT)
        self._thread: threading.Thread | None = None
        self._paused = False
        self._rng = random.Random()
        self._tls = ssl.create_default_context()
        if self.config.ca_file:
            self._tls.load_verify_locations(self.config.ca_file)
        self._robots: dict[str, RobotFileParser | str | None] = {}  # None: allow all
        self._crawl_delay: dict[str, float] = {}
        self._next_time: dict[str, float] = {}  # host -> monotonic time of its next request
        self._follower = follower
        self._refresh_counts()

    def _registry_queue(self):
        from cllm.models.registry import (
            Registry,  # the registry loads models; import only when needed
        )

        return Registry(self.models_dir).queue(self.name)

    # --- the API the UI and the command line use ---

    def add_urls(self, urls: Iterable[str]) -> list[str]:
        """Validate and add start URLs (depth 0); all are checked before any is added."""
        norm = [check_start_url(u) for u in urls]
        for url in norm:
            self.db.add(url, 0)
        self._refresh_counts()
        return norm

    def start(self, urls: Iterable[str] = ()) -> None:
        """Add `urls` (refusing bad ones here, in the caller's thread) and start crawling."""
        if self._thread is not None:
            raise ValidationError("this crawler has already been started")
        self.add_urls(urls)
        if not self.db.try_lock():
            holder = self.db.lock_holder()
            raise BusyError(
                f"model {self.name!r} is already being crawled"
                + (f" (by pid {holder})" if holder else "")
            )
        self._refresh_counts()
        self._set(state="running", message="starting")
        self._thread = threading.Thread(target=self._run, name=f"crawler-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._cmds.put("stop")

    def pause(self) -> None:
        self._cmds.put("pause")

    def resume(self) -> None:
        self._cmds.put("resume")

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the crawl thread; True once it has ended (or was never started)."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> CrawlSnapshot:
        with self._lock:
            return replace(self._snap, events=list(self._events))

    def close(self) -> None:
        """Stop the crawl, wait for it, and close the URL store."""
        if self.running:
            self.stop()
            self.join()
        self.db.close()

    # --- snapshot and commands ---

    def _set(self, **fields) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._snap, k, v)

    def _add(self, **deltas) -> None:
        with self._lock:
            for k, v in deltas.items():
                setattr(self._snap, k, getattr(self._snap, k) + v)

    def _event(self, kind: str, url: str, detail: str = "") -> None:
        with self._lock:
            self._events.append(CrawlEvent(time.time(), kind, url, detail))
            if kind == "error":
                self._snap.errors += 1
        self.db.log(kind, url, detail)

    def _refresh_counts(self) -> None:
        c = self.db.counts()
        self._set(
            pending=c["pending"] + c["crawling"],
            crawled=c["crawled"],
            failed=c["failed"],
            blocked=c["blocked"],
        )

    def _poll(self, timeout: float = 0.0) -> None:
        """Apply the commands that arrive within `timeout` s; wait while paused; raise on stop."""
        deadline = time.monotonic() + timeout
        while True:
            wait = None if self._paused else deadline - time.monotonic()
            try:
                cmd = (
                    self._cmds.get(timeout=wait)
                    if wait is None or wait > 0
                    else self._cmds.get_nowait()
                )
            except queue.Empty:
                return
            if cmd == "stop":
                raise _Stopped
            self._paused = cmd == "pause"
            self._set(state="paused" if self._paused else "running")

    def _sleep(self, seconds: float) -> None:
        self._poll(max(seconds, 0.0))

    # --- the crawl thread ---

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self._queue = self._queue_factory()
            self._set(state="running", message="crawling")
            while True:
                self._poll()
                self._set(elapsed=time.monotonic() - t0)
                if self.snapshot().pages >= self.config.max_pages:
                    message = f"page limit reached ({self.config.max_pages} pages)"
                    break
                row = self.db.claim_next()
                if row is None:
                    message = "finished: no pending URLs"
                    break
                try:
                    self._crawl(row)
                finally:
                    self._refresh_counts()
                if self._follower is not None:
                    self._follower.poll(self._report)
            if self._follower is not None:
                self._follower.finish(self._report, self._sleep)
            self._set(state="done", message=message)
        except _Stopped:
            self._stop_follower()
            self._set(state="stopped", message="stopped")
        except Exception as err:  # noqa: BLE001 - the thread reports every failure, never dies silently
            self._event("error", self.snapshot().current_url, describe(err))
            self._set(state="error", message=describe(err))
            self._stop_follower()
        finally:
            self.db.requeue_crawling()  # a URL interrupted by stop is fetched next time
            self.db.unlock()
            if self._owns_queue and self._queue is not None:
                self._queue.close()
            self._refresh_counts()
            self._set(current_url="", elapsed=time.monotonic() - t0)

    def _refusal(self, url: str, depth: int) -> tuple[str, str] | None:
        """(state, reason) when `url` must not be fetched, else None. Start URLs (depth 0)
        skip the host and link patterns: the user named them."""
        if depth > 0:
            if self.config.same_host and host_of(url) not in self.db.start_hosts():
                return "blocked", "other host"
            if self._include and not any(m(url) for m in self._include):
                return "blocked", "not matched by an include pattern"
            if any(m(url) for m in self._exclude):
                return "blocked", "matched by an exclude pattern"
        pattern = self.db.blocked_by(url)
        if pattern:
            return "blocked", f"blocked by pattern {pattern}"
        return self._robots_refusal(url)

    def _crawl(self, row: UrlRow) -> None:
        """Fetch one URL (following its redirects), store, extract and queue it, add its links."""
        self._set(current_url=row.url)
        refused = self._refusal(row.url, row.depth)
        if refused:
            self.db.finish(row.url, *refused)
            self._event("skipped", row.url, refused[1])
            return
        chain: list[tuple[str, int]] = []  # the redirects followed: (url, status)
        url = row.url
        try:
            while True:
                resp, attempts = self._fetch(url, self.config.max_bytes)
                location = resp.headers.get("location")
                if resp.status not in REDIRECTS or not location:
                    break
                chain.append((url, resp.status))
                target = normalize_url(location, url)
                if target is None:
                    raise FetchError(f"redirect to an unsupported URL {location!r}")
                if target in (u for u, _ in chain):
                    raise FetchError(
                        "redirect loop: " + " -> ".join([u for u, _ in chain] + [target])
                    )
                if len(chain) > self.config.max_redirects:
                    raise FetchError(f"more than {self.config.max_redirects} redirects")
                # a redirect from a start URL counts as a start URL (http -> https://www. ...)
                refused = self._refusal(target, row.depth)
                if refused:
                    why = f"redirect to {target}: {refused[1]}"
                    self._finish_chain(chain, refused[0], why)
                    self._event("skipped", row.url, why)
                    return
                if not self.db.claim(target, row.depth, url):  # fetched already
                    self._finish_chain(chain, "crawled", f"redirect to {target} (already seen)")
                    return
                url = target
        except FetchError as err:
            if not chain or chain[-1][0] != url:
                chain.append((url, 0))
            blocked_hop = err.state == "blocked" and url != row.url
            why = f"redirect to {url}: {err}" if blocked_hop else str(err)
            self._finish_chain(chain, err.state, why)
            self._event("error" if err.state == "failed" else "skipped", row.url, why)
            return
        if not 200 <= resp.status < 300:
            reason = f"HTTP {resp.status}"
            self._finish_chain([*chain, (url, resp.status)], "failed", reason)
            self._event("error", url, reason)
            return
        for i, (hop, status) in enumerate(chain):
            target = chain[i + 1][0] if i + 1 < len(chain) else url
            self.db.finish(hop, "crawled", f"redirect to {target}", status=status)
        self._store(url, row.depth, resp, attempts)

    def _finish_chain(self, chain: list[tuple[str, int]], state: str, reason: str) -> None:
        for url, status in chain:
            self.db.finish(url, state, reason, status=status or None)

    def _store(self, url: str, depth: int, resp: Response, attempts: int) -> None:
        """A 2xx response: keep a copy, extract its text into the queue, add its links."""
        cfg = self.config
        mime, charset = content_type(resp.headers)
        body = decode_content(resp.body, resp.headers, cfg.max_bytes)
        page = read_page(url, body, mime, charset, cfg.filter)
        kind, text, note = page.kind, page.text, page.note
        body = resp.body if body is None else body
        sha = hashlib.sha256(body).hexdigest()
        self._add(pages=1)
        detail = f"{len(resp.body):,} bytes" + (" (truncated)" if resp.truncated else "")
        self._event("downloaded", url, detail)
        path = self._keep_copy(url, body, kind)
        tokens = 0
        if text.strip():
            self._event("extracted", url, f"{len(text):,} characters")
            tokens, note = self._enqueue(text, url, kind)
        elif not note:
            note = "no text"
        if note:
            self._event("skipped", url, note)
        reason = f"truncated at {cfg.max_bytes:,} bytes" if resp.truncated else ""
        self.db.finish(
            url,
            "crawled",
            "; ".join(r for r in (reason, note) if r),
            attempts=attempts,
            status=resp.status,
            content_type=mime,
            size=len(resp.body),
            sha256=sha,
        )
        self.db.add_page(
            PageRow(
                url=url,
                title=page.title,
                preview=" ".join(text[: PREVIEW_CHARS * 2].split())[:PREVIEW_CHARS],
                path=str(path) if path else "",
                size=len(resp.body),
                content_type=mime,
                fetched_at=time.time(),
                truncated=resp.truncated,
                tokens=tokens,
            )
        )
        for old in self.db.prune_pages(cfg.keep_pages):
            Path(old).unlink(missing_ok=True)
        if depth < cfg.max_depth:
            hosts = self.db.start_hosts()
            follow = [link for link in page.links if self._follows(link, hosts)]
            self.db.add_many(follow, depth + 1, url)

    def _follows(self, link: str, hosts: set[str]) -> bool:
        """Whether a link goes on the list (robots.txt and blocks are checked at fetch time)."""
        if self.config.same_host and host_of(link) not in hosts:
            return False
        if self._include and not any(m(link) for m in self._include):
            return False
        return not any(m(link) for m in self._exclude)

    def _enqueue(self, text: str, url: str, kind: str) -> tuple[int, str]:
        """Add text to the model's queue: (tokens added, why nothing was added)."""
        result = self._queue.add_text(text, source=url, kind=kind)
        tokens = sum(item.n_tokens for item in result.added)
        if result.added:
            self._add(tokens=tokens)
            if self._follower is not None:
                self._follower.queued(len(result.added))
            self._event("queued", url, f"{tokens:,} tokens")
            return tokens, ""
        reason = result.skipped[0][1] if result.skipped else "not added"
        return 0, f"not queued: {reason}"

    def _keep_copy(self, url: str, body: bytes, kind: str) -> Path | None:
        """Save the page for the Downloaded view (`_store` then prunes to `keep_pages`)."""
        if kind == "binary" or self.config.keep_pages == 0:
            return None
        self.pages_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(url.encode()).hexdigest()[:24] + (
            ".html" if kind == "html" else ".txt"
        )
        path = self.pages_dir / name
        path.write_bytes(body)
        return path

    # --- requests: politeness, retries, robots.txt ---

    def _wait_turn(self, host: str) -> None:
        self._sleep(self._next_time.get(host, 0.0) - time.monotonic())

    def _fetch(self, url: str, max_bytes: int) -> tuple[Response, int]:
        """GET with the polite delay and bounded retries of transient failures:
        (response, attempts). Raises FetchError."""
        cfg, host = self.config, host_of(url)
        problem = ""
        for attempt in range(cfg.retries + 1):
            self._wait_turn(host)
            wait = 0.0
            try:
                resp = fetch(
                    url,
                    timeout=cfg.timeout,
                    max_bytes=max_bytes,
                    user_agent=cfg.user_agent,
                    context=self._tls,
                    # loopback only for a server the user named as a start URL
                    allow_loopback=host in self.db.start_hosts(),
                )
            except AddressRefused as err:  # refused before any connection
                raise FetchError(f"refused: {err}", "blocked") from None
            except TRANSIENT_ERRORS as err:
                problem = describe(err)
            except (OSError, http.client.HTTPException) as err:  # DNS, TLS, a broken reply
                raise FetchError(describe(err)) from None
            else:
                self._add(bytes=len(resp.body))
                if resp.status not in TRANSIENT_STATUS:
                    return resp, attempt + 1
                problem, wait = f"HTTP {resp.status}", retry_after(resp)
            finally:
                delay = self._rng.uniform(cfg.min_delay, cfg.max_delay)
                delay = max(delay, self._crawl_delay.get(host, 0.0))
                self._next_time[host] = time.monotonic() + delay
            if attempt < cfg.retries:
                self._event("error", url, f"{problem}; retry {attempt + 1} of {cfg.retries}")
                self._sleep(max(cfg.backoff * 2**attempt, wait))
        tries = cfg.retries + 1
        raise FetchError(f"{problem} ({tries} attempt{'s' if tries > 1 else ''})")

    def _robots_refusal(self, url: str) -> tuple[str, str] | None:
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}"
        if root not in self._robots:
            self._robots[root] = self._load_robots(root)
        rules = self._robots[root]
        if rules is None:
            return None
        if isinstance(rules, str):
            return "blocked", rules
        return None if rules.can_fetch(self.config.user_agent, url) else ("blocked", "robots.txt")

    def _load_robots(self, root: str) -> RobotFileParser | str | None:
        """A host's robots.txt rules; None allows all, a string is why all is disallowed.

        RFC 9309: a 4xx means no rules (allow all); a 5xx or an unreachable host means
        disallow all. Redirects are followed up to five hops.
        """
        url = root + "/robots.txt"
        try:
            for _ in range(6):
                resp, _ = self._fetch(url, MAX_ROBOTS_BYTES)
                location = resp.headers.get("location")
                if resp.status not in REDIRECTS or not location:
                    break
                url = normalize_url(location, url) or ""
                if not url:
                    return "robots.txt redirects to an unsupported URL"
            else:
                return "robots.txt redirects too often"
        except FetchError as err:
            return str(err) if err.state == "blocked" else f"robots.txt unreachable: {err}"
        if 400 <= resp.status < 500:
            return None
        if not 200 <= resp.status < 300:
            return f"robots.txt unavailable (HTTP {resp.status})"
        rules = RobotFileParser(url)
        body = decode_content(resp.body, resp.headers, MAX_ROBOTS_BYTES) or b""
        lines = decode(body, content_type(resp.headers)[1], html=False).splitlines()
        rules.parse(lines)
        delay = crawl_delay(lines, self.config.user_agent)
        if delay:
            self._crawl_delay[host_of(root)] = min(delay, MAX_CRAWL_DELAY)
        return rules

    # --- the follower ---

    def _report(self, kind: str, text: str) -> None:
        if kind in ("trained", "error"):
            self._event(kind, "", text)
        elif kind == "status":
            self._set(training=text)
        elif kind == "message":
            self._set(message=text)

    def _stop_follower(self) -> None:
        if self._follower is not None:
            self._follower.stop(self._report)
