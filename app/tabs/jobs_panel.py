"""The Jobs panel of the Models tab: the job queue of the models folder (``cllm.jobs``).

Each job's model, state, progress, ETA and loss (read in the background about once a second while
jobs run), Cancel and Retry for the chosen job, **Train Selected...** (a job for each selected
model: Ctrl/Shift+click cards to select several) and **Run Jobs** (a scheduler process of its
own, ``python -m cllm jobs run``, which goes on if the studio closes).
"""

from __future__ import annotations

import math
import time

import pygame

from cllm.errors import CLLMError

from .. import theme as th
from ..state import AppState
from ..ui import UI

REFRESH_S = 1.0
ROW_H = 38
STATE_COLORS = {
    "queued": th.HINT,
    "running": th.WARNING,
    "done": th.SUCCESS,
    "failed": th.ERROR,
    "cancelled": th.DIM,
}


def wants_frame(st: AppState) -> bool:
    """A frame once a second (to read the queue again) while jobs run or a scheduler started here
    is alive; the read's result repaints when it lands."""
    s = st.tab("jobs")
    live = s.get("active") or s.get("proc") is not None
    return bool(live) and time.monotonic() - s.get("at", -1e9) >= REFRESH_S


def selected_models(st: AppState, models_state: dict) -> list[str]:
    """The models Ctrl/Shift+click selected on the Models tab, else the current one."""
    names = {m.name for m in st.models}
    multi = [n for n in sorted(models_state.get("multi", ())) if n in names]
    return multi or ([st.current] if st.current in names else [])


def toggle(models_state: dict, name: str, current: str | None) -> None:
    """Ctrl/Shift+click on a card: add it to (or take it from) the selection."""
    multi = models_state.setdefault("multi", set())
    if not multi and current and current != name:
        multi.add(current)
    multi ^= {name}


def _refresh(st: AppState, s: dict) -> None:
    proc = s.get("proc")
    if proc is not None and proc.poll() is not None:
        s["proc"] = None
        st.say("Job scheduler finished", "success" if proc.returncode == 0 else "warning")
        s["at"] = -1e9
    now = time.monotonic()
    if s.get("loading") or now - s.get("at", -1e9) < REFRESH_S:
        return
    s["loading"], s["at"] = True, now
    from cllm.jobs.store import job_rows

    def done(rows: list) -> None:
        s["loading"], s["rows"] = False, rows
        s["active"] = any(r["state"] == "running" for r in rows)

    def error(err: BaseException) -> None:
        s["loading"] = False
        s["error"] = str(err)

    st.worker.submit(job_rows, st.models_dir, done=done, error=error)


def _duration(sec: float | None) -> str:
    if sec is None or not math.isfinite(sec):
        return "--:--"
    sec = int(sec)
    return (
        f"{sec // 3600}:{sec // 60 % 60:02d}:{sec % 60:02d}"
        if sec >= 3600
        else (f"{sec // 60}:{sec % 60:02d}")
    )


def _line(r: dict) -> str:
    parts = []
    if r["state"] == "running":
        if r["progress"] is not None:
            parts.append(f"{100 * r['progress']:.0f}%")
        parts.append(f"ETA {_duration(r['eta'])}")
    if r["train_loss"] is not None:
        parts.append(f"loss {r['train_loss']:.3f}")
    if r["state"] in ("failed", "queued", "cancelled") and r["reason"]:
        parts.append(r["reason"])
    target = (
        f"{r['steps']} steps"
        if r["steps"] is not None
        else (f"{r['epochs']} epochs" if r["epochs"] is not None else "target")
    )
    return " · ".join([target, *parts])


