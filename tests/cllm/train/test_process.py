"""A run in a process of its own (the studio's): the same run as a trainer thread, driven the same
way, its errors raised in the parent, and a checkpoint when its parent goes away."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cllm.errors import BusyError, ValidationError
from cllm.models.registry import Registry
from cllm.pids import pid_alive
from cllm.train.process import TrainerProcess
from cllm.train.trainer import Trainer, progress_path

from .test_trainer import make_model, wait_for


def test_a_run_in_a_process_equals_the_same_run_in_a_thread(tmp_path):
    a = make_model(tmp_path / "a", target_epochs=50)
    b = make_model(tmp_path / "b", target_epochs=50)
    t = TrainerProcess(a.dir, "m", max_steps=25, eval_interval=5)
    assert t.snapshot().state == "idle" and t.name == "m"
    t.start()
    assert t.join(120)
    snap = t.snapshot()
    thread = Trainer(b, "m", max_steps=25, eval_interval=5)
    thread.start()
    assert thread.join(120)
    want = thread.snapshot()
    assert snap.state == want.state == "done" and snap.step == want.step == 25
    assert snap.train_loss == want.train_loss and snap.val_loss == want.val_loss
    for key in ("steps", "train", "val"):  # the history crossed in pieces, whole
        np.testing.assert_array_equal(snap.history[key], want.history[key])
    assert snap.pid != want.pid and not t.is_alive()
    assert a.info("m").meta.steps == 25  # saved by the child


def test_errors_of_the_trainer_are_raised_in_the_parent(tmp_path):
    reg = make_model(tmp_path)
    Registry(reg.dir).create("empty", tokenizer="byte", text="x")
    with pytest.raises(ValidationError, match="empty queue"):
        TrainerProcess(reg.dir, "empty")
    with pytest.raises(ValidationError, match="batch"):
        TrainerProcess(reg.dir, "m", batch_size=0)
    holder = Trainer(reg, "m")  # holds the model's training lock
    try:
        with pytest.raises(BusyError):
            TrainerProcess(reg.dir, "m")
    finally:
        holder.close()
    unused = TrainerProcess(reg.dir, "m")
    unused.close()  # never started: the lock is let go
    Trainer(reg, "m").close()


def test_pause_resume_and_stop_checkpoint(tmp_path):
    reg = make_model(tmp_path, target_epochs=100_000)
    t = TrainerProcess(reg.dir, "m")
    t.start()
    try:
        wait_for(lambda: t.snapshot().step >= 3, 60)
        t.pause()
        wait_for(lambda: t.snapshot().state == "paused", 30)
        at = t.snapshot().step
        assert not wait_for_change(t, at, 0.5)
        t.resume()
        wait_for(lambda: t.snapshot().step > at + 2, 30)
    finally:
        t.stop()
    assert t.join(60)
    snap = t.snapshot()
    assert snap.state == "stopped" and reg.info("m").meta.steps == snap.step


PARENT = """
import sys, time
from cllm.train.process import TrainerProcess
t = TrainerProcess(sys.argv[1], "m")
t.start()
while t.snapshot().step < 3:
    time.sleep(0.01)
print(t.pid, flush=True)
time.sleep(600)
"""


def test_a_run_whose_parent_is_killed_checkpoints_and_lets_go(tmp_path):
    reg = make_model(tmp_path, target_epochs=100_000)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(reg.dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
    finally:
        parent.kill()  # no goodbye: its pipe to the child just closes
        parent.wait(30)
    wait_for(lambda: not pid_alive(child), 60)
    last = json.loads(progress_path(reg.dir, "m").read_text())  # the run's last word
    assert last["state"] == "stopped" and last["step"] >= 3
    assert reg.info("m").meta.steps == last["step"]  # every step it made was saved
    Trainer(reg, "m").close()  # and the model's lock was let go


def wait_for_change(t, step, seconds) -> bool:
    try:
        wait_for(lambda: t.snapshot().step != step, seconds)
    except AssertionError:
        return False
    return True
