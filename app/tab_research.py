"""Research tab: a frame (title, model selector) until the browser and viewer are written on it."""

from __future__ import annotations

import pygame

from . import theme as th
from .selector import panel_selector
from .state import AppState
from .ui import UI


def draw(ui: UI, st: AppState, main: pygame.Rect, panel: pygame.Rect) -> None:
    view = pygame.Rect(main.x + 10, main.y + 10, main.w - 20, main.h - 20)
    ui.rect(view, th.VIEW_BG, th.VIEW_BORDER)
    ui.label((view.x + 10, view.y + 10), "RESEARCH", th.ACCENT)
    ui.label((view.x + 10, view.y + 34), "The research browser is being written.", th.HINT)
    panel_selector(ui, st, panel)
