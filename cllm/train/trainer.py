"""The trainer: one model, trained from its queue in a background thread.

An epoch is one pass worth of the queue's training tokens. Each item's tokens are split: the first
``1 - val_fraction`` train, the rest are held out for validation; items flagged for validation
(``queue add --validation``, ``queue set --validation on``, the studio's toggle) are held out
whole: never trained on, measured whole. Batches come from ``cllm.train.sampler``: by
default each row is a random window of ``T + 1`` tokens drawn from the model's saved RNG,
token-weighted over the epoch's items (an item's priority raises its weight), and an epoch is
``ceil(train tokens / (B * T))`` steps; ``sampling = "sequential"`` streams the items in queue
order instead. Items added during a run join the next epoch. Items removed or flagged for
validation leave the epoch in progress at once: before each step the trainer asks the queue's
``stamp``, which such changes move, and drops them from the epoch (a resumed run does the same
with the changes made while it was stopped); an item given back to training joins the next epoch.

The learning-rate schedule belongs to the model, not to one run: warmup over the model's first
``warmup`` steps, then decay (``schedule``: cosine, linear or constant) to ``min_lr`` at the step
where the model reaches ``target_epochs``. A resumed or ``max_steps`` run continues it at the
model's step; raising the target stretches the rest of the decay to the new end, and past the
target the rate stays at ``min_lr``.

Validation: one fixed set of ``eval_batches`` batches (``sampler.validation_batches``), measured
every ``eval_interval`` steps, at each epoch end and at the run's end, so every validation loss,
the best one and early stopping compare the same thing. Each improvement saves the model and keeps
it as the best checkpoint; ``early_stop = N`` ends training after N measurements without one and
makes the best checkpoint the model. When a removal or a validation flag changes what is held out
(during the run, or since the run that saved the model), the validation set is built anew and the
comparison starts over: it is measured after the next step, and that measurement is the new best.

The thread owns the model. Other threads see only ``snapshot()`` (a ``TrainSnapshot`` replaced
under a lock after every step, never mutated after publishing) and talk only through the command
queue (stop / pause / resume).

The 12 kissing spheres: each batch's B*T positions (row-major) are split into 12 contiguous
shards, and each sphere is one shard's measurements from the per-position cross-entropy:
``tokens`` (cumulative positions seen), ``hits`` (cumulative positions where the model gave the
right next token probability >= 1/2, i.e. loss < ln 2), ``loss`` (mean loss of the shard in the
latest batch) and ``hit_rate``: the share of the shard's positions in the latest batch that were
hits. **The colour is driven by ``hit_rate``**: it starts near 0 and rises as the model learns, and
differs between spheres because each shard holds different text.

Checkpoints (weights, AdamW moments and step, the position in the epoch, RNG state, loss history)
are written at each epoch end, on stop, every ``checkpoint_interval`` steps, every
``checkpoint_minutes``, at each better validation loss and, in the headless trainer, on Ctrl+C /
SIGTERM. Each save is also kept in ``NAME_checkpoints/`` (``cllm.train.checkpoints``: the last
``keep_checkpoints`` and the best). Resuming draws the same windows from the same RNG state, so a
stopped and resumed run has the same loss curve as an uninterrupted one.

About once a second the snapshot is also written to ``models/<name>.progress.json`` (atomically),
so another process can show the run with ``read_progress``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import queue
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from cllm.atomic import write_atomic
from cllm.engine import threads
from cllm.engine.optim import AdamW, clip_grad_norm, lr_at
from cllm.errors import CLLMError, ValidationError
from cllm.models import paths
from cllm.models.rules import check_target_epochs, validate_train_settings
from cllm.pids import pid_alive
from cllm.train import checkpoints
from cllm.train.sampler import (
    SequentialStream,
    TokenSource,
    WindowSampler,
    drop_segments,
    item_weight,
    validation_batches,
)

SPHERES = 12
LN2 = math.log(2.0)
PUBLISH_S = 1.0  # progress file period
STALE_S = 30.0  # a progress file not updated for this long belongs to a dead run
HISTORY_TAIL = 1000  # steps of history in the progress file


@dataclass
class TrainSnapshot:
    """What the UI shows of a run; a copy, safe to read without any lock."""

    name: str = ""
    state: str = "idle"  # idle | running | paused | done | stopped | error
    message: str = ""
    epoch: int = 0  # the epoch in progress, 1-based (= epochs_trained when finished)
    epochs_trained: int = 0
    target_epochs: int = 0
    step: int = 0  # optimizer steps over the model's life
    run_steps: int = 0  # steps of this run done (a resumed run counts those before the stop)
    total_steps: int = 0  # steps this run takes in all
    session_steps: int = 0  # steps this process has trained (since it started or resumed)
    batch: int = 0  # batches done in the current epoch
    batches_per_epoch: int = 0
    batch_size: int = 0
    seq_len: int = 0
    tokens: int = 0  # training tokens seen over the model's life
    train_loss: float | None = None
    val_loss: float | None = None
    best_loss: float | None = None  # best validation loss (train loss when there is none)
    tokens_per_s: float = 0.0
    elapsed: float = 0.0  # seconds this process has been training (pauses excluded)
    eta: float | None = None  # seconds left
    grad_norm: float | None = None  # before clipping
    lr: float = 0.0
    spheres: tuple = ()  # SPHERES dicts: tokens, hits, loss, hit_rate (see the module docstring)
    history: dict = field(default_factory=dict)  # steps, train, val (NaN where not measured)
    log: tuple = ()  # recent lines, oldest first
    resumed_from: str | None = None  # "resumed at epoch E, step S"
    pid: int = 0
    host: str = ""
    updated: float = 0.0  # time.time() of this snapshot

    @property
    def active(self) -> bool:
        return self.state in ("idle", "running", "paused")


class _History:
    """Per-step losses in append-only arrays; a published view ``[:n]`` never changes later."""

    def __init__(self, steps=(), train=(), val=()) -> None:
        n = len(steps)
        cap = max(1024, 2 * n)
        self.steps = np.zeros(cap, np.int64)
        self.train = np.full(cap, np.nan, np.float32)
        self.val = np.full(cap, np.nan, np.float32)
        self.steps[:n], self.train[:n], self.val[:n] = steps, train, val
        self.n = n

    def append(self, step: int, train: float, val: float | None) -> None:
        self._room(1)
        i = self.n
        self.steps[i], self.train[i] = step, train
        self.val[i] = np.nan if val is None else val
        self.n += 1

    def extend(self, steps, train, val) -> None:
        """Append many (val NaN where not measured)."""
        k = len(steps)
        self._room(k)
        i = self.n
        self.steps[i : i + k], self.train[i : i + k], self.val[i : i + k] = steps, train, val
        self.n += k

    def _room(self, k: int) -> None:
        if self.n + k > len(self.steps):  # grow into new arrays: views handed out stay valid
            cap = max(2 * self.n, self.n + k)
            for key in ("steps", "train", "val"):
                old = getattr(self, key)
                new = np.full(cap, np.nan, old.dtype) if key != "steps" else np.zeros(cap, np.int64)
                new[: self.n] = old[: self.n]
                setattr(self, key, new)

    def view(self) -> dict:
        n = self.n
        return {"steps": self.steps[:n], "train": self.train[:n], "val": self.val[:n]}


def freeze_start_up() -> None:
    """For a process that trains one run: collect, then freeze what is alive (gc.freeze), which
    lives as long as the run. Full collections otherwise scan it all (numba's objects among it:
    tens of ms, every few seconds) while the step's Python waits."""
    gc.collect()
    gc.freeze()


