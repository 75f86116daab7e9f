"""Research tab: a file browser over a research folder (main area, left), a viewer with line
numbers (main area, right), and Add to Queue for the selected model (right panel).

Listing, scanning and reading run in the worker, so a huge folder or file never stalls a frame;
files are read up to READ_LIMIT bytes and the viewer says when it shows only the start.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pygame

from .. import theme as th
from ..filebrowser import FileBrowser, human_size
from ..selector import panel_selector
from ..state import AppState
from ..tabstate import ResearchState
from ..ui import UI

DEFAULT_FOLDER = Path("docs") / "research"
READ_LIMIT = 2 << 20  # bytes shown of one file
MAX_LINE = 400  # characters drawn of one line
SCAN_LIMIT = 20_000  # files listed by one recursive scan
ROW_H = 22
SORTS = ("Name", "Size", "Date", "Type")


@dataclass
class Entry:
    name: str  # relative to the folder listed (a path after a recursive scan)
    path: Path
    is_dir: bool
    size: int
    mtime: float

    @property
    def type(self) -> str:
        if self.is_dir:
            return "folder"
        ext = Path(self.name).suffix.lower().lstrip(".")
        return ext or "file"


@dataclass
class Listing:
    folder: Path
    entries: list[Entry]
    recursive: bool
    capped: bool = False
    missing: bool = False


@dataclass
class FileView:
    path: Path
    lines: list[str]
    size: int
    mtime: float
    partial: bool  # only the first READ_LIMIT bytes were read
    binary: bool


# ---------------------------------------------------------------------------- worker jobs
def list_folder(folder: Path, recursive: bool = False) -> Listing:
    """The folder's entries (folders and files), or every file below it when recursive."""
    if not folder.is_dir():
        return Listing(folder, [], recursive, missing=True)
    entries: list[Entry] = []
    capped = False
    stack = [folder]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()
                    stat = e.stat()
                except OSError:
                    continue
                if recursive and is_dir:
                    stack.append(Path(e.path))
                    continue
                name = os.path.relpath(e.path, folder) if recursive else e.name
                size = 0 if is_dir else stat.st_size
                entries.append(Entry(name, Path(e.path), is_dir, size, stat.st_mtime))
                if len(entries) >= SCAN_LIMIT:
                    return Listing(folder, entries, recursive, capped=True)
    return Listing(folder, entries, recursive, capped)


def read_file(path: Path, limit: int = READ_LIMIT) -> FileView:
    """The start of a file as lines; NUL bytes in the first 8 KB mark it as binary."""
    stat = path.stat()
    size = stat.st_size
    with open(path, "rb") as f:
        data = f.read(limit)
    if b"\0" in data[:8192]:
        return FileView(path, [], size, stat.st_mtime, size > limit, True)
    partial = size > len(data)
    text = data.decode("utf-8", errors="replace")
    if partial and "\n" in text:
        text = text[: text.rindex("\n")]  # a cut line would end mid-character
    lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
    if lines and lines[-1] == "" and not partial:
        lines.pop()
    return FileView(path, lines, size, stat.st_mtime, partial, False)


# ---------------------------------------------------------------------------- tab state
def state(st: AppState) -> ResearchState:
    s = st.tab("research")
    if s.folder is None:  # first use: the defaults are in ResearchState
        s.folder = Path.cwd() / DEFAULT_FOLDER
        refresh(st)
    return s


def open_folder(st: AppState, folder: Path, recursive: bool = False) -> None:
    s = state(st)
    s.folder, s.recursive = Path(folder), recursive
    refresh(st)


def refresh(st: AppState) -> None:
    """List the folder again (scanning below it when the last listing did) in the worker."""
    s = st.tab("research")
    s.request += 1
    req, folder = s.request, s.folder
    s.error = ""

    def done(listing: Listing) -> None:
        if s.request == req:  # a later request wins
            s.listing, s.cache = (None if listing.missing else listing), None
            s.error = "missing" if listing.missing else ""

    def error(err: BaseException) -> None:
        if s.request == req:
            s.listing, s.error = None, f"cannot list {folder}: {_why(err)}"

    st.worker.submit(list_folder, folder, s.recursive, done=done, error=error)


def scan(st: AppState) -> None:
    open_folder(st, state(st).folder, recursive=True)


