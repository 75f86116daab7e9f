"""Training settings beyond the five sliders, the cost of a run, and the kept checkpoints.

- ``advanced_section``: the Training tab's collapsible ADVANCED part of the configuration:
  schedule, sampling, min lr, warmup, betas, weight decay, eval interval and batches, checkpoint
  interval, checkpoints kept, early stopping. Each change is saved to the model like the sliders
  above it (``Registry.set_settings``, in the background; refused values are explained).
- ``cost_line``: under START, the estimate of ``cllm.train.estimate.for_model`` (time to the
  target, peak memory, checkpoint disk), computed by the worker whenever the model or its
  settings change (a new shape is probed once, a few seconds).
- ``checkpoints_panel`` / ``checkpoints_dialog``: the Models tab's list of kept checkpoints with a
  Restore button behind a confirmation (``cllm.train.checkpoints.rollback``; refused while the
  model trains).
"""

from __future__ import annotations

from cllm.train import checkpoints
from cllm.train.estimate import for_model

from .. import dialogs
from .. import theme as th
from ..figures import figures
from ..state import AppState
from ..ui import UI

SLIDER_H = 34
ROW_H = 20

# label, setting, low, high, log scale, whole number, format
SLIDERS = [
    ("Min Learning Rate", "min_lr", 1e-6, 1e-2, True, False, "{:.1e}"),
    ("Warmup Steps", "warmup", 0, 5000, False, True, "{:.0f}"),
    ("Weight Decay", "weight_decay", 0.0, 1.0, False, False, "{:.2f}"),
    ("Adam Beta1", "beta1", 0.5, 0.99, False, False, "{:.3f}"),
    ("Adam Beta2", "beta2", 0.9, 0.9999, False, False, "{:.4f}"),
    ("Eval Interval (steps)", "eval_interval", 10, 5000, False, True, "{:.0f}"),
    ("Eval Batches", "eval_batches", 1, 100, False, True, "{:.0f}"),
    ("Checkpoint Interval (0: off)", "checkpoint_interval", 0, 10000, False, True, "{:.0f}"),
    ("Checkpoints Kept", "keep_checkpoints", 1, 20, False, True, "{:.0f}"),
    ("Early Stop (0: off)", "early_stop", 0, 50, False, True, "{:.0f}"),
]
CHOICES = [("Schedule", "schedule", ("cosine", "linear", "constant")),
           ("Batches", "sampling", ("random", "sequential"))]  # fmt: skip


def _value(info, key: str):
    v = getattr(info.train, key)
    return 0 if key == "early_stop" and v is None else v


def _save(st: AppState, s: dict, info, key: str, value) -> None:
    if key == "early_stop" and value == 0:
        value = None  # 0 on the slider: off
    s.setdefault("adv_set", {})[key] = value  # shown at once; the saved info replaces it
    st.run(
        "settings",
        info.name,
        st.registry.set_settings,
        info.name,
        done=st.update_info,
        refresh=False,
        **{key: value},
    )


def advanced_section(
    ui: UI, st: AppState, s: dict, info, x: int, y: int, w: int, top: int, locked: bool
) -> int:
    """The ADVANCED settings below the configuration, opened and closed by a small button on the
    configuration's title row (``top``), so a closed section takes no room; returns the y below.
    ``locked``: the settings cannot change now (the model trains, or is busy)."""
    open_ = s.get("advanced_open", False)
    label = "Advanced " + ("-" if open_ else "+")
    if ui.button((x + w - 96, top - 2, 96, 18), label, key="adv:toggle"):
        s["advanced_open"] = open_ = not open_
    if not open_ or info is None:
        return y
    ui.section((x, y), "ADVANCED")
    y += 20
    if s.get("adv_stamp") != (info.name, st.version):
        s["adv_stamp"], s["adv_set"] = (info.name, st.version), {}
    shown = s.get("adv_set", {})
    for label, key, options in CHOICES:
        ui.label((x, y), label, th.TEXT if not locked else th.DIM)
        y += ui.line_h + 2
        bw = (w + 4) // len(options)
        current = shown.get(key, _value(info, key))
        for i, opt in enumerate(options):
            r = (x + i * bw, y, bw - 4, 24)
            if ui.choice(r, opt, current == opt, key=f"adv:{key}:{opt}", enabled=not locked):
                if opt != current:
                    _save(st, s, info, key, opt)
        y += 32
    for label, key, lo, hi, log, whole, fmt in SLIDERS:
        current = shown.get(key, _value(info, key))
        current = 0 if current is None else current
        v, done = ui.slider(
            (x, y, w, SLIDER_H),
            label,
            float(current),
            lo,
            max(hi, float(current)),
            log=log,
            integer=whole,
            fmt=fmt,
            enabled=not locked,
            key="sl:adv:" + key,
        )
        if done and v != current:
            _save(st, s, info, key, int(round(v)) if whole else v)
        y += SLIDER_H + 6
    return y + 4


def _estimate_key(st: AppState, info) -> tuple:
    t = info.train
    return (info.name, st.version, t.batch_size, t.seq_len, info.meta.target_epochs)


