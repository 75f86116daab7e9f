"""The job queue of a models folder: ``jobs.sqlite`` (SQLite, WAL, synchronous=FULL).

A job names a model, how far to train it (``epochs``: a target total, or ``steps``: optimizer steps
in all for this job) and optional training-setting overrides. Its state is one of

    queued -> running -> done | failed (reason) | cancelled
                 \\-> queued again when its process was interrupted (it resumes from the checkpoint)

Every change is one SQLite transaction, so a kill at any moment loses no job and leaves each in one
state. A scheduler *claims* a queued job with one conditional UPDATE (``state = 'queued'``), so two
schedulers never start the same job; the claim records the scheduler (``owner_pid``) and the worker
process records itself (``pid``), each with the process's start time, so a recycled pid is not
taken for the old process. A job left ``running`` whose worker and owner are both gone (a killed
scheduler) is an orphan: ``recover()`` puts it back in the queue, unless the model's lock is still
held by a live process (then it is still training, and is left alone).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from cllm.engine.config import TrainConfig
from cllm.errors import NotFoundError, ValidationError
from cllm.models import locks, rules
from cllm.pids import pid_alive

DB_NAME = "jobs.sqlite"
STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 3  # a worker that dies without a word this many times fails its job
SCHEMA_VERSION = 1

# --set keys a person may type for TrainConfig fields
ALIASES = {"lr": "learning_rate"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    epochs INTEGER,
    steps INTEGER,
    settings TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued',
    reason TEXT NOT NULL DEFAULT '',
    sweep TEXT,
    created TEXT NOT NULL,
    started TEXT,
    ended TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner_pid INTEGER,
    owner_token TEXT,
    owner_host TEXT,
    pid INTEGER,
    pid_token TEXT,
    host TEXT,
    threads INTEGER,
    base_steps INTEGER,
    step INTEGER,
    train_loss REAL,
    val_loss REAL,
    best_loss REAL,
    tokens INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hostname() -> str:
    return socket.gethostname()


def proc_token(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: clock ticks since boot), or None where it cannot
    be read. A pid and this token name one process: a recycled pid has another token."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return data[data.rindex(b")") + 2 :].split()[19].decode()
    except (ValueError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    """A process that has exited but was not reaped (its parent died and, in some containers,
    nobody reaps orphans): dead for our purposes."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return False


def proc_alive(pid: int | None, token: str | None) -> bool:
    """Whether the process ``pid`` recorded with ``token`` still runs on this host."""
    if not pid or not pid_alive(int(pid)) or _zombie(int(pid)):
        return False
    if token is None:
        return True
    now = proc_token(int(pid))
    return now is None or now == token


@dataclass
class Job:
    """One row of the queue."""

    id: int
    model: str
    epochs: int | None  # target total epochs
    steps: int | None  # optimizer steps this job trains in all
    settings: dict = field(default_factory=dict)  # TrainConfig overrides for the run
    state: str = "queued"
    reason: str = ""  # why it failed, was cancelled or went back to the queue
    sweep: str | None = None  # the base model of the sweep this job belongs to
    created: str = ""
    started: str | None = None  # first start
    ended: str | None = None
    attempts: int = 0  # times a process was started for it since it was (re)queued
    owner_pid: int | None = None  # the scheduler that claimed it
    owner_token: str | None = None
    owner_host: str | None = None
    pid: int | None = None  # the worker process training it
    pid_token: str | None = None
    host: str | None = None
    threads: int | None = None
    base_steps: int | None = None  # the model's steps when a steps job first started
    step: int | None = None  # the model's step at the last report
    train_loss: float | None = None
    val_loss: float | None = None
    best_loss: float | None = None
    tokens: int = 0  # training tokens this job has trained, over all its runs
    seconds: float = 0.0  # wall time of its runs

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def target(self) -> str:
        if self.steps is not None:
            return f"{self.steps} steps"
        return f"{self.epochs} epochs" if self.epochs is not None else "its target"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        return d


