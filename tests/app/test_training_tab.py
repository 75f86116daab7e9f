"""The Training tab: sliders saved to the model and clamped by its rules, the queue, a live run."""

from __future__ import annotations

import math

import pygame

from app.tabs import training as tab_training
from cllm.models.registry import Registry

from .conftest import click, drag, frames_until, key, move, press, rect_of, settle


def _track(studio, name: str) -> pygame.Rect:
    r = rect_of(studio, "training/sl:" + name)
    lh = studio.ui.line_h
    return pygame.Rect(r.x, r.y + lh + 2, r.w, r.h - lh - 2)


def _at(track: pygame.Rect, t: float) -> tuple[int, int]:
    return (track.x + int(t * track.w), track.centery)


def test_sliders_show_saved_settings(studio):
    s = studio.st.tab("training")
    assert s["set"] == {
        "batch_size": 4,
        "seq_len": 32,
        "target_epochs": 5,
        "learning_rate": 1e-3,
        "layers": 1,
    }


def test_drag_batch_size_saves_it(studio, models_dir):
    track = _track(studio, "batch_size")
    drag(studio, _at(track, 0.05), _at(track, 0.5))  # 1..16: the middle is about 8 or 9
    settle(studio)
    saved = Registry(models_dir).info("alpha").train.batch_size
    assert 7 <= saved <= 10
    assert studio.st.tab("training")["set"]["batch_size"] == saved


def test_seq_len_above_context_is_refused_and_explained(studio, models_dir):
    track = _track(studio, "seq_len")  # 32..512 shown; the model's context is 64
    drag(studio, _at(track, 0.05), _at(track, 0.9))
    msg = studio.st.tab("training").get("refused", ("",))[0]
    assert "context of 64" in msg
    settle(studio)
    assert Registry(models_dir).info("alpha").train.seq_len == 64  # clamped, not refused whole


def test_layers_grow_after_confirm_and_never_go_down(studio, models_dir):
    track = _track(studio, "layers")
    # a click gives the slider focus; the right arrow asks to grow to 2 layers
    click(studio, _at(track, 0.0))
    key(studio, pygame.K_RIGHT)
    assert studio.st.tab("training").get("dialog") == "grow"
    press(studio, "training/dialog:confirm/dlg-ok")
    settle(studio)
    assert Registry(models_dir).info("alpha").config.n_layer == 2
    # the wheel down, below the current count, is refused with the rule's words
    move(studio, track.center)
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-1))
    studio.step()
    assert "never goes down" in studio.st.tab("training")["refused"][0]
    assert studio.st.tab("training").get("dialog") is None
    settle(studio)
    assert Registry(models_dir).info("alpha").config.n_layer == 2


def test_epochs_wheel_and_keys(studio, models_dir):
    track = _track(studio, "target_epochs")
    move(studio, track.center)
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=2))
    studio.step()
    settle(studio)
    assert Registry(models_dir).info("alpha").meta.target_epochs == 7


def test_drop_file_adds_to_queue(studio, tmp_path, models_dir):
    f = tmp_path / "notes.txt"
    f.write_text("Some notes about foxes and dogs.\n" * 20)
    pygame.event.post(pygame.event.Event(pygame.DROPFILE, file=str(f)))
    studio.step()
    settle(studio)
    assert Registry(models_dir).info("alpha").queue_items == 2
    frames_until(
        studio,
        lambda: any("notes.txt" in row for row in studio.st.tab("training").get("queue", [])),
    )


def test_add_files_through_the_file_browser(studio, tmp_path, models_dir):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "one.txt").write_text("one two three " * 30)
    press(studio, "training/Add Files...")
    s = studio.st.tab("training")
    fb = s["browser"]
    fb.go(tmp_path / "data")
    frames_until(studio, lambda: fb.entries is not None and fb.cwd == tmp_path / "data")
    studio.pump(1)
    box = rect_of(studio, "training/dialog:files/fb-path")
    row = (box.x + 40, box.bottom + 10 + 2 + 10)  # the first row of the list below the path
    click(studio, row)
    assert fb.selected == {"one.txt"}
    press(studio, "training/dialog:files/fb-ok")
    assert s.get("dialog") is None
    settle(studio)
    assert Registry(models_dir).info("alpha").queue_items == 2


