"""Training tab: the selected model's settings, queue and run controls (right panel), and the live
training view (main area): progress, the 12 kissing spheres, metrics, loss chart and log.

What it shows of a run comes from the trainer's snapshot (this process's trainer, or the progress
a headless run publishes beside the model, shown read-only); nothing here is invented.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pygame

from cllm.cli.common import duration
from cllm.engine.config import format_count
from cllm.models import rules

from .. import dialogs
from .. import theme as th
from ..figures import figures
from ..filebrowser import FileBrowser
from ..selector import panel_selector
from ..state import AppState
from ..tabstate import Refusal, TrainingState
from ..ui import UI, plural
from . import advanced, queue_panel

PANEL_CONTENT_H = 820  # about the panel's content height; measured after the first frame
SLIDER_H = 34
REFUSED_S = 6.0
RUN_STATES = ("idle", "running", "paused")


def wants_frame(st: AppState) -> bool:
    """Nothing here moves by itself: the studio repaints on input, finished jobs and new
    training snapshots, so unchanged frames need not be drawn."""
    return False


def draw(ui: UI, st: AppState, main: pygame.Rect, panel: pygame.Rect) -> None:
    s = st.tab("training")
    with ui.scope("training"):
        view(ui, st, main)
        control_panel(ui, st, panel, s)
        dialog(ui, st, s)


def draw_view(ui: UI, st: AppState, main: pygame.Rect) -> bool:
    """The main area alone, for a repaint that only a new training snapshot asks for (the
    studio keeps the panel as it was). False, drawing nothing, while a dialog is open."""
    s = st.tab("training")
    if s.dialog is not None:
        return False
    ui.surface.fill(th.BG, main)
    with ui.scope("training"):
        view(ui, st, main)
    return True


# ---------------------------------------------------------------------------- model state
def remote_run(st: AppState):
    """A headless run of the current model (another process), or None."""
    snap = st.remote
    if snap is not None and not st.training_current and snap.state in RUN_STATES:
        return snap
    return None


def is_training(st: AppState) -> bool:
    return st.training_current or remote_run(st) is not None


def _settings_of(info) -> dict:
    return {
        "batch_size": info.train.batch_size,
        "seq_len": info.train.seq_len,
        "target_epochs": info.meta.target_epochs,
        "learning_rate": info.train.learning_rate,
        "layers": info.config.n_layer,
    }


def _sync(ui: UI, st: AppState, s: TrainingState, info) -> dict:
    """The sliders' values: the model's saved settings, re-read when the listing changes
    (never while a slider is being dragged)."""
    stamp = (info.name, st.version)
    dragging = ui.dragging_any("sl:")
    if s.stamp != stamp and not dragging:
        s.stamp, s.set = stamp, _settings_of(info)
    return s.set


# ---------------------------------------------------------------------------- right panel
FOOTER_H = 240  # STATUS and ACTIONS (until measured): pinned to the panel's bottom when the
# rest must scroll
FOOTER_GAP, FOOTER_MARGIN = 6, 6  # above the pinned footer, and below it


def control_panel(ui: UI, st: AppState, panel: pygame.Rect, s: TrainingState) -> None:
    """Model, configuration, info and data scroll when the window is short; STATUS and the
    ACTIONS (START TRAINING) stay pinned at the bottom, always in reach."""
    content_h = s.panel_h or PANEL_CONTENT_H
    footer_h = s.footer_h or FOOTER_H
    pinned = panel.h < content_h + footer_h
    # pinned: the footer sits FOOTER_GAP below the body and keeps a margin at the window's edge
    body_h = panel.h - footer_h - FOOTER_GAP - FOOTER_MARGIN
    body = pygame.Rect(panel.x, panel.y, panel.w, body_h) if pinned else panel
    scrolling = body.h < content_h
    off = ui.scroll_offset("training-panel") if scrolling else 0
    x, w = panel.x + 10, panel.w - 20 - (10 if scrolling else 0)
    info = st.info()
    s.panel_scrolls = scrolling
    with ui.clip(body):
        y = body.y - off
        panel_selector(ui, st, pygame.Rect(panel.x, y, w + 20, panel.h))
        y += 70
        top, y = y, configuration(ui, st, s, info, x, y, w)
        locked = is_training(st) or st.is_busy()
        y = advanced.advanced_section(ui, st, s, info, x, y, w, top, locked)
        y = model_info(ui, st, info, x, y, w)
        y = training_data(ui, st, s, info, x, y, w)
    s.panel_h = y + off - body.y  # measured, so the scroll range fits what was drawn
    if scrolling:
        ui.scroll(body, "training-panel", content_h, fade=th.PANEL)
    if pinned:
        y = body.bottom + FOOTER_GAP
        pygame.draw.line(
            ui.surface, th.METRIC_BORDER, (panel.x, body.bottom), (panel.right, body.bottom)
        )
    w = panel.w - 20
    with ui.clip(panel):
        top = y
        y = status(ui, st, x, y)
        y = actions(ui, st, s, info, x, y, w)
    s.footer_h = y - top  # measured: the pinned footer holds all of it next frame


BATCH_SNAPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
SEQ_SNAPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)


def _refuse(s: TrainingState, ui: UI, key: str, msg: str) -> None:
    """Remember why `key`'s control refused a value: shown under that control for a while."""
    s.refused = Refusal(key, msg, ui.now + REFUSED_S)


