"""The Training tab's ADVANCED settings and cost line, and the Models tab's checkpoints."""

from __future__ import annotations

import pygame

from cllm.models.registry import Registry
from cllm.train import checkpoints
from cllm.train.estimate import Estimate
from cllm.train.trainer import Trainer

from .conftest import frames_until, key, press, settle

CTRL = pygame.KMOD_LCTRL


def test_advanced_choice_is_saved_and_the_cost_is_shown(studio, models_dir):
    key(studio, pygame.K_2, CTRL)
    assert studio.tab_name == "training"
    press(studio, "training/adv:toggle")
    assert studio.st.tab("training")["advanced_open"]
    studio.step()
    press(studio, "training/adv:schedule:linear")
    settle(studio)
    assert Registry(models_dir).info("alpha").train.schedule == "linear"
    press(studio, "training/adv:sampling:sequential")
    settle(studio)
    assert Registry(models_dir).info("alpha").train.sampling == "sequential"
    s = studio.st.tab("training")
    frames_until(studio, lambda: isinstance(s.get("estimate"), Estimate), 60)
    est = s["estimate"]
    assert est.steps > 0 and est.peak_bytes > est.memory["runtime"] > 0


def test_checkpoints_listed_and_restored_after_a_confirm(studio, models_dir):
    reg = Registry(models_dir)
    t = Trainer(reg, "alpha", max_steps=3, checkpoint_interval=1)
    t.start()
    assert t.join(60)
    studio.st.refresh()
    key(studio, pygame.K_5, CTRL)
    assert studio.tab_name == "models"
    d = checkpoints.folder(models_dir, "alpha")
    frames_until(studio, lambda: "models/ck:step-0000000001.cllm" in studio.ui.drawn, 30)
    press(studio, "models/ck:step-0000000001.cllm")
    assert studio.st.tab("models")["dialog"] == "restore"
    assert reg.info("alpha").meta.steps == 3  # nothing happens before the confirmation
    press(studio, "models/dialog:confirm/dlg-ok")
    settle(studio)
    assert reg.info("alpha").meta.steps == 1
    assert (d / "step-0000000003.cllm").is_file()  # newer checkpoints stay