def progress_path(models_dir: Path, name: str) -> Path:
    return paths.progress_file(models_dir, name)


def read_progress(models_dir: Path, name: str) -> TrainSnapshot | None:
    """The live run of model ``name`` published by any process, or None if there is none.

    A file whose writer is gone (same host, pid dead) or that was not updated for ``STALE_S``
    seconds is stale and reads as None.
    """
    try:
        data = json.loads(progress_path(models_dir, name).read_text("utf-8"))
        snap = _snapshot_from_json(data)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if snap.host == socket.gethostname() and not pid_alive(snap.pid):
        return None
    if time.time() - snap.updated > STALE_S:
        return None
    return snap


def _snapshot_to_json(s: TrainSnapshot) -> dict:
    d = {f.name: getattr(s, f.name) for f in fields(s)}
    h = s.history
    # strict JSON (no NaN) so any reader can parse it; tolist() is the fast path out of NumPy
    d["history"] = {k: [None if v != v else v for v in h[k][-HISTORY_TAIL:].tolist()] for k in h}
    d["spheres"] = [{k: None if v != v else v for k, v in sp.items()} for sp in s.spheres]
    d["log"] = list(s.log)
    return d


def _snapshot_from_json(d: dict) -> TrainSnapshot:
    known = {f.name for f in fields(TrainSnapshot)}
    s = TrainSnapshot(**{k: v for k, v in d.items() if k in known})
    h = s.history or {}
    s.history = {
        "steps": np.asarray(h.get("steps", []), np.int64),
        "train": np.asarray([np.nan if v is None else v for v in h.get("train", [])], np.float32),
        "val": np.asarray([np.nan if v is None else v for v in h.get("val", [])], np.float32),
    }
    s.spheres = tuple(
        {k: float("nan") if v is None else v for k, v in sp.items()} for sp in s.spheres
    )
    s.log = tuple(s.log)
    return s


