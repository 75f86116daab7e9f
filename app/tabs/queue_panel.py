"""The Training tab's TRAINING DATA panel: the selected model's queue as a list of items (name,
kind, tokens, priority, and "validation" on an item held out for validation), a filter box, remove
(x), priority (+ / -) and the validation toggle (v, drawn on while the selected item is held out)
for the selected row, Add Files / Add Folder / Paste Text (also Ctrl+V), Clear Queue behind a
confirmation, and the progress of an add in flight (files, MB and tokens) with Cancel.

Everything goes through the queue's public calls (``cllm.data.dataqueue``), in the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pygame

from cllm.data.dataqueue import matches_filter
from cllm.engine.config import format_count

from .. import theme as th
from ..state import AppState
from ..ui import UI

LIST_H = 80
ROW_H = 19
SIDE_W = 24  # the remove / priority column right of the list
FILTER_X = 130  # the filter box sits in the section's title row, right of the title


def _items(st: AppState, s: dict, info) -> list | None:
    """The queue's items, listed by the worker when the model or the folder changes."""
    if info is None:
        return []
    stamp = (info.name, st.version)
    if s.get("queue_stamp") != stamp and not s.get("queue_loading"):
        s["queue_loading"] = True
        name = info.name

        def items():
            with st.registry.queue(name) as q:
                return q.items()

        def done(result) -> None:
            s["queue_loading"], s["queue_stamp"], s["queue_items"] = False, stamp, result
            s["queue"] = [row_text(it) for it in result]  # the rows as drawn, unfiltered

        def error(err) -> None:
            s["queue_loading"] = False
            s["queue_stamp"], s["queue_items"] = stamp, []
            st.fail(err)

        st.worker.submit(items, done=done, error=error)
    if s.get("queue_stamp", (None,))[0] != info.name:
        return None
    return s.get("queue_items") or []


def item_name(it) -> str:
    """The file name of an item's source (an archive member's own name)."""
    return Path(it.source.replace("!", "/")).name or it.source


def _rests(it) -> list[str]:
    """What follows an item's name in its row, longest first."""
    k, n, p, val = it.kind, it.n_tokens, it.priority, it.validation
    return [
        f" · {k} · {n:,} tok · p{p}" + (" · validation" if val else ""),
        f" · {k} · {n:,} tok · p{p}" + (" · val" if val else ""),
        f" · {k} · {format_count(n)} · p{p}" + (" · val" if val else ""),
    ]


def row_text(it) -> str:
    """An item's row in full: name, kind, tokens, priority and (when held out) validation."""
    return item_name(it) + _rests(it)[0]


class FittedRows(Sequence):
    """The rows, fitted to ``width`` pixels: the kind, tokens, priority and validation flag
    always show, in the same words on every row (the longest that leave about ten letters of
    name beside the longest of them); only names are shortened. A row is made when the list
    draws it, so a long queue costs only its visible rows."""

    def __init__(self, ui: UI, items: list, width: int) -> None:
        self.ui, self.items, self.width = ui, items, width
        self._rows: dict[int, str] = {}
        ten = ui.text_size("abcdefghij")[0]
        self.level = 0
        if items:
            longest = ["", "", ""]
            for r in map(_rests, items):
                longest = [max(a, b, key=len) for a, b in zip(longest, r, strict=True)]
            while self.level < 2 and ui.text_size(longest[self.level])[0] + ten > width:
                self.level += 1

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        row = self._rows.get(i)
        if row is None:
            it, ui = self.items[i], self.ui
            rest = _rests(it)[self.level]
            room = max(ui.text_size("M…")[0], self.width - ui.text_size(rest)[0])
            self._rows[i] = row = ui.elide(item_name(it), room) + rest
        return row


def add_text(ui: UI, adding: dict, width: int) -> str:
    """An add's progress: files, MB and tokens so far, as long a form as fits ``width``."""
    done, total = adding.get("done", 0), adding.get("total", 0)
    mb, tokens = adding.get("bytes", 0) / 1e6, adding.get("tokens", 0)
    short = format_count(tokens)
    return ui.fit(
        width,
        f"Adding: {done:,}/{total:,} files, {mb:,.1f} MB, {tokens:,} tokens",
        f"{done:,}/{total:,} files, {mb:,.1f} MB, {tokens:,} tokens",
        f"{done:,}/{total:,} files, {mb:,.0f} MB, {short} tokens",
        f"{done:,}/{total:,} files · {mb:,.0f} MB · {short} tok",
        pad=0,
    )


def _edit(st: AppState, name: str, fn, done_msg: str) -> None:
    def work():
        with st.registry.queue(name) as q:
            return fn(q)

    st.run("queue", name, work, done=lambda _: st.say(done_msg, "success"))


def paste_text(st: AppState, name: str, text: str) -> None:
    """Add text (the clipboard's) to a model's queue as one item."""
    if not text.strip():
        st.say("The clipboard holds no text to add", "warning")
        return

    def add():
        with st.registry.queue(name) as q:
            return q.add_text(text, source="<pasted text>")

    def done(r) -> None:
        if r.added:
            st.say(f"{name}: added the pasted text ({r.tokens:,} tokens)", "success")
        else:
            st.say(f"{name}: pasted text skipped ({r.skipped[0][1]})", "warning")

    st.run("queue", name, add, done=done)