def cost_line(ui: UI, st: AppState, s: dict, info, x: int, y: int, w: int) -> int:
    """The estimate of training to the target in one line: time, peak memory, checkpoint disk
    (``python -m cllm.train NAME --dry-run`` says it in full); while the model trains, the time is
    the run's own (the header's Remaining). Returns the y below."""
    if info is None:
        return y
    key = _estimate_key(st, info)
    est = s.get("estimate")
    if s.get("estimate_key") != key and not s.get("estimating"):
        s["estimate_key"], s["estimating"] = key, True

        def done(e) -> None:
            s["estimate"], s["estimating"] = e, False

        def error(err: BaseException) -> None:
            s["estimate"], s["estimating"] = str(err), False

        st.worker.submit(for_model, st.registry, info.name, done=done, error=error)
    if s.get("estimating") and est is None:
        text = "Estimating the cost..."
    elif isinstance(est, str) or est is None:
        text = f"No estimate: {est}"
    else:  # time to the target, peak memory, checkpoint disk
        f = figures(st)  # while the model trains: the run's measured pace, as the header says
        seconds = f.remaining if f.live and f.remaining is not None else est.seconds
        when, ram, disk = _duration(seconds), _mb(est.peak_bytes), _mb(est.checkpoint_bytes)
        text = ui.fit(  # a narrow panel: the short form, nothing cut
            w,
            f"{when} to target · RAM {ram} · disk {disk}",
            f"{when} · RAM {ram} · disk {disk}",
            pad=0,
        )
    ui.label((x, y - 2), text, th.HINT, max_w=w)
    return y + ROW_H


def _mb(b: int) -> str:
    return f"{b / 1e6:,.0f} MB" if b >= 10e6 else f"{b / 1e6:.1f} MB"


def _duration(seconds: float) -> str:
    s = max(int(seconds), 0)  # whole seconds down, as the header's Remaining
    if s >= 3600:
        return f"{s // 3600} h {s // 60 % 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


# ---------------------------------------------------------------------------- models tab
def _listing(st: AppState, s: dict, name: str) -> tuple[list, int]:
    """The kept checkpoints of ``name`` and their disk use beyond the model file, read by the
    worker and cached until the models folder changes."""
    cache = s.setdefault("ckpts", {})
    got = cache.get(name)
    if got is None or got[0] != st.version:
        cache[name] = (st.version, got[1] if got else None)
        d = checkpoints.folder(st.registry.dir, name)

        def read() -> tuple[list, int]:
            return checkpoints.listing(d), checkpoints.disk_use(d, st.registry.path(name))

        def done(found: tuple[list, int]) -> None:
            cache[name] = (st.version, found)

        st.worker.submit(read, done=done, error=lambda err: done(([], 0)))
    return cache[name][1] or ([], 0)


def checkpoints_panel(
    ui: UI, st: AppState, s: dict, m, x: int, y: int, w: int, free: bool, bottom: int
) -> int:
    """CHECKPOINTS: one row per kept checkpoint (step, epoch, val loss) with a Restore button,
    the newest (the best is listed last) as many as fit above ``bottom``."""
    ui.section((x, y), "CHECKPOINTS")
    y += 22
    if m is None:
        return y
    rows, used = _listing(st, s, m.name)
    if not rows:
        ui.label((x, y), "None kept yet", th.DIM, max_w=w)
        return y + ROW_H
    ui.label((x, y), f"{_mb(used)} on disk beyond the model", th.HINT, max_w=w)
    y += ROW_H + 2
    fit = max(0, min(8, (bottom - y) // 28))
    if len(rows) > fit:  # beside the section's title; a taller window lists more
        shown = f"newest {fit} of {len(rows)}" if fit else f"{len(rows)} kept"
        ui.label((x + w, y - ROW_H - 24), shown, th.DIM, align="right")
    for c in rows[len(rows) - fit :]:
        val = "-" if c.val_loss is None else f"{c.val_loss:.3f}"
        text = f"{'best' if c.best else 'step'} {c.step:,}  ep {c.epoch}  val {val}"
        ui.label((x, y + 4), text, th.SELECTED if c.best else th.TEXT, max_w=w - 74)
        key = f"ck:{c.path.name}"
        if ui.button((x + w - 70, y, 70, 24), "Restore", key=key, enabled=free):
            s["dialog"], s["restore"] = "restore", c
        y += 28
    return y


def checkpoints_dialog(ui: UI, st: AppState, s: dict) -> None:
    """The confirmation before a restore; the restore itself runs in the background."""
    if s.get("dialog") != "restore":
        return
    m, c = st.info(), s.get("restore")
    if m is None or c is None:
        s["dialog"] = None
        return
    which = "best checkpoint" if c.best else "checkpoint"
    ok = dialogs.confirm(
        ui,
        f"Make the {which} at step {c.step:,} the model {m.name}? Its weights, optimizer and "
        f"history go back to that step; the newer checkpoints stay in {m.name}_checkpoints.",
        title="Restore Checkpoint",
        ok="Restore",
        danger=True,
    )
    if ok is not None:
        s["dialog"] = None
    if ok:
        name = m.name

        def restore() -> dict:
            if c.best:
                return checkpoints.rollback(st.registry, name, best=True)
            return checkpoints.rollback(st.registry, name, step=c.step)

        st.run(
            "restore",
            name,
            restore,
            done=lambda meta: st.say(f"{name} is back at step {meta.steps:,}", "success"),
        )
