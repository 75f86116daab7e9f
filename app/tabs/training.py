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
from cllm.engine.meta import ModelMeta
from cllm.models import rules

from .. import dialogs
from .. import theme as th
from ..filebrowser import FileBrowser
from ..selector import panel_selector
from ..state import AppState
from ..ui import UI, plural

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


def _sync(ui: UI, st: AppState, s: dict, info) -> dict:
    """The sliders' values: the model's saved settings, re-read when the listing changes
    (never while a slider is being dragged)."""
    stamp = (info.name, st.version)
    dragging = ui.active is not None and ui.active.startswith("training/sl:")
    if s.get("stamp") != stamp and not dragging:
        s["stamp"], s["set"] = stamp, _settings_of(info)
    return s["set"]


# ---------------------------------------------------------------------------- right panel
def control_panel(ui: UI, st: AppState, panel: pygame.Rect, s: dict) -> None:
    content_h = s.get("panel_h", PANEL_CONTENT_H)
    scrolling = panel.h < content_h
    off = ui.scroll_offset("training-panel") if scrolling else 0
    x, w = panel.x + 10, panel.w - 20 - (10 if scrolling else 0)
    info = st.info()
    with ui.clip(panel):
        y = panel.y - off
        panel_selector(ui, st, pygame.Rect(panel.x, y, w + 20, panel.h))
        y += 70
        y = configuration(ui, st, s, info, x, y, w)
        y = model_info(ui, st, info, x, y, w)
        y = training_data(ui, st, s, info, x, y, w)
        y = status(ui, st, x, y)
        y = actions(ui, st, s, info, x, y, w)
    s["panel_h"] = y + off - panel.y  # measured, so the scroll range fits what was drawn
    if scrolling:
        ui.scroll(panel, "training-panel", content_h)


def _refuse(s: dict, ui: UI, msg: str) -> None:
    s["refused"] = (msg, ui.now + REFUSED_S)


def configuration(ui: UI, st: AppState, s: dict, info, x: int, y: int, w: int) -> int:
    ui.section((x, y), "CONFIGURATION")
    y += 20
    if info is None:
        ui.label((x, y), "No model selected", th.DIM)
        return y + 5 * (SLIDER_H + 6) + 18
    vals = _sync(ui, st, s, info)
    locked = is_training(st) or st.is_busy()
    trained = info.meta.epochs_trained
    ctx, layers = info.config.block_size, info.config.n_layer

    def clamp_by(rule, bound: int):
        """Where rule(v) refuses v, clamp to bound and remember the rule's words."""

        def clamp(v: float) -> float:
            try:
                rule(int(round(v)))
                return v
            except rules.ValidationError as err:
                _refuse(s, ui, str(err))
                return float(bound)

        return clamp

    seq = clamp_by(lambda v: rules.validate_train_settings({"seq_len": v}, info.config), ctx)
    epochs = clamp_by(lambda v: rules.check_target_epochs(v, trained), trained)
    grow = clamp_by(lambda v: rules.check_layers(v, layers), layers)
    top_epochs = max(100, trained + 50, vals["target_epochs"])
    sliders = [  # label, setting, the original's range (wider if the model's value is), clamp
        ("Batch Size", "batch_size", 1, max(16, vals["batch_size"]), None),
        ("Sequence Length", "seq_len", min(32, ctx), max(512, vals["seq_len"]), seq),
        ("Epochs (target)", "target_epochs", 1, top_epochs, epochs),
        ("Learning Rate", "learning_rate", 1e-5, 1e-1, None),
        ("Layers", "layers", 1, max(24, layers + 8), grow),
    ]
    for label, key, lo, hi, clamp in sliders:
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
            key="sl:" + key,
        )
        if done and v != vals[key]:
            commit(ui, st, s, info, key, v)
        y += SLIDER_H + 6
    refused = s.get("refused")
    if locked:
        why = "Settings are locked while the model trains" if is_training(st) else "Working..."
        ui.label((x, y), why, th.HINT, max_w=w)
    elif refused and refused[1] > ui.now:
        lines = ui.wrap(refused[0], w)
        for i, line in enumerate(lines[:2]):
            ui.label((x, y + 16 * i - (8 if len(lines) > 1 else 0)), line, th.ERROR, max_w=w)
    return y + 26