_COLUMNS = [f.name for f in fields(Job)]


def _row(r: sqlite3.Row) -> Job:
    d = {k: r[k] for k in _COLUMNS}
    d["settings"] = json.loads(d["settings"] or "{}")
    return Job(**d)


def _number(text: str):
    t = text.strip()
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t  # refused by the rules with a message naming the setting


def parse_settings(pairs: Iterable[str]) -> dict:
    """``["lr=3e-4", "batch_size=16"]`` -> ``{"learning_rate": 0.0003, "batch_size": 16}``.

    Keys are TrainConfig fields (``-`` may stand for ``_``; ``lr`` for ``learning_rate``); values
    are checked by the models folder's rules (without a model: ``seq_len`` is checked when the job
    is added, against each model's context)."""
    known = {f.name for f in fields(TrainConfig)} - {"extra"}
    out: dict = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        key = ALIASES.get(key, key)
        if not eq or not key:
            raise ValidationError(f"--set {pair!r}: expected KEY=VALUE, e.g. lr=3e-4")
        if key not in known:
            raise ValidationError(
                f"--set {pair!r}: unknown training setting {key!r}; "
                f"one of {', '.join(sorted(known))}"
            )
        out[key] = _number(value)
    rules.validate_train_settings(out)
    return out


class JobStore:
    """The jobs of one models folder. Each call opens its own short connection, so a store is
    safe to share between threads and costs nothing while idle."""

    def __init__(self, models_dir: Path | str):
        self.dir = Path(models_dir)
        self.path = self.dir / DB_NAME

    # ------------------------------------------------------------------------------ connection

    @contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        self.dir.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=30000")
            if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                con.execute("BEGIN IMMEDIATE")
                con.executescript(_SCHEMA)  # commits
                con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if write:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            else:
                yield con
        finally:
            con.close()

    # ------------------------------------------------------------------------------ reading

    def list(self, states: Iterable[str] | None = None) -> list[Job]:
        if not self.path.exists():
            return []
        with self._db() as con:
            rows = con.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        jobs = [_row(r) for r in rows]
        if states is not None:
            wanted = set(states)
            jobs = [j for j in jobs if j.state in wanted]
        return jobs

    def get(self, job_id: int) -> Job:
        with self._db() as con:
            r = con.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if r is None:
            raise NotFoundError(f"no job {job_id} in {self.path}")
        return _row(r)

    # ------------------------------------------------------------------------------ adding

    def add(
        self,
        registry,
        models: Iterable[str],
        *,
        epochs: int | None = None,
        steps: int | None = None,
        settings: dict | None = None,
        sweep: str | None = None,
    ) -> list[Job]:
        """One queued job per model. Everything is checked first (every model exists, the epochs
        are not below what it has trained, the settings fit it); on any refusal nothing is added."""
        models = list(models)
        if not models:
            raise ValidationError("name at least one model")
        if epochs is not None and steps is not None:
            raise ValidationError("give --epochs or --steps, not both")
        if steps is not None:
            steps = rules._int("steps", steps, 1, 1_000_000_000)
        settings = dict(settings or {})
        settings.pop("target_epochs", None)
        rows = []
        for name in models:
            info = registry.info(name)  # NotFoundError for an unknown model
            if epochs is not None:
                rules.check_target_epochs(epochs, int(info.meta.epochs_trained))
            merged = {k: v for k, v in info.train.to_dict().items() if k != "extra"}
            merged.update(rules.validate_train_settings(settings, info.config))
            rules.validate_train_settings(merged, info.config)  # cross-field rules
            rows.append(info.name)
        stamp = now_iso()
        blob = json.dumps(settings, sort_keys=True)
        with self._db(write=True) as con:
            ids = [
                con.execute(
                    "INSERT INTO jobs (model, epochs, steps, settings, sweep, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, epochs, steps, blob, sweep, stamp),
                ).lastrowid
                for name in rows
            ]
        return [self.get(i) for i in ids]

    # ------------------------------------------------------------------------------ user commands

    def cancel(self, job_id: int) -> Job:
        """A queued job is cancelled at once; a running one is marked cancelled and its worker
        told to stop (it saves a checkpoint first)."""
        import signal

        job = self.get(job_id)
        if job.state in FINISHED:
            raise ValidationError(f"job {job.id} is already {job.state}")
        with self._db(write=True) as con:
            con.execute(
                "UPDATE jobs SET state = 'cancelled', reason = 'cancelled', ended = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (now_iso(), job.id),
            )
        if job.state == "running" and job.host == hostname():
            if proc_alive(job.pid, job.pid_token):
                try:
                    os.kill(int(job.pid), signal.SIGTERM)
                except OSError:
                    pass  # gone meanwhile; it polls the queue too
        return self.get(job.id)

    def retry(self, job_id: int) -> Job:
        """A failed or cancelled job goes back to the queue; it resumes from the model's
        checkpoint and trains to the job's original target."""
        job = self.get(job_id)
        if job.state not in ("failed", "cancelled"):
            what = {
                "done": "is done: add a new job to train further",
                "queued": "is already queued",
                "running": "is running",
            }[job.state]
            raise ValidationError(f"job {job.id} {what}")
        with self._db(write=True) as con:
            con.execute(
                "UPDATE jobs SET state = 'queued', reason = '', ended = NULL, attempts = 0, "
                "owner_pid = NULL, owner_token = NULL, owner_host = NULL WHERE id = ? "
                "AND state IN ('failed', 'cancelled')",
                (job.id,),
            )
        return self.get(job.id)

    # ------------------------------------------------------------------------------ scheduling

    def claim(self, job_id: int, owner_pid: int | None = None) -> Job | None:
        """Take a queued job for this process (the scheduler); None if someone else took it."""
        owner_pid = owner_pid or os.getpid()
        with self._db(write=True) as con:
            cur = con.execute(
                "UPDATE jobs SET state = 'running', reason = '', owner_pid = ?, owner_token = ?, "
                "owner_host = ?, pid = NULL, pid_token = NULL, host = NULL, "
                "started = COALESCE(started, ?), attempts = attempts + 1 "
                "WHERE id = ? AND state = 'queued'",
                (owner_pid, proc_token(owner_pid), hostname(), now_iso(), int(job_id)),
            )
            if cur.rowcount != 1:
                return None
        return self.get(job_id)

    def register_worker(
        self, job_id: int, pid: int, owner_pid: int | None, threads: int | None = None
    ) -> bool:
        """Record the worker process of a claimed job. False when the job is no longer the
        owner's to run (cancelled, or recovered by another scheduler): the worker must not train."""
        with self._db(write=True) as con:
            cur = con.execute(
                "UPDATE jobs SET pid = ?, pid_token = ?, host = ?, "
                "threads = COALESCE(?, threads) WHERE id = ? AND state = 'running' "
                "AND owner_pid IS ? AND (pid IS NULL OR pid = ?)",
                (pid, proc_token(pid), hostname(), threads, int(job_id), owner_pid, pid),
            )
            return cur.rowcount == 1

    def update(self, job_id: int, pid: int | None = None, **values) -> bool:
        """Set columns of a job; with ``pid``, only while that worker still owns the job."""
        if not values:
            return True
        bad = set(values) - set(_COLUMNS)
        if bad:
            raise ValueError(f"unknown job columns {bad}")
        if "settings" in values:
            values["settings"] = json.dumps(values["settings"], sort_keys=True)
        sets = ", ".join(f"{k} = ?" for k in values)
        sql = f"UPDATE jobs SET {sets} WHERE id = ?"
        args = [*values.values(), int(job_id)]
        if pid is not None:
            sql += " AND pid = ?"
            args.append(pid)
        with self._db(write=True) as con:
            return con.execute(sql, args).rowcount == 1

    def finish(self, job_id: int, pid: int | None, state: str, reason: str = "", **results) -> bool:
        """End a run: ``state`` done | failed | queued (interrupted). A job cancelled meanwhile
        stays cancelled (its results are still recorded). False if the worker lost the job."""
        assert state in ("done", "failed", "queued")
        ended = None if state == "queued" else now_iso()
        owner = "" if pid is None else " AND pid = ?"
        with self._db(write=True) as con:
            args = [pid] if pid is not None else []
            r = con.execute(f"SELECT state FROM jobs WHERE id = ?{owner}", [job_id, *args])
            row = r.fetchone()
            if row is None:
                return False
            cols = dict(results)
            if row["state"] == "running":
                cols.update(state=state, reason=reason, ended=ended)
                if state == "queued":
                    cols.update(owner_pid=None, owner_token=None, owner_host=None)
            elif row["state"] != "cancelled":
                return False
            cols.update(pid=None, pid_token=None)
            sets = ", ".join(f"{k} = ?" for k in cols)
            con.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*cols.values(), job_id])
        return True

    def recover(self) -> list[Job]:
        """Put orphaned jobs back in the queue: ``running`` on this host, with neither their
        worker nor the scheduler that claimed them alive, and their model not locked by a live
        process. Returns the jobs requeued."""
        me = hostname()
        out = []
        for job in self.list(["running"]):
            if (job.host or job.owner_host) not in (me, f"ray:{me}"):
                continue  # another machine's; it reports back itself
            if job.pid and proc_alive(job.pid, job.pid_token):
                continue
            if job.owner_pid and proc_alive(job.owner_pid, job.owner_token):
                continue  # its scheduler is alive and looks after it
            if locks.lock_holder(self.dir, job.model) is not None:
                continue  # still training (or the model is busy otherwise): not an orphan yet
            reason = (
                f"interrupted: its scheduler (pid {job.owner_pid}) stopped; "
                "resumes from the checkpoint"
            )
            with self._db(write=True) as con:
                cur = con.execute(
                    "UPDATE jobs SET state = 'queued', reason = ?, owner_pid = NULL, "
                    "owner_token = NULL, owner_host = NULL, pid = NULL, pid_token = NULL "
                    "WHERE id = ? AND state = 'running' AND owner_pid IS ? AND pid IS ?",
                    (reason, job.id, job.owner_pid, job.pid),
                )
            if cur.rowcount == 1:
                out.append(self.get(job.id))
        return out

    def delete_finished(self) -> int:
        """Remove done, failed and cancelled jobs; returns how many."""
        with self._db(write=True) as con:
            return con.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled')"
            ).rowcount