def refusal(ui: UI, s: TrainingState, key: str) -> str | None:
    r = s.refused
    return r.message if r is not None and r.key == key and r.until > ui.now else None


def epochs_refusal(trained: int) -> str:
    done = plural(trained, "epoch")
    return f"Epochs can't go below {trained}: the model has already trained {done}."


def seq_refusal(ctx: int) -> str:
    return f"Sequence length can't be longer than the model's context of {ctx} tokens."


LAYERS_REFUSAL = "Layers can only be added: removing one would throw away what it learned."


def _message_under(ui: UI, msg: str, x: int, y: int, w: int) -> int:
    """A refusal as wrapped sentences under its control; returns the height used."""
    lines = ui.wrap(msg, w)
    for i, line in enumerate(lines):
        ui.label((x, y + 16 * i), line, th.ERROR)
    return 16 * len(lines) + 4


def configuration(ui: UI, st: AppState, s: TrainingState, info, x: int, y: int, w: int) -> int:
    ui.section((x, y), "CONFIGURATION")
    y += 20
    if info is None:
        ui.label((x, y), "No model selected", th.DIM)
        return y + 5 * (SLIDER_H + 6) + 18
    vals = _sync(ui, st, s, info)
    locked = is_training(st) or st.is_busy()
    trained = info.meta.epochs_trained
    ctx, layers = info.config.block_size, info.config.n_layer
    y = presets_row(ui, st, s, info, vals, x, y, w, enabled=not locked)
    refusing: dict[str, str] = {}  # this frame's refusals: a release on one saves nothing

    def clamp_by(key: str, ok, bound: float, msg: str):
        def clamp(v: float) -> float:
            if ok(v):
                return v
            refusing[key] = msg
            _refuse(s, ui, key, msg)
            return float(bound)

        return clamp

    seq = clamp_by("seq_len", lambda v: round(v) <= ctx, ctx, seq_refusal(ctx))
    epochs = clamp_by(
        "target_epochs", lambda v: round(v) >= trained, trained, epochs_refusal(trained)
    )
    top_epochs = max(100, trained + 50, vals["target_epochs"])
    sliders = [  # label, setting, the original's range (wider if the model's value is), clamp
        ("Batch Size", "batch_size", 1, max(16, vals["batch_size"]), None, BATCH_SNAPS),
        ("Sequence Length", "seq_len", min(32, ctx), max(512, vals["seq_len"]), seq, SEQ_SNAPS),
        ("Epochs (target)", "target_epochs", 1, top_epochs, epochs, None),
        ("Learning Rate", "learning_rate", 1e-5, 1e-1, None, None),
    ]
    for label, key, lo, hi, clamp, snaps in sliders:
        log = key == "learning_rate"
        v, done = ui.slider(
            (x, y, w, SLIDER_H),
            label,
            vals[key],
            lo,
            hi,
            log=log,
            integer=not log,
            fmt="{:.2e}" if log else "{:.0f}",
            enabled=not locked,
            clamp=clamp,
            snaps=snaps,
            key="sl:" + key,
            wheel="focused" if s.panel_scrolls else True,
        )
        if done and key in refusing:
            s.stamp = None  # springs back to the saved value; nothing is saved
        elif done and v != vals[key]:
            commit(ui, st, s, info, key, v)
        y += SLIDER_H + 6
        msg = refusal(ui, s, key)
        if msg and not locked:
            y += _message_under(ui, msg, x, y - 2, w)
    y = layers_stepper(ui, s, layers, x, y, w, enabled=not locked)
    if locked:
        why = "Settings are locked while the model trains" if is_training(st) else "Working..."
        for part in ui.wrap(why, w):
            ui.label((x, y), part, th.HINT)
            y += 17
    return y + 9


