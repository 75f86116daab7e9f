"""Crawler tab: crawl web pages into the target model's queue.

Three equal columns in the main area: configuration (delays, content filter, URL patterns,
limits), links (counts, Add URL validated as you type, the URL list with per-row reset, block and
remove, recent activity) and status (live pages, tokens, bytes, current URL, errors, START / STOP).
The right panel holds the target model selector and the switch to the Downloaded view (pages with
URL, size, type, date, and the extracted text of the selected one).

The crawler runs in its own thread (cllm.crawl.crawler), started, stopped and watched by AppState
like the trainer (st.start_crawl, st.stop_crawl, st.crawler); its snapshot is copied once per
frame. The URL store is read in the worker a few times a second, through the running crawler's own
store when it crawls the target (so its in-memory block list sees our edits) and otherwise through
a store opened for the read and closed after, so a model renamed or deleted meanwhile leaves
nothing behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygame

from cllm.cli.common import duration
from cllm.crawl.pages import preview_text
from cllm.crawl.store import CrawlDB, PageRow, UrlRow, compile_pattern, exact_pattern
from cllm.crawl.urls import check_start_url
from cllm.errors import ValidationError
from cllm.models import paths

from .. import dialogs
from .. import theme as th
from ..filebrowser import human_size
from ..selector import panel_selector
from ..state import AppState, CrawlSettings
from ..ui import UI, plural

ROW_H = 24
POLL_S = 0.3  # the URL store is read this often while a crawl runs
IDLE_POLL_S = 1.0  # and this often when none does (another process might start one)
WINDOW = 120  # URL rows fetched around the visible ones
PREVIEW_CHARS = 20_000  # extracted text shown of one page
FILTERS = {
    "all": "Extract all",
    "text": "Human text only",
    "metadata": "Metadata only",
    "mixed": "Mixed",
}
SHORT_FILTERS = {"all": "All", "text": "Human text", "metadata": "Metadata", "mixed": "Mixed"}
STATES = ("all", "pending", "crawled", "failed", "blocked")
STATE_COLOR = {
    "pending": th.TEXT,
    "crawling": th.WARNING,
    "crawled": th.SUCCESS,
    "failed": th.ERROR,
    "blocked": th.DIM,
}
EVENT_COLOR = {"error": th.ERROR, "skipped": th.HINT, "queued": th.SUCCESS, "trained": th.SELECTED}
RUN_COLOR = {
    "running": th.WARNING,
    "paused": th.WARNING,
    "stopped": th.TEXT,
    "done": th.SUCCESS,
    "error": th.ERROR,
}
PATTERN_HINT = "glob (*.pdf), plain text (blog), or re:REGEX; separate several with spaces"
SHORT_PATTERN_HINT = "glob, text or re:REGEX; spaces separate"


Settings = CrawlSettings  # what the configuration column edits


@dataclass
class Listing:
    """One read of a model's URL store (made in the worker)."""

    name: str
    shows: str = "all"  # the state filter this read was made for
    counts: dict[str, int] = field(default_factory=dict)
    first: int = 0  # index of urls[0] in the filtered list
    urls: list[UrlRow] = field(default_factory=list)
    events: list = field(default_factory=list)  # EventRow, oldest first
    page_first: int = 0
    pages: list[PageRow] = field(default_factory=list)
    page_total: int = 0

    def total(self, shows: str) -> int:
        c = self.counts
        return sum(c.values()) if shows == "all" else c.get(shows, 0)


# ---------------------------------------------------------------------------- worker side
@contextmanager
def open_store(st: AppState, name: str, create: bool) -> Iterator[CrawlDB | None]:
    """The URL store of model `name`: the running crawler's when it crawls that model, else one
    opened for this job (None when the model has none and `create` is False)."""
    c = st.crawler
    if c is not None and c.name == name:
        yield c.db
        return
    path = paths.crawl_store(st.models_dir, name)
    if not create and not path.exists():
        yield None
        return
    db = CrawlDB(path)
    try:
        yield db
    finally:
        db.close()


def read_listing(
    st: AppState, name: str, shows: str, first: int, page_first: int, pages: bool
) -> Listing:
    with open_store(st, name, create=False) as db:
        out = Listing(name, shows)
        if db is None:
            return out
        out.counts = db.counts()
        out.first = first
        out.urls = db.urls(None if shows == "all" else shows, limit=WINDOW, offset=first)
        out.events = db.events(60)
        out.page_total = db.page_count()
        if pages:
            out.page_first = page_first
            out.pages = db.pages(WINDOW, page_first)
        return out


