"""The job queue on a Ray cluster: ``python -m cllm jobs run --ray auto|local|HOST:PORT``.

Ray (optional: ``pip install -e '.[cluster]'``) places the jobs on the cluster's nodes; this
module only ships each job and takes its results back. The driver (this process) keeps the queue:
it claims a job as the local scheduler does, holds the model's lock for the whole remote run (so
the studio and other schedulers see the model as busy), and runs the job as one Ray task with
``num_cpus`` CPUs (and as many training threads).

- **Not shared** (default): the driver packs the model file and a consistent snapshot of its queue
  into the object store; the task unpacks them into a temporary folder on its node and trains
  there. Every checkpoint the trainer saves (each ``checkpoint_minutes``, at epoch ends, on stop)
  and its progress (about once a second) go back through a Ray queue; the driver writes them into
  the models folder atomically, so ``jobs list`` and the studio show remote jobs as local ones.
- **``--shared-folder``**: every node sees the models folder at the same path; the task trains in
  it directly (the trainer takes the model's lock there and writes its own checkpoints).

Faults: a task whose worker process or node dies is resubmitted with the last checkpoint that
reached the driver, up to ``max_retries`` times, then the job fails with the reason. When the
driver dies, Ray ends its tasks; the jobs stay ``running`` under a dead owner and the next
``jobs run`` (with or without Ray) puts them back in the queue and resumes them from the last
checkpoint in the models folder.
"""

from __future__ import annotations

import io
import os
import socket
import sqlite3
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cllm.atomic import write_atomic
from cllm.data.dataqueue import INLINE
from cllm.errors import BusyError, CLLMError, ValidationError
from cllm.jobs.store import Job, JobStore, hostname
from cllm.models import locks

POLL_S = 0.5
CONNECT_TIMEOUT_S = 20.0  # an unreachable address is reported within 30 s


