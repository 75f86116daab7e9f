"""The local scheduler: runs queued jobs, up to N at once, each in its own process.

Each job runs as ``python -m cllm.jobs.worker`` with ``cores // N`` threads (NUMBA_NUM_THREADS and
the BLAS pools), so N jobs share the machine without oversubscribing it. A job whose model is
locked (trained by the studio or another process) waits in the queue; two jobs of one model never
run at once. The scheduler owns no state of its own: everything is in ``jobs.sqlite``, so killing
it (even with SIGKILL) loses nothing. Its workers get SIGTERM from the kernel when it dies (Linux),
save a checkpoint and put their jobs back in the queue; a worker killed outright leaves its job
``running`` with a dead pid, which ``JobStore.recover`` requeues when a scheduler starts again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cllm.jobs.store import MAX_ATTEMPTS, Job, JobStore, hostname, proc_alive
from cllm.models import locks

POLL_S = 0.5
BUSY_RETRY_S = 2.0  # a job that found its model busy is not tried again before this


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_job(workers: int, cores: int | None = None) -> int:
    return max(1, (cores or cpu_count()) // max(1, workers))


def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    # the worker imports cllm the way this process did
    here = str(Path(__file__).resolve().parents[2])
    path = env.get("PYTHONPATH", "")
    if here not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, path]))
    return env


class Scheduler:
    """Run the queue of ``models_dir`` with ``workers`` jobs at once.

    ``only``: run just these job ids (``python -m cllm.train a b c``). ``watch``: keep waiting
    for new jobs instead of returning when the queue is empty. ``log``: one line per event.
    """

    def __init__(
        self,
        models_dir: Path | str,
        workers: int = 1,
        *,
        watch: bool = False,
        only: set[int] | None = None,
        threads: int | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.dir = Path(models_dir)
        self.store = JobStore(self.dir)
        self.workers = max(1, int(workers))
        self.threads = threads or threads_per_job(self.workers)
        self.watch = watch
        self.only = set(only) if only is not None else None
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.children: dict[int, subprocess.Popen] = {}  # job id -> worker process
        self._not_before: dict[int, float] = {}
        self._waiting_said: set[int] = set()
        self._stopping = False
        self.ran: dict[int, str] = {}  # job id -> final state, for the summary

    # ------------------------------------------------------------------------------ loop

    def stop(self) -> None:
        """Ask the loop to stop: workers checkpoint and their jobs go back to the queue."""
        self._stopping = True

    def run(self) -> dict[int, str]:
        """Run until the queue (or ``only``) is done; returns {job id: state} of the jobs run."""
        for job in self.store.recover():
            self.log(f"job {job.id} {job.model}: back in the queue ({job.reason})")
        try:
            while not self._stopping:
                self._reap()
                if not self._stopping:
                    self._start_some()
                if not self.children and not self.watch and not self._pending():
                    break
                time.sleep(POLL_S)
        finally:
            self._shutdown()
        return self.ran

    def _pending(self) -> bool:
        """Jobs this run is still to see through: queued ones, and running ones whose scheduler
        is gone (their worker is finishing; they come back to the queue when it has)."""
        for job in self.store.list(["queued", "running"]):
            if self.only is not None and job.id not in self.only:
                continue
            if job.state == "queued":
                return True
            if job.id in self.children:
                continue
            if job.owner_host == hostname() and not proc_alive(job.owner_pid, job.owner_token):
                return True
            if self.only is not None:  # one of ours, run by another scheduler: wait for it
                return True
        return False

    def _start_some(self) -> None:
        if len(self.children) >= self.workers:
            return
        for job in self.store.recover():
            self.log(f"job {job.id} {job.model}: back in the queue ({job.reason})")
        jobs = self.store.list(["queued", "running"])
        busy_models = {j.model.lower() for j in jobs if j.state == "running"}
        now = time.monotonic()
        for job in jobs:
            if len(self.children) >= self.workers:
                return
            if job.state != "queued" or (self.only is not None and job.id not in self.only):
                continue
            if job.model.lower() in busy_models or now < self._not_before.get(job.id, 0.0):
                continue
            holder = locks.lock_holder(self.dir, job.model)
            if holder is not None:
                if job.id not in self._waiting_said:
                    self._waiting_said.add(job.id)
                    self.log(
                        f"job {job.id} {job.model}: waiting, the model is busy "
                        f"({holder.get('purpose', 'in use')} by pid {holder.get('pid')})"
                    )
                self._not_before[job.id] = now + BUSY_RETRY_S
                continue
            claimed = self.store.claim(job.id)
            if claimed is None:
                continue  # another scheduler took it
            busy_models.add(job.model.lower())
            self._spawn(claimed)

    def _spawn(self, job: Job) -> None:
        cmd = [
            sys.executable,
            "-m",
            "cllm.jobs.worker",
            "--models-dir",
            str(self.dir.resolve()),
            "--job",
            str(job.id),
            "--parent",
            str(os.getpid()),
            "--threads",
            str(self.threads),
        ]
        proc = subprocess.Popen(
            cmd, env=worker_env(self.threads), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self.store.register_worker(job.id, proc.pid, os.getpid(), self.threads)
        self.children[job.id] = proc
        self.log(
            f"job {job.id} {job.model}: started ({job.target}, pid {proc.pid}, "
            f"{self.threads} thread{'s' if self.threads != 1 else ''})"
        )

    def _reap(self) -> None:
        for job_id, proc in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[job_id]
            job = self.store.get(job_id)
            if job.state == "running" and job.pid in (None, proc.pid):
                # the worker died without writing its outcome (killed, crashed)
                how = f"signal {-code}" if code < 0 else f"exit status {code}"
                if job.attempts >= MAX_ATTEMPTS:
                    self.store.finish(
                        job_id, None, "failed", f"its process died ({how}) {job.attempts} times"
                    )
                else:
                    self.store.finish(job_id, None, "queued", f"its process died ({how}); retrying")
                job = self.store.get(job_id)
            self._report(job)

    def _report(self, job: Job) -> None:
        if job.state == "queued":
            self.log(f"job {job.id} {job.model}: back in the queue ({job.reason})")
            if job.reason.startswith("waiting"):
                self._not_before[job.id] = time.monotonic() + BUSY_RETRY_S
            return
        self.ran[job.id] = job.state
        loss = "" if job.train_loss is None else f", loss {job.train_loss:.4f}"
        val = "" if job.val_loss is None else f", val {job.val_loss:.4f}"
        why = f": {job.reason}" if job.state != "done" and job.reason else ""
        self.log(f"job {job.id} {job.model}: {job.state} in {job.seconds:.1f} s{loss}{val}{why}")

    def _shutdown(self) -> None:
        """Stop every worker (each saves a checkpoint and requeues its job) and wait for them."""
        for proc in self.children.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        for _job_id, proc in list(self.children.items()):
            try:
                proc.wait()
            except KeyboardInterrupt:  # a second Ctrl+C: wait anyway, the checkpoint is coming
                proc.wait()
        self._reap()


def start_scheduler_process(models_dir: Path | str, workers: int = 1) -> subprocess.Popen:
    """``python -m cllm jobs run --workers N`` as a process of its own (the studio's Run Jobs):
    it outlives the caller, and what it does is in the queue."""
    cmd = [sys.executable, "-m", "cllm", "jobs", "run", "--workers", str(max(1, int(workers)))]
    cmd += ["--models-dir", str(Path(models_dir).resolve())]
    return subprocess.Popen(
        cmd,
        env=worker_env(threads_per_job(1)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def running_here(store: JobStore) -> list[Job]:
    """Running jobs whose worker is alive on this host."""
    return [j for j in store.list(["running"]) if proc_alive(j.pid, j.pid_token)]