def up(st: AppState) -> None:
    s = state(st)
    open_folder(st, s.folder.parent)


def open_file(st: AppState, path: Path) -> None:
    s = state(st)
    s.selected, s.loading = path, path

    def done(view: FileView) -> None:
        if s.loading == path:
            s.view, s.loading = view, None

    def error(err: BaseException) -> None:
        if s.loading == path:
            s.loading = None
            st.say(f"cannot read {path.name}: {_why(err)}", "error")

    st.worker.submit(read_file, path, done=done, error=error)


def add_to_queue(st: AppState) -> None:
    """Send the open file to the current model's queue; the toast says what happened."""
    s = state(st)
    view, name = s.view, st.current
    if view is None or not name:
        return
    path = view.path

    def add():
        with st.registry.queue(name) as q:
            return q.add_file(path)

    def done(res) -> None:
        if res.added:
            n = sum(it.n_tokens for it in res.added)
            st.say(f"Added {path.name} to {name}'s queue ({n:,} tokens)", "success")
        elif res.skipped:
            why = res.skipped[0][1]
            kind = "warning" if why == "duplicate" else "error"
            what = "already in" if why == "duplicate" else f"skipped ({why}) for"
            st.say(f"{path.name}: {what} {name}'s queue", kind)

    st.run("queue", name, add, done=done)


def _why(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err)


def visible(s: ResearchState) -> list[Entry]:
    """The listing filtered by the search box and sorted, folders first (cached per frame)."""
    listing = s.listing
    if listing is None:
        return []
    key = (id(listing), s.search, s.sort)
    if s.cache is not None and s.cache[0] == key:
        return s.cache[1]
    q = s.search.lower()
    rows = [e for e in listing.entries if q in e.name.lower()]
    by, rev = s.sort
    keys = {
        "Name": lambda e: e.name.lower(),
        "Size": lambda e: (e.size, e.name.lower()),
        "Date": lambda e: (e.mtime, e.name.lower()),
        "Type": lambda e: (e.type, e.name.lower()),
    }
    rows.sort(key=keys[by], reverse=rev)
    rows.sort(key=lambda e: not e.is_dir)  # stable: folders stay on top in either order
    s.cache = (key, rows)
    return rows


def set_sort(s: ResearchState, by: str) -> None:
    """Clicking the active sort reverses it; another one sorts ascending."""
    cur, rev = s.sort
    s.sort = (by, not rev) if by == cur else (by, False)