def test_clear_queue_asks_first(studio, models_dir):
    press(studio, "training/Clear Queue")
    press(studio, "training/dialog:confirm/dlg-cancel")
    settle(studio)
    assert Registry(models_dir).info("alpha").queue_items == 1
    press(studio, "training/Clear Queue")
    press(studio, "training/dialog:confirm/dlg-ok")
    settle(studio)
    assert Registry(models_dir).info("alpha").queue_items == 0


def test_train_a_few_steps_shows_loss_and_spheres(studio):
    st = studio.st
    assert tab_training.sphere_activity(None) == [0.0] * 12
    press(studio, "training/train")
    frames_until(studio, lambda: st.snapshot is not None and st.snapshot.step >= 3, timeout=60)
    snap = st.snapshot
    assert math.isfinite(snap.train_loss) and snap.train_loss > 0
    assert len(snap.spheres) == 12 and sum(sp["tokens"] for sp in snap.spheres) > 0
    assert len(snap.history["steps"]) >= 3
    # while training: sliders locked, START became STOP, PAUSE and RESUME work
    assert studio.st.training_current
    press(studio, "training/pause")
    frames_until(studio, lambda: st.snapshot.state == "paused", timeout=30)
    step = st.snapshot.step
    studio.pump(5)
    assert st.snapshot.step == step
    press(studio, "training/pause")  # now labelled RESUME
    frames_until(studio, lambda: st.snapshot.step > step, timeout=30)
    press(studio, "training/train")
    frames_until(studio, lambda: st.trainer is None, timeout=30)
    assert st.snapshot.state == "stopped"  # the end of the run stays on screen
    frames_until(studio, lambda: st.info("alpha").meta.steps >= 3)  # checkpointed
    assert any("alpha: " in t.text for t in studio.ui.toasts)


def test_small_window_scrolls_the_panel_to_the_actions(studio):
    pygame.display.set_mode((1000, 600), pygame.RESIZABLE)
    studio.pump(2)
    _, _, panel = studio.layout()
    assert rect_of(studio, "training/train").top > panel.bottom  # below the fold at first
    move(studio, (panel.x + 150, panel.y + 200))
    for _ in range(10):
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-3))
        studio.step()
    studio.pump(1)
    r = rect_of(studio, "training/train")
    assert panel.top <= r.top and r.bottom <= panel.bottom
    assert rect_of(studio, "training/Load").bottom <= panel.bottom


def test_a_run_started_elsewhere_is_shown_read_only(studio, models_dir):
    from cllm.train.trainer import Trainer

    t = Trainer(Registry(models_dir), "alpha", max_steps=10_000)  # as a headless run would
    t.start()
    try:
        st = studio.st
        frames_until(studio, lambda: st.remote is not None and st.remote.step >= 1, timeout=30)
        studio.pump(2)
        assert tab_training.remote_run(st) is not None and not st.training
        assert st.snapshot is st.remote  # the view shows the published progress
        before = studio.st.tab("training").get("dialog")
        press(studio, "training/train")  # START is disabled: nothing starts here
        studio.pump(2)
        assert st.trainer is None and studio.st.tab("training").get("dialog") == before
    finally:
        t.stop()
        t.join(30)


def test_import_queue_from_another_model(studio, models_dir):
    st = studio.st
    st.select("beta")
    settle(studio)
    press(studio, "training/Import From...")
    assert st.tab("training")["dialog"] == "import"
    cancel = rect_of(studio, "training/dialog:pick/dlg-cancel")
    dialog_x, dialog_y = cancel.right + 15 - 420, cancel.bottom + 14 - 380
    click(studio, (dialog_x + 60, dialog_y + 40 + 2 + 12))  # the first row: alpha
    assert st.tab("training")["dialog"] is None
    settle(studio)
    assert Registry(models_dir).info("beta").queue_items == 1


def test_start_crawler_calls_into_the_crawler_tab(studio):
    press(studio, "training/crawl")  # START CRAWLER: AppState.start_crawl with the tab's settings
    frames_until(
        studio,
        lambda: (
            any("nothing to crawl" in t.text for t in studio.ui.toasts)
            or studio.st.crawler is not None
        ),
    )
    assert studio.st.crawler is None  # no start URL given: refused with a toast


def test_starting_a_locked_model_is_refused_with_a_toast(studio, models_dir):
    with Registry(models_dir).lock("alpha", "training elsewhere"):
        press(studio, "training/train")
        frames_until(studio, lambda: any("pid" in t.text for t in studio.ui.toasts))
        assert studio.st.trainer is None and studio.running
