"""One job's process: ``python -m cllm.jobs.worker --models-dir DIR --job ID [--parent PID]``.

It registers itself on the job (refusing to train a job that is no longer its scheduler's), trains
the model with the Trainer (which takes the model's lock: a model is never trained twice at once),
and writes the outcome back: done with its losses, failed with the reason, or, when stopped
(SIGTERM / SIGINT, the scheduler gone, the job cancelled), back to the queue after the trainer's
checkpoint, so the next run resumes exactly there. On Linux the process asks the kernel for a
SIGTERM when its scheduler dies, so a killed scheduler leaves no worker training unsupervised.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

from cllm.errors import BusyError, CLLMError
from cllm.jobs.store import JobStore

POLL_S = 1.0  # how often the worker looks at its job's row (cancel, lost ownership)


def _die_with_parent() -> None:
    """Ask for SIGTERM when the parent exits (Linux prctl PR_SET_PDEATHSIG); elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run_job(models_dir: Path, job_id: int, parent: int | None, threads: int | None) -> int:
    from cllm.models.registry import Registry
    from cllm.train.trainer import Trainer

    store = JobStore(models_dir)
    me = os.getpid()
    stop: list[int] = []
    holder: list = []  # the trainer, once made

    def on_signal(signum, frame) -> None:
        stop.append(signum)
        if holder:
            holder[0].stop()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    _die_with_parent()
    if parent and os.getppid() != parent:
        return 0  # the scheduler died before we started: the job is an orphan, recovered later
    if not store.register_worker(job_id, me, parent, threads):
        return 0  # cancelled or taken over meanwhile
    job = store.get(job_id)
    reg = Registry(models_dir)
    try:
        info = reg.info(job.model)
        settings = dict(job.settings)
        max_steps = None
        if job.steps is not None:
            now = int(info.meta.steps or 0)
            base = job.base_steps
            if base is None:
                base = now
                store.update(job_id, pid=me, base_steps=base)
            max_steps = base + job.steps - now
            if max_steps <= 0:
                store.finish(job_id, me, "done", "", step=now)
                return 0
        elif job.epochs is not None:
            settings["target_epochs"] = job.epochs
        trainer = Trainer(reg, job.model, max_steps=max_steps, **settings)
    except BusyError as err:  # someone else trains it: back in the queue, not an attempt
        store.finish(job_id, me, "queued", f"waiting: {err}", attempts=max(0, job.attempts - 1))
        return 0
    except CLLMError as err:
        store.finish(job_id, me, "failed", str(err))
        return 0

    holder.append(trainer)
    if stop or (parent and os.getppid() != parent):
        trainer.stop()  # told to stop (or the scheduler died) while loading: give the job back
    tokens_before = trainer.snapshot().tokens
    t0 = time.monotonic()
    trainer.start()
    while not trainer.join(POLL_S):
        try:
            row = store.get(job_id)
        except sqlite3.Error:
            continue  # the queue is busy a moment: look again next time
        except CLLMError:
            row = None
        if row is None or row.state != "running" or row.pid != me:
            trainer.stop()  # cancelled, or no longer ours
    snap = trainer.snapshot()
    seconds = time.monotonic() - t0
    results = dict(
        step=snap.step,
        train_loss=snap.train_loss,
        val_loss=snap.val_loss,
        best_loss=snap.best_loss,
        tokens=job.tokens + max(0, snap.tokens - tokens_before),
        seconds=job.seconds + seconds,
    )
    if snap.state == "done":
        store.finish(job_id, me, "done", "", **results)
    elif snap.state == "error":
        store.finish(job_id, me, "failed", snap.message, **results)
    else:  # stopped: the checkpoint is saved; the next run resumes there
        why = f"interrupted at step {snap.step}; resumes from its checkpoint"
        store.finish(job_id, me, "queued", why, attempts=max(0, job.attempts - 1), **results)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cllm.jobs.worker")
    p.add_argument("--models-dir", type=Path, required=True)
    p.add_argument("--job", type=int, required=True)
    p.add_argument("--parent", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    return run_job(args.models_dir, args.job, args.parent, args.threads)


if __name__ == "__main__":
    sys.exit(main())