def progress_of(job: Job, snap) -> tuple[float | None, float | None]:
    """(fraction done, ETA seconds) of a running job from its model's progress snapshot."""
    if snap is None:
        return None, None
    if job.steps is not None and job.base_steps is not None:
        frac = (snap.step - job.base_steps) / job.steps
    elif snap.total_steps:
        frac = snap.run_steps / snap.total_steps
    else:
        return None, snap.eta
    return max(0.0, min(1.0, frac)), snap.eta


def job_rows(models_dir: Path | str) -> list[dict]:
    """Every job as a dict (the fields of ``Job``) with live ``progress`` (0-1) and ``eta``
    (seconds) for running ones, read from their models' progress files."""
    from cllm.train.trainer import read_progress

    out = []
    for job in JobStore(models_dir).list():
        d = job.to_dict()
        progress, eta = None, None
        if job.state == "running":
            snap = read_progress(Path(models_dir), job.model)
            progress, eta = progress_of(job, snap)
            if snap is not None:
                d.update(
                    step=snap.step,
                    train_loss=snap.train_loss,
                    val_loss=snap.val_loss,
                    best_loss=snap.best_loss,
                )
        elif job.state == "done":
            progress = 1.0
        d.update(progress=progress, eta=eta)
        out.append(d)
    return out


def wait_until(pred, timeout: float, period: float = 0.1) -> bool:
    """Poll ``pred()`` until true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(period)