def commit(ui: UI, st: AppState, s: dict, info, key: str, v: float) -> None:
    """Save a changed setting to the model (in the background); layers grow after a confirm."""
    value = v if key == "learning_rate" else int(round(v))
    if key == "layers":
        s["dialog"], s["grow_to"] = "grow", value
        return
    s["set"][key] = value  # shown at once; the saved info replaces it when it lands
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
    m, c = info.meta, info.config

    def loss(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = [
        f"Epochs: {m.epochs_trained} / {m.target_epochs}"
        f"   Steps: {m.steps:,}",
        f"Queue: {plural(info.queue_items, 'file')}, {info.queue_tokens:,} tokens",
        f"Layers {c.n_layer} · Heads {c.n_head} · Width {c.n_embd}",
        f"Vocab {c.vocab_size:,} · Context {c.block_size} · {format_count(info.n_params)} params",
        f"Loss: train {loss(m.last_loss)} · best val {loss(m.best_loss)}",
    ]
    for line in lines:
        ui.label((x, y), line, th.TEXT, max_w=w)
        y += 17
    return y + 8


def _queue_rows(st: AppState, s: dict, info) -> list[str] | None:
    """The queue's items, listed by the worker when the model or the folder changes."""
    if info is None:
        return []
    stamp = (info.name, st.version)
    if s.get("queue_stamp") != stamp and not s.get("queue_loading"):
        s["queue_loading"] = True
        name = info.name

        def items():
            with st.registry.queue(name) as q:
                return q.items()

        def done(result) -> None:
            rows = [f"{Path(it.source).name or it.source}  ({it.n_tokens:,} tok)" for it in result]
            s["queue_loading"], s["queue_stamp"], s["queue"] = False, stamp, rows

        def error(err) -> None:
            s["queue_loading"] = False
            s["queue_stamp"], s["queue"] = stamp, []
            st.fail(err)

        st.worker.submit(items, done=done, error=error)
    return s.get("queue") if s.get("queue_stamp", (None,))[0] == info.name else None


def training_data(ui: UI, st: AppState, s: dict, info, x: int, y: int, w: int) -> int:
    ui.section((x, y), "TRAINING DATA")
    y += 20
    rows = _queue_rows(st, s, info)
    empty = "Loading..." if rows is None else "Queue empty: add files or drop them here"
    ui.list_box((x, y, w, 80), "queue", rows or [], row_h=19, empty=empty)
    y += 86
    has = info is not None
    half = (w - 8) // 2
    if ui.button((x, y, half, 24), "Add Files...", enabled=has):
        browse(st, s, "files", f"Add files to {info.name}'s queue")
    if ui.button((x + half + 8, y, half, 24), "Add Folder...", enabled=has):
        browse(st, s, "folder", f"Add a folder to {info.name}'s queue")
    y += 30
    if ui.button((x, y, half, 24), "Clear Queue", enabled=has and bool(info.queue_items)):
        s["dialog"] = "clear"
    if ui.button((x + half + 8, y, half, 24), "Import From...", enabled=has and len(st.models) > 1):
        s["dialog"] = "import"
    return y + 34


def browse(st: AppState, s: dict, mode: str, title: str) -> None:
    s["dialog"] = "browser"
    s["browser"] = FileBrowser(st.worker, mode, title, s.get("browse_dir") or Path.cwd())


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
    return y + 26


def actions(ui: UI, st: AppState, s: dict, info, x: int, y: int, w: int) -> int:
    ui.section((x, y), "ACTIONS")
    y += 20
    mine = st.training_current
    other = st.training and not mine
    remote = remote_run(st) is not None
    if mine:
        stopping = s.get("stopping") == st.trainer
        if ui.button(
            (x, y, w, 35),
            "STOPPING..." if stopping else "STOP TRAINING",
            key="train",
            fill=th.TRAIN_RUNNING,
            text=th.WHITE,
            border=th.WHITE,
            enabled=not stopping,
        ):
            s["stopping"] = st.trainer
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
    return y + 34


# ---------------------------------------------------------------------------- dialogs
def dialog(ui: UI, st: AppState, s: dict) -> None:
    kind = s.get("dialog")
    info = st.info()
    if kind is None:
        return
    if info is None:
        s["dialog"] = None
        return
    if kind == "browser":
        paths = s["browser"].draw(ui)
        if paths is not None:
            s["browse_dir"] = s["browser"].cwd
            s["dialog"] = None
            if paths:
                st.add_to_queue([str(p) for p in paths], info.name)
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
            s["dialog"] = None
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
            s["dialog"] = None
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
    elif kind == "grow":
        n = s.get("grow_to", info.config.n_layer)
        ok = dialogs.confirm(
            ui,
            f"Grow {info.name} from {info.config.n_layer} to {n} layers? "
            "The new blocks start as the identity, so the model's outputs are "
            "unchanged until it trains again. Layers can never be removed.",
            title="Grow Layers",
            ok="Grow",
        )
        if ok is not None:
            s["dialog"] = None
            s.pop("stamp", None)  # back to the saved value if refused
        if ok:
            st.run(
                "grow",
                info.name,
                st.registry.grow,
                info.name,
                n,
                done=lambda i: st.say(f"{i.name} now has {i.config.n_layer} layers", "success"),
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
    info = st.info()
    lm = st.lm if st.lm is not None and st.lm_name == st.current else None
    history = snap.history if snap is not None else (getattr(lm, "history", None) or {})
    if snap is None and not len(history.get("steps", ())):
        idle_instructions(ui, st, x, y + 26)
        return
    if snap is not None:
        e_line = (
            f"Epoch: {snap.epoch} / {snap.target_epochs}  |  Loss: {_loss(snap.train_loss)}"
            f"  |  Val: {_loss(snap.val_loss)}  |  Best val: {_loss(snap.best_loss)}"
        )
        bpe = max(1, snap.batches_per_epoch)
        eta_clock = (
            time.strftime("%H:%M:%S", time.localtime(time.time() + snap.eta))
            if snap.eta is not None
            else "--"
        )
        b_line = (
            f"Batch {snap.batch}/{snap.batches_per_epoch} ({100 * snap.batch / bpe:.0f}%)"
            f"     {snap.tokens_per_s:,.0f} tokens/s     Elapsed {_hms(snap.elapsed)}"
            f"     Remaining {_hms(snap.eta)}     ETA {eta_clock}"
        )
        frac = snap.run_steps / snap.total_steps if snap.total_steps else 0.0
        state = {"idle": "starting", "running": "training", "paused": "paused"}.get(
            snap.state, snap.state
        )
        if remote_run(st) is not None:
            state += f" (headless run, pid {snap.pid}: read-only)"
        if snap.resumed_from:
            state += f" · {snap.resumed_from}"
    else:
        m = info.meta if info else ModelMeta()
        e_line = (
            f"Epoch: {m.epochs_trained} / {m.target_epochs}  |  Loss: "
            f"{_loss(m.last_loss)}  |  Val: {_loss(m.last_val_loss)}"
            f"  |  Best val: {_loss(m.best_loss)}"
        )
        b_line, frac, state = "No training in progress", 0.0, "idle"
    ui.label((x, y + 24), e_line, th.TEXT, max_w=w)
    ui.label(
        (x + w, y),
        state,
        th.WARNING if snap is not None and snap.state in RUN_STATES else th.HINT,
        align="right",
        max_w=w - 260,
    )
    ui.label((x, y + 44), b_line, th.HINT, max_w=w)
    ui.progress((x, y + 66, w, 30), frac, text=f"{100 * frac:.1f}%" if snap else None)
    top = y + 108
    bottom = v.bottom - 12
    avail = bottom - top
    sph_h = max(200, int(avail * 0.5))
    chart_h = max(120, int(avail * 0.28))
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


def sphere_activity(snap) -> list[float]:
    """Per sphere, the share of its shard's positions in the latest batch that the model got
    right (hits / positions: count over the most it could be)."""
    sp = list(getattr(snap, "spheres", ()) or ())
    return [float(sp[i].get("hit_rate", 0.0) or 0.0) if i < len(sp) else 0.0 for i in range(12)]


def spheres(ui: UI, snap, r: pygame.Rect) -> None:
    ui.rect(r, th.METRIC_BG, th.METRIC_BORDER)
    ui.label((r.x + 8, r.y + 6), "KISSING SPHERES", th.ACCENT)
    ui.label(
        (r.x + 8, r.y + 24),
        "Node Zero + 12 shards of each batch · colour: share of next tokens predicted",
        th.HINT,
        max_w=r.w - 16,
    )
    strip_h = 66
    area = pygame.Rect(r.x, r.y + 42, r.w, r.h - 42 - strip_h)
    (cx, cy), ring, rad, centres = sphere_layout(area)
    act = sphere_activity(snap)
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
        ui.label((px, py - ui.line_h // 2), str(i), th.WHITE, align="center")
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
    active = sum(a >= 0.01 for a in act)
    gn = getattr(snap, "grad_norm", None)
    lines = [
        f"Active Spheres: {active} / 12",
        f"Total Batches: {getattr(snap, 'step', 0):,}",
        "Gradient Norm: " + ("-" if gn is None else f"{gn:.4f}"),
    ]
    text_w = max(
        ui.label((strip.x + 8, strip.y + 5 + 17 * i), line, th.TEXT) for i, line in enumerate(lines)
    )
    # the legend of the colour levels, where there is room for it
    legend = [(f"<{lim:.0%}", color) for lim, color in th.SPHERE_LEVELS] + [("90%+", th.SPHERE_HOT)]
    widths = [ui.text_size(label)[0] + 24 for label, _ in legend]
    if sum(widths) > strip.w - text_w - 24:
        return
    lx = strip.right - 8
    for (label, color), lw in zip(reversed(legend), reversed(widths), strict=True):
        ui.label((lx, strip.y + 22), label, th.HINT, align="right")
        pygame.draw.circle(surf, color, (lx - lw + 15, strip.y + 30), 5)
        lx -= lw


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
        ("Step", f"{snap.step:,}  (this run {snap.run_steps:,} / {snap.total_steps:,})"),
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
