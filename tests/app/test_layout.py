"""Every tab at the window sizes people use: no widget leaves the window, and no two widgets
overlap (a widget inside another one, such as a row's own buttons, is nested, not overlapping)."""

from __future__ import annotations

import itertools

import pygame
import pytest

from app.studio import TABS

from .conftest import settle

SIZES = [(1024, 640), (1280, 720), (1600, 900), (1920, 1080)]


def problems(drawn: dict[str, pygame.Rect], size: tuple[int, int]) -> list[str]:
    window = pygame.Rect(0, 0, *size)
    shown = {k: r for k, r in drawn.items() if r.w > 0 and r.h > 0}
    out = [f"{k} {r} leaves the window" for k, r in shown.items() if not window.contains(r)]
    for (a, ra), (b, rb) in itertools.combinations(shown.items(), 2):
        if ra.colliderect(rb) and not (ra.contains(rb) or rb.contains(ra)):
            out.append(f"{a} {ra} overlaps {b} {rb}")
    return out


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_widget_leaves_the_window_or_overlaps_another(studio, size):
    pygame.display.set_mode(size, pygame.RESIZABLE)
    found = []
    for i, (label, _) in enumerate(TABS):
        studio.switch(i)
        studio.pump(3)
        settle(studio)
        studio.pump(2)
        found += [f"{label}: {p}" for p in problems(studio.ui.drawn, size)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("size", [(1024, 640), (1280, 720)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_models_panel_with_many_checkpoints_keeps_the_jobs_panel_clear(studio, models_dir, size):
    """Kept checkpoints list as many as fit; the Jobs panel below them never gets drawn over."""
    from cllm.train import checkpoints

    d = checkpoints.folder(models_dir, "alpha")
    for step in (200, 400, 600, 800, 1000):
        checkpoints.record(models_dir / "alpha.cllm", d, step, keep=8, best=step == 600)
    pygame.display.set_mode(size, pygame.RESIZABLE)
    studio.st.select("alpha")
    studio.switch(4)  # Models
    studio.pump(3)
    settle(studio)
    studio.pump(3)
    assert not problems(studio.ui.drawn, size), problems(studio.ui.drawn, size)
    assert any(t.startswith("newest ") or t.endswith(" kept") for t in studio.ui.texts)
