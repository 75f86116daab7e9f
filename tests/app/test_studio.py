"""The window shell: tabs, shortcuts, the model selector, resizing, errors inside a tab."""

from __future__ import annotations

import pygame

from app import selector
from app.studio import TABS

from .conftest import click, frames_until, key, move, press, rect_of, type_text

CTRL = pygame.KMOD_LCTRL


def test_tabs_switch_by_click_and_keys(studio):
    assert studio.tab_name == "training"
    press(studio, "tab:Models")
    assert studio.tab_name == "models"
    for i, (_, name) in enumerate(TABS):
        key(studio, pygame.K_1 + i, CTRL)
        assert studio.tab_name == name
    key(studio, pygame.K_TAB, CTRL)
    assert studio.tab_name == TABS[0][1]  # wraps from the last to the first
    key(studio, pygame.K_TAB, CTRL | pygame.KMOD_LSHIFT)
    assert studio.tab_name == TABS[-1][1]


def test_tab_bar_layout_matches_spec(studio):
    w = 1280 / 5
    for i, (label, _) in enumerate(TABS):
        r = rect_of(studio, "tab:" + label)
        assert (r.y, r.h) == (0, 40)
        assert abs(r.x - i * w) <= 1 and abs(r.w - w) <= 1
    assert rect_of(studio, "training/selector:model") == pygame.Rect(1290, 90, 300, 30)


def test_bare_q_and_esc_do_not_quit_ctrl_q_does(studio):
    type_text(studio, "q")
    key(studio, pygame.K_ESCAPE)
    assert studio.running
    key(studio, pygame.K_q, CTRL)
    assert not studio.running


def _open_selector(studio):
    press(studio, "training/selector:model")
    assert selector.is_open(studio.ui)
    studio.pump(1)
    return rect_of(studio, "training/selector:model")


def test_selector_pick_by_mouse(studio):
    assert studio.st.current == "alpha"
    box = _open_selector(studio)
    row2 = (box.x + 50, box.bottom + 1 + 30 + 15)
    move(studio, row2)
    click(studio, row2)
    assert not selector.is_open(studio.ui)
    assert studio.st.current == "beta"
    frames_until(studio, lambda: studio.st.lm_name == "beta")  # loaded in the background
    # every tab with a selector shows the same model
    for i in range(4):
        key(studio, pygame.K_1 + i, CTRL)
        assert studio.st.current == "beta"


def test_selector_keys(studio):
    _open_selector(studio)
    key(studio, pygame.K_DOWN)
    key(studio, pygame.K_RETURN)
    assert studio.st.current == "beta" and not selector.is_open(studio.ui)
    _open_selector(studio)
    key(studio, pygame.K_UP)
    key(studio, pygame.K_ESCAPE)  # Esc closes without choosing
    assert studio.st.current == "beta" and not selector.is_open(studio.ui)
    assert studio.running
    key(studio, pygame.K_DOWN)  # the closed box kept the focus: the keys open it again
    assert selector.is_open(studio.ui)
    key(studio, pygame.K_UP)
    key(studio, pygame.K_RETURN)
    assert studio.st.current == "alpha" and not selector.is_open(studio.ui)


def test_selector_outside_click_closes_and_is_not_passed_on(studio):
    _open_selector(studio)
    press(studio, "tab:Models")  # under the open list's capture: only closes it
    assert studio.tab_name == "training"
    assert not selector.is_open(studio.ui)
    press(studio, "tab:Models")
    assert studio.tab_name == "models"


def test_selector_sees_new_models_on_disk(studio, models_dir):
    import shutil

    shutil.copy(models_dir / "beta.cllm", models_dir / "gamma.cllm")
    frames_until(studio, lambda: any(m.name == "gamma" for m in studio.st.models), timeout=10)


def test_resize_keeps_panel_width(studio):
    pygame.display.set_mode((1100, 700), pygame.RESIZABLE)
    studio.pump(2)
    bar, main, panel = studio.layout()
    assert panel.w == 320 and main.w == 780 and panel.h == 640
    assert rect_of(studio, "training/selector:model").x == 790


def test_exception_in_a_tab_becomes_a_banner(studio, monkeypatch):
    mod = studio.module("training")

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(mod, "draw", broken)
    frames_until(studio, lambda: studio.banner is not None)
    studio.pump(3)
    assert studio.running
    assert studio.banner and "boom" in studio.banner[0]
    assert any("boom" in t.text for t in studio.ui.toasts)


