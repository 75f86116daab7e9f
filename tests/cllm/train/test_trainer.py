"""The trainer on a tiny model: loss falls, snapshots agree, commands work, resume is exact."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import numpy as np
import pytest

from cllm.engine.config import GPTConfig
from cllm.errors import BusyError, CLLMError, ValidationError
from cllm.models.registry import Registry
from cllm.train.trainer import (
    SPHERES,
    Trainer,
    TrainSnapshot,
    _History,
    progress_path,
    read_progress,
)

TINY = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=32)
TEXTS = [
    "the cat sat on the mat. the dog sat on the log. " * 4,
    "a bird in the hand is worth two in the bush. " * 4,
    "to be or not to be, that is the question. " * 4,
]


def make_model(
    tmp_path, name="m", texts=TEXTS, target_epochs=1, batch_size=4, seq_len=16, **train
) -> Registry:
    reg = Registry(tmp_path / "models")
    settings = {"batch_size": batch_size, "seq_len": seq_len, "learning_rate": 1e-2, "warmup": 2}
    settings.update(train)
    reg.create(
        name,
        config=TINY,
        tokenizer="byte",
        text="".join(texts),
        train=settings,
        target_epochs=target_epochs,
    )
    dq = reg.queue(name)
    for i, t in enumerate(texts):
        dq.add_text(t, source=f"text{i}")
    dq.close()
    return reg


def run(trainer: Trainer, timeout: float = 60) -> TrainSnapshot:
    trainer.start()
    assert trainer.join(timeout), "trainer did not finish"
    return trainer.snapshot()


def wait_for(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_loss_falls_and_snapshot_is_consistent(tmp_path):
    # the sequential stream: each batch repeats one text, so this 1-layer model reaches hits
    reg = make_model(tmp_path, target_epochs=20, sampling="sequential")
    t = Trainer(reg, "m", eval_interval=5)
    bpe = t.snapshot().batches_per_epoch
    assert bpe >= 3
    snap = run(t)
    assert snap.state == "done", snap.message
    assert snap.epochs_trained == snap.target_epochs == 20
    assert snap.step == snap.total_steps == snap.run_steps == 20 * bpe
    assert snap.batch == 0 and snap.epoch == 20
    assert snap.tokens == snap.step * 4 * 16
    h = snap.history
    assert list(h["steps"]) == list(range(1, snap.step + 1))
    assert h["train"][-3:].mean() < h["train"][:3].mean() - 1.0  # it really learns
    assert snap.train_loss == pytest.approx(float(h["train"][-1]))
    val = h["val"][np.isfinite(h["val"])]
    assert len(val) >= 20 and snap.val_loss == pytest.approx(float(val[-1]))
    assert snap.best_loss == pytest.approx(float(val.min()))
    assert snap.grad_norm > 0 and snap.lr > 0 and snap.tokens_per_s > 0
    assert len(snap.spheres) == SPHERES
    assert sum(s["tokens"] for s in snap.spheres) == snap.tokens
    for s in snap.spheres:
        assert 0 <= s["hits"] <= s["tokens"] and 0.0 <= s["hit_rate"] <= 1.0
        assert np.isfinite(s["loss"])
    assert any(s["hits"] for s in snap.spheres)  # a learned repetitive text gets hits
    # the checkpoint holds what the snapshot says
    info = reg.info("m")
    assert info.meta.epochs_trained == 20 and info.meta.steps == snap.step
    assert len(info.meta.epoch_summaries) == 20
    hist = reg.history("m")
    assert hist["steps"] == list(range(1, snap.step + 1))
    assert not info.busy  # lock released


def test_nothing_to_do_when_target_reached(tmp_path):
    reg = make_model(tmp_path, target_epochs=0)
    snap = run(Trainer(reg, "m"))
    assert snap.state == "done" and snap.step == 0
    assert "nothing to train" in snap.message


def test_max_steps_goes_past_target_and_resumes_position(tmp_path):
    reg = make_model(tmp_path, target_epochs=1)
    t = Trainer(reg, "m", max_steps=2)
    bpe = t.snapshot().batches_per_epoch
    snap = run(t)
    assert snap.state == "done" and snap.step == 2 and snap.batch == 2
    info = reg.info("m")
    assert info.meta.position["batch"] == 2  # saved mid-epoch
    snap = run(Trainer(reg, "m", max_steps=2 * bpe))
    assert snap.step == 2 + 2 * bpe
    assert snap.epochs_trained == 2 and snap.target_epochs == 2 and snap.batch == 2


def test_pause_resume_stop(tmp_path):
    reg = make_model(tmp_path, target_epochs=10_000)
    t = Trainer(reg, "m")
    t.start()
    wait_for(lambda: t.snapshot().step >= 2)
    t.pause()
    wait_for(lambda: t.snapshot().state == "paused")
    s1 = t.snapshot().step
    time.sleep(0.3)
    assert t.snapshot().step == s1 and t.is_alive()
    t.resume()
    wait_for(lambda: t.snapshot().step > s1 + 2)
    t.stop()
    assert t.join(30)
    snap = t.snapshot()
    assert snap.state == "stopped" and "checkpoint" in snap.message
    assert any("paused" in line for line in snap.log)
    assert reg.info("m").meta.steps == snap.step  # checkpoint on stop
    t2 = Trainer(reg, "m")  # the lock was released
    assert t2.snapshot().resumed_from == f"resumed at epoch {snap.epoch}, step {snap.step}"
    t2.close()


def test_stop_while_paused(tmp_path):
    reg = make_model(tmp_path, target_epochs=10_000)
    t = Trainer(reg, "m")
    t.start()
    t.pause()
    wait_for(lambda: t.snapshot().state == "paused")
    t.stop()
    assert t.join(30) and t.snapshot().state == "stopped"


def _train_losses(reg) -> np.ndarray:
    return np.asarray(reg.history("m")["train_loss"])


def test_resume_equals_uninterrupted(tmp_path):
    a = make_model(tmp_path / "a", target_epochs=3)
    b = make_model(tmp_path / "b", target_epochs=3)
    snap_a = run(Trainer(a, "m", eval_interval=3))
    for stop_at in (4, 11):  # stop twice, once mid-epoch, then let it finish
        t = Trainer(b, "m", eval_interval=3)
        t.start()
        wait_for(lambda t=t, s=stop_at: t.snapshot().step >= s)
        t.stop()
        assert t.join(30)
    t = Trainer(b, "m", eval_interval=3)
    assert t.snapshot().resumed_from.startswith("resumed at epoch")
    snap_b = run(t)
    assert snap_b.step == snap_a.step and snap_b.epochs_trained == 3
    np.testing.assert_allclose(_train_losses(b), _train_losses(a), rtol=0, atol=1e-6)
    va, vb = a.history("m")["val_loss"], b.history("m")["val_loss"]
    np.testing.assert_allclose(vb, va, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.load("m").gpt.params, a.load("m").gpt.params, atol=1e-6)


def test_second_trainer_is_busy(tmp_path):
    reg = make_model(tmp_path)
    t = Trainer(reg, "m")
    with pytest.raises(BusyError, match="busy.*pid"):
        Trainer(reg, "m")
    t.close()
    Trainer(reg, "m").close()


def test_refusals(tmp_path):
    reg = make_model(tmp_path, texts=["tiny"])
    with pytest.raises(ValidationError, match="too few for one batch"):
        Trainer(reg, "m")
    reg2 = Registry(tmp_path / "empty")
    reg2.create("e", config=TINY, tokenizer="byte", text="abc")
    with pytest.raises(ValidationError, match="empty queue"):
        Trainer(reg2, "e")
    with pytest.raises(ValidationError):
        Trainer(reg, "m", max_steps=0)
    with pytest.raises(ValidationError):
        Trainer(make_model(tmp_path / "x"), "m", batch_size=0)
    assert not reg.info("m").busy and not reg2.info("e").busy  # refusals leave no lock behind


def test_error_in_thread_is_reported(tmp_path):
    reg = make_model(tmp_path, target_epochs=10_000)
    t = Trainer(reg, "m")
    t.start()
    wait_for(lambda: t.snapshot().step >= 1)
    for f in (reg.queue_dir("m") / "items").iterdir():  # damage every item under the trainer
        f.write_bytes(b"\0\0")
    with sqlite3.connect(reg.queue_dir("m") / "queue.sqlite") as con:  # small ones are inline
        con.execute("UPDATE items SET data = x'0000' WHERE data IS NOT NULL")
    assert t.join(60)
    snap = t.snapshot()
    assert snap.state == "error" and "damaged" in snap.message
    assert any("damaged" in line for line in snap.log)
    assert not reg.info("m").busy


def test_progress_file_and_read_progress(tmp_path):
    reg = make_model(tmp_path, target_epochs=2)
    snap = run(Trainer(reg, "m"))
    got = read_progress(reg.dir, "m")  # this process is alive and it was just written
    assert got is not None and got.step == snap.step and got.state == "done"
    assert got.pid == os.getpid() and len(got.spheres) == SPHERES
    assert list(got.history["steps"]) == list(snap.history["steps"])
    path = progress_path(reg.dir, "m")
    data = json.loads(path.read_text())
    data["pid"] = 2**22 + 12345  # no such process
    path.write_text(json.dumps(data))
    assert read_progress(reg.dir, "m") is None
    data["pid"], data["updated"] = os.getpid(), time.time() - 3600
    path.write_text(json.dumps(data))
    assert read_progress(reg.dir, "m") is None
    path.write_text("{not json")
    assert read_progress(reg.dir, "m") is None
    assert read_progress(reg.dir, "nobody") is None


def test_history_views_stay_valid_when_growing():
    h = _History()
    views = []
    for i in range(3000):
        h.append(i + 1, float(i), None if i % 2 else float(-i))
        if i % 500 == 0:
            views.append((i + 1, h.view()))
    for n, v in views:
        assert len(v["steps"]) == n and list(v["steps"]) == list(range(1, n + 1))
        assert v["train"][-1] == n - 1
    full = h.view()
    assert np.isnan(full["val"][1]) and full["val"][2] == -2


def test_settings_overrides_are_validated_and_saved(tmp_path):
    reg = make_model(tmp_path, target_epochs=1)
    with pytest.raises(CLLMError):
        Trainer(reg, "m", seq_len=10_000)
    snap = run(Trainer(reg, "m", batch_size=2, seq_len=8, target_epochs=2))
    assert snap.batch_size == 2 and snap.seq_len == 8 and snap.epochs_trained == 2
    info = reg.info("m")
    assert info.train.batch_size == 2 and info.meta.target_epochs == 2


def test_queue_changes_join_the_next_epoch(tmp_path):
    reg = make_model(tmp_path, target_epochs=3)
    t = Trainer(reg, "m", max_steps=2)
    bpe0 = t.snapshot().batches_per_epoch
    run(t)  # stopped mid-epoch 1
    dq = reg.queue("m")
    dq.add_text("new words arrive while the model trains. " * 12, source="late")
    dq.close()
    t = Trainer(reg, "m")
    snap = run(t)
    bpe1 = snap.batches_per_epoch
    assert bpe1 > bpe0 and snap.state == "done" and snap.epochs_trained == 3
    assert snap.step == bpe0 + 2 * bpe1  # epoch 1 kept its items; the new one joined epoch 2

    reg.set_settings("m", target_epochs=5)
    run(Trainer(reg, "m", max_steps=1))
    dq = reg.queue("m")
    for it in dq.items()[1:]:  # remove items of the epoch in progress
        dq.remove(it.id)
    dq.close()
    snap = run(Trainer(reg, "m"))
    assert snap.state == "done" and snap.epochs_trained == 5, snap.message


def test_resume_with_a_new_batch_shape_finishes_the_epoch(tmp_path):
    texts = [f"{t} ({i})" for i in range(3) for t in TEXTS]
    reg = make_model(
        tmp_path, texts=texts, target_epochs=2, batch_size=8, seq_len=32, sampling="sequential"
    )
    run(Trainer(reg, "m", max_steps=3))  # 3 batches of 256 tokens into epoch 1
    t = Trainer(reg, "m", batch_size=1, seq_len=8)  # counted in small batches, the stream runs dry
    assert t.snapshot().batch == 3
    snap = run(t)
    assert snap.state == "done" and snap.epochs_trained == 2, snap.message
    assert snap.step < 2 * snap.batches_per_epoch  # epoch 1 ended early, epoch 2 was whole


def test_a_niced_trainer_trains_at_that_priority(tmp_path):
    """The studio's trainer yields the CPU to the window: its thread runs at ``nice``."""
    if not os.path.exists("/proc/self/task"):
        pytest.skip("per-thread nice values are read from Linux's /proc")
    from cllm.engine import threads

    reg = make_model(tmp_path, target_epochs=3)
    base = threads.thread_nice()
    t = Trainer(reg, "m", nice=base + 5)
    t.start()
    seen = []
    wait_for(lambda: t._thread.native_id is not None)
    while t._thread.is_alive():
        try:
            stat = open(f"/proc/self/task/{t._thread.native_id}/stat").read()
        except OSError:
            break
        seen.append(int(stat.rsplit(")", 1)[1].split()[16]))  # field 19: nice
        time.sleep(0.01)
    assert t.join(60)
    assert t.snapshot().state == "done"
    assert seen and max(seen) == base + 5