def load_preview(page: PageRow, filter: str) -> str:
    """The extracted text of a downloaded page, from its stored copy (re-extracted with the
    current filter); the stored preview when the copy was pruned."""
    path = Path(page.path) if page.path else None
    if path is None or not path.is_file():
        if not page.preview:
            return f"(no text was extracted from this page: {page.content_type or 'unknown type'})"
        note = "(the stored copy is gone; the start of the text as extracted at crawl time)\n\n"
        return note + page.preview
    text = preview_text(path.read_bytes(), path.suffix == ".html", filter)
    text = text.strip() or "(no text with this filter)"
    if len(text) > PREVIEW_CHARS:
        text = text[:PREVIEW_CHARS] + f"\n\n(first {PREVIEW_CHARS:,} characters shown)"
    return text


def add_urls(st: AppState, name: str, urls: list[str]) -> tuple[list[str], list[str]]:
    """Add start URLs to a model's crawl: (added, already known with their state)."""
    urls = [check_start_url(u) for u in urls]
    added, known = [], []
    with open_store(st, name, create=True) as db:
        for url in urls:
            row = db.get(url)
            if row is not None:
                known.append(f"{url} ({row.state})")
            else:
                added.append(url)
        c = st.crawler
        if c is not None and c.name == name:
            c.add_urls(added)  # refreshes the crawler's own counts
        else:
            for url in added:
                db.add(url, 0)
    return added, known


def block_url(db: CrawlDB, url: str) -> None:
    """Block exactly this URL; a URL already fetched or failed shows as blocked too."""
    pattern = exact_pattern(url)
    db.block(pattern)
    row = db.get(url)
    if row is not None and row.state != "blocked":
        db.finish(url, "blocked", f"blocked by pattern {pattern}")


def unblock_url(db: CrawlDB, row: UrlRow) -> None:
    db.unblock(row.reason.removeprefix("blocked by pattern "))


def pattern_problem(text: str) -> str:
    """Why a space-separated list of URL patterns is refused ('' when it is fine)."""
    for p in text.split():
        try:
            compile_pattern(p)
        except ValidationError as err:
            return str(err)
    return ""


def url_problem(text: str) -> str:
    """Why the Add URL field cannot be added ('' when every URL in it is fine, or it is empty)."""
    for u in text.split():
        head, sep, rest = u.partition("://")
        if sep and head.lower() in ("http", "https") and not rest.split("/")[0].split("@")[-1]:
            return f"{u!r} has no host: write it as {head.lower()}://example.com/"
        try:
            check_start_url(u)
        except ValidationError as err:
            return str(err)
        except ValueError:  # urllib refuses some hosts itself ('http://[')
            return f"cannot crawl {u!r}: not a valid URL"
    return ""


# ---------------------------------------------------------------------------- state
def state(st: AppState) -> dict:
    s = st.tab("crawler")
    if "settings" not in s:
        s.update(
            settings=st.crawl_settings,  # the same object: START CRAWLER anywhere uses it
            url_text="",
            shows="all",  # the URL list's state filter
            view="links",  # or "downloaded"
            data=None,  # the latest Listing
            polling=False,
            polled_at=0.0,
            selected_url=None,
            selected_page=None,
            preview=None,  # (url, text)
            wrapped=None,  # (url, width, lines)
            confirm=None,  # "reset" | "clear"
            last=st.crawls_ended,  # model name -> the final snapshot of its last crawl here
            crawler=None,  # the crawler seen last frame: when it changes, read the store again
            snap=None,  # the running crawler's snapshot, copied once per frame
        )
    return s


def starting(st: AppState) -> bool:
    return st.crawl_starting


def edit(st: AppState, name: str, fn: Callable[[CrawlDB], Any], done: Any = None) -> None:
    """Change a model's URL store in the worker, then read it again."""
    s = state(st)

    def job() -> Any:
        with open_store(st, name, create=True) as db:
            return fn(db)

    def ok(result: Any) -> None:
        s["polled_at"] = 0.0
        if done is not None:
            done(result)

    st.worker.submit(job, done=ok, error=st.fail)


def poll(st: AppState, s: dict, name: str, first: int, page_first: int) -> None:
    every = POLL_S if st.crawler is not None or elsewhere(st, name) else IDLE_POLL_S
    if s["polling"] or time.monotonic() - s["polled_at"] < every:
        return
    s["polling"], s["polled_at"] = True, time.monotonic()

    def done(listing: Listing) -> None:
        s["polling"] = False
        if listing.name == st.current:
            s["data"] = listing

    def error(err: BaseException) -> None:
        s["polling"] = False
        st.fail(err)

    downloaded = s["view"] == "downloaded"
    st.worker.submit(
        read_listing, st, name, s["shows"], first, page_first, downloaded, done=done, error=error
    )


