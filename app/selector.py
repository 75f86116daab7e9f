"""The model selector shared by the Training, LLM, Research and Crawler panels.

A box with the current model's name and a chevron; a click opens a list of the models folder below
it (name and a short summary, at most 10 rows of 30 px, wheel and scrollbar, hovered row lit,
Up/Down/Enter/Esc). While the list is open it captures the whole window, so a click outside only
closes it. Choosing a model makes it current for every tab (AppState.select).
"""

from __future__ import annotations

from collections.abc import Callable

import pygame

from cllm.engine.config import format_count

from . import theme as th
from .state import AppState
from .ui import UI, plural

ROW_H = 30
MAX_ROWS = 10
LAYER = "selector"


def summary(info) -> str:
    """'1.23M · 3/10 ep · 5 files': what tells models apart in a list."""
    ep = info.meta.epochs_trained
    target = info.meta.target_epochs
    parts = [format_count(info.n_params), f"{ep}/{target} ep"]
    if info.queue_items:
        parts.append(plural(info.queue_items, "file"))
    if info.busy:
        parts.append("busy")
    return " · ".join(parts)


def is_open(ui: UI) -> bool:
    return ui.state.get(LAYER, {}).get("open", False)


def close(ui: UI) -> None:
    ui.state.setdefault(LAYER, {})["open"] = False