def test_an_expired_banner_is_cleared_by_the_next_full_frame(studio):
    """A banner past its time is drawn over by the next full frame and then dropped, so that
    repaints of the main area alone (which need no banner up) resume."""
    import time

    studio.banner = ("Training tab: RuntimeError: gone", time.time() - 1)
    studio.pump(2)
    assert studio.banner is None


def test_every_tab_draws(studio):
    for i in range(len(TABS)):
        key(studio, pygame.K_1 + i, CTRL)
        studio.pump(2)
        assert studio.banner is None, studio.banner
    click(studio, (640, 500))  # a click on an empty area does nothing harmful


def test_loaded_model_follows_changes_on_disk(studio, models_dir):
    from cllm.models.registry import Registry

    assert studio.st.lm.train_config.batch_size == 4
    Registry(models_dir).set_settings("alpha", batch_size=6)  # another process, say
    frames_until(studio, lambda: studio.st.lm.train_config.batch_size == 6, timeout=10)
    assert studio.st.tab("training")["set"]["batch_size"] == 6


def test_f11_toggles_fullscreen_and_back(studio):
    key(studio, pygame.K_F11)
    assert studio.fullscreen
    key(studio, pygame.K_F11)
    assert not studio.fullscreen
    assert pygame.display.get_surface().get_size() == (1600, 900)
    studio.pump(2)
    assert rect_of(studio, "training/selector:model") == pygame.Rect(1290, 90, 300, 30)


def test_selector_shows_ten_rows_and_scrolls(studio, models_dir):
    import shutil

    for i in range(12):
        shutil.copy(models_dir / "beta.cllm", models_dir / f"m{i:02d}.cllm")
    frames_until(studio, lambda: len(studio.st.models) == 14, timeout=10)
    box = _open_selector(studio)
    scroll = studio.ui.state["scroll:selector-list"]
    assert scroll["off"] == 0
    move(studio, (box.x + 100, box.bottom + 100))
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-2))
    studio.step()
    assert scroll["off"] > 0
    assert scroll["off"] <= 14 * 30 - 10 * 30  # never past the last row
    for _ in range(13):  # the keys walk to the last row, which scrolls into view
        key(studio, pygame.K_DOWN)
    assert scroll["off"] == 14 * 30 - 10 * 30
    key(studio, pygame.K_RETURN)
    assert studio.st.current == "m11"


def test_a_failing_trainer_snapshot_does_not_stop_the_loop(studio, monkeypatch):
    class Broken:
        def snapshot(self):
            raise RuntimeError("snapshot exploded")

        def is_alive(self):
            return True

    studio.st.trainer, studio.st.trainer_name = Broken(), "alpha"
    studio.pump(3)
    assert studio.running and any("exploded" in t.text for t in studio.ui.toasts)
    studio.st.trainer = None


def test_a_damaged_model_file_is_reported_in_a_toast(studio, models_dir):
    (models_dir / "broken.cllm").write_bytes(b"\x00" * 40)
    frames_until(studio, lambda: any("broken" in t.text for t in studio.ui.toasts), timeout=10)
    assert [m.name for m in studio.st.models] == ["alpha", "beta"]


def test_a_tiny_window_still_draws_every_tab(studio):
    pygame.display.set_mode((640, 400), pygame.RESIZABLE)
    for i in range(len(TABS)):
        key(studio, pygame.K_1 + i, CTRL)
        studio.pump(2)
        assert studio.banner is None, studio.banner
    key(studio, pygame.K_2, CTRL)
    _open_selector(studio)
    studio.pump(2)
    assert studio.banner is None


def test_the_studio_reopens_the_last_model_used(models_dir):
    from app.studio import Studio

    from .conftest import frames_until

    s = Studio((1024, 640), models_dir, demo=False)
    try:
        frames_until(s, lambda: s.st.listed and s.st.current == "alpha")
        s.st.select("beta")
        frames_until(s, lambda: s.st.loaded and not s.worker.busy)
    finally:
        s.close()
    s = Studio((1024, 640), models_dir, demo=False)
    try:
        frames_until(s, lambda: s.st.listed and s.st.current is not None)
        assert s.st.current == "beta"
    finally:
        s.close()


def test_the_app_freezes_its_start_up_objects_once_started(models_dir):
    """Full collections scanned start-up's objects (numba's types, fonts) every few seconds, a
    dropped frame each; the app freezes them once the first model is loaded."""
    import gc

    from app.studio import Studio

    s = Studio((1024, 640), models_dir, demo=False)
    try:
        s.pump(3)
        assert not s._gc_frozen  # a studio made by a test leaves the collector alone
        s.settle_gc = True
        frames_until(s, lambda: s._gc_frozen)
        assert s.st.listed and not s.st.loading and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        s.close()


