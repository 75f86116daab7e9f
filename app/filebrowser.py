"""An in-app file browser dialog: pick files, one file, or a folder.

Folders are listed by the worker, so a slow or huge folder never stalls a frame. A click on a
folder opens it; a click on a file selects it (several in "files" mode); the path field takes a
typed path (Enter goes there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pygame

from . import theme as th
from .ui import UI
from .worker import Worker

ROW_H = 22


@dataclass
class Entry:
    name: str
    is_dir: bool
    size: int


def list_dir(path: Path) -> list[Entry]:
    out = []
    with os.scandir(path) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()
                size = 0 if is_dir else e.stat().st_size
            except OSError:
                continue
            out.append(Entry(e.name, is_dir, size))
    return sorted(out, key=lambda e: (not e.is_dir, e.name.lower()))


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@dataclass
class FileBrowser:
    """mode: "files" (several), "file" (one), or "folder". draw() returns the chosen paths once,
    [] when cancelled, and None while the dialog stays open."""

    worker: Worker
    mode: str = "files"
    title: str = "Choose files"
    cwd: Path = field(default_factory=Path.cwd)
    patterns: tuple[str, ...] = ()  # file name suffixes shown in "file" mode, e.g. (".cllm",)
    # None: no such option; a bool: the footer's "Hold out for validation" box (adds to a queue)
    hold_out: bool | None = None
    entries: list[Entry] | None = None
    error: str = ""
    selected: set[str] = field(default_factory=set)
    path_text: str = ""

    def __post_init__(self) -> None:
        self.go(Path(self.cwd))

    def go(self, path: Path) -> None:
        path = path.expanduser()
        self.entries, self.error, self.selected = None, "", set()
        self.path_text = str(path)

        def done(entries: list[Entry]) -> None:
            self.cwd, self.entries = path, entries

        def error(err: BaseException) -> None:
            self.error = f"cannot open {path}: {getattr(err, 'strerror', None) or err}"
            self.entries = self.entries or []

        self.worker.submit(list_dir, path, done=done, error=error)

    def draw(self, ui: UI) -> list[Path] | None:
        r = ui.begin_dialog("files", (760, 540), self.title)
        result: list[Path] | None = None
        x, w = r.x + 15, r.w - 30
        up = ui.button((x, r.y + 40, 60, 26), "Up", key="fb-up")
        res = ui.text_input((x + 70, r.y + 40, w - 70, 26), "fb-path", self.path_text)
        self.path_text = res.text
        if res.submitted:
            self.go(Path(res.text))
        if up:
            self.go(self.cwd.parent)
        box = pygame.Rect(x, r.y + 76, w, r.h - 76 - 50)
        entries = self.visible()
        sel = [i for i, e in enumerate(entries) if e.name in self.selected]
        empty = "Loading..." if self.entries is None else (self.error or "(empty folder)")
        i = ui.list_box(
            box,
            "fb-list:" + str(self.cwd),
            [self._row(e) for e in entries],
            sel[0] if len(sel) == 1 else None,
            row_h=ROW_H,
            empty=empty,
        )
        if len(sel) > 1:  # mark the others of a multiple selection
            off = ui.scroll_offset("fb-list:" + str(self.cwd))
            for j in sel:
                y = box.y + 2 + j * ROW_H - off
                if box.y <= y < box.bottom - ROW_H:
                    pygame.draw.rect(ui.surface, th.SELECTED, (box.x + 2, y + 3, 3, ROW_H - 6))
        if i is not None:
            e = entries[i]
            if e.is_dir:
                self.go(self.cwd / e.name)
            elif self.mode == "files":
                self.selected ^= {e.name}
            elif self.mode == "file":
                self.selected = {e.name}
        # footer
        by = r.bottom - 40
        left = w - 260  # the labels' room left of the buttons
        if self.hold_out is not None:
            self.hold_out = ui.checkbox(
                (x, by, 200, 28), "Hold out for validation", self.hold_out, key="fb-hold-out"
            )
            x, left = x + 210, left - 210
        if self.mode == "folder":
            ui.label((x, by + 5), f"Folder: {self.cwd}", th.HINT, max_w=left)
            if ui.button((r.right - 245, by, 120, 28), "Choose Folder", key="fb-ok"):
                result = [self.cwd]
        else:
            n = len(self.selected)
            ui.label((x, by + 5), f"{n} selected", th.HINT)
            label = "Open" if self.mode == "file" else f"Add {n} file{'s' * (n != 1)}"
            if ui.button((r.right - 245, by, 120, 28), label, key="fb-ok", enabled=n > 0):
                result = [self.cwd / s for s in sorted(self.selected)]
        if ui.button((r.right - 115, by, 100, 28), "Cancel", key="fb-cancel"):
            result = []
        if ui.end_dialog():
            result = []
        return result

    def visible(self) -> list[Entry]:
        entries = self.entries or []
        if self.mode == "folder":
            return [e for e in entries if e.is_dir]
        if self.patterns:
            return [e for e in entries if e.is_dir or e.name.endswith(self.patterns)]
        return entries

    @staticmethod
    def _row(e: Entry) -> str:
        return f"[{e.name}]" if e.is_dir else f"{e.name}    {human_size(e.size)}"