def _split(n_tokens: int, val_fraction: float) -> tuple[int, int]:
    n_val = int(n_tokens * val_fraction)
    return n_tokens - n_val, n_val


class Trainer:
    """Train model ``name`` of ``registry`` from its queue in a background thread.

    ``max_steps``: stop after this many steps in this run (epochs go on past the target if need
    be); without it, train until ``epochs_trained`` reaches ``target_epochs``. ``eval_interval``,
    ``val_batches``: override the model's ``eval_interval`` and ``eval_batches`` for this run
    (not saved). ``nice``: run the training threads at this lower CPU priority (the studio does,
    so that its window's thread gets a core when it draws). ``settings``:
    training settings (``TrainConfig`` fields and ``target_epochs``) applied to the model for this
    run and saved with its next checkpoint.
    """

    def __init__(
        self,
        registry,
        name: str,
        *,
        max_steps: int | None = None,
        eval_interval: int | None = None,
        val_batches: int | None = None,
        publish: bool = True,
        nice: int = 0,
        **settings,
    ) -> None:
        if max_steps is not None and (isinstance(max_steps, bool) or int(max_steps) < 1):
            raise ValidationError(f"max_steps must be at least 1, got {max_steps!r}")
        self.registry = registry
        self.name = name = registry.resolve(name)
        self.max_steps = None if max_steps is None else int(max_steps)
        self._eval_interval, self._val_batches = eval_interval, val_batches  # None: the model's
        self.publish = publish
        self.nice = int(nice)  # > 0: the run's threads yield the CPU to a window's (the studio)
        self._lock = registry.lock(name, "training")
        self._released = False
        self._published = -1e9  # monotonic time of the last progress file
        self.dq = None
        try:
            self._setup(settings)
        except BaseException:
            self._release()
            raise
        self._commands: queue.Queue[str] = queue.Queue()
        self._snap_lock = threading.Lock()
        self._snap = self._make_snapshot("idle", "ready")
        self._thread = threading.Thread(target=self._run, name=f"cllm-trainer-{name}", daemon=False)

    # ---- set up ------------------------------------------------------------------------------

    def _setup(self, settings: dict) -> None:
        self.lm = lm = self.registry.load(self.name)
        lm.check_finite("train")  # a diverged model: refuse before any step
        self.dq = self.registry.queue(self.name)
        self.gpt = lm.gpt
        meta = lm.meta
        target = settings.pop("target_epochs", None)
        if target is not None:
            meta.target_epochs = check_target_epochs(target, meta.epochs_trained)
        if settings:
            lm.train_config = replace(
                lm.train_config, **validate_train_settings(settings, lm.config)
            )
        tc = self.tc = lm.train_config
        self.B, self.T = tc.batch_size, tc.seq_len
        self.eval_interval = max(1, int(self._eval_interval or tc.eval_interval))
        vb = tc.eval_batches if self._val_batches is None else self._val_batches
        self.val_batches = max(0, int(vb))
        if self.T > lm.config.block_size:
            raise ValidationError(
                f"seq_len {self.T} is longer than the model's context of {lm.config.block_size}"
            )
        self.eot = int(lm.tokenizer.eot_id)
        state = dict(lm.train_state or {})
        self.rng = np.random.default_rng(tc.seed)
        if state.get("rng"):
            self.rng.bit_generator.state = state["rng"]
        self.opt = AdamW.for_model(
            self.gpt, lr=tc.learning_rate, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay
        )
        if lm.optim_state:
            self.opt.load_state_dict(lm.optim_state)
            lm.optim_state = None  # the optimizer holds the moments now: no second copy
        h = getattr(lm, "history", None) or {}
        self.history = _History(h.get("steps", ()), h.get("train", ()), h.get("val", ()))
        self.step = meta.steps
        self.tokens = meta.tokens_seen
        self.epochs_trained = meta.epochs_trained
        self.target_epochs = meta.target_epochs
        self.best_loss = meta.best_loss
        self.val_loss = meta.last_val_loss
        self.train_loss = meta.last_loss
        self.since_best = int(state.get("since_best", 0))  # evaluations without a better one

        items = self.dq.items()
        if not items:
            raise ValidationError(
                f"model {self.name!r} has an empty queue: add data first (--data or Add Files)"
            )
        self.source = TokenSource(self.dq)
        self._stamp = self.dq.stamp()  # before the items: a change in between is seen later
        self.queue_items = self._read_items()
        self.position = state.get("position")
        if self.position and "sampling" not in self.position:  # saved before random windows
            self.position["sampling"] = "sequential"
        if self.position:  # items removed or flagged for validation since the stop drop out
            self._drop_gone(self.position)
        epoch_items = self._epoch_items(self.position)
        self.bpe = self._batches_per_epoch(epoch_items, self._mode())
        whole = self._epoch_items(None)
        if self._batches_per_epoch(whole, self.tc.sampling) < 1:
            n = sum(s[2] - s[1] for s in whole)
            raise ValidationError(
                f"model {self.name!r} has {n} tokens in its queue, too few for one batch of "
                f"{self.B} x {self.T} (needs {self.B * self.T + self.T}): add data or lower the "
                "batch size or sequence length"
            )
        batch = int(self.position["batch"]) if self.position else 0
        self.planned = self._planned_end(batch)
        if self.max_steps is not None:
            self.run = {"start": self.step, "end": self.step + self.max_steps}
        else:  # a resumed run of the same plan goes on counting from where it started
            run = state.get("run") or {}
            same = run.get("end") == self.planned and run.get("start", self.step + 1) <= self.step
            self.run = run if same else {"start": self.step, "end": max(self.step, self.planned)}
        self.val_set = self._build_val()
        self._eval_now = False  # measure after the next step (the validation set changed)
        self._val_note = None
        if (
            state.get("val_hash") is not None
            and state.get("stamp") != self._stamp
            and state["val_hash"] != self._val_hash
        ):  # removals or validation flags since the last run changed what is held out
            self._restart_best()
            self._val_note = "the held-out data changed since the last run: best loss starts over"
        self.resumed_from = (
            f"resumed at epoch {self.epochs_trained + 1}, step {self.step}" if self.step else None
        )
        self.spheres = [
            {"tokens": 0, "hits": 0, "loss": float("nan"), "hit_rate": 0.0} for _ in range(SPHERES)
        ]
        self.log_lines: deque[str] = deque(maxlen=200)
        self.batch = batch
        self.run_steps = 0
        self._t_start: float | None = None  # monotonic start of the run
        self._paused_s = 0.0
        self._pause_t0: float | None = None  # monotonic start of the pause in progress
        self.tokens_per_s = 0.0
        self.grad_norm: float | None = None
        self.lr = 0.0

    def _read_items(self) -> list[tuple]:
        """(id, tokens, weight, validation-only) of every queue item, in queue order."""
        return [
            (it.id, int(it.n_tokens), item_weight(it.priority), bool(it.validation))
            for it in self.dq.items()
        ]

    def _mode(self) -> str:
        """The sampling of the epoch in progress (a resumed epoch keeps its own)."""
        return (
            self.position.get("sampling", self.tc.sampling) if self.position else self.tc.sampling
        )

    def _epoch_items(self, position: dict | None) -> list[tuple]:
        """The items of the epoch in progress: those it started with that are still in the queue
        and not flagged for validation, as segments (id, lo, hi, weight)."""
        if not position:
            return [
                (i, 0, _split(n, self.tc.val_fraction)[0], w)
                for i, n, w, val in self.queue_items
                if not val
            ]
        now = {q[0] for q in self.queue_items if not q[3]}
        return [tuple(s) for s in position["items"] if s[0] in now]

    def _drop_gone(self, position: dict) -> int:
        """Take the segments of removed and validation-flagged items out of the epoch in
        progress; a sequential stream's offset moves back by the tokens dropped before it, so it
        goes on where it was. Returns how many segments went."""
        n = len(position["items"])
        keep = {q[0] for q in self.queue_items if not q[3]}
        items, offset = drop_segments(position["items"], keep, position.get("offset"))
        position["items"] = items
        if offset is not None:
            position["offset"] = offset
        return n - len(items)

    def _queue_changed(self) -> bool:
        """Before each step: when the queue's stamp moved (a removal or a validation flag),
        drop what left training from the epoch and rebuild the validation set if what is held
        out changed. True when the epoch's items changed."""
        stamp = self.dq.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self.queue_items = self._read_items()
        dropped = self._drop_gone(self.position) if self.position else 0
        if dropped:
            self._log(f"{dropped} item(s) removed or held out for validation left the epoch")
        old = self._val_hash
        self.val_set = self._build_val()
        if self._val_hash != old:
            self._restart_best()
            self._log("the held-out data changed: the validation set is new, best loss starts over")
        return bool(dropped)

    def _restart_best(self) -> None:
        """A new validation set: the best loss and the patience start over from its first
        measurement (after the next step, or before any checkpoint saved first)."""
        self.best_loss = self.val_loss = None
        self.since_best = 0
        self._eval_now = bool(self.val_set)

    def _batches_per_epoch(self, segments: list[tuple], mode: str) -> int:
        cls = SequentialStream if mode == "sequential" else WindowSampler
        return cls.batches_per_epoch(segments, self.B, self.T)

    def _planned_end(self, batch: int) -> int:
        """The model's step at which it reaches its target: where the schedule's decay ends."""
        left = (self.target_epochs - self.epochs_trained) * self.bpe - batch
        return self.step + max(0, left)

    def _build_val(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The fixed validation batches: every item's held-out tail and the items flagged for
        validation, whole. ``_val_hash`` names what they were drawn from."""
        segs = []
        for item_id, n, _, val in self.queue_items:
            n_train = 0 if val else _split(n, self.tc.val_fraction)[0]
            if n > n_train:
                segs.append((item_id, n_train, n))
        key = json.dumps([segs, self.B, self.T, self.val_batches]).encode()
        self._val_hash = hashlib.sha256(key).hexdigest()[:16]
        return validation_batches(self.source, segs, self.eot, self.B, self.T, self.val_batches)

    # ---- commands and snapshot (any thread) --------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        self._commands.put("pause")

    def resume(self) -> None:
        self._commands.put("resume")

    def stop(self) -> None:
        self._commands.put("stop")

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True once it has finished."""
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Release the model lock of a trainer that was never started."""
        if self._thread.ident is None:
            self._release()

    def snapshot(self) -> TrainSnapshot:
        with self._snap_lock:
            return self._snap

    # ---- the training thread -----------------------------------------------------------------

    def _log(self, line: str) -> None:
        self.log_lines.append(f"{time.strftime('%H:%M:%S')} {line}")

    def _elapsed(self) -> float:
        if self._t_start is None:
            return 0.0
        now = self._pause_t0 if self._pause_t0 is not None else time.monotonic()
        return now - self._t_start - self._paused_s  # frozen while paused

    def _make_snapshot(self, state: str, message: str) -> TrainSnapshot:
        finished = state in ("done", "stopped", "error")
        left = max(0, self.run["end"] - self.step)
        eta = left * self.B * self.T / self.tokens_per_s if self.tokens_per_s > 0 else None
        return TrainSnapshot(
            name=self.name,
            state=state,
            message=message,
            epoch=self.epochs_trained
            if state == "done" and not self.batch
            else self.epochs_trained + 1,
            epochs_trained=self.epochs_trained,
            target_epochs=self.target_epochs,
            step=self.step,
            run_steps=self.step - self.run["start"],
            total_steps=self.run["end"] - self.run["start"],
            session_steps=self.run_steps,
            batch=self.batch,
            batches_per_epoch=self.bpe,
            batch_size=self.B,
            seq_len=self.T,
            tokens=self.tokens,
            train_loss=self.train_loss,
            val_loss=self.val_loss,
            best_loss=self.best_loss,
            tokens_per_s=self.tokens_per_s,
            elapsed=self._elapsed(),
            eta=None if finished else eta,
            grad_norm=self.grad_norm,
            lr=self.lr,
            spheres=tuple(dict(s) for s in self.spheres),
            history=self.history.view(),
            log=tuple(self.log_lines),
            resumed_from=self.resumed_from,
            pid=os.getpid(),
            host=socket.gethostname(),
            updated=time.time(),
        )

    def _publish(self, state: str, message: str = "", force: bool = False) -> None:
        snap = self._make_snapshot(state, message)
        with self._snap_lock:
            self._snap = snap
        now = time.monotonic()
        if self.publish and (force or now - self._published >= PUBLISH_S):
            self._published = now
            try:
                path = progress_path(self.registry.dir, self.name)
                # once a second: no fsync, a lost update is replaced a second later
                write_atomic(
                    path, json.dumps(_snapshot_to_json(snap), allow_nan=False), durable=False
                )
            except (OSError, ValueError) as err:  # a read-only folder must not stop training
                self._log(f"could not write progress: {err}")

    def _run(self) -> None:
        state, message = "error", "training failed"
        if self.nice > 0:
            threads.lower_priority(self.nice)
        try:
            state, message = self._train()
        except Exception as err:  # reported in the snapshot, log and stderr, never silent
            if isinstance(err, CLLMError):
                message = f"training failed: {err}"
            else:  # a bug: keep its traceback on stderr too
                message = f"training failed: {type(err).__name__}: {err}"
                traceback.print_exc()
        finally:
            try:
                self._log(message)
                self._publish(state, message, force=True)
            finally:
                self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            if getattr(self, "source", None) is not None:
                self.source.close()
            if self.dq is not None:
                self.dq.close()
            self._lock.release()

    def _commands_say(self) -> str | None:
        """Handle pending commands; block while paused. Returns 'stop' or None."""
        paused, t_pause = False, 0.0
        while True:
            try:
                cmd = (
                    self._commands.get(timeout=PUBLISH_S) if paused else self._commands.get_nowait()
                )
            except queue.Empty:
                if not paused:
                    return None
                self._publish("paused", "paused")  # keep the progress file fresh
                continue
            if cmd == "stop":
                if paused:
                    self._paused_s += time.monotonic() - t_pause
                    self._pause_t0 = None
                return "stop"
            if cmd == "pause" and not paused:
                paused, t_pause = True, time.monotonic()
                self._pause_t0 = t_pause
                self._log(f"paused at step {self.step}")
                self._publish("paused", "paused", force=True)
            elif cmd == "resume" and paused:
                self._paused_s += time.monotonic() - t_pause
                self._pause_t0 = None
                self._log(f"resumed at step {self.step}")
                return None

    def _train(self) -> tuple[str, str]:
        if self.resumed_from:
            self._log(self.resumed_from)
        if self._val_note:
            self._log(self._val_note)
        if self.run["end"] <= self.step:
            msg = f"nothing to train: {self.epochs_trained} of {self.target_epochs} epochs done"
            return "done", msg
        self._log(
            f"training {self.name}: {self.run['end'] - self.step} steps of {self.B} x {self.T}, "
            f"{self.bpe} batches per epoch, {self._mode()} sampling"
        )
        self._publish("running", "starting", force=True)
        self._last_ckpt = self._t_start = time.monotonic()
        while self.step < self.run["end"]:
            if not self.position:
                self._start_epoch()
            said = self._train_epoch()
            if said == "stop":
                self._checkpoint("stop")
                return "stopped", f"stopped at step {self.step}; checkpoint saved"
            if said == "early stop":
                return "done", self._early_stop()
        if self.position:  # a max_steps run ending mid-epoch
            self._checkpoint("end of run")
        return "done", f"finished: {self.run_steps} steps in {self._elapsed():.1f} s"

    def _start_epoch(self) -> None:
        """Fix the epoch's items (ones added from now on join the next epoch) and its offset."""
        self.queue_items = self._read_items()
        segs = self._epoch_items(None)
        mode = self.tc.sampling
        self.bpe = self._batches_per_epoch(segs, mode)
        if self.bpe < 1:
            raise CLLMError(f"the queue of model {self.name!r} became too small for one batch")
        self.planned = self._planned_end(0)  # the data may have changed: so may the target step
        if self.max_steps is None:
            self.run["end"] = max(self.step, self.planned)
        self.position = {"sampling": mode, "items": segs, "batch": 0, "loss_sum": 0.0}
        if mode == "sequential":
            self.position["offset"] = int(self.rng.integers(self.T))

    def _train_epoch(self) -> str | None:
        """Train from the saved position to the epoch's end or the run's; 'stop' if asked to,
        'early stop' when the patience ran out."""
        pos = self.position
        segs = [tuple(s) for s in pos["items"]]
        mode = pos.get("sampling", "sequential")
        self.bpe = self._batches_per_epoch(segs, mode)
        if mode == "sequential":
            stream = SequentialStream(self.source, segs, self.eot, self.B, self.T)
        else:
            sampler = WindowSampler(self.source, segs, self.eot, self.B, self.T)
        self.batch = int(pos["batch"])
        while self.batch < self.bpe and self.step < self.run["end"]:
            if self._commands_say() == "stop":
                return "stop"
            if self._queue_changed():  # items left the epoch: batches from what is left
                segs = [tuple(s) for s in pos["items"]]
                self.bpe = self._batches_per_epoch(segs, mode)
                if mode == "sequential":
                    stream = SequentialStream(self.source, segs, self.eot, self.B, self.T)
                else:
                    sampler = WindowSampler(self.source, segs, self.eot, self.B, self.T)
                if self.batch >= self.bpe:
                    break
            t0 = time.monotonic()
            if mode == "sequential":
                xy = stream.batch_at(int(pos["offset"]))
                if xy is None:  # batch shape changed since the stop: the epoch's tail is too short
                    self.batch = self.bpe
                    break
                pos["offset"] += self.B * self.T
            else:
                xy = sampler.batch(self.rng)
            loss = self._step(*xy)
            pos["batch"] = self.batch = self.batch + 1
            pos["loss_sum"] += loss
            val = None
            # validate every eval_interval steps, at each epoch end and at the run's end
            ends = self.batch == self.bpe or self.step == self.run["end"]
            if self.step % self.eval_interval == 0 or ends or self._eval_now:
                val = self._evaluate()
            self.history.append(self.step, loss, val)
            improved = val is not None and val == self.best_loss and self.since_best == 0
            patience = self.tc.early_stop
            if improved and self.batch < self.bpe:
                self._checkpoint("best", best=True)
            elif patience and self.since_best >= patience:
                return "early stop"
            every = self.tc.checkpoint_interval
            timer = time.monotonic() - self._last_ckpt >= self.tc.checkpoint_minutes * 60
            if (
                self.batch < self.bpe
                and not improved
                and (timer or (every and not self.step % every))
            ):
                self._checkpoint("interval" if not timer else "timer")
            # the rate counts validation and checkpoints too, so the ETA holds
            rate = self.B * self.T / max(time.monotonic() - t0, 1e-9)
            self.tokens_per_s = (
                rate if self.run_steps == 1 else 0.9 * self.tokens_per_s + 0.1 * rate
            )
            if self.batch < self.bpe:
                self._publish("running", f"epoch {self.epochs_trained + 1}, step {self.step}")
        if self.batch >= self.bpe:  # (also when items were removed and the epoch shrank)
            self._end_epoch()
            self._publish("running", f"epoch {self.epochs_trained} done")
        return None

    def _early_stop(self) -> str:
        """Save where training stopped, then make the best checkpoint the model."""
        self._checkpoint("early stop")
        d = checkpoints.folder(self.registry.dir, self.name)
        try:
            meta = checkpoints.restore(self.registry, self.name, checkpoints.find(d, best=True))
        except CLLMError as err:  # no best kept (no validation data): the model stays as it is
            return f"early stop at step {self.step}; {err}"
        self._log(f"restored the best checkpoint (step {meta.steps})")
        return (
            f"early stop at step {self.step}: {self.tc.early_stop} evaluations without a better "
            f"validation loss; the best checkpoint (step {meta.steps}, val "
            f"{meta.last_val_loss:.4f}) is the model"
        )

    def _step(self, x: np.ndarray, y: np.ndarray) -> float:
        gpt, tc = self.gpt, self.tc
        loss = float(gpt.forward(x, y))
        if not math.isfinite(loss):
            raise CLLMError(
                f"the loss became {loss} at step {self.step + 1}: lower the learning rate "
                "(the last checkpoint is kept)"
            )
        gpt.backward()
        self.grad_norm = float(clip_grad_norm(gpt.grads, tc.grad_clip))
        self.lr = lr_at(
            self.step, self.planned, tc.warmup, tc.learning_rate, tc.min_lr, tc.schedule
        )
        self.opt.step(gpt.params, gpt.grads, self.lr)
        self.step += 1
        self.run_steps += 1
        self.tokens += x.size
        self.train_loss = loss
        self._measure_spheres(gpt.losses)
        return loss

    def _measure_spheres(self, losses: np.ndarray) -> None:
        flat = np.asarray(losses, np.float64).ravel()
        shard = np.arange(flat.size) * SPHERES // flat.size  # 12 contiguous, near-equal shards
        counts = np.bincount(shard, minlength=SPHERES)
        sums = np.bincount(shard, weights=flat, minlength=SPHERES)
        hits = np.bincount(shard, weights=flat < LN2, minlength=SPHERES)
        for s, n, total, h in zip(self.spheres, counts, sums, hits, strict=True):
            s["tokens"] += int(n)
            s["hits"] += int(h)
            s["loss"] = float(total / n) if n else float("nan")
            s["hit_rate"] = float(h / n) if n else 0.0

    def _evaluate(self) -> float | None:
        self._eval_now = False
        if not self.val_set:
            return None
        val = float(np.mean([self.gpt.forward(x, y) for x, y in self.val_set]))
        self.val_loss = val
        if self.best_loss is None or val < self.best_loss:
            self.best_loss = val
            self.since_best = 0
        else:
            self.since_best += 1
        return val

    def _end_epoch(self) -> None:
        if self._eval_now:  # the epoch ended as items left it: measure the new validation set
            self._evaluate()
        pos = self.position
        self.epochs_trained += 1
        if self.epochs_trained > self.target_epochs:  # a max_steps run trained past the target
            self.target_epochs = self.epochs_trained
        summary = {
            "epoch": self.epochs_trained,
            "steps": self.step,
            "train_loss": pos["loss_sum"] / max(1, pos["batch"]),
            "val_loss": self.val_loss,
            "tokens": self.tokens,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.lm.meta.update(epoch_summaries=[*self.lm.meta.epoch_summaries, summary])
        self.position = None
        self.batch = 0
        self._log(
            f"epoch {self.epochs_trained} done: train {summary['train_loss']:.4f}"
            + (f", val {self.val_loss:.4f}" if self.val_loss is not None else "")
        )
        improved = self.since_best == 0 and self.val_loss is not None
        self._checkpoint("epoch end", best=improved and self.val_loss == self.best_loss)

    def _checkpoint(self, reason: str, best: bool = False) -> None:
        if self._eval_now:  # a new validation set is measured before anything is saved
            self._evaluate()
        t0 = time.monotonic()
        lm, meta = self.lm, self.lm.meta
        if self.best_loss is None and self.train_loss is not None:
            best_loss = self.train_loss
        else:
            best_loss = self.best_loss
        meta.update(
            epochs_trained=self.epochs_trained,
            target_epochs=self.target_epochs,
            steps=self.step,
            tokens_seen=self.tokens,
            last_loss=self.train_loss,
            best_loss=best_loss,
            last_val_loss=self.val_loss,
            position=None
            if not self.position
            else {
                "epoch": self.epochs_trained + 1,
                "batch": self.position["batch"],
                "offset": self.position.get("offset"),
                "sampling": self.position.get("sampling"),
            },
        )
        lm.train_config = self.tc
        # the live moments, not a copy: the save reads them on this thread, between steps
        lm.optim_state = {"m": self.opt.m, "v": self.opt.v, "t": self.opt.t}
        lm.train_state = {
            "position": self.position,
            "rng": self.rng.bit_generator.state,
            "run": self.run,
            "since_best": self.since_best,
            "val_hash": self._val_hash,  # what the best loss was measured on
            "stamp": self._stamp,  # the queue's stamp then
        }
        lm.history = self.history.view()
        self.registry.save(lm)
        lm.optim_state = None  # the saved copy of the moments is not kept in memory
        d = checkpoints.folder(self.registry.dir, self.name)
        try:
            checkpoints.record(
                self.registry.path(self.name), d, self.step, self.tc.keep_checkpoints, best=best
            )
        except OSError as err:  # the model itself is saved; say so and go on
            self._log(f"could not keep checkpoint {self.step}: {err}")
        self._last_ckpt = time.monotonic()
        self._log(f"checkpoint ({reason}) at step {self.step} in {time.monotonic() - t0:.2f} s")