# ---------------------------------------------------------------------------- drawing
def draw(ui: UI, st: AppState, main: pygame.Rect, panel: pygame.Rect) -> None:
    s = state(st)
    with ui.scope("research"):
        area = pygame.Rect(main.x + 10, main.y + 10, main.w - 20, main.h - 20)
        left_w = min(480, max(300, area.w * 2 // 5))
        browser(ui, st, s, pygame.Rect(area.x, area.y, left_w, area.h))
        viewer(ui, s, pygame.Rect(area.x + left_w + 10, area.y, area.w - left_w - 10, area.h))
        control_panel(ui, st, s, panel)
        folder_dialog(ui, st, s)


def browser(ui: UI, st: AppState, s: ResearchState, r: pygame.Rect) -> None:
    ui.rect(r, th.VIEW_BG, th.VIEW_BORDER)
    x, y, w = r.x + 10, r.y + 10, r.w - 20
    bw = (w - 24) // 4
    if ui.button((x, y, bw, 26), "Scan"):
        scan(st)
    if ui.button((x + bw + 8, y, bw, 26), "Refresh"):
        refresh(st)
    if ui.button((x + 2 * (bw + 8), y, bw, 26), "Up", enabled=s.folder.parent != s.folder):
        up(st)
    if ui.button((x + 3 * (bw + 8), y, bw, 26), "Folder..."):
        s.browser = FileBrowser(
            st.worker, mode="folder", title="Choose a research folder", cwd=_existing(s.folder)
        )
    y += 34
    rows = visible(s)
    files = f"Files: {sum(not e.is_dir for e in rows)}"
    fw = ui.label((r.right - 10, y), files, th.TEXT, align="right")
    where = str(s.folder) + ("  (all files below)" if s.recursive else "")
    ui.label((x, y), where, th.HINT, max_w=w - fw - 12)
    y += 22
    res = ui.text_input((x, y, w, 26), "search", s.search, placeholder="Search by name...")
    s.search = res.text
    y += 34
    by, rev = s.sort
    for i, name in enumerate(SORTS):
        label = name + ((" ▼" if rev else " ▲") if name == by else "")
        if ui.choice((x + i * (bw + 8), y, bw, 24), label, name == by, key="sort:" + name):
            set_sort(s, name)
    y += 34
    file_list(ui, st, s, rows, pygame.Rect(x, y, w, r.bottom - 10 - y))


def _existing(p: Path) -> Path:
    while not p.is_dir() and p.parent != p:
        p = p.parent
    return p


def file_list(ui: UI, st: AppState, s: ResearchState, rows: list[Entry], r: pygame.Rect) -> None:
    ui.rect(r, th.LIST_BG, th.DIM)
    type_x = r.right - 70
    ui.label((r.x + 6, r.y + 4), "Name", th.ACCENT)
    ui.label((type_x - 12, r.y + 4), "Size", th.ACCENT, align="right")
    ui.label((type_x, r.y + 4), "Type", th.ACCENT)
    body = pygame.Rect(r.x + 2, r.y + 24, r.w - 4, r.h - 26)
    if not rows:
        _empty_hint(ui, s, body)
        return
    off = ui.scroll(body, "files", len(rows) * ROW_H, step=ROW_H * 3)
    with ui.clip(body):
        first = off // ROW_H
        for i in range(first, min(len(rows), first + body.h // ROW_H + 2)):
            e = rows[i]
            row = pygame.Rect(body.x, body.y + i * ROW_H - off, body.w - 10, ROW_H)
            if ui.row(row, "file:" + e.name, selected=e.path == s.selected).pressed:
                if e.is_dir:
                    open_folder(st, e.path)
                else:
                    open_file(st, e.path)
            color = th.SELECTED if e.path == s.selected else th.TEXT
            ty = row.y + (ROW_H - ui.line_h) // 2
            name = f"[{e.name}]" if e.is_dir else e.name
            ui.label((row.x + 4, ty), name, color, max_w=type_x - 90 - row.x)
            if not e.is_dir:
                ui.label((type_x - 12, ty), human_size(e.size), th.HINT, align="right")
            ui.label((type_x, ty), e.type, th.HINT, max_w=row.right - type_x)
    listing = s.listing
    if listing is not None and listing.capped:
        ui.label((r.x + 6, r.bottom + 2), f"first {SCAN_LIMIT:,} files shown", th.WARNING)


def _empty_hint(ui: UI, s: ResearchState, body: pygame.Rect) -> None:
    x, y, w = body.x + 8, body.y + 8, body.w - 16
    if s.error == "missing":
        lines = [
            f"No research folder at {s.folder}.",
            "Create it and press Refresh, or choose another folder with Folder...",
        ]
    elif s.error:
        lines = [s.error]
    elif s.listing is None:
        lines = ["Listing..."]
    elif s.search:
        lines = [f"Nothing matches {s.search!r}."]
    else:
        lines = ["This folder is empty."]
    for line in lines:
        for part in ui.wrap(line, w):
            ui.label((x, y), part, th.HINT)
            y += ui.line_h + 2


def viewer(ui: UI, s: ResearchState, r: pygame.Rect) -> None:
    ui.rect(r, th.VIEW_BG, th.VIEW_BORDER)
    view: FileView | None = s.view
    head = pygame.Rect(r.x + 10, r.y + 8, r.w - 20, ui.line_h)
    if s.loading is not None:
        ui.label(head.topleft, f"Reading {s.loading.name}...", th.WARNING, max_w=head.w)
    if view is None:
        if s.loading is None:
            ui.text_center(r, "Click a file in the list to view it here.", th.HINT)
        return
    body = pygame.Rect(r.x + 1, r.y + 32, r.w - 2, r.h - 33)
    n = len(view.lines)
    gutter = ui.text_size(str(max(1, n)))[0] + 16
    rows = visual_rows(ui, s, view, body.w - gutter - 24)  # long lines wrap, not cut
    total_h = len(rows) * ui.line_h + 8
    off = ui.scroll(body, "view:" + str(view.path), total_h, step=ui.line_h * 3)
    vfirst = min(len(rows), off // ui.line_h)
    vlast = min(len(rows), (off + body.h - 8) // ui.line_h)
    first = rows[vfirst][0] if vfirst < len(rows) else n
    last = rows[vlast - 1][0] + 1 if vlast > 0 else 0
    if s.loading is None:
        ui.label(head.topleft, view.path.name, th.ACCENT, max_w=head.w - 230)
        if view.binary:
            where = f"binary file, {human_size(view.size)}"
        else:
            where = f"Lines {first + 1 if n else 0}-{last} of {n}"
            if view.partial:
                where += f" (first {human_size(READ_LIMIT)} of {human_size(view.size)})"
        ui.label((head.right, head.y), where, th.HINT, align="right")
    if view.binary:
        ui.text_center(body, "A binary file: nothing to show.", th.HINT)
        return
    ui.rect((body.x, body.y, gutter, body.h), th.METRIC_BG)
    with ui.clip(body.inflate(-8, 0)):
        y = body.y + 4 + vfirst * ui.line_h - off
        for j in range(vfirst, min(len(rows), vlast + 2)):
            i, part, cont = rows[j]
            if not cont:
                ui.label((body.x + gutter - 8, y), str(i + 1), th.DIM, align="right")
            if part:
                ui.label((body.x + gutter + 8, y), part, th.TEXT)
            y += ui.line_h
    s.shown = (first + 1 if n else 0, last, n)


WRAP_MAX_LINES = 5000  # a longer file is shown cut at the width: wrapping it all would stall


def visual_rows(ui: UI, s: ResearchState, view: FileView, width: int) -> list[tuple]:
    """(line index, text, continuation) per drawn row: each line wrapped on words at width,
    cached until the file or the width changes."""
    key = (id(view), width)
    if s.wrapped is not None and s.wrapped[0] == key:
        return s.wrapped[1]
    rows: list[tuple] = []
    wrap = len(view.lines) <= WRAP_MAX_LINES and width > 40
    for i, line in enumerate(view.lines):
        line = line[:MAX_LINE]
        if not wrap or ui.text_size(line)[0] <= width:
            rows.append((i, line, False))
            continue
        body = line.lstrip(" ")
        indent = " " * min(len(line) - len(body), 8)
        for k, part in enumerate(ui.wrap(body, width - ui.text_size(indent)[0])):
            rows.append((i, indent + part, k > 0))
    s.wrapped = (key, rows)
    return rows


# ---------------------------------------------------------------------------- right panel
def control_panel(ui: UI, st: AppState, s: ResearchState, panel: pygame.Rect) -> None:
    x, w = panel.x + 10, panel.w - 20
    panel_selector(ui, st, panel)
    y = panel.y + 72
    ui.section((x, y), "OPEN FILE")
    view: FileView | None = s.view
    if view is None:
        ui.label((x, y + 20), "No file open", th.DIM)
    else:
        ui.label((x, y + 20), view.path.name, th.TEXT, max_w=w)
        kind = "binary" if view.binary else f"{len(view.lines):,} lines"
        ui.label((x, y + 38), f"{human_size(view.size)} · {kind}", th.HINT, max_w=w)
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime(view.mtime))
        ui.label((x, y + 56), f"modified {date}", th.HINT)
    y += 84
    ui.section((x, y), "QUEUE")
    info = st.info()
    if info is None:
        ui.label((x, y + 20), "Select a model to queue files for", th.DIM, max_w=w)
    else:
        items = f"{info.queue_items} item{'s' * (info.queue_items != 1)}"
        ui.label(
            (x, y + 20),
            f"{info.name}: {items}, {info.queue_tokens:,} tokens",
            th.TEXT,
            max_w=w,
        )
    busy = st.is_busy()
    ok = view is not None and info is not None and not busy
    if ui.button((x, y + 44, w, 32), "Add to Queue", enabled=ok):
        add_to_queue(st)
    if busy:
        ui.label((x, y + 84), "Adding...", th.WARNING)
    elif view is not None and info is None:
        ui.label((x, y + 84), "Choose a model above first", th.HINT)


def folder_dialog(ui: UI, st: AppState, s: ResearchState) -> None:
    fb = s.browser
    if fb is None:
        return
    chosen = fb.draw(ui)
    if chosen is not None:
        s.browser = None
        if chosen:
            open_folder(st, chosen[0])
