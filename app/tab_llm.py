"""LLM tab: a frame (title, model selector, status) until the chat tab is written on it."""

from __future__ import annotations

import pygame

from . import theme as th
from .selector import panel_selector
from .state import AppState
from .ui import UI


def draw(ui: UI, st: AppState, main: pygame.Rect, panel: pygame.Rect) -> None:
    chat = pygame.Rect(main.x + 10, main.y + 10, main.w - 20, main.h - 90)
    ui.rect(chat, th.CHAT_BG)
    ui.label((chat.x + 10, chat.y + 10), "LLM CHAT", th.ACCENT)
    ui.label((chat.x + 10, chat.y + 34), "The chat view is being written.", th.HINT)
    y = panel.y + 70
    ui.section((panel.x + 10, y), "STATUS")
    loaded = st.loaded
    ui.label(
        (panel.x + 10, y + 20),
        "Model: Loaded" if loaded else "Model: Not Loaded",
        th.SUCCESS if loaded else th.ERROR,
    )
    panel_selector(ui, st, panel)