def draw(ui: UI, st: AppState, models_state: dict, r: pygame.Rect) -> None:
    """The panel inside ``r`` (the Models tab's side panel, below its buttons)."""
    s = st.tab("jobs")
    _refresh(st, s)
    x, y, w = r.x, r.y, r.w
    ui.section((x, y), "JOBS")
    picked = selected_models(st, models_state)
    y += 22
    label = f"Train Selected ({len(picked)})..." if len(picked) != 1 else "Train Selected..."
    if ui.button((x, y, w, 30), label, key="jobs-train", enabled=bool(picked)):
        s["dialog"] = {"names": picked, "mode": "steps", "value": "1000", "workers": "1"}
    y += 38
    rows = s.get("rows") or []
    queued = any(row["state"] == "queued" for row in rows)
    running_here = s.get("proc") is not None
    half = (w - 8) // 2
    label = "Running..." if running_here else "Run Jobs"
    if ui.button((x, y, half, 30), label, key="jobs-run", enabled=queued and not running_here):
        _start(st, s, 1)
    one = st.current if st.current in {m.name for m in st.models} else None
    if ui.button((x + half + 8, y, half, 30), "Sweep...", key="jobs-sweep", enabled=bool(one)):
        s["sweep"] = {"base": one, "lr": "1e-3,3e-4", "layers": "", "steps": "500"}
    y += 40
    # newest first, unfinished ones on top
    order = sorted(rows, key=lambda row: (row["state"] not in ("running", "queued"), -row["id"]))
    bottom = r.bottom - 40
    listing = pygame.Rect(x, y, w, max(0, bottom - y))
    ui.rect(listing, th.VIEW_BG, th.VIEW_BORDER)
    if not order:
        ui.label((x + 8, y + 8), "No jobs yet", th.HINT)
    off = ui.scroll(listing, "jobs", len(order) * ROW_H, step=ROW_H) if order else 0
    with ui.clip(listing):
        for i, row in enumerate(order):
            ry = y + i * ROW_H - off
            if ry + ROW_H < y or ry > listing.bottom:
                continue
            c = pygame.Rect(x + 2, ry + 1, w - 16, ROW_H - 2)
            chosen = s.get("sel") == row["id"]
            if chosen:
                ui.rect(c, th.METRIC_BG, th.ACCENT)
            if ui.take_click(c):
                s["sel"] = row["id"]
            ui.label((c.x + 6, c.y + 3), f"#{row['id']} {row['model']}", th.TEXT, max_w=c.w - 90)
            ui.label(
                (c.right - 6, c.y + 3),
                row["state"],
                STATE_COLORS.get(row["state"], th.TEXT),
                align="right",
            )
            ui.label((c.x + 6, c.y + 19), _line(row), th.HINT, max_w=c.w - 12)
    sel = next((row for row in rows if row["id"] == s.get("sel")), None)
    by = r.bottom - 32
    can_cancel = sel is not None and sel["state"] in ("queued", "running")
    can_retry = sel is not None and sel["state"] in ("failed", "cancelled")
    if ui.button((x, by, half, 30), "Cancel Job", key="jobs-cancel", enabled=can_cancel):
        _act(st, s, "cancel", sel["id"])
    if ui.button((x + half + 8, by, half, 30), "Retry Job", key="jobs-retry", enabled=can_retry):
        _act(st, s, "retry", sel["id"])
    _dialog(ui, st, s)
    _sweep_dialog(ui, st, s)


def _act(st: AppState, s: dict, what: str, job_id: int) -> None:
    from cllm.jobs.store import JobStore

    store = JobStore(st.models_dir)
    fn = store.cancel if what == "cancel" else store.retry

    def done(job) -> None:
        s["at"] = -1e9
        st.say(f"Job {job.id} ({job.model}): {job.state}", "success")

    st.worker.submit(fn, job_id, done=done, error=st.fail)


def _start(st: AppState, s: dict, workers: int) -> None:
    from cllm.jobs.scheduler import start_scheduler_process

    try:
        s["proc"] = start_scheduler_process(st.models_dir, workers)
    except OSError as err:
        st.fail(err)
        return
    s["at"] = -1e9
    st.say(f"Job scheduler started ({workers} at once)", "success")


def _problem(d: dict) -> str | None:
    for key, what in (("value", d["mode"]), ("workers", "workers")):
        try:
            n = int(d[key])
        except ValueError:
            return f"{what} must be a whole number, got {d[key]!r}"
        if n < (0 if key == "value" and d["mode"] == "epochs" else 1):
            return f"{what} must be at least 1, got {n}"
    return None