def layers_stepper(
    ui: UI, s: TrainingState, layers: int, x: int, y: int, w: int, *, enabled: bool
) -> int:
    """Layers, one at a time: [-] explains that layers are never removed; [+] asks to grow by
    one (the confirmation says what growing does)."""
    ui.label((x, y + 5), "Layers", th.TEXT if enabled else th.DIM)
    bw = 30
    ui.label(
        (x + w - 2 * bw - 14, y + 5),
        str(layers),
        th.SELECTED if enabled else th.DIM,
        align="right",
    )
    if ui.button((x + w - 2 * bw - 6, y, bw, 24), "-", key="layers-", enabled=enabled):
        _refuse(s, ui, "layers", LAYERS_REFUSAL)
    if ui.button((x + w - bw, y, bw, 24), "+", key="layers+", enabled=enabled):
        s.dialog, s.grow_to = "grow", layers + 1
    y += 30
    msg = refusal(ui, s, "layers")
    if msg and enabled:
        y += _message_under(ui, msg, x, y - 2, w)
    return y


def matching_preset(presets: TrainingState[str, dict], vals: TrainingState) -> str | None:
    """The preset whose batch size, sequence length and learning rate the model has now."""
    for name, p in presets.items():
        keys = [k for k in ("batch_size", "seq_len", "learning_rate") if k in p]
        if keys and all(math.isclose(float(p[k]), float(vals[k]), rel_tol=1e-6) for k in keys):
            return name
    return None


def _presets(st: AppState, s: TrainingState) -> dict[str, dict]:
    """Built-in and user presets, read by the worker when the models folder changes."""
    if s.presets_stamp != st.version and not s.presets_loading:
        s.presets_loading = True

        def done(p: dict) -> None:
            s.presets, s.presets_stamp, s.presets_loading = p, st.version, False

        def error(err: BaseException) -> None:
            s.presets_stamp, s.presets_loading = st.version, False
            st.fail(err)

        st.worker.submit(st.registry.presets, done=done, error=error)
    return s.presets or {}