# ---------------------------------------------------------------------------- drawing
def _look(st: AppState, s: dict) -> tuple:
    """What the tab shows, in brief: when it changed during a frame, draw another."""
    keys = ("view", "shows", "selected_url", "selected_page", "confirm", "url_text")
    return (st.current, id(s["data"]), id(s["preview"]), st.crawl_stopping, *(s[k] for k in keys))


def wants_frame(st: AppState) -> bool:
    """Draw every frame while a crawl runs (its counters move by themselves), and once more
    after a frame that changed what the tab shows (a click switched the view halfway through)."""
    s = state(st)
    return st.crawler is not None or s["polling"] or _look(st, s) != s.get("drawn")


def draw(ui: UI, st: AppState, main: pygame.Rect, panel: pygame.Rect) -> None:
    s = state(st)
    s["drawn"] = _look(st, s)
    if s["crawler"] is not st.crawler:  # a crawl started or ended: its counts changed
        s["crawler"], s["polled_at"] = st.crawler, 0.0
    s["snap"] = st.crawler.snapshot() if st.crawler is not None else None  # once per frame
    name = st.current
    if s.get("model") != name:  # another target: its own list, nothing selected
        s.update(model=name, data=None, selected_url=None, selected_page=None, preview=None)
    data = s["data"] if s["data"] is not None and s["data"].name == name else None
    with ui.scope("crawler"):
        area = pygame.Rect(main.x + 10, main.y + 10, main.w - 20, main.h - 20)
        if s["view"] == "downloaded":
            downloaded(ui, st, s, area, data)
        else:
            gap = 10
            w = (area.w - 2 * gap) // 3
            cols = [pygame.Rect(area.x + i * (w + gap), area.y, w, area.h) for i in range(3)]
            configuration(ui, st, s, cols[0])
            links(ui, st, s, cols[1], data)
            status(ui, st, s, cols[2], data)
        side_panel(ui, st, s, panel, data)
        dialog(ui, st, s)
        if name:  # fetch the rows around those in view
            first = max(0, ui.scroll_offset("urls") // ROW_H - WINDOW // 3)
            page_first = max(0, ui.scroll_offset("pages") // ROW_H - WINDOW // 3)
            poll(st, s, name, first, page_first)


def _column(ui: UI, r: pygame.Rect, title: str) -> int:
    ui.rect(r, th.METRIC_BG, th.METRIC_BORDER)
    ui.section((r.x + 10, r.y + 8), title)
    return r.y + 32


def _hint(ui: UI, x: int, y: int, text: str, w: int, color: th.Color = th.HINT) -> int:
    """Wrapped hint text; returns the y below it."""
    for line in ui.wrap(text, w):
        ui.label((x, y), line, color)
        y += 17
    return y


def configuration(ui: UI, st: AppState, s: dict, r: pygame.Rect) -> None:
    cfg: Settings = s["settings"]
    x, w = r.x + 10, r.w - 20
    y = _column(ui, r, "CONFIGURATION")
    on = st.crawler is None and not starting(st)  # a running crawl keeps its settings
    v, _ = ui.slider(
        (x, y, w, 34), "Min delay", cfg.min_delay, 0.0, 10.0, fmt="{:.1f} s", enabled=on
    )
    cfg.min_delay = round(v, 1)
    y += 42
    v, _ = ui.slider(
        (x, y, w, 34),
        "Max delay",
        max(cfg.max_delay, cfg.min_delay),
        0.0,
        30.0,
        fmt="{:.1f} s",
        enabled=on,
        clamp=lambda v: max(v, cfg.min_delay),  # never below the minimum
    )
    cfg.max_delay = round(v, 1)
    y += 46
    ui.label((x, y), "Content filter", th.TEXT if on else th.DIM)
    y += 20
    half = (w - 8) // 2
    for i, (mode, label) in enumerate(FILTERS.items()):
        bx, by = x + (i % 2) * (half + 8), y + (i // 2) * 32
        label = ui.fit(half, label, SHORT_FILTERS[mode])  # a narrow window: the short names
        if ui.choice(
            (bx, by, half, 26), label, cfg.filter == mode, key=f"filter:{mode}", enabled=on
        ):
            cfg.filter = mode
    y += 72
    for attr, label in (("include", "Follow only links matching"), ("exclude", "Never follow")):
        ui.label((x, y), label, th.TEXT if on else th.DIM)
        y += 20
        res = ui.text_input(
            (x, y, w, 28), attr, getattr(cfg, attr), placeholder="(any)", enabled=on
        )
        problem = pattern_problem(res.text)
        if not problem:
            setattr(cfg, attr, res.text)
        ui.label((x, y + 31), problem, th.ERROR, max_w=w)
        y += 54
    hint = PATTERN_HINT if len(ui.wrap(PATTERN_HINT, w)) <= 2 else SHORT_PATTERN_HINT
    y = _hint(ui, x, y - 4, hint, w, th.DIM) + 8
    v, _ = ui.slider(
        (x, y, w, 34),
        "Max pages",
        cfg.max_pages,
        1,
        10_000,
        log=True,
        integer=True,
        fmt="{:.0f}",
        enabled=on,
    )
    cfg.max_pages = int(v)
    y += 42
    v, _ = ui.slider(
        (x, y, w, 34), "Max depth", cfg.max_depth, 0, 20, integer=True, fmt="{:.0f}", enabled=on
    )
    cfg.max_depth = int(v)
    y += 46
    box = w - 24  # the label's room beside the box
    cfg.same_host = ui.checkbox(
        (x, y, w, 22),
        ui.fit(box, "Stay on the start URLs' hosts", "Stay on the start hosts", pad=0),
        cfg.same_host,
        key="same",
        enabled=on,
    )
    y += 28
    cfg.train_continuously = ui.checkbox(
        (x, y, w, 22),
        ui.fit(box, "Train continuously on new pages", "Train on new pages", pad=0),
        cfg.train_continuously,
        key="train",
        enabled=on,
    )
    y += 34
    note = (
        "A running crawl keeps the settings it started with."
        if not on
        else "Each wait between two requests to one host is drawn between the two delays;"
        " robots.txt is obeyed. Settings apply at the next START."
    )
    if y + 17 * len(ui.wrap(note, w)) <= r.bottom - 6:  # a short window leaves the note out
        _hint(ui, x, y, note, w, th.HINT)


def links(ui: UI, st: AppState, s: dict, r: pygame.Rect, data: Listing | None) -> None:
    name = st.current
    x, w = r.x + 10, r.w - 20
    y = _column(ui, r, "LINKS")
    if not name:
        ui.label((x, y), "Select a target model in the panel on the right.", th.HINT, max_w=w)
        return
    c = data.counts if data else {}
    parts = [
        f"Pending {c.get('pending', 0) + c.get('crawling', 0):,}",
        f"Crawled {c.get('crawled', 0):,}",
        f"Failed {c.get('failed', 0):,}",
        f"Blocked {c.get('blocked', 0):,}",
    ]
    counts_lines = ui.flow(parts, "   ", w)  # a narrow column: two lines, nothing cut
    for i, line in enumerate(counts_lines):
        ui.label((x, y + 18 * i), line, th.TEXT, max_w=w)
    y += 24 + 18 * (len(counts_lines) - 1)
    # Add URL: validated as you type; Enter or [Add]
    bw = 56
    field_w = w - 2 * (bw + 6)
    res = ui.text_input(
        (x, y, field_w, 28),
        "url",
        s["url_text"],
        placeholder=ui.fit(field_w, "https://example.com/", "https://…", "URL"),
    )
    s["url_text"] = res.text
    problem = url_problem(res.text)
    ok = bool(res.text.strip()) and not problem
    add = ui.button((r.right - 10 - 2 * bw - 6, y, bw, 28), "Add", enabled=ok)
    if ui.button((r.right - 10 - bw, y, bw, 28), "Clear", enabled=bool(c) and sum(c.values()) > 0):
        s["confirm"] = "clear"
    if (add or res.submitted) and ok:
        urls = res.text.split()

        def added(result: tuple[list[str], list[str]]) -> None:
            new, known = result
            if new:
                s["url_text"] = ""
                st.say(f"{name}: {plural(len(new), 'start URL')} added", "success")
            if known:
                st.say(f"Already in the list: {known[0]} (Reset it to fetch it again)", "warning")

        st.worker.submit(add_urls, st, name, urls, done=added, error=st.fail)
    y += 31
    if problem:
        ui.label((x, y), problem, th.ERROR, max_w=w)
    else:
        hint = ui.fit(
            w, "A start URL (http or https); Enter adds it.", "http(s) URL; Enter adds it", pad=0
        )
        ui.label((x, y), hint, th.DIM, max_w=w)
    y += 24
    # the state filter: one row, or rows of three (or two) when the labels would be cut
    per_row = next(
        (
            n
            for n in (5, 3)
            if all(ui.text_size(v.capitalize())[0] + 12 <= (w - 4 * (n - 1)) // n for v in STATES)
        ),
        2,
    )
    fw = (w - 4 * (per_row - 1)) // per_row
    for i, shows in enumerate(STATES):
        if ui.choice(
            (x + i % per_row * (fw + 4), y + i // per_row * 28, fw, 24),
            shows.capitalize(),
            s["shows"] == shows,
            key=f"shows:{shows}",
        ):
            s["shows"], s["polled_at"] = shows, 0.0
            ui.state.pop(ui.id("scroll:urls"), None)
    y += 30 + 28 * ((len(STATES) - 1) // per_row)
    activity_h = 190
    list_r = pygame.Rect(x, y, w, r.bottom - y - activity_h - 34)
    url_list(ui, st, s, list_r, data)
    y = list_r.bottom + 4
    row = next((u for u in data.urls if u.url == s["selected_url"]), None) if data else None
    if row is not None:
        why = f" ({row.reason})" if row.reason else ""
        detail = f"{row.state}{why} · depth {row.depth}"
        ui.label((x, y), detail, STATE_COLOR.get(row.state, th.TEXT), max_w=w)
    elif data is not None and data.urls:
        ui.label((x, y), "Point at a URL to reset, block or remove it.", th.DIM, max_w=w)
    y += 24
    ui.section((x, y), "RECENT ACTIVITY")
    y += 22
    snap = s["snap"] if st.crawler is not None and st.crawler.name == name else None
    events = snap.events if snap is not None else (data.events if data else [])
    activity(ui, pygame.Rect(x, y, w, r.bottom - 10 - y), events)


def url_list(ui: UI, st: AppState, s: dict, r: pygame.Rect, data: Listing | None) -> None:
    name = st.current
    ui.rect(r, th.LIST_BG, th.DIM)
    inner = r.inflate(-4, -4)
    shows = s["shows"]
    fresh = data is not None and data.shows == shows
    total = data.total(shows) if fresh else 0
    off = ui.scroll(inner, "urls", total * ROW_H, step=ROW_H * 3)
    if not fresh or total == 0:
        empty = "(reading...)" if data is None and name else "No URLs yet: add a start URL above"
        if fresh and shows != "all":
            empty = f"No {shows} URLs"
        _hint(ui, inner.x + 6, inner.y + 4, empty, inner.w - 12, th.DIM)
        return
    with ui.clip(inner):
        first = off // ROW_H
        for i in range(first, min(total, first + inner.h // ROW_H + 2)):
            row_r = pygame.Rect(inner.x, inner.y + i * ROW_H - off, inner.w - 10, ROW_H)
            j = i - data.first
            if not 0 <= j < len(data.urls):
                ui.label((row_r.x + 6, row_r.y + 3), "...", th.DIM)
                s["polled_at"] = 0.0  # scrolled past the rows read: read those in view now
                continue
            url_row(ui, st, s, row_r, data.urls[j])


def url_row(ui: UI, st: AppState, s: dict, r: pygame.Rect, u: UrlRow) -> None:
    """One URL: its state as a coloured dot and word; on the hovered or selected row the word
    gives way to its buttons (Reset, Block or Unblock, Remove)."""
    chosen = u.url == s["selected_url"]
    if chosen or ui.hover(r):
        ui.rect(r, th.SELECTOR_HOVER if chosen else th.shade(th.LIST_BG, 15))
    color = STATE_COLOR.get(u.state, th.TEXT)
    pygame.draw.circle(ui.surface, color, (r.x + 8, r.centery), 4)
    ty = r.y + (ROW_H - ui.line_h) // 2
    bw = max(40, min(74, (r.w - 60) // 3))  # a narrow window keeps some of the URL in view
    if not (chosen or ui.hover(r)):
        sw = ui.label((r.right - 6, ty), u.state, color, align="right")
        ui.label((r.x + 18, ty), u.url, th.TEXT, max_w=r.w - sw - 32)
        if ui.row(r, f"row:{u.url}", selected_fill=None, hover_fill=None).pressed:
            s["selected_url"] = u.url
        return
    ui.label((r.x + 18, ty), u.url, th.SELECTED if chosen else th.TEXT, max_w=r.w - 3 * bw - 26)
    name = st.current
    by, bh = r.y + 2, ROW_H - 4
    bx = r.right - 3 * bw - 2
    by_pattern = u.state == "blocked" and u.reason.startswith("blocked by pattern")
    if ui.button(
        (bx, by, bw - 4, bh),
        "Reset",
        key=f"reset:{u.url}",
        enabled=u.state not in ("pending", "crawling") and not by_pattern,
    ):
        edit(st, name, lambda db: db.reset(u.url))
    if ui.button(
        (bx + bw, by, bw - 4, bh),
        "Unblock" if by_pattern else "Block",
        key=f"block:{u.url}",
        enabled=by_pattern or u.state != "blocked",
    ):
        edit(
            st,
            name,
            (lambda db: unblock_url(db, u)) if by_pattern else (lambda db: block_url(db, u.url)),
        )
    if ui.button((bx + 2 * bw, by, bw - 4, bh), "Remove", key=f"remove:{u.url}"):
        edit(st, name, lambda db: db.remove(u.url))
    # the row's own click comes after its buttons': a click on a button is the button's
    if ui.row(r, f"row:{u.url}", selected_fill=None, hover_fill=None).pressed:
        s["selected_url"] = u.url


def activity(ui: UI, r: pygame.Rect, events: list) -> None:
    ui.rect(r, th.LIST_BG, th.DIM)
    inner = r.inflate(-8, -6)
    if not events:
        ui.label((inner.x, inner.y), "Nothing yet.", th.DIM)
        return
    n = max(1, inner.h // 18)
    with ui.clip(inner):
        for i, e in enumerate(events[-n:]):
            y = inner.y + i * 18
            stamp = time.strftime("%H:%M:%S", time.localtime(e.time))
            tail = e.url.split("://", 1)[-1] if e.url else ""
            text = f"{stamp} {e.kind} {tail} {e.detail}".strip()
            ui.label((inner.x, y), text, EVENT_COLOR.get(e.kind, th.TEXT), max_w=inner.w)


def status(ui: UI, st: AppState, s: dict, r: pygame.Rect, data: Listing | None) -> None:
    name = st.current
    x, w = r.x + 10, r.w - 20
    y = _column(ui, r, "CRAWLER STATUS")
    c = st.crawler
    snap = s["snap"] if c is not None else s["last"].get(name)
    who = c.name if c is not None else name
    if starting(st):
        ui.label((x, y), "* Starting...", th.WARNING)
    elif c is not None:
        label = "Stopping..." if st.crawl_stopping else snap.state.capitalize()
        ui.label((x, y), f"* {label}: {snap.message}", RUN_COLOR.get(snap.state, th.TEXT), max_w=w)
    elif elsewhere(st, name):
        ui.label(
            (x, y), f"* Crawled by another process: {elsewhere(st, name)}", th.WARNING, max_w=w
        )
    elif snap is not None:
        color = RUN_COLOR.get(snap.state, th.TEXT)
        said = snap.state.capitalize() + ("" if snap.message == snap.state else f": {snap.message}")
        ui.label((x, y), f"* {said}", color, max_w=w)
    else:
        ui.label((x, y), "* Idle", th.SUCCESS)
    y += 22
    ui.label((x, y), f"Target: {who or '(no model selected)'}", th.TEXT, max_w=w)
    if c is not None and c.name != name:
        y += 20
        ui.label((x, y), f"(crawling {c.name!r}, not the selected model)", th.WARNING, max_w=w)
    y += 28
    max_pages = c.config.max_pages if c is not None else s["settings"].max_pages
    pages = snap.pages if snap else 0
    ui.progress((x, y, w, 22), pages / max(1, max_pages), text=f"{pages} / {max_pages} pages")
    y += 32
    counts = data.counts if data else {}
    rows = [
        ("Speed", f"{pages * 60 / snap.elapsed:.0f} pages/min" if snap and snap.elapsed else "-"),
        ("Tokens queued", f"{snap.tokens:,}" if snap else "0"),
        ("Bytes", human_size(snap.bytes) if snap else "0 B"),
        ("Elapsed", duration(snap.elapsed) if snap else "-"),
        ("Pending", f"{snap.pending:,}" if c is not None else f"{counts.get('pending', 0):,}"),
        ("Crawled", f"{snap.crawled:,}" if c is not None else f"{counts.get('crawled', 0):,}"),
        ("Failed", f"{snap.failed:,}" if c is not None else f"{counts.get('failed', 0):,}"),
        ("Errors", f"{snap.errors:,}" if snap else "0"),
    ]
    per_row = 2 if w >= 360 else 1  # a narrow window stacks them
    cell = w // per_row
    for i, (k, v) in enumerate(rows):
        rx, ry = x + (i % per_row) * cell, y + (i // per_row) * 20
        ui.label((rx, ry), k, th.HINT)
        ui.label((rx + cell - 10, ry), v, th.TEXT, align="right")
    y += len(rows) // per_row * 20 + 8
    ui.label((x, y), "Current URL", th.HINT)
    y += 18
    current = snap.current_url if snap and c is not None else ""
    ui.label((x, y), current or "-", th.SELECTED if current else th.DIM, max_w=w)
    y += 22
    if snap is not None and snap.training:
        ui.label((x, y), f"Training: {snap.training}", th.TEXT, max_w=w)
    y += 28
    # actions: START / STOP in the crawler's colours, PAUSE / RESUME, Reset All URLs
    running = c is not None
    if ui.button(
        (x, y, w, 35),
        "STOPPING..." if st.crawl_stopping else "STOP CRAWLER" if running else "START CRAWLER",
        key="start",
        fill=th.CRAWL_RUNNING if running else th.CRAWL_IDLE,
        text=th.WHITE,
        border=th.WHITE,
        enabled=(running and not st.crawl_stopping)
        or (not running and bool(name) and not starting(st)),
    ):
        if running:
            st.stop_crawl()
        else:
            typed = (
                s["url_text"] if s["url_text"].strip() and not url_problem(s["url_text"]) else ""
            )
            if typed:
                s["url_text"] = ""
            st.start_crawl(name, typed.split())
    y += 43
    half = (w - 8) // 2
    paused = running and snap.state == "paused"
    can_pause = running and not st.crawl_stopping
    if ui.button((x, y, half, 28), "RESUME" if paused else "PAUSE", key="pause", enabled=can_pause):
        c.resume() if paused else c.pause()
    if ui.button(
        (x + half + 8, y, half, 28),
        ui.fit(half, "Reset All URLs", "Reset URLs", "Reset"),
        key="Reset All URLs",
        enabled=bool(name) and bool(counts),
    ):
        s["confirm"] = "reset"
    y += 40
    ui.section((x, y), "ERRORS")
    y += 22
    source = snap.events if c is not None else (data.events if data else [])
    errors = [e for e in source if e.kind == "error"]
    box = pygame.Rect(x, y, w, r.bottom - 10 - y)
    ui.rect(box, th.LIST_BG, th.DIM)
    inner = box.inflate(-8, -6)
    if not errors:
        ui.label((inner.x, inner.y), "None.", th.DIM)
    with ui.clip(inner):
        yy = inner.y
        for e in reversed(errors[-20:]):  # newest first
            for line in ui.wrap(f"{e.url} {e.detail}".strip(), inner.w)[:4]:
                ui.label((inner.x, yy), line, th.ERROR)
                yy += 17
            yy += 4


def elsewhere(st: AppState, name: str | None) -> str:
    """'pid N' when another process (python -m cllm crawl) crawls the model, else ''."""
    info = st.info(name) if name else None
    busy = (info.busy or "") if info is not None else ""
    pid = busy.removeprefix("crawling by pid ")
    return f"pid {pid}" if pid != busy and pid != str(os.getpid()) else ""


def side_panel(ui: UI, st: AppState, s: dict, panel: pygame.Rect, data: Listing | None) -> None:
    x, w = panel.x + 10, panel.w - 20
    y = panel.y + 76
    info = st.info()
    ui.section((x, y), "QUEUE")
    y += 20
    if info is not None:
        ui.label(
            (x, y), f"{plural(info.queue_items, 'item')}, {info.queue_tokens:,} tokens", th.TEXT
        )
        y += 18
        ui.label((x, y), "Each crawled page's text joins this queue.", th.HINT, max_w=w)
    else:
        ui.label((x, y), "No target model", th.HINT)
    y += 32
    ui.section((x, y), "VIEW")
    y += 20
    half = (w - 8) // 2
    pages = data.page_total if data and data.page_total else None
    for i, (view, label) in enumerate(
        (("links", "Crawler"), ("downloaded", f"Downloaded ({pages})" if pages else "Downloaded"))
    ):
        if ui.choice(
            (x + i * (half + 8), y, half, 30), label, s["view"] == view, key=f"view:{view}"
        ):
            s["view"], s["polled_at"] = view, 0.0
    y += 44
    _hint(
        ui,
        x,
        y,
        "The crawler fetches http and https pages, obeys robots.txt, waits between requests"
        " to one host, and keeps its URL list beside the model, so a stopped crawl resumes"
        " where it was. The Training tab's START CRAWLER starts it with these settings.",
        w,
    )
    panel_selector(ui, st, panel, title="TARGET MODEL")  # last: its list opens above the rest


def downloaded(ui: UI, st: AppState, s: dict, r: pygame.Rect, data: Listing | None) -> None:
    top = pygame.Rect(r.x, r.y, r.w, r.h * 11 // 20)
    ui.rect(top, th.METRIC_BG, th.METRIC_BORDER)
    total = data.page_total if data else 0
    ui.section((top.x + 10, top.y + 8), f"DOWNLOADED PAGES ({total:,})")
    cols = [("URL", 0), ("Size", 120), ("Type", 130), ("Date", 140), ("Tokens", 70)]
    widths = [top.w - 20 - sum(wd for _, wd in cols[1:]) - 10] + [wd for _, wd in cols[1:]]
    hx = top.x + 10
    for (label, _), wd in zip(cols, widths, strict=True):
        ui.label((hx + 4, top.y + 32), label, th.HINT)
        hx += wd
    lst = pygame.Rect(top.x + 10, top.y + 52, top.w - 20, top.h - 62)
    ui.rect(lst, th.LIST_BG, th.DIM)
    inner = lst.inflate(-4, -4)
    off = ui.scroll(inner, "pages", total * ROW_H, step=ROW_H * 3)
    if not total:
        ui.label((inner.x + 6, inner.y + 4), "No pages downloaded yet.", th.DIM)
    with ui.clip(inner):
        first = off // ROW_H
        for i in range(first, min(total, first + inner.h // ROW_H + 2)):
            row_r = pygame.Rect(inner.x, inner.y + i * ROW_H - off, inner.w - 10, ROW_H)
            j = i - data.page_first
            if not 0 <= j < len(data.pages):
                ui.label((row_r.x + 6, row_r.y + 3), "...", th.DIM)
                s["polled_at"] = 0.0  # scrolled past the rows read: read those in view now
                continue
            p = data.pages[j]
            chosen = p.url == s["selected_page"]
            c = ui.row(
                row_r,
                f"page:{p.url}",
                selected=chosen,
                selected_fill=th.SELECTOR_HOVER,
                hover_fill=th.shade(th.LIST_BG, 15),
            )
            size = human_size(p.size) + (" (cut)" if p.truncated else "")
            tokens = f"{p.tokens:,}" if p.tokens else "-"  # a duplicate, empty or not text
            cells = [p.url, size, p.content_type or "?", _date(p.fetched_at), tokens]
            cx = row_r.x
            for text, wd in zip(cells, widths, strict=True):
                color = th.SELECTED if chosen else th.TEXT
                ui.label((cx + 4, row_r.y + 3), text, color, max_w=wd - 10)
                cx += wd
            if c.pressed:
                select_page(st, s, p)
    preview(ui, s, pygame.Rect(r.x, top.bottom + 10, r.w, r.bottom - top.bottom - 10))


def select_page(st: AppState, s: dict, page: PageRow) -> None:
    s["selected_page"], s["page_title"] = page.url, page.title
    s["preview"], s["wrapped"] = (page.url, None), None
    cfg: Settings = s["settings"]

    def done(text: str) -> None:
        if s["selected_page"] == page.url:
            s["preview"] = (page.url, text)

    st.worker.submit(load_preview, page, cfg.filter, done=done, error=st.fail)


def preview(ui: UI, s: dict, r: pygame.Rect) -> None:
    ui.rect(r, th.METRIC_BG, th.METRIC_BORDER)
    url, text = s["preview"] or (None, None)
    title = f"PREVIEW ({FILTERS[s['settings'].filter].lower()})"
    ui.section((r.x + 10, r.y + 8), title)
    if url:
        tw = ui.text_size(title)[0]
        name = f"{s.get('page_title')}: {url}" if s.get("page_title") else url
        ui.label((r.x + 24 + tw, r.y + 8), name, th.SELECTED, max_w=r.w - tw - 34)
    inner = pygame.Rect(r.x + 10, r.y + 32, r.w - 20, r.h - 42)
    if url is None:
        ui.label((inner.x, inner.y), "Click a page to see its extracted text.", th.DIM)
        return
    if text is None:
        ui.label((inner.x, inner.y), "Reading...", th.DIM)
        return
    cached = s["wrapped"]
    if cached is None or cached[:2] != (url, inner.w - 12):  # wrapping is slow: once per page
        cached = s["wrapped"] = (url, inner.w - 12, ui.wrap(text, inner.w - 12))
    lines = cached[2]
    off = ui.scroll(inner, "preview", len(lines) * 18, step=54)
    with ui.clip(inner):
        first = off // 18
        for i in range(first, min(len(lines), first + inner.h // 18 + 2)):
            ui.label((inner.x, inner.y + i * 18 - off), lines[i], th.TEXT)


def dialog(ui: UI, st: AppState, s: dict) -> None:
    which, name = s["confirm"], st.current
    if which is None:
        return
    if not name:
        s["confirm"] = None
        return
    if which == "reset":
        msg = (
            f"Put every URL of the crawl of {name!r} back to pending, so the next START fetches"
            " them all again? URLs blocked by a pattern stay blocked."
        )
        answer = dialogs.confirm(ui, msg, title="Reset All URLs", ok="Reset")
        fn, said = CrawlDB.reset_all, "every URL is pending again"
    else:
        msg = (
            f"Forget every URL in the crawl list of {name!r} (pending, crawled, failed and"
            " blocked)? The downloaded pages and the queue stay."
        )
        answer = dialogs.confirm(ui, msg, title="Clear the URL list", ok="Clear", danger=True)
        fn, said = CrawlDB.clear, "the URL list is empty"
    if answer is not None:
        s["confirm"] = None
    if answer:
        edit(st, name, fn, done=lambda _: st.say(f"{name}: {said}", "success"))


def _date(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