def _dialog(ui: UI, st: AppState, s: dict) -> None:
    d = s.get("dialog")
    if d is None:
        return
    names = d["names"]
    r = ui.begin_dialog("jobs-train", (520, 250), "Train Selected Models")
    shown = ", ".join(names)
    ui.label((r.x + 20, r.y + 42), f"{len(names)} model(s): {shown}", th.TEXT, max_w=r.w - 40)
    ui.label((r.x + 20, r.y + 72), "Train for", th.HINT)
    for i, mode in enumerate(("steps", "epochs")):
        if ui.choice(
            (r.x + 110 + i * 90, r.y + 66, 84, 28),
            mode.capitalize(),
            d["mode"] == mode,
            key="jobs-mode-" + mode,
        ):
            d["mode"] = mode
    res = ui.text_input((r.x + 300, r.y + 66, 120, 28), "jobs-value", d["value"])
    d["value"] = res.text
    ui.label(
        (r.x + 20, r.y + 108),
        "total epochs to reach" if d["mode"] == "epochs" else "optimizer steps for each model",
        th.HINT,
    )
    ui.label((r.x + 20, r.y + 138), "At once", th.HINT)
    wres = ui.text_input((r.x + 110, r.y + 132, 60, 28), "jobs-workers", d["workers"])
    d["workers"] = wres.text
    problem = _problem(d)
    if problem:
        ui.label((r.x + 20, r.y + 170), problem, th.ERROR, max_w=r.w - 40)
    by = r.bottom - 44
    go = None
    if ui.button((r.right - 370, by, 130, 30), "Queue and Run", key="jobs-go", enabled=not problem):
        go = "run"
    if ui.button((r.right - 230, by, 100, 30), "Queue", key="jobs-queue", enabled=not problem):
        go = "queue"
    if ui.button((r.right - 120, by, 100, 30), "Cancel", key="jobs-dlg-cancel"):
        s["dialog"] = None
    if ui.end_dialog():
        s["dialog"] = None
    if go is None:
        return
    s["dialog"] = None
    from cllm.jobs.store import JobStore

    n, workers = int(d["value"]), int(d["workers"])
    kind = {"epochs": n} if d["mode"] == "epochs" else {"steps": n}

    def add() -> list:
        return JobStore(st.models_dir).add(st.registry, names, **kind)

    def done(jobs: list) -> None:
        s["at"] = -1e9
        st.say(f"Queued {len(jobs)} job(s)", "success")
        if go == "run" and s.get("proc") is None:
            _start(st, s, workers)

    st.worker.submit(add, done=done, error=st.fail)


def _sweep_problem(d: dict) -> str | None:
    from cllm.jobs.sweep import parse_values

    try:
        if not d["lr"].strip() and not d["layers"].strip():
            return "give learning rates or layer counts (comma-separated)"
        for axis in ("lr", "layers"):
            if d[axis].strip():
                parse_values(axis, d[axis])
        n = int(d["steps"])
    except ValueError:
        return f"steps must be a whole number, got {d['steps']!r}"
    except CLLMError as err:
        return str(err)
    return None if n >= 1 else f"steps must be at least 1, got {n}"


def _sweep_dialog(ui: UI, st: AppState, s: dict) -> None:
    """A sweep of the current model: a copy per combination of learning rates and layer counts,
    each with a job (as ``python -m cllm sweep``); checked in full before anything is made."""
    d = s.get("sweep")
    if d is None:
        return
    r = ui.begin_dialog("jobs-sweep", (520, 260), f"Sweep {d['base']}")
    rows = (("lr", "Learning rates", "e.g. 1e-3,3e-4"), ("layers", "Layers", "e.g. 4,6 (grows)"))
    for i, (key, label, hint) in enumerate(rows):
        y = r.y + 44 + i * 38
        ui.label((r.x + 20, y + 6), label, th.HINT)
        d[key] = ui.text_input((r.x + 160, y, 200, 28), "sweep-" + key, d[key]).text
        ui.label((r.x + 370, y + 6), hint, th.DIM)
    ui.label((r.x + 20, r.y + 126), "Steps each", th.HINT)
    d["steps"] = ui.text_input((r.x + 160, r.y + 120, 100, 28), "sweep-steps", d["steps"]).text
    problem = _sweep_problem(d)
    if problem:
        ui.label((r.x + 20, r.y + 160), problem, th.ERROR, max_w=r.w - 40)
    by = r.bottom - 44
    go = None
    if ui.button(
        (r.right - 370, by, 130, 30), "Create and Run", key="sweep-go", enabled=not problem
    ):
        go = "run"
    if ui.button((r.right - 230, by, 100, 30), "Create", key="sweep-create", enabled=not problem):
        go = "queue"
    if ui.button((r.right - 120, by, 100, 30), "Cancel", key="sweep-cancel"):
        s["sweep"] = None
    if ui.end_dialog():
        s["sweep"] = None
    if go is None:
        return
    s["sweep"] = None
    from cllm.jobs.sweep import create_sweep, parse_values, plan_sweep

    axes = {a: parse_values(a, d[a]) for a in ("lr", "layers") if d[a].strip()}
    base, steps = d["base"], int(d["steps"])

    def make() -> list:
        return create_sweep(st.registry, base, plan_sweep(st.registry, base, axes), steps=steps)

    def done(jobs: list) -> None:
        s["at"] = -1e9
        st.refresh()
        st.say(f"Sweep of {base}: {len(jobs)} copies, each with a job", "success")
        if go == "run" and s.get("proc") is None:
            _start(st, s, 1)

    st.worker.submit(make, done=done, error=st.fail)
