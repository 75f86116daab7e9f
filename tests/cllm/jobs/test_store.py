"""The job queue itself: adding checks everything first, claims are exclusive, cancel/retry,
orphan recovery, and --set parsing (property-based)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.errors import CLLMError, NotFoundError, ValidationError
from cllm.jobs.store import JobStore, parse_settings, proc_alive, proc_token, wait_until
from cllm.models import locks

from .conftest import make_models


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_add_list_and_refusals_change_nothing(models):
    reg = make_models(models, ("a", "b"))
    store = JobStore(models)
    jobs = store.add(reg, ["a", "B"], steps=5, settings={"learning_rate": 1e-3})
    assert [(j.model, j.steps, j.state) for j in jobs] == [("a", 5, "queued"), ("b", 5, "queued")]
    assert jobs[0].settings == {"learning_rate": 1e-3}
    with pytest.raises(NotFoundError):
        store.add(reg, ["a", "nope"], steps=5)
    with pytest.raises(ValidationError, match="seq_len"):
        store.add(reg, ["a"], settings={"seq_len": 65})  # longer than the context of 64
    with pytest.raises(ValidationError):
        store.add(reg, ["a"], epochs=1, steps=2)
    with pytest.raises(ValidationError):
        store.add(reg, ["a"], steps=0)
    with pytest.raises(ValidationError, match="min_lr"):
        store.add(reg, ["a"], settings={"learning_rate": 1e-5})  # below the saved min_lr
    assert len(store.list()) == 2


def test_claim_is_exclusive_across_connections(models):
    reg = make_models(models)
    store = JobStore(models)
    (job,) = store.add(reg, ["m"], steps=1)
    wins = []
    barrier = threading.Barrier(8)

    def claim():
        barrier.wait()
        if JobStore(models).claim(job.id) is not None:
            wins.append(1)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    got = store.get(job.id)
    assert got.state == "running" and got.owner_pid == os.getpid() and got.attempts == 1


def test_cancel_and_retry(models):
    reg = make_models(models)
    store = JobStore(models)
    a, b = store.add(reg, ["m", "m"], steps=3)
    assert store.cancel(a.id).state == "cancelled"
    with pytest.raises(ValidationError, match="already cancelled"):
        store.cancel(a.id)
    assert store.retry(a.id).state == "queued"
    with pytest.raises(ValidationError, match="already queued"):
        store.retry(a.id)
    store.claim(b.id)
    assert store.register_worker(b.id, os.getpid(), os.getpid())
    store.finish(b.id, os.getpid(), "done", step=3, train_loss=1.5)
    with pytest.raises(ValidationError, match="is done"):
        store.retry(b.id)
    with pytest.raises(NotFoundError):
        store.cancel(999)


def test_finish_keeps_a_cancelled_job_cancelled_and_checks_the_worker(models):
    reg = make_models(models)
    store = JobStore(models)
    (job,) = store.add(reg, ["m"], steps=3)
    store.claim(job.id)
    assert store.register_worker(job.id, 4242, os.getpid())
    assert not store.register_worker(job.id, 4343, os.getpid())  # one worker per claim
    assert not store.finish(job.id, 4343, "done")  # not this worker's job
    store.cancel(job.id)
    assert store.finish(job.id, 4242, "done", train_loss=2.0)
    got = store.get(job.id)
    assert got.state == "cancelled" and got.train_loss == 2.0 and got.pid is None


def test_recover_requeues_only_true_orphans(models):
    reg = make_models(models, ("a", "b", "c"))
    store = JobStore(models)
    a, b, c = store.add(reg, ["a", "b", "c"], steps=3)
    dead = dead_pid()
    for job in (a, b, c):
        store.claim(job.id, owner_pid=dead)
    # a: owner and worker dead -> orphan; b: worker alive (this process) -> running;
    # c: worker dead but the model is locked by a live process -> still busy
    store.register_worker(a.id, dead, dead)
    store.register_worker(b.id, os.getpid(), dead)
    store.register_worker(c.id, dead, dead)
    with locks.acquire(models, "c", "training"):
        back = store.recover()
    assert [j.id for j in back] == [a.id]
    assert store.get(a.id).state == "queued" and "interrupted" in store.get(a.id).reason
    assert store.get(b.id).state == "running"
    assert store.get(c.id).state == "running"
    assert [j.id for j in store.recover()] == [c.id]  # the lock is gone now


def test_a_live_owner_keeps_its_job(models):
    reg = make_models(models)
    store = JobStore(models)
    (job,) = store.add(reg, ["m"], steps=3)
    store.claim(job.id)  # this process, no worker yet
    assert store.recover() == []


def test_process_identity_survives_pid_checks():
    token = proc_token(os.getpid())
    assert proc_alive(os.getpid(), token)
    if token is not None:  # Linux: a recycled pid has another start time
        assert not proc_alive(os.getpid(), token + "0")
    assert not proc_alive(dead_pid(), None)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_an_unreaped_process_is_not_alive():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: open(f"/proc/{p.pid}/stat").read().split(") ")[1][0] == "Z", 30)
    assert not proc_alive(p.pid, None)  # exited, not yet reaped
    p.wait()


def test_parse_settings():
    assert parse_settings(["lr=3e-4", "batch-size=16", "warmup=0"]) == {
        "learning_rate": 3e-4,
        "batch_size": 16,
        "warmup": 0,
    }
    for bad, words in [
        (["lr"], "KEY=VALUE"),
        (["nope=1"], "unknown training setting 'nope'"),
        (["lr=fast"], "learning_rate"),
        (["batch_size=0"], "batch_size"),
        (["batch_size=2.5"], "whole number"),
    ]:
        with pytest.raises(ValidationError, match=words):
            parse_settings(bad)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["lr", "batch_size", "seq_len", "warmup", "x", "min_lr", "seed", "beta2", ""]
            ),
            st.text(max_size=12),
        ),
        max_size=4,
    )
)
def test_parse_settings_accepts_or_refuses_in_one_line(pairs):
    try:
        out = parse_settings([f"{k}={v}" for k, v in pairs])
    except CLLMError as err:
        assert "\n" not in str(err)
        return
    assert set(out) <= {
        "learning_rate",
        "batch_size",
        "seq_len",
        "warmup",
        "min_lr",
        "seed",
        "beta2",
    }