def draw(ui: UI, st: AppState, s: dict, info, x: int, y: int, w: int, browse) -> int:
    """The panel at (x, y), w wide; returns the y below it. ``browse(mode, title)`` opens the
    file browser; Clear Queue sets ``s["dialog"] = "clear"`` (the tab's confirmation)."""
    ui.section((x, y), "TRAINING DATA")
    has = info is not None
    fx = x + FILTER_X
    res = ui.text_input(
        (fx, y - 3, w - FILTER_X, 20),
        "queue-filter",
        s.get("queue_filter", ""),
        placeholder="filter: name or kind",
    )
    s["queue_filter"] = res.text
    y += 20
    items = _items(st, s, info)
    shown = [it for it in (items or []) if matches_filter(it, s["queue_filter"])]
    ids = [it.id for it in shown]
    sel = s.get("queue_sel")
    selected = ids.index(sel) if sel in ids else None
    if items is None:
        empty = "Loading..."
    elif items and not shown:
        empty = "No item matches the filter"
    else:
        empty = "Queue empty: add files, paste text (Ctrl+V) or drop files"
    box = pygame.Rect(x, y, w - SIDE_W - 6, LIST_H)
    fit = box.w - 4 - 10 - 8  # the list's row label width (ui.list_box)
    key = (s.get("queue_stamp"), s["queue_filter"], fit, len(shown))
    if s.get("queue_rows_key") != key:  # fitted once per listing, filter and width
        s["queue_rows_key"], s["queue_rows"] = key, FittedRows(ui, shown, fit)
    clicked = ui.list_box(
        box,
        "queue",
        s["queue_rows"],
        selected,
        row_h=ROW_H,
        empty=empty,
        colors=[th.VAL_LINE if it.validation else None for it in shown],  # the chart's colour
    )
    if clicked is not None:
        s["queue_sel"] = ids[clicked]
        selected = clicked
    item = shown[selected] if selected is not None and has else None
    _item_buttons(ui, st, s, info, item, box.right + 6, y)
    y += LIST_H + 6
    third = (w - 16) // 3
    if ui.button((x, y, third, 24), "Add Files...", enabled=has):
        browse("files", f"Add files to {info.name}'s queue")
    if ui.button((x + third + 8, y, third, 24), "Add Folder...", enabled=has):
        browse("folder", f"Add a folder to {info.name}'s queue")
    paste = ui.button((x + 2 * (third + 8), y, third, 24), "Paste Text", enabled=has)
    if has and not res.focused and ui.take_key(pygame.K_v, ctrl=True):
        paste = True
    if paste:
        paste_text(st, info.name, ui.get_clipboard())
    y += 30
    half = (w - 8) // 2
    if ui.button((x, y, half, 24), "Clear Queue", enabled=has and bool(info.queue_items)):
        s["dialog"] = "clear"
    if ui.button((x + half + 8, y, half, 24), "Import From...", enabled=has and len(st.models) > 1):
        s["dialog"] = "import"
    y += 34
    adding = getattr(st, "adding", None)
    if has and adding and adding.get("name") == info.name and not adding.get("finished"):
        done, total = adding.get("done", 0), adding.get("total", 0)
        ui.label((x, y), add_text(ui, adding, w), th.TEXT, max_w=w)
        y += 20
        ui.progress((x, y, w - third - 8, 22), done / max(1, total))
        if ui.button((x + w - third, y, third, 22), "Cancel", enabled=not adding.get("cancel")):
            adding["cancel"] = True
        y += 28
    return y


def _item_buttons(ui: UI, st: AppState, s: dict, info, item, x: int, y: int) -> None:
    """Remove, priority up and down, and the validation toggle (drawn on while the selected
    item is held out) for the selected item: a column right of the list."""
    name = item_name(item) if item is not None else ""
    buttons = [
        ("x", "queue-remove"),
        ("+", "queue-up"),
        ("-", "queue-down"),
        ("v", "queue-validation"),
    ]
    step = (LIST_H + 2) // len(buttons)
    for k, (label, key) in enumerate(buttons):
        r = (x, y + k * step, SIDE_W, step - 2)
        if key == "queue-validation":
            held = item is not None and item.validation
            pressed = ui.choice(r, label, held, key=key, enabled=item is not None)
        else:
            pressed = ui.button(r, label, key=key, enabled=item is not None)
        if not pressed:
            continue
        if key == "queue-remove":
            _edit(
                st,
                info.name,
                lambda q, j=item.id: q.remove(j),
                f"Removed {name} from {info.name}'s queue",
            )
            s["queue_sel"] = None
        elif key == "queue-validation":
            on = not item.validation
            _edit(
                st,
                info.name,
                lambda q, j=item.id, on=on: q.set_item_validation(j, on),
                f"{name}: {'held out for validation' if on else 'trained on again'}",
            )
        else:
            p = item.priority + (1 if key == "queue-up" else -1)
            _edit(
                st,
                info.name,
                lambda q, j=item.id, p=p: q.set_priority(j, p),
                f"{name}: priority {p}",
            )