def model_selector(
    ui: UI,
    st: AppState,
    rect: pygame.Rect | tuple,
    *,
    key: str = "model",
    value: str | None = None,
    choose: Callable[[str], None] | None = None,
) -> str | None:
    """Draw the selector; returns the name chosen (with the mouse or the keys) since the last
    call, already made current.
    With `choose`, it picks a model for the caller instead (the LLM tab's Compare model): it
    shows `value` and calls choose(name), leaving the current model alone."""
    shown = value if choose is not None else st.current
    r = pygame.Rect(rect)
    s = ui.state.setdefault(LAYER, {"open": False, "hi": 0, "key": key})
    opened = s["open"] and s.get("key") == key
    over = ui.hover(r)
    wid = ui.id("selector:" + key)
    ui.drawn[wid] = r
    toggle = False
    if over:
        ui.hot = wid
        toggle = ui.take_click(r)
    if not toggle and not opened and ui.focus == wid:  # closed but focused: keys open it
        toggle = any(ui.take_key(k) for k in (pygame.K_DOWN, pygame.K_RETURN, pygame.K_SPACE))
    if toggle:
        s.update(open=not opened, key=key, hi=_index(st, shown), wid=wid)
        opened = s["open"]
        if opened:
            ui.claim_focus(LAYER)
    fill = th.shade(th.SELECTOR_BG, 20) if over or opened else th.SELECTOR_BG
    focused = opened or ui.focus == wid
    ui.rect(r, fill, th.INPUT_BORDER_FOCUS if focused else th.SELECTOR_BORDER)
    if shown:
        name = shown
        color = th.SELECTOR_TEXT
    elif choose is not None and st.models:
        name, color = "(choose a model)", th.HINT
    else:
        name = "(no models yet)" if st.listed else "(listing...)"
        color = th.HINT
    ui.label((r.x + 8, r.centery - ui.line_h // 2), name, color, max_w=r.w - 36)
    _chevron(ui, r, opened)
    if opened:
        ui.defer(LAYER, lambda: _draw_list(ui, st, r, s, shown, choose or st.select))
        # the list is drawn at the end of the frame; a choice made there lands next frame
    return s.pop("picked", None) if s.get("key") == key else None  # only to the one that chose


def _index(st: AppState, name: str | None) -> int:
    names = [m.name for m in st.models]
    return names.index(name) if name in names else 0


def _chevron(ui: UI, r: pygame.Rect, up: bool) -> None:
    cx, cy = r.right - 16, r.centery
    pts = (
        [(cx - 5, cy + 3), (cx, cy - 3), (cx + 5, cy + 3)]
        if up
        else [(cx - 5, cy - 3), (cx, cy + 3), (cx + 5, cy - 3)]
    )
    pygame.draw.lines(ui.surface, th.SELECTOR_TEXT, False, pts, 2)


def _draw_list(
    ui: UI,
    st: AppState,
    box: pygame.Rect,
    s: dict,
    shown: str | None,
    select: Callable[[str], None],
) -> None:
    models = st.models
    n = len(models)
    visible = max(1, min(MAX_ROWS, n))
    sw, sh = ui.surface.get_size()
    lst = pygame.Rect(box.x, box.bottom, max(box.w, 300), visible * ROW_H + 2)
    if lst.right > sw:
        lst.x = sw - lst.w
    if lst.bottom > sh:  # no room below: open upwards
        lst.bottom = box.y
    ui.add_layer(LAYER, (0, 0, sw, sh))  # capture everything: outside clicks only close

    def pick(i: int) -> None:
        if 0 <= i < n:
            select(models[i].name)
            s["picked"] = models[i].name
        s["open"] = False

    # keys; Esc and Enter hand the focus back to the box, so the keys can open it again
    if ui.take_key(pygame.K_ESCAPE):
        s["open"] = False
        ui.focus = s.get("wid")
    if ui.take_key(pygame.K_DOWN):
        s["hi"] = min(n - 1, s["hi"] + 1)
    if ui.take_key(pygame.K_UP):
        s["hi"] = max(0, s["hi"] - 1)
    if ui.take_key(pygame.K_RETURN) or ui.take_key(pygame.K_KP_ENTER):
        pick(s["hi"])
        ui.focus = s.get("wid")
    # an outside press closes and is swallowed; a press on the box toggles it (closed here)
    if ui.f.pressed and not ui.f.click_taken and not lst.collidepoint(ui.f.mouse):
        ui.f.click_taken = True
        s["open"] = False
    ui.rect(lst, th.SELECTOR_BG, th.SELECTOR_BORDER)
    inner = lst.inflate(-2, -2)
    if n == 0:
        ui.label((inner.x + 8, inner.y + 7), "No models: create one in the Models tab", th.HINT)
        return
    # keep the keyboard highlight in view
    key = "selector-list"
    off = ui.scroll(inner, key, n * ROW_H, step=ROW_H)
    hi_y = s["hi"] * ROW_H
    sc = ui.state[ui.id("scroll:" + key)]
    if hi_y < off:
        sc["off"] = off = hi_y
    elif hi_y + ROW_H > off + inner.h:
        sc["off"] = off = hi_y + ROW_H - inner.h
    with ui.clip(inner):
        first = off // ROW_H
        for i in range(first, min(n, first + visible + 1)):
            m = models[i]
            row = pygame.Rect(
                inner.x, inner.y + i * ROW_H - off, inner.w - (10 if n > visible else 0), ROW_H
            )
            if ui.hover(row) and ui.f.mouse != s.get("last_mouse"):
                s["hi"] = i  # the mouse moves the highlight; keys move it too
            if i == s["hi"]:
                ui.rect(row, th.SELECTOR_HOVER)
            if ui.take_click(row):
                pick(i)
            color = th.SELECTED if m.name == shown else th.SELECTOR_TEXT
            nw = ui.label((row.x + 8, row.y + 7), m.name, color, max_w=row.w * 2 // 3)
            ui.label(
                (row.right - 8, row.y + 7),
                summary(m),
                th.HINT,
                align="right",
                max_w=row.w - nw - 32,
            )
    s["last_mouse"] = ui.f.mouse


def panel_selector(
    ui: UI, st: AppState, panel: pygame.Rect, *, title: str = "MODEL", key: str = "model"
) -> str | None:
    """The MODEL section at the top of a right panel: the selector at (panel.x+10, panel.y+30),
    300 x 30, which is (1290, 90) at the default window size."""
    ui.section((panel.x + 10, panel.y + 10), title)
    return model_selector(ui, st, (panel.x + 10, panel.y + 30, panel.w - 20, 30), key=key)
