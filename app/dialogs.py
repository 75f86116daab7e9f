"""Small modal dialogs built on ui.begin_dialog: confirm, ask for a name, pick from a list.

Each returns True/the value when accepted, False when cancelled, and None while it stays open; the
caller keeps whether it is open in its own state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pygame

from . import theme as th
from .ui import UI
from .words import studio_words


def confirm(
    ui: UI, message: str, *, title: str = "Confirm", ok: str = "OK", danger: bool = False
) -> bool | None:
    lines = ui.wrap(message, 440)
    r = ui.begin_dialog("confirm", (480, 110 + 18 * len(lines)), title)
    for i, line in enumerate(lines):
        ui.label((r.x + 20, r.y + 44 + 18 * i), line, th.TEXT)
    by = r.bottom - 44
    result = None
    fill = th.TRAIN_RUNNING if danger else th.BUTTON
    if ui.button((r.right - 230, by, 100, 30), ok, key="dlg-ok", fill=fill):
        result = True
    if ui.button((r.right - 120, by, 100, 30), "Cancel", key="dlg-cancel"):
        result = False
    if ui.take_key(pygame.K_RETURN):
        result = True
    if ui.end_dialog():
        result = False
    return result


def prompt(
    ui: UI,
    title: str,
    label: str,
    text: str,
    *,
    validate: Callable[[str], str | None] | None = None,
    ok: str = "OK",
) -> tuple[str, bool | None]:
    """A one-field dialog validated as you type; returns (text, accepted)."""
    # the problem under the field is wrapped, never cut short: the dialog grows to hold it
    st = ui.state.setdefault(ui.id("dialog:prompt/size"), {"lines": 1})
    r = ui.begin_dialog("prompt", (480, 162 + 18 * st["lines"]), title)
    ui.label((r.x + 20, r.y + 44), label, th.TEXT, max_w=r.w - 40)
    field = "dlg-field"
    if ui.focus is None:  # the field has the keys as soon as the dialog opens
        ui.focus = ui.id(field)
    res = ui.text_input((r.x + 20, r.y + 66, r.w - 40, 28), field, text)
    problem = validate(res.text) if validate else None
    lines = ui.wrap(studio_words(problem), r.w - 40) if problem else []
    st["lines"] = max(1, len(lines))
    for i, line in enumerate(lines):
        ui.label((r.x + 20, r.y + 102 + 18 * i), line, th.ERROR)
    result: bool | None = None
    by = r.bottom - 44
    if ui.button((r.right - 230, by, 100, 30), ok, key="dlg-ok", enabled=not problem):
        result = True
    if ui.button((r.right - 120, by, 100, 30), "Cancel", key="dlg-cancel"):
        result = False
    if res.submitted and not problem:
        result = True
    if res.cancelled:
        result = False
    if ui.end_dialog():
        result = False
    return res.text, result


def pick(
    ui: UI, title: str, options: Sequence[str], *, empty: str = "(nothing to choose)"
) -> str | bool | None:
    """Choose one of options from a list; returns the option, False, or None while open."""
    r = ui.begin_dialog("pick", (420, 380), title)
    i = ui.list_box(
        (r.x + 15, r.y + 40, r.w - 30, r.h - 100), "dlg-pick", list(options), row_h=24, empty=empty
    )
    result: str | bool | None = options[i] if i is not None else None
    if ui.button((r.right - 115, r.bottom - 44, 100, 30), "Cancel", key="dlg-cancel"):
        result = False
    if ui.end_dialog():
        result = False
    return result
