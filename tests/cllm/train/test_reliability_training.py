"""A trainer never loses work: busy across processes, kill -9 and SIGTERM mid-run, then resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cllm.engine.config import GPTConfig
from cllm.engine.modelfile import read_header
from cllm.errors import BusyError
from cllm.models.registry import Registry
from cllm.train.trainer import Trainer, read_progress

TINY = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=32)
ENV = {**os.environ, "PYTHONPATH": os.getcwd()}


def make_model(models_dir, n_items=12, target_epochs=1) -> Registry:
    reg = Registry(models_dir)
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    texts = [" ".join(rng.choice(words, 60)) + f" item {i}." for i in range(n_items)]
    train = {
        "batch_size": 4,
        "seq_len": 16,
        "learning_rate": 3e-3,
        "warmup": 5,
        "checkpoint_minutes": 0.002,
    }  # a timer checkpoint every 0.12 s
    reg.create(
        "m",
        config=TINY,
        tokenizer="byte",
        text="".join(texts),
        train=train,
        target_epochs=target_epochs,
    )
    dq = reg.queue("m")
    for i, t in enumerate(texts):
        dq.add_text(t, source=f"t{i}")
    dq.close()
    return reg


def saved_steps(reg) -> int:
    try:
        return read_header(reg.path("m")).meta.steps
    except Exception:  # the file is being replaced right now
        return 0


def wait_for(cond, proc=None, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def start_cli(reg, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cllm.train", "m", "--models-dir", str(reg.dir), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def test_second_trainer_busy_until_holder_is_killed(tmp_path):
    reg = make_model(tmp_path / "models")
    code = (
        "import sys, time; from cllm.models.registry import Registry; "
        "lock = Registry(sys.argv[1]).lock('m', 'training'); print('held', flush=True); "
        "time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(reg.dir)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=f"busy: training by pid {proc.pid}"):
            Trainer(reg, "m")
    finally:
        proc.kill()
        proc.wait()
    t = Trainer(reg, "m")  # the dead holder's lock is recovered
    t.close()


def test_headless_run_is_visible_and_ctrl_c_checkpoints(tmp_path):
    reg = make_model(tmp_path / "models", target_epochs=100_000)
    proc = start_cli(reg, "--json")
    try:
        seen = []

        def live() -> bool:
            snap = read_progress(reg.dir, "m")  # what the app shows of a run it did not start
            seen.append(snap)
            return snap is not None and snap.pid == proc.pid and snap.step > 0

        wait_for(live, proc)
        assert seen[-1].state == "running" and len(seen[-1].spheres) == 12
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["state"] == "stopped" and res["steps"] == saved_steps(reg) > 0
    assert read_progress(reg.dir, "m") is None  # its writer is gone
    assert not reg.info("m").busy


@pytest.mark.slow
def test_kill_9_then_sigterm_then_finish_matches_uninterrupted(tmp_path):
    epochs = 12
    ref = make_model(tmp_path / "ref", target_epochs=epochs)
    t = Trainer(ref, "m")
    t.start()
    assert t.join(300)
    want = ref.history("m")
    assert t.snapshot().state == "done", t.snapshot().message

    reg = make_model(tmp_path / "models", target_epochs=epochs)
    bpe = t.snapshot().batches_per_epoch
    total = epochs * bpe
    # 1. kill -9 once a checkpoint is on disk: the run restarts from it
    proc = start_cli(reg)
    wait_for(lambda: saved_steps(reg) >= total // 5, proc)
    proc.kill()
    proc.wait()
    ckpt = saved_steps(reg)
    assert 0 < ckpt < total
    # 2. it resumes exactly there; SIGTERM saves a checkpoint and exits cleanly
    proc = start_cli(reg, "--json")
    wait_for(lambda: saved_steps(reg) >= ckpt + total // 5, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"resumed at epoch {ckpt // bpe + 1}, step {ckpt}" in err
    assert "Traceback" not in err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["state"] == "stopped" and res["steps"] == saved_steps(reg) < total
    # 3. the last run finishes; the whole curve is the uninterrupted one: nothing lost or skipped
    proc = start_cli(reg, "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["state"] == "done" and res["steps"] == total and res["epochs_trained"] == epochs
    got = reg.history("m")
    assert got["steps"] == list(range(1, total + 1))
    np.testing.assert_allclose(got["train_loss"], want["train_loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(reg.load("m").gpt.params, ref.load("m").gpt.params, atol=1e-6)
    assert [e["train_loss"] for e in got["epochs"]] == pytest.approx(
        [e["train_loss"] for e in want["epochs"]], abs=1e-6
    )