class RayUnavailableError(CLLMError):
    """Ray is not installed, or the cluster cannot be reached."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "--ray needs the 'ray' package: pip install -e '.[cluster]'"
        ) from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A ``HOST:PORT`` address must accept a TCP connection (Ray's own connect can hang)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValidationError(
            f"--ray {address!r}: expected 'auto', 'local' or HOST:PORT of the cluster's head"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at {address}: {err.strerror or err}"
        ) from None


def connect(address: str):
    """Connect this process to Ray (``local``: start a one-machine cluster); returns ``ray``."""
    check_reachable(address)
    ray = _import_ray()
    root = str(Path(__file__).resolve().parents[2])
    env = {"env_vars": {"PYTHONPATH": root}}  # a checkout not installed on the nodes
    kwargs = dict(
        runtime_env=env, logging_level="WARNING", log_to_driver=False, ignore_reinit_error=True
    )
    try:
        if address == "local":
            from cllm.jobs.scheduler import cpu_count

            ray.init(num_cpus=cpu_count(), include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RayUnavailableError(f"cannot connect to Ray at {address}: {first}") from None
    return ray


# ---------------------------------------------------------------------------------- packing


def pack_model(models_dir: Path, name: str) -> bytes:
    """The model file and a consistent snapshot of its queue, as one uncompressed tar."""
    models_dir = Path(models_dir)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(models_dir / f"{name}.cllm", arcname="model.cllm")
        qdir = models_dir / f"{name}_queue"
        index = qdir / "queue.sqlite"
        if index.is_file():
            with tempfile.TemporaryDirectory() as td:
                snap = Path(td) / "queue.sqlite"
                src = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=30)
                dst = sqlite3.connect(snap)
                try:
                    src.backup(dst)  # one consistent copy of the index, whatever writes meanwhile
                    rows = dst.execute("SELECT file FROM items").fetchall()
                    files = [f for (f,) in rows if not f.startswith(INLINE)]  # inline: in the index
                finally:
                    dst.close()
                    src.close()
                tar.add(snap, arcname="queue/queue.sqlite")
                for f in files:  # token files are immutable once their row is committed
                    tar.add(qdir / "items" / f, arcname=f"queue/items/{f}")
    return buf.getvalue()


def unpack_model(data: bytes, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for m in tar.getmembers():
            if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
                raise CLLMError(f"unexpected entry {m.name!r} in a shipped model")
            if m.name == "model.cllm":
                target = folder / f"{name}.cllm"
            else:
                target = folder / f"{name}_queue" / m.name[len("queue/") :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(target, "wb") as dst:
                dst.write(src.read())


# ---------------------------------------------------------------------------------- the task


def train_task(job: dict, packed, shared_dir: str | None, inbox, num_cpus: int, run_id: str):
    """One job on a Ray worker. Returns {state, message, results, pid, node}."""
    from cllm.models.registry import Registry
    from cllm.train.trainer import Trainer, progress_path

    name = job["model"]
    tmp = None
    if shared_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cllm-ray-")
        folder = Path(tmp.name)
        unpack_model(packed, folder, name)
    else:
        folder = Path(shared_dir)
    reg = Registry(folder)
    pid, node = os.getpid(), socket.gethostname()

    def send(kind: str, payload) -> None:
        if inbox is not None:
            inbox.put((run_id, kind, payload))

    try:
        info = reg.info(name)
        settings = dict(job["settings"])
        max_steps = None
        if job["steps"] is not None:
            now = int(info.meta.steps or 0)
            max_steps = int(job["base_steps"]) + int(job["steps"]) - now
            if max_steps <= 0:
                return {
                    "state": "done",
                    "message": "",
                    "results": {"step": now},
                    "pid": pid,
                    "node": node,
                }
        elif job["epochs"] is not None:
            settings["target_epochs"] = job["epochs"]
        try:
            trainer = Trainer(reg, name, max_steps=max_steps, **settings)
        except BusyError as err:
            return {"state": "busy", "message": str(err), "results": {}, "pid": pid, "node": node}
        except CLLMError as err:
            return {"state": "error", "message": str(err), "results": {}, "pid": pid, "node": node}
        trainer.gpt.threads = max(1, int(num_cpus))
        model_path, prog_path = reg.path(name), progress_path(folder, name)

        def sig(p: Path):
            try:
                st = p.stat()
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_size, st.st_mtime_ns

        shipped = sig(model_path)
        send("started", {"pid": pid, "node": node})
        tokens_before = trainer.snapshot().tokens
        t0 = time.monotonic()
        trainer.start()
        try:
            while not trainer.join(1.0):
                if shared_dir is None:
                    now = sig(model_path)
                    if now != shipped:  # a checkpoint: send it home
                        shipped = now
                        send("checkpoint", model_path.read_bytes())
                    try:
                        send("progress", prog_path.read_text("utf-8"))
                    except OSError:
                        pass
        except (KeyboardInterrupt, SystemExit):  # ray.cancel: stop with a checkpoint
            trainer.stop()
            trainer.join()
        snap = trainer.snapshot()
        if shared_dir is None:
            if sig(model_path) != shipped:
                send("checkpoint", model_path.read_bytes())
            try:
                send("progress", prog_path.read_text("utf-8"))
            except OSError:
                pass
        results = dict(
            step=snap.step,
            train_loss=snap.train_loss,
            val_loss=snap.val_loss,
            best_loss=snap.best_loss,
            tokens=int(job["tokens"]) + max(0, snap.tokens - tokens_before),
            seconds=float(job["seconds"]) + time.monotonic() - t0,
        )
        out = {
            "state": snap.state,
            "message": snap.message,
            "results": results,
            "pid": pid,
            "node": node,
        }
        send("final", out)
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


# ---------------------------------------------------------------------------------- the driver


@dataclass
class _Run:
    job: Job
    ref: object
    run_id: str
    lock: locks.ModelLock | None
    cancelled: bool = False
    final: dict | None = None


class RayRunner:
    """Run the job queue of ``models_dir`` on Ray (see the module docstring)."""

    def __init__(
        self,
        models_dir: Path | str,
        address: str = "auto",
        *,
        num_cpus: int = 1,
        shared_folder: bool = False,
        max_retries: int = 3,
        workers: int | None = None,
        watch: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        if num_cpus < 1:
            raise ValidationError(f"--num-cpus must be at least 1, got {num_cpus}")
        if max_retries < 0:
            raise ValidationError(f"--max-retries must be 0 or more, got {max_retries}")
        self.dir = Path(models_dir).resolve()
        self.address = address
        self.num_cpus = num_cpus
        self.shared = shared_folder
        self.max_retries = max_retries
        self.workers = workers
        self.watch = watch
        self.store = JobStore(self.dir)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.runs: dict[int, _Run] = {}
        self.ran: dict[int, str] = {}
        self._stopping = False
        self._seq = 0

    # ---- connection ---------------------------------------------------------------------------

    def connect(self):
        return connect(self.address)

    # ---- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> dict[int, str]:
        ray = self.connect()
        from ray.util.queue import Queue

        self.ray = ray
        self.task = ray.remote(train_task)
        self.inbox = None if self.shared else Queue()
        limit = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus))
        self.log(
            f"ray: {ray.cluster_resources().get('CPU', 0):g} CPUs; up to {limit} job(s) at once, "
            f"{self.num_cpus} CPU(s) each" + (", shared folder" if self.shared else "")
        )
        try:
            while not self._stopping:
                self._drain()
                self._collect()
                self._check_cancels()
                if not self._stopping:
                    self._start_some(limit)
                if not self.runs and not self.watch and not self._pending():
                    break
                time.sleep(POLL_S)
        finally:
            self._shutdown()
        return self.ran

    def _pending(self) -> bool:
        from cllm.jobs.store import proc_alive

        for job in self.store.list(["queued", "running"]):
            if job.state == "queued":
                return True
            if job.owner_host == hostname() and not proc_alive(job.owner_pid, job.owner_token):
                return True  # an orphan about to come back
        return False

    def _start_some(self, limit: int) -> None:
        if len(self.runs) >= limit:
            return
        for job in self.store.recover():
            self.log(f"job {job.id} {job.model}: back in the queue ({job.reason})")
        for job in self.store.list(["queued"]):
            if len(self.runs) >= limit:
                return
            if any(r.job.model.lower() == job.model.lower() for r in self.runs.values()):
                continue
            lock = None
            if not self.shared:
                try:
                    lock = locks.acquire(self.dir, job.model, "training on Ray")
                except BusyError:
                    continue
            claimed = self.store.claim(job.id)
            if claimed is None:
                if lock:
                    lock.release()
                continue
            self.store.register_worker(job.id, os.getpid(), os.getpid())
            self.store.update(job.id, host=f"ray:{hostname()}")
            self._submit(self.store.get(job.id), lock)

    def _submit(self, job: Job, lock) -> None:
        from cllm.models.registry import Registry

        if job.steps is not None and job.base_steps is None:
            steps = int(Registry(self.dir).info(job.model).meta.steps or 0)
            self.store.update(job.id, base_steps=steps)
            job = self.store.get(job.id)
        packed = None if self.shared else self.ray.put(pack_model(self.dir, job.model))
        self._seq += 1
        run_id = f"{job.id}.{self._seq}"
        d = job.to_dict()
        ref = self.task.options(num_cpus=self.num_cpus, max_retries=0).remote(
            d, packed, str(self.dir) if self.shared else None, self.inbox, self.num_cpus, run_id
        )
        self.runs[job.id] = _Run(job, ref, run_id, lock)
        self.log(
            f"job {job.id} {job.model}: submitted to Ray ({job.target}, attempt {job.attempts}, "
            f"{self.num_cpus} CPU(s))"
        )

    def _drain(self) -> None:
        """Write the checkpoints and progress that tasks sent home."""
        if self.inbox is None:
            return
        by_run = {r.run_id: r for r in self.runs.values()}
        while True:
            try:
                items = self.inbox.get_nowait_batch(max(1, self.inbox.qsize()))
            except Exception:  # ray.util.queue.Empty
                return
            if not items:
                return
            for run_id, kind, payload in items:
                run = by_run.get(run_id)
                if run is None:
                    continue  # an old attempt's message
                name = run.job.model
                if kind == "checkpoint":
                    write_atomic(self.dir / f"{name}.cllm", payload)
                elif kind == "progress":
                    write_atomic(self.dir / f"{name}.progress.json", payload, durable=False)
                elif kind == "started":
                    self.store.update(run.job.id, threads=self.num_cpus)
                    self.log(
                        f"job {run.job.id} {name}: training on {payload['node']} "
                        f"(pid {payload['pid']})"
                    )
                elif kind == "final":
                    run.final = payload

    def _collect(self) -> None:
        if not self.runs:
            return
        ray = self.ray
        refs = [r.ref for r in self.runs.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            run = next(r for r in self.runs.values() if r.ref == ref)
            try:
                out = ray.get(ref)
                error = None
            except ray.exceptions.TaskCancelledError:
                out, error = None, None
            except ray.exceptions.RayError as err:
                out, error = None, err
            self._drain()  # the last checkpoint comes before the task's end
            out = out or run.final
            self._finish(run, out, error)

    def _finish(self, run: _Run, out: dict | None, error) -> None:
        job = self.store.get(run.job.id)
        me = os.getpid()
        del self.runs[run.job.id]
        retry = False
        if out is None and error is None:  # cancelled before it could report
            self.store.finish(job.id, me, "queued", "interrupted: the driver stopped")
        elif out is None:
            first = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
            if job.state == "running" and job.attempts <= self.max_retries:
                retry = True
                self.store.update(job.id, attempts=job.attempts + 1, reason=f"retrying: {first}")
                self.log(f"job {job.id} {job.model}: its Ray worker died ({first}); retrying")
            else:
                self.store.finish(
                    job.id, me, "failed", f"its Ray worker died {job.attempts} time(s): {first}"
                )
        else:
            state, results = out["state"], out.get("results", {})
            if state == "done":
                self.store.finish(job.id, me, "done", "", **results)
            elif state == "busy":
                self.store.finish(
                    job.id,
                    me,
                    "queued",
                    f"waiting: {out['message']}",
                    attempts=max(0, job.attempts - 1),
                )
            elif state == "error":
                self.store.finish(job.id, me, "failed", out["message"], **results)
            else:  # stopped: cancelled, or the driver is stopping
                why = f"interrupted at step {results.get('step')}; resumes from its checkpoint"
                self.store.finish(
                    job.id, me, "queued", why, attempts=max(0, job.attempts - 1), **results
                )
        if retry:
            self._submit(self.store.get(job.id), run.lock)
            return
        if run.lock is not None:
            run.lock.release()
        job = self.store.get(job.id)
        if job.state in ("done", "failed", "cancelled"):
            self.ran[job.id] = job.state
            loss = "" if job.train_loss is None else f", loss {job.train_loss:.4f}"
            why = f": {job.reason}" if job.state != "done" and job.reason else ""
            self.log(f"job {job.id} {job.model}: {job.state} in {job.seconds:.1f} s{loss}{why}")
        else:
            self.log(f"job {job.id} {job.model}: back in the queue ({job.reason})")

    def _check_cancels(self) -> None:
        for run in list(self.runs.values()):
            if run.cancelled:
                continue
            try:
                state = self.store.get(run.job.id).state
            except CLLMError:
                state = "cancelled"
            if state != "running":
                run.cancelled = True
                self.ray.cancel(run.ref)  # the task stops with a checkpoint and sends it home

    def _shutdown(self) -> None:
        """Stop every task (each sends its checkpoint home) and put its job back in the queue."""
        for run in self.runs.values():
            if not run.cancelled:
                run.cancelled = True
                try:
                    self.ray.cancel(run.ref)
                except Exception:
                    pass
        end = time.monotonic() + 120
        while self.runs and time.monotonic() < end:
            self._drain()
            self._collect()
            time.sleep(POLL_S)
        for run in list(self.runs.values()):  # did not answer in time
            self._finish(run, None, None)
