"""The Models tab's Jobs panel: Ctrl+click selects several models, Train Selected... queues a job
for each, the list shows them, Cancel and Retry act on the chosen one."""

from __future__ import annotations

import pygame

from app.tabs.models import CARD_H
from cllm.jobs.store import JobStore

from .conftest import click, frames_until, key, press, settle, type_text

CTRL = pygame.KMOD_LCTRL
D = "models/dialog:jobs-train/"


def _card_center(studio, i: int) -> tuple[int, int]:
    _, main, _ = studio.layout()
    return main.x + 10 + 6 + 100, main.y + 10 + 30 + i * (CARD_H + 6) + CARD_H // 2


def test_train_selected_queues_a_job_per_model_then_cancel_and_retry(studio, models_dir):
    key(studio, pygame.K_5, CTRL)
    assert studio.tab_name == "models"
    s = studio.st.tab("models")
    pygame.key.set_mods(CTRL)
    try:
        click(studio, _card_center(studio, 1))  # Ctrl+click beta: alpha (current) and beta
    finally:
        pygame.key.set_mods(0)
    assert s["multi"] == {"alpha", "beta"}
    press(studio, "models/jobs-train")
    jobs = studio.st.tab("jobs")
    assert jobs["dialog"]["names"] == ["alpha", "beta"]
    press(studio, D + "jobs-value")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, "x")
    press(studio, D + "jobs-queue")  # refused while the value is not a number
    assert jobs["dialog"] is not None
    press(studio, D + "jobs-value")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, "3")
    press(studio, D + "jobs-queue")
    assert jobs["dialog"] is None
    settle(studio)
    store = JobStore(models_dir)
    assert [(j.model, j.steps, j.state) for j in store.list()] == [
        ("alpha", 3, "queued"),
        ("beta", 3, "queued"),
    ]
    frames_until(studio, lambda: len(jobs.get("rows") or []) == 2)
    jobs["sel"] = store.list()[1].id
    press(studio, "models/jobs-cancel")
    settle(studio)
    assert store.list()[1].state == "cancelled"
    frames_until(studio, lambda: jobs["rows"][1]["state"] == "cancelled")
    press(studio, "models/jobs-retry")
    settle(studio)
    assert store.list()[1].state == "queued"
    # a plain click selects one model again
    click(studio, _card_center(studio, 0))
    assert s["multi"] == set() and studio.st.current == "alpha"


def test_sweep_from_the_models_tab(studio, models_dir):
    key(studio, pygame.K_5, CTRL)
    press(studio, "models/jobs-sweep")
    jobs = studio.st.tab("jobs")
    assert jobs["sweep"]["base"] == "alpha"
    S = "models/dialog:jobs-sweep/"
    press(studio, S + "sweep-lr")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, "1e-3,zz")
    press(studio, S + "sweep-create")  # refused: not a number
    assert jobs["sweep"] is not None
    press(studio, S + "sweep-lr")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, "1e-3,2e-3")
    press(studio, S + "sweep-steps")
    key(studio, pygame.K_a, CTRL)
    type_text(studio, "2")
    press(studio, S + "sweep-create")
    assert jobs["sweep"] is None
    settle(studio)
    got = [(j.model, j.steps, j.sweep) for j in JobStore(models_dir).list()]
    assert got == [("alpha-lr1e-3", 2, "alpha"), ("alpha-lr2e-3", 2, "alpha")]
    frames_until(
        studio, lambda: {"alpha-lr1e-3", "alpha-lr2e-3"} <= {m.name for m in studio.st.models}
    )
