"""The local scheduler with real worker processes: the concurrency limit, busy models, cancel and
retry of a running job, a worker killed mid-run, and (slow) kill -9 of the scheduler itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cllm.engine.config import PRESETS
from cllm.jobs.scheduler import Scheduler, threads_per_job
from cllm.jobs.store import JobStore, proc_alive
from cllm.models import locks

from .conftest import SMALL, make_models, wait_for

ROOT = Path(__file__).resolve().parents[3]


def steps_of(reg, name: str) -> list[int]:
    return reg.history(name)["steps"]


def run_in_thread(sched: Scheduler) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(sched.run()), daemon=True)
    t.start()
    return t, out


def test_concurrency_limit_threads_and_results(models):
    reg = make_models(models, ("a", "b", "c"))
    store = JobStore(models)
    jobs = store.add(reg, ["a", "b", "c"], steps=6)
    lines: list[str] = []
    sched = Scheduler(models, workers=2, log=lines.append)
    t, ran = run_in_thread(sched)
    most = 0
    while t.is_alive():
        alive = [j for j in store.list(["running"]) if proc_alive(j.pid, j.pid_token)]
        most = max(most, len(alive))
        time.sleep(0.02)
    assert 1 <= most <= 2
    assert ran == {j.id: "done" for j in jobs}
    for j in store.list():
        assert j.state == "done" and j.threads == threads_per_job(2)
        assert j.step == 6 and j.train_loss is not None and j.tokens == 6 * 4 * 32
        assert j.started and j.ended and j.seconds > 0
        assert steps_of(reg, j.model) == list(range(1, 7))
    assert sum("started" in line for line in lines) == 3


def test_a_busy_model_waits_and_two_jobs_of_one_model_never_overlap(models):
    reg = make_models(models, ("a",))
    store = JobStore(models)
    first, second = store.add(reg, ["a", "a"], steps=3)
    lines: list[str] = []
    lock = locks.acquire(models, "a", "testing")
    try:
        t, ran = run_in_thread(Scheduler(models, workers=2, log=lines.append))
        wait_for(lambda: any("waiting, the model is busy" in x for x in lines), 30)
        time.sleep(0.5)
        assert [j.state for j in store.list()] == ["queued", "queued"]
    finally:
        lock.release()
    t.join(120)
    assert not t.is_alive()
    assert ran == {first.id: "done", second.id: "done"}
    assert steps_of(reg, "a") == list(range(1, 7))  # 3 + 3, one after the other
    a, b = store.list()
    assert a.ended <= b.started or b.ended <= a.started


def test_cancel_a_running_job_then_retry_it_to_its_target(models):
    reg = make_models(models, ("a",), config=replace(SMALL, n_embd=64, n_inner=0, n_layer=2))
    store = JobStore(models)
    (job,) = store.add(reg, ["a"], steps=3000)
    t, ran = run_in_thread(Scheduler(models, log=lambda s: None))
    wait_for(lambda: (reg.info("a").meta.steps or 0) > 0 or _progress(models) > 5, 60)
    store.cancel(job.id)
    t.join(60)
    assert not t.is_alive()
    got = store.get(job.id)
    assert got.state == "cancelled" and ran == {job.id: "cancelled"}
    trained = reg.info("a").meta.steps
    assert 0 < trained < 3000  # the checkpoint the worker saved when it stopped
    assert got.step == trained
    assert locks.lock_holder(models, "a") is None
    # retry goes on from the checkpoint to the job's original target, and no further
    store.retry(job.id)
    store.update(job.id, steps=trained + 10)  # keep the test short: 10 more steps
    ran = Scheduler(models, log=lambda s: None).run()
    assert ran == {job.id: "done"}
    assert steps_of(reg, "a") == list(range(1, trained + 11))


def _progress(models) -> int:
    from cllm.train.trainer import read_progress

    snap = read_progress(models, "a")
    return snap.step if snap else 0


@pytest.mark.slow
def test_a_killed_worker_is_retried_from_its_checkpoint(models):
    bigger = replace(SMALL, n_embd=64, n_inner=0, n_layer=2)  # slow enough to be caught mid-run
    reg = make_models(models, ("a",), config=bigger, checkpoint_minutes=0.005)  # every 0.3 s
    store = JobStore(models)
    (job,) = store.add(reg, ["a"], steps=3000)
    lines: list[str] = []
    t, ran = run_in_thread(Scheduler(models, log=lines.append))
    wait_for(lambda: (reg.info("a").meta.steps or 0) > 0, 60, 0.02)
    pid = store.get(job.id).pid
    os.kill(pid, signal.SIGKILL)
    t.join(120)
    assert not t.is_alive()
    assert ran == {job.id: "done"}
    assert any("died (signal 9); retrying" in x for x in lines), lines
    got = store.get(job.id)
    assert got.attempts == 2 and got.step == 3000
    steps = steps_of(reg, "a")
    assert steps[-1] == 3000 and steps == sorted(set(steps))


def test_train_with_several_names_runs_them_as_jobs(models, capsys):
    from cllm.cli.train import main

    make_models(models, ("a", "b"))
    rc = main(["a", "b", "--models-dir", str(models), "--steps", "3", "--lr", "0.002", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    import json

    rows = json.loads(out.strip().splitlines()[-1])
    assert [(r["model"], r["state"], r["step"]) for r in rows] == [
        ("a", "done", 3),
        ("b", "done", 3),
    ]
    assert rows[0]["settings"] == {"learning_rate": 0.002}
    assert "ran 2 job(s): 2 done" in err
    rc = main(["a", "b", "--models-dir", str(models), "--create"])
    assert rc == 2 and "--create take one model" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_9_scheduler_then_restart_resumes_every_job_once(models):
    """Tiny preset, two jobs at once; SIGKILL the scheduler mid-run and start it again at once."""
    tiny = replace(PRESETS["tiny"], vocab_size=257)
    reg = make_models(models, ("a", "b"), config=tiny, seq_len=64)
    steps = 120
    store = JobStore(models)
    store.add(reg, ["a", "b"], steps=steps)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "cllm",
        "jobs",
        "run",
        "--workers",
        "2",
        "--models-dir",
        str(models),
    ]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        from cllm.train.trainer import read_progress

        def both_training():
            snaps = [read_progress(models, n) for n in ("a", "b")]
            return all(s is not None and s.state == "running" and s.step >= 3 for s in snaps)

        wait_for(both_training, 120, 0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        # restart at once: the old workers are still checkpointing; none may run twice
        second = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        seen_pids: dict[str, set[int]] = {"a": set(), "b": set()}
        overlap = False
        while second.poll() is None:
            for name in ("a", "b"):
                holder = locks.lock_holder(models, name)
                if holder:
                    seen_pids[name].add(holder["pid"])
            running = [j for j in store.list(["running"]) if proc_alive(j.pid, j.pid_token)]
            names = [j.model for j in running]
            overlap |= len(names) != len(set(names))
            time.sleep(0.02)
        out, err = second.communicate()
        reasons = [(j.id, j.state, j.reason) for j in store.list()]
        assert second.returncode == 0, (err, reasons)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    assert not overlap
    jobs = store.list()
    assert [j.state for j in jobs] == ["done", "done"], [j.reason for j in jobs]
    for j in jobs:
        history = steps_of(reg, j.model)
        assert history == list(range(1, steps + 1)), "resumed exactly, no step twice"
        assert reg.info(j.model).meta.tokens_seen == steps * 4 * 64
    assert "back in the queue" in err or "started" in err
