"""The studio's palette (measured from the original program's window) and its one font.

Every colour the app draws comes from here, so the look can be checked and changed in one place.
"""

from __future__ import annotations

from pathlib import Path

import pygame

Color = tuple[int, int, int]

WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
BG: Color = (10, 15, 20)  # window background

TAB: Color = (30, 40, 60)
TAB_ACTIVE: Color = (60, 80, 120)
TAB_OUTLINE: Color = (100, 150, 200)
TAB_LABEL: Color = WHITE

PANEL: Color = (40, 40, 50)  # right control panel
TEXT: Color = (220, 220, 220)
HINT: Color = (150, 150, 150)
DIM: Color = (100, 100, 100)

BUTTON: Color = (60, 60, 80)
BUTTON_BORDER: Color = (220, 220, 220)
ACCENT: Color = (100, 150, 200)  # slider handle, section titles, checkbox tick
SELECTED: Color = (100, 200, 255)  # selected list text

SUCCESS: Color = (100, 255, 100)
ERROR: Color = (255, 100, 100)
WARNING: Color = (255, 200, 100)  # busy

TRAIN_IDLE: Color = (80, 100, 120)
TRAIN_RUNNING: Color = (200, 80, 80)
CRAWL_IDLE: Color = (60, 120, 60)
CRAWL_RUNNING: Color = (200, 80, 80)

# Text fields: dark, like the rest of the window (the original's light grey boxes glared on the
# dark panels); the focused one is lighter, with the original's blue border.
INPUT_BG: Color = (28, 30, 40)
INPUT_BG_FOCUS: Color = (38, 42, 56)
INPUT_BORDER: Color = (110, 110, 125)
INPUT_BORDER_FOCUS: Color = (0, 120, 215)
INPUT_TEXT: Color = (230, 230, 230)
INPUT_CARET: Color = WHITE
INPUT_SELECTION: Color = (50, 80, 130)

SELECTOR_BG: Color = (40, 40, 40)
SELECTOR_BORDER: Color = (100, 100, 100)
SELECTOR_HOVER: Color = (60, 60, 60)
SELECTOR_TEXT: Color = (220, 220, 220)

VIEW_BG: Color = (20, 20, 25)  # training view
VIEW_BORDER: Color = (40, 40, 50)
GRID: Color = (40, 40, 45)
METRIC_BG: Color = (25, 25, 30)  # metric and sphere panels
METRIC_BORDER: Color = (50, 50, 60)
LIST_BG: Color = (30, 30, 40)

OVERLAY_ALPHA = 180  # modal overlay: black at this alpha
DIALOG_BG: Color = (50, 50, 60)
DIALOG_BORDER: Color = (100, 100, 120)

CHAT_BG: Color = (25, 25, 35)
USER_BUBBLE: Color = (70, 100, 180)
MODEL_BUBBLE: Color = (50, 50, 60)
SEND: Color = (80, 150, 80)

# Kissing spheres: colour by activity = count / max count, thresholds from the original.
SPHERE_LEVELS: list[tuple[float, Color]] = [
    (0.01, (40, 40, 50)),
    (0.3, (60, 100, 180)),
    (0.6, (80, 180, 200)),
    (0.9, (220, 200, 80)),
]
SPHERE_HOT: Color = (255, 140, 60)

VAL_LINE: Color = (255, 200, 100)  # validation loss in charts; training loss uses ACCENT
SERIES: list[Color] = [ACCENT, WARNING, SUCCESS, ERROR, SELECTED, (200, 120, 255), (200, 200, 200)]

FONT_SIZE = 14
FONT_PATH = Path(__file__).resolve().parent.parent / "fonts" / "DejaVuSans.ttf"


def sphere_color(activity: float) -> Color:
    for limit, color in SPHERE_LEVELS:
        if activity < limit:
            return color
    return SPHERE_HOT


def shade(c: Color, d: int) -> Color:
    """Lighter (d > 0) or darker (d < 0): hover and pressed states of a fill."""
    return tuple(max(0, min(255, v + d)) for v in c)  # type: ignore[return-value]


def mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def load_font(size: int = FONT_SIZE) -> pygame.font.Font:
    """DejaVu Sans shipped in fonts/ (UTF-8 text); pygame's default font if it is missing."""
    if not pygame.font.get_init():
        pygame.font.init()
    if FONT_PATH.exists():
        return pygame.font.Font(str(FONT_PATH), size)
    return pygame.font.Font(None, size + 4)