def presets_row(
    ui: UI,
    st: AppState,
    s: TrainingState,
    info,
    vals: TrainingState,
    x: int,
    y: int,
    w: int,
    *,
    enabled: bool,
) -> int:
    """Training presets (built-in quick, balanced, thorough and the user's own) fill the
    settings; Save as preset... keeps the current ones under a name."""
    presets = _presets(st, s)
    chosen = matching_preset(presets, vals)
    names = list(presets)
    per_row = 3
    bw = (w - (per_row - 1) * 6) // per_row
    for i, name in enumerate(names):
        r = (x + (i % per_row) * (bw + 6), y + (i // per_row) * 28, bw, 24)
        if ui.choice(r, name, name == chosen, key="preset:" + name, enabled=enabled):
            apply_preset(st, s, info, name, presets[name])
    y += 28 * ((len(names) + per_row - 1) // per_row)
    if ui.button((x, y, w, 24), "Save as preset...", key="save-preset", enabled=enabled):
        s.dialog, s.preset_name = "save-preset", ""
    return y + 32


def apply_preset(st: AppState, s: TrainingState, info, name: str, preset: dict) -> None:
    trained = info.meta.epochs_trained
    target = max(int(preset.get("target_epochs", trained)), trained)
    kept = (
        " (epochs target kept at those already trained)"
        if target > int(preset.get("target_epochs", 0))
        else ""
    )
    st.run(
        "settings",
        info.name,
        st.registry.set_settings,
        info.name,
        preset=name,
        target_epochs=target,
        done=lambda i: (st.update_info(i), st.say(f"Applied preset {name}{kept}", "success")),
        refresh=False,
    )


def commit(ui: UI, st: AppState, s: TrainingState, info, key: str, v: float) -> None:
    """Save a changed setting to the model (in the background)."""
    value = v if key == "learning_rate" else int(round(v))
    s.set[key] = value  # shown at once; the saved info replaces it when it lands
    st.run(
        "settings",
        info.name,
        st.registry.set_settings,
        info.name,
        done=st.update_info,
        refresh=False,
        **{key: value},
    )


def model_info(ui: UI, st: AppState, info, x: int, y: int, w: int) -> int:
    ui.section((x, y), "MODEL INFO")
    y += 20
    if info is None:
        ui.label((x, y), "-", th.DIM)
        return y + 5 * 17 + 8
    c, f = info.config, figures(st)
    lines = [
        f"Epochs trained: {f.epochs_trained} / {f.target_epochs}   Steps: {f.step:,}",
        f"Queue: {plural(info.queue_items, 'file')}, {info.queue_tokens:,} tokens"
        + (f"; {held_out(info)}" if info.queue_held_out else ""),
        f"Layers {c.n_layer} · Heads {c.n_head} · Width {c.n_embd}",
        f"Vocab {c.vocab_size:,} · Context {c.block_size} · {format_count(info.n_params)} params",
        f"Loss: train {_loss(f.train_loss)} · best val {_loss(f.best_loss)}",
    ]
    for line in lines:
        for part in ui.wrap(line, w):  # wrapped, not cut, in a narrow panel
            ui.label((x, y), part, th.TEXT)
            y += 17
    return y + 8


def held_out(info) -> str:
    """How much of the queue is held out for validation: "2 held out, 12% of tokens"."""
    share = 100 * info.queue_held_out_tokens / info.queue_tokens if info.queue_tokens else 0.0
    pct = "<1" if 0 < share < 0.5 else f"{share:.0f}"
    return f"{info.queue_held_out} held out, {pct}% of tokens"


def training_data(ui: UI, st: AppState, s: TrainingState, info, x: int, y: int, w: int) -> int:
    return queue_panel.draw(ui, st, s, info, x, y, w, lambda m, t: browse(st, s, m, t))


def browse(st: AppState, s: TrainingState, mode: str, title: str) -> None:
    s.dialog = "browser"
    s.browser = FileBrowser(st.worker, mode, title, s.browse_dir or Path.cwd(), hold_out=False)


def status(ui: UI, st: AppState, x: int, y: int) -> int:
    ui.section((x, y), "STATUS")
    y += 20
    snap = st.snapshot
    if is_training(st) and snap is not None and snap.state == "paused":
        ui.label((x, y), "* Paused", th.WARNING)
    elif is_training(st):
        ui.label(
            (x, y), "* Training..." + (" (headless run)" if remote_run(st) else ""), th.WARNING
        )
    elif st.busy:
        ui.label((x, y), f"* {st.busy[-1].what.capitalize()}...", th.WARNING)
    else:
        ui.label((x, y), "* Ready", th.SUCCESS)
    y += 18
    if st.loaded:
        ui.label((x, y), "Model: Loaded", th.SUCCESS)
    elif st.loading:
        ui.label((x, y), "Model: Loading...", th.WARNING)
    else:
        ui.label((x, y), "Model: Not Loaded", th.ERROR)
    return y + 24


def actions(ui: UI, st: AppState, s: TrainingState, info, x: int, y: int, w: int) -> int:
    ui.section((x, y), "ACTIONS")
    y += 20
    mine = st.training_current
    other = st.training and not mine
    remote = remote_run(st) is not None
    if mine:
        stopping = s.stopping == st.trainer
        if ui.button(
            (x, y, w, 35),
            "STOPPING..." if stopping else "STOP TRAINING",
            key="train",
            fill=th.TRAIN_RUNNING,
            text=th.WHITE,
            border=th.WHITE,
            enabled=not stopping,
        ):
            s.stopping = st.trainer
            st.stop_training()
    else:
        ok = info is not None and not other and not remote and not st.is_busy()
        if ui.button(
            (x, y, w, 35),
            "START TRAINING",
            key="train",
            fill=th.TRAIN_IDLE,
            text=th.WHITE,
            border=th.WHITE,
            enabled=ok,
        ):
            st.start_training(info.name)
    y += 43
    y = advanced.cost_line(ui, st, s, info, x, y, w)
    half = (w - 8) // 2
    snap = st.snapshot
    paused = mine and snap is not None and snap.state == "paused"
    if ui.button((x, y, half, 26), "RESUME" if paused else "PAUSE", key="pause", enabled=mine):
        (st.trainer.resume if paused else st.trainer.pause)()
    crawling = st.crawler is not None
    if ui.button(
        (x + half + 8, y, half, 26),
        "STOP CRAWLER" if crawling else "START CRAWLER",
        key="crawl",
        fill=th.CRAWL_RUNNING if crawling else th.CRAWL_IDLE,
        text=th.WHITE,
        border=th.WHITE,
        enabled=info is not None and not st.crawl_starting,
    ):
        st.stop_crawl() if crawling else st.start_crawl(info.name)
    y += 34
    can_save = (
        info is not None
        and st.lm is not None
        and st.lm_name == info.name
        and not is_training(st)
        and not st.is_busy()
    )
    if ui.button((x, y, half, 26), "Save", enabled=can_save):
        st.run(
            "save",
            info.name,
            st.registry.save,
            st.lm,
            done=lambda _: st.say(f"Saved {info.name}", "success"),
        )
    if ui.button((x + half + 8, y, half, 26), "Load", enabled=info is not None and not st.loading):
        st.load(info.name)
    return y + 28


# ---------------------------------------------------------------------------- dialogs
def dialog(ui: UI, st: AppState, s: TrainingState) -> None:
    kind = s.dialog
    info = st.info()
    if kind is None:
        return
    if info is None:
        s.dialog = None
        return
    if kind == "browser":
        paths = s.browser.draw(ui)
        if paths is not None:
            s.browse_dir = s.browser.cwd
            s.dialog = None
            if paths:
                st.add_to_queue([str(p) for p in paths], info.name, bool(s.browser.hold_out))
    elif kind == "clear":
        ok = dialogs.confirm(
            ui,
            f"Remove all {info.queue_items} items from {info.name}'s queue?"
            " The files on disk are not touched.",
            title="Clear Queue",
            ok="Clear",
            danger=True,
        )
        if ok is not None:
            s.dialog = None
        if ok:
            name = info.name

            def clear() -> None:
                with st.registry.queue(name) as q:
                    q.clear()

            st.run(
                "queue", name, clear, done=lambda _: st.say(f"Cleared {name}'s queue", "success")
            )
    elif kind == "import":
        others = [m.name for m in st.models if m.name != info.name]
        choice = dialogs.pick(ui, f"Copy another model's queue into {info.name}'s", others)
        if choice is not None:
            s.dialog = None
        if isinstance(choice, str):
            name = info.name

            def imp(other: str = choice):
                with st.registry.queue(name) as q, st.registry.queue(other) as src:
                    return q.import_from(src)

            st.run(
                "queue",
                name,
                imp,
                done=lambda r: st.say(
                    f"Imported {len(r.added)} items ({r.tokens:,} tokens) from {choice}", "success"
                ),
            )
    elif kind == "save-preset":
        save_preset_dialog(ui, st, s, info)
    elif kind == "grow":
        n = s.grow_to or info.config.n_layer
        ok = dialogs.confirm(
            ui,
            f"Grow {info.name} from {info.config.n_layer} to {n} layers? "
            "The new blocks start as the identity, so the model's outputs are "
            "unchanged until it trains again. Layers can never be removed.",
            title="Grow Layers",
            ok="Grow",
        )
        if ok is not None:
            s.dialog = None
            s.stamp = None  # back to the saved value if refused
        if ok:
            st.run(
                "grow",
                info.name,
                st.registry.grow,
                info.name,
                n,
                done=lambda i: st.say(f"{i.name} now has {i.config.n_layer} layers", "success"),
            )


def save_preset_dialog(ui: UI, st: AppState, s: TrainingState, info) -> None:
    presets = _presets(st, s)

    def problem(name: str) -> str | None:
        if not name.strip():
            return "Give the preset a name."
        try:
            rules.validate_name(name)
        except rules.ValidationError as err:
            return str(err)
        if name in ("quick", "balanced", "thorough"):
            return f"{name} is a built-in preset: choose another name."
        return None

    text, ok = dialogs.prompt(
        ui,
        "Save as preset",
        "Name for the current batch size, sequence length, rate and epochs:",
        s.preset_name,
        validate=problem,
        ok="Save",
    )
    s.preset_name = text
    if ok is not None:
        s.dialog = None
    if ok:
        v = _settings_of(info)
        replaced = " (replaced)" if text in presets else ""
        s.presets_stamp = None

        def saved(_: dict) -> None:
            s.presets_stamp = None  # list them again
            st.say(f"Saved preset {text}{replaced}", "success")

        st.run(
            "preset",
            info.name,
            st.registry.save_preset,
            text,
            batch_size=v["batch_size"],
            seq_len=v["seq_len"],
            learning_rate=v["learning_rate"],
            target_epochs=v["target_epochs"],
            done=saved,
        )


# ---------------------------------------------------------------------------- main view
_hms = duration  # elapsed and remaining, as the command line shows them


def _loss(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def view(ui: UI, st: AppState, main: pygame.Rect) -> None:
    v = main.inflate(-20, -20)
    ui.rect(v, th.VIEW_BG, th.VIEW_BORDER)
    x, y, w = v.x + 15, v.y + 12, v.w - 30
    ui.label((x, y), "TRAINING VISUALIZATION", th.TEXT)
    snap = st.snapshot
    lm = st.lm if st.lm is not None and st.lm_name == st.current else None
    history = snap.history if snap is not None else (getattr(lm, "history", None) or {})
    if snap is None and not len(history.get("steps", ())):
        idle_instructions(ui, st, x, y + 26)
        return
    f = figures(st)
    epochs = f"Epochs trained: {f.epochs_trained} / {f.target_epochs}"
    if f.in_progress is not None:
        epochs += f" (epoch {f.in_progress} in progress)"
    e_parts = [
        epochs,
        f"Train loss: {_loss(f.train_loss)}",
        f"Val loss: {_loss(f.val_loss)}",
        f"Best val: {_loss(f.best_loss)}",
    ]
    frac = f.run_done / f.run_total if f.run_total else 0.0
    if snap is not None:
        bpe = max(1, f.batches_per_epoch)
        eta_clock = (
            time.strftime("%H:%M", time.localtime(time.time() + f.remaining))
            if f.remaining is not None
            else "--"
        )
        b_parts = [
            f"This epoch: batch {f.batch:,} / {f.batches_per_epoch:,} ({100 * f.batch / bpe:.0f}%)",
            f"Speed: {snap.tokens_per_s:,.0f} tokens/s",
            f"Elapsed: {_hms(f.elapsed)}",
            f"Remaining: {_hms(f.remaining)} (done at {eta_clock})",
        ]
        state = {"idle": "starting", "running": "training", "paused": "paused"}.get(
            snap.state, snap.state
        )
        if remote_run(st) is not None:
            state += f" (headless run, pid {snap.pid}: read-only)"
        if snap.resumed_from:
            state += f" · {snap.resumed_from}"
    else:
        b_parts, state = ["No training in progress"], "idle"
    ui.label(
        (x + w, y),
        state,
        th.WARNING if snap is not None and snap.state in RUN_STATES else th.HINT,
        align="right",
        max_w=w - 260,
    )
    e_lines = ui.flow(e_parts, "  |  ", w)[:2]  # a narrow window: two lines, nothing cut
    for i, line in enumerate(e_lines):
        ui.label((x, y + 24 + 18 * i), line, th.TEXT, max_w=w)
    y += 18 * (len(e_lines) - 1)
    b_lines = ui.flow(b_parts, "     ", w)
    for i, part in enumerate(b_lines[:2]):
        ui.label((x, y + 44 + 18 * i), part, th.HINT, max_w=w)
    y += 18 * (len(b_lines[:2]) - 1)
    bar_text = (
        f"Whole run: {100 * frac:.1f}% (step {f.run_done:,} of {f.run_total:,})" if snap else None
    )
    ui.progress((x, y + 66, w, 30), frac, text=bar_text)
    top = y + 108
    bottom = v.bottom - 12
    avail = bottom - top
    if avail >= 560:
        sph_h = max(200, int(avail * 0.5))
        chart_h = max(120, int(avail * 0.28))
    else:  # a short window: the spheres and the chart share it, the log pane gives way
        chart_h = max(110, int(avail * 0.3))
        sph_h = max(160, avail - chart_h - 10)
    left_w = int(w * 0.5)
    spheres(ui, snap, pygame.Rect(x, top, left_w - 6, sph_h))
    metrics(ui, st, snap, pygame.Rect(x + left_w + 6, top, w - left_w - 6, sph_h))
    cy = top + sph_h + 10
    steps = history.get("steps", ())
    ui.chart(
        (x, cy, w, chart_h),
        [
            ("train", steps, history.get("train", ()), th.ACCENT),
            ("validation", steps, history.get("val", ()), th.VAL_LINE),
        ],
        title="LOSS PER STEP",
    )
    ly = cy + chart_h + 10
    log_pane(ui, snap, pygame.Rect(x, ly, w, bottom - ly))


def idle_instructions(ui: UI, st: AppState, x: int, y: int) -> None:
    ui.label((x, y), "No training in progress", th.TEXT)
    lines = [
        "1. Select a model in the panel (or create one in the Models tab)",
        "2. Add training data: Add Files..., Add Folder..., or drop files onto the window",
        "3. Set the configuration, then click START TRAINING",
        "",
        "Or use START CRAWLER to crawl web pages into the model's queue and train on them",
    ]
    for i, line in enumerate(lines):
        ui.label((x, y + 26 + 18 * i), line, th.TEXT)


def sphere_layout(
    area: pygame.Rect,
) -> tuple[tuple[int, int], float, float, list[tuple[float, float]]]:
    """Centre, ring radius min(w, h)/3, sphere radius ring/5, and the 12 centres: sphere i at
    i*30 degrees clockwise from 12 o'clock."""
    ring = min(area.w, area.h) / 3
    cx, cy = area.center
    centres = [
        (cx + ring * math.sin(math.radians(30 * i)), cy - ring * math.cos(math.radians(30 * i)))
        for i in range(12)
    ]
    return (cx, cy), ring, ring / 5, centres


def first_loss(snap) -> float | None:
    """The training loss of the first batch in the run's history (the model's first batch
    when the history reaches back that far): the baseline the spheres' colour is measured from."""
    train = (getattr(snap, "history", None) or {}).get("train", ())
    for v in train:
        if v is not None and math.isfinite(float(v)) and float(v) > 0:
            return float(v)
    return None


def sphere_activity(snap) -> list[float]:
    """Per sphere, how far its shard's loss in the latest batch has fallen below the first
    batch's loss: 1 - loss / first loss, from 0 (no better than at the start) towards 1. It
    moves from the first steps on, for small models too (a share of tokens predicted stays
    near 0 for a whole run of a tiny model)."""
    sp = list(getattr(snap, "spheres", ()) or ())
    base = first_loss(snap)
    out = []
    for i in range(12):
        loss = sp[i].get("loss") if i < len(sp) else None
        if base is None or loss is None or not math.isfinite(float(loss)):
            out.append(0.0)
        else:
            out.append(min(1.0, max(0.0, 1.0 - float(loss) / base)))
    return out


SPHERE_CAPTION = "Node Zero + 12 shards of each batch · outside: tokens predicted right"


def spheres(ui: UI, snap, r: pygame.Rect) -> None:
    ui.rect(r, th.METRIC_BG, th.METRIC_BORDER)
    ui.label((r.x + 8, r.y + 6), "KISSING SPHERES", th.ACCENT)
    sub = ui.wrap(SPHERE_CAPTION, r.w - 16)[:3]
    for i, part in enumerate(sub):
        ui.label((r.x + 8, r.y + 24 + 16 * i), part, th.HINT)
    top = 42 + 16 * (len(sub) - 1)
    act = sphere_activity(snap)
    # the strip: counts on the left, the colour legend beside them or on a row of its own
    legend = [("colour: loss below the first batch's", None)]
    legend += [(f"<{lim:.0%}", c) for lim, c in th.SPHERE_LEVELS]
    legend.append(("90%+", th.SPHERE_HOT))
    widths = [ui.text_size(label)[0] + (18 if c else 12) for label, c in legend]
    gn = getattr(snap, "grad_norm", None)
    lines = [
        f"Active Spheres: {sum(a >= 0.01 for a in act)} / 12",
        f"Total Batches: {getattr(snap, 'step', 0):,}",
        "Gradient Norm: " + ("-" if gn is None else f"{gn:.4f}"),
    ]
    text_w = max(ui.text_size(line)[0] for line in lines)
    beside = sum(widths) <= r.w - 12 - text_w - 24
    two_rows = not beside and sum(widths) > r.w - 28  # the title above the colour dots
    strip_h = 66 if beside else 86 + (17 if two_rows else 0)
    area = pygame.Rect(r.x, r.y + top, r.w, r.h - top - strip_h)
    (cx, cy), ring, rad, centres = sphere_layout(area)
    sp = list(getattr(snap, "spheres", ()) or ())
    surf = ui.surface
    for px, py in centres:
        pygame.draw.line(surf, th.GRID, (cx, cy), (px, py), 1)
    pygame.draw.circle(surf, (200, 160, 80), (cx, cy), max(6, rad * 0.7))
    pygame.draw.circle(surf, th.TEXT, (cx, cy), max(6, rad * 0.7), 1)
    for i, (px, py) in enumerate(centres):
        color = th.sphere_color(act[i])
        pygame.draw.circle(surf, color, (px, py), rad)
        pygame.draw.circle(surf, th.TEXT, (px, py), rad, 1)
        if rad >= 9:  # the index fits inside the sphere
            ui.label((px, py - ui.line_h // 2), str(i), th.WHITE, align="center")
        if rad < 14:  # too small for counts outside the spheres: they would overlap
            continue
        hits = int(sp[i].get("hits", 0)) if i < len(sp) else 0
        text = format_count(hits)
        tw, lh = ui.text_size(text)
        a = math.radians(30 * i)
        sin, cos = math.sin(a), math.cos(a)
        # just outside the sphere, pushed out by half the label's extent along the spoke
        tx = cx + (ring + rad + 6 + tw / 2 * abs(sin)) * sin
        ty = cy - (ring + rad + 4 + lh / 2 * abs(cos)) * cos
        ui.label((tx, ty - lh // 2), text, th.HINT, align="center")
    strip = pygame.Rect(r.x + 6, r.bottom - strip_h, r.w - 12, strip_h - 6)
    ui.rect(strip, th.VIEW_BG, th.METRIC_BORDER)
    for i, line in enumerate(lines):
        ui.label((strip.x + 8, strip.y + 5 + 17 * i), line, th.TEXT)
    if beside:
        lx, ly = strip.right - 8 - sum(widths), strip.y + 22
    else:
        lx, ly = strip.x + 8, strip.y + 5 + 17 * 3 + 2
    for (label, color), lw in zip(legend, widths, strict=True):
        if color is None and two_rows:
            ui.label((lx, ly), label, th.HINT)
            ly += 17
            continue
        if color is not None:
            pygame.draw.circle(surf, color, (lx + 6, ly + ui.line_h // 2), 5)
            pygame.draw.circle(surf, th.DIM, (lx + 6, ly + ui.line_h // 2), 5, 1)
            ui.label((lx + 14, ly), label, th.HINT)
        else:
            ui.label((lx, ly), label, th.HINT)
        lx += lw


def metrics(ui: UI, st: AppState, snap, r: pygame.Rect) -> None:
    ui.rect(r, th.METRIC_BG, th.METRIC_BORDER)
    x, y = r.x + 10, r.y + 6
    ui.label((x, y), "METRICS", th.ACCENT)
    y += 22
    if snap is None:
        ui.label((x, y), "No run: these fill in while the model trains", th.HINT, max_w=r.w - 20)
        return
    sp = list(snap.spheres or ())
    losses = [d.get("loss") for d in sp if d.get("loss") is not None]
    rates = [d.get("hit_rate", 0.0) for d in sp]
    rows = [
        ("Step (lifetime)", f"{snap.step:,}"),
        ("Run progress", f"{snap.run_steps:,} / {snap.total_steps:,} steps"),
        ("Since (re)start", f"{getattr(snap, 'session_steps', 0):,} steps"),
        ("Learning rate", f"{snap.lr:.2e}"),
        ("Train loss", _loss(snap.train_loss)),
        ("Validation loss", _loss(snap.val_loss)),
        ("Best val loss", _loss(snap.best_loss)),
        ("Gradient norm", "-" if snap.grad_norm is None else f"{snap.grad_norm:.4f}"),
        ("Tokens/s", f"{snap.tokens_per_s:,.0f}"),
        ("Tokens seen", f"{snap.tokens:,}"),
        ("Batch", f"{snap.batch_size} x {snap.seq_len} tokens"),
        (
            "Shard loss",
            f"{min(losses):.3f} / {sum(losses) / len(losses):.3f} / {max(losses):.3f}"
            if losses
            else "-",
        ),
        (
            "Shard hit rate",
            f"{min(rates):.0%} / {sum(rates) / len(rates):.0%} / {max(rates):.0%}"
            if rates
            else "-",
        ),
    ]
    col = x + min(150, r.w // 3)
    for label, value in rows:
        if y + 18 > r.bottom - 4:
            break
        ui.label((x, y), label, th.HINT)
        ui.label((col, y), value, th.TEXT, max_w=r.right - col - 8)
        y += 19
    if snap.message and y + 18 <= r.bottom - 4:
        ui.label((x, y + 4), snap.message, th.HINT, max_w=r.w - 20)


def log_pane(ui: UI, snap, r: pygame.Rect) -> None:
    if r.h < 40:
        return
    ui.rect(r, th.METRIC_BG, th.METRIC_BORDER)
    ui.label((r.x + 8, r.y + 6), "LOG", th.ACCENT)
    inner = pygame.Rect(r.x + 4, r.y + 26, r.w - 8, r.h - 30)
    lines = list(getattr(snap, "log", ()) or ())
    lh = 17
    off = ui.scroll(inner, "log", len(lines) * lh, step=lh * 3, stick_bottom=True)
    with ui.clip(inner):
        first = off // lh
        for i in range(first, min(len(lines), first + inner.h // lh + 2)):
            ui.label((inner.x + 4, inner.y + i * lh - off), lines[i], th.TEXT, max_w=inner.w - 20)
