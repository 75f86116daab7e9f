"""The figures of a model's training that several views show (the Training tab's header, MODEL
INFO and metrics; the Models tab's details), taken once per frame from one source: the run's
snapshot while there is one, else the model's saved metadata. Views never mix the two, so the
numbers on screen agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from cllm.engine.meta import ModelMeta

from .state import AppState

PACE_MIN_STEPS = 20  # before this many steps the start-up dominates the average pace


@dataclass
class Figures:
    """The numbers every view of the tab shows, taken once per frame from one source: the run's
    snapshot while there is one, else the model's saved metadata. Views never mix the two."""

    epochs_trained: int = 0
    target_epochs: int = 0
    in_progress: int | None = None  # the epoch being trained, while a run is active
    step: int = 0  # optimizer steps over the model's life
    tokens: int = 0  # training tokens seen over the model's life
    train_loss: float | None = None
    val_loss: float | None = None
    best_loss: float | None = None
    batch: int = 0
    batches_per_epoch: int = 0
    run_done: int = 0  # steps of the run (a resumed run includes those before its stop)
    run_total: int = 0
    session_steps: int = 0  # steps trained since this run last started or resumed
    elapsed: float | None = None  # seconds of training since then, pauses excluded
    remaining: float | None = None  # at the average pace since then
    live: bool = False


def figures(st: AppState, name: str | None = None) -> Figures:
    """The figures of model `name` (default: the current one)."""
    info = st.info(name)
    snap = st.snapshot if name in (None, st.current) else None
    if snap is not None:
        session = int(getattr(snap, "session_steps", 0) or 0)
        left = max(0, snap.total_steps - snap.run_steps)
        if session >= PACE_MIN_STEPS and snap.elapsed > 0 and snap.active:
            remaining = left * snap.elapsed / session  # the average pace: no jumps
        else:
            remaining = snap.eta if snap.active else None
        return Figures(
            epochs_trained=snap.epochs_trained,
            target_epochs=snap.target_epochs,
            in_progress=snap.epochs_trained + 1
            if snap.active and snap.epochs_trained < snap.target_epochs
            else None,
            step=snap.step,
            tokens=snap.tokens,
            train_loss=snap.train_loss,
            val_loss=snap.val_loss,
            best_loss=snap.best_loss,
            batch=snap.batch,
            batches_per_epoch=snap.batches_per_epoch,
            run_done=snap.run_steps,
            run_total=snap.total_steps,
            session_steps=session,
            elapsed=snap.elapsed,
            remaining=remaining,
            live=snap.active,
        )
    m = info.meta if info is not None else ModelMeta()
    return Figures(
        epochs_trained=m.epochs_trained,
        target_epochs=m.target_epochs,
        step=m.steps,
        tokens=m.tokens_seen,
        train_loss=m.last_loss,
        val_loss=m.last_val_loss,
        best_loss=m.best_loss,
    )