def test_the_resource_line_measures_the_studio_with_psutil():
    import os

    from app.studio import resource_lines

    procs: dict = {}
    lines = resource_lines(procs, None, training_here=True)
    assert lines[0].startswith("Studio + training: CPU ") and lines[0].endswith(" MB")
    assert os.getpid() in procs  # kept, so the next call measures CPU since this one
    assert resource_lines(procs, 2**22 + 12345, False)[1:] == []  # a run that is gone: no line


def test_new_snapshots_alone_repaint_at_most_8_times_a_second(studio, monkeypatch):
    """A run's snapshots come once a step (up to hundreds a second on a tiny model); with nobody
    touching the window the studio repaints for them at most every SNAPSHOT_REDRAW_S."""
    import time

    from app.studio import SNAPSHOT_REDRAW_S
    from app.tabs import training

    st = studio.st
    studio.switch(1)
    studio.pump(2)
    monkeypatch.setattr(training, "draw", lambda *a: None)  # the tab draws nothing of them
    monkeypatch.setattr(training, "draw_view", lambda *a: True)
    monkeypatch.setattr(st, "poll", lambda: None)  # no trainer here to replace our snapshots
    studio.frame_ms.clear()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        st.snapshot = object()  # a new snapshot every frame, nothing else changes
        studio.step()
        time.sleep(0.002)
    drawn = len(studio.frame_ms)
    assert 1 / SNAPSHOT_REDRAW_S - 4 <= drawn <= 1 / SNAPSHOT_REDRAW_S + 2, drawn
    # minimized (nothing on screen): no repaint for snapshots at all, input still repaints
    monkeypatch.setattr(pygame.display, "get_active", lambda: False)
    studio.frame_ms.clear()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        st.snapshot = object()
        studio.step()
        time.sleep(0.002)
    assert len(studio.frame_ms) == 0
    pygame.event.post(
        pygame.event.Event(pygame.MOUSEMOTION, pos=(5, 5), rel=(1, 1), buttons=(0, 0, 0))
    )
    studio.step()
    assert len(studio.frame_ms) == 1


def test_a_new_snapshot_alone_repaints_the_main_area_only(studio, monkeypatch):
    """Repaints for new snapshots alone draw the Training tab's main area (draw_view) and keep
    the panel as the last full frame drew it, its labels and widgets still known to the UI; a
    full frame comes at least every FULL_REDRAW_S, and at once on input or while a dialog is
    open."""
    import time

    from app.studio import FULL_REDRAW_S
    from app.tabs import training

    st = studio.st
    studio.switch(1)
    studio.pump(2)
    calls = {"full": 0, "view": 0}

    def draw(ui, st, main, panel):
        calls["full"] += 1
        ui.label((panel.x + 10, panel.y + 10), "panel text")
        ui.button((panel.x + 10, panel.y + 40, 100, 30), "Panel button")
        ui.label((main.x + 10, main.y + 10), "old view text")

    def draw_view(ui, st, main):
        if st.tab("training").dialog is not None:
            return False
        calls["view"] += 1
        ui.label((main.x + 10, main.y + 10), "view text")
        return True

    monkeypatch.setattr(training, "draw", draw)
    monkeypatch.setattr(training, "draw_view", draw_view)
    monkeypatch.setattr(st, "poll", lambda: None)
    studio.step()  # input pending from the switch: full frames first
    studio.step()
    studio.view_frames = calls["view"] = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.2 * FULL_REDRAW_S:
        st.snapshot = object()
        studio.step()
        time.sleep(0.002)
    assert calls["view"] >= 8 and 2 <= calls["full"] <= 6, calls
    assert studio.view_frames == calls["view"]
    studio._full_at = time.monotonic()  # a full frame just now: the next snapshot is view-only
    studio._drawn_at = 0.0
    st.snapshot = object()
    views = calls["view"]
    studio.step()
    assert calls["view"] == views + 1
    ui = studio.ui
    assert "panel text" in ui.texts and "view text" in ui.texts
    assert "old view text" not in ui.texts
    assert any(k.endswith("Panel button") for k in ui.drawn)
    # a dialog open over the tab: full frames only
    st.tab("training").dialog = "clear"
    monkeypatch.setattr(training, "dialog", lambda *a: None)
    before = dict(calls)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        st.snapshot = object()
        studio.step()
        time.sleep(0.002)
    assert calls["view"] == before["view"] and calls["full"] > before["full"]
    st.tab("training").dialog = None
