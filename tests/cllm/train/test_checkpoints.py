"""Kept checkpoints, rollback, early stopping, the model-wide schedule and the new settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cllm.cli import main as cllm_main
from cllm.cli.train import main as train_main
from cllm.engine.lm import load_model
from cllm.engine.optim import lr_at
from cllm.errors import BusyError, NotFoundError
from cllm.train import checkpoints
from cllm.train.trainer import Trainer

from .test_trainer import make_model, run


def _ckdir(reg):
    return checkpoints.folder(reg.dir, "m")


def test_retention_keeps_the_last_k_and_the_best(tmp_path):
    reg = make_model(tmp_path, target_epochs=6, keep_checkpoints=2, checkpoint_interval=2)
    snap = run(Trainer(reg, "m", eval_interval=2))
    kept = checkpoints.listing(_ckdir(reg))
    steps = [c for c in kept if not c.best]
    assert len(steps) == 2  # many were written, two stay
    assert steps[-1].step == snap.step and steps[0].step < snap.step
    (best,) = [c for c in kept if c.best]
    val = np.asarray(reg.history("m")["val_loss"])
    assert best.val_loss == pytest.approx(float(np.nanmin(val)))
    assert best.step == int(np.asarray(reg.history("m")["steps"])[np.nanargmin(val)])
    # every kept file loads, and records its step, epoch and losses
    for c in kept:
        m = load_model(c.path)
        assert m.meta.steps == c.step and m.meta.epochs_trained == c.epoch
        assert c.train_loss is not None
    # bounded: at most K + 1 files, each about one model file
    size = reg.info("m").file_size
    assert checkpoints.disk_use(_ckdir(reg)) <= 3 * size * 1.1
    assert not list(_ckdir(reg).glob(".tmp-*"))


def test_rollback_best_and_step_and_refused_while_training(tmp_path):
    reg = make_model(tmp_path, target_epochs=4, keep_checkpoints=50)
    run(Trainer(reg, "m", eval_interval=2))
    kept = checkpoints.listing(_ckdir(reg))
    first = kept[0]
    meta = checkpoints.rollback(reg, "m", step=first.step)
    assert meta.steps == first.step
    lm = reg.load("m")
    assert lm.meta.steps == first.step and len(lm.history["steps"]) == first.step
    assert lm.name == "m"
    best = [c for c in kept if c.best][0]
    checkpoints.rollback(reg, "m", best=True)
    assert reg.info("m").meta.last_val_loss == pytest.approx(best.val_loss)
    with pytest.raises(NotFoundError, match="no checkpoint at step 99999"):
        checkpoints.rollback(reg, "m", step=99999)
    t = Trainer(reg, "m")  # holds the model's lock, as a run does
    try:
        before = reg.path("m").read_bytes()
        with pytest.raises(BusyError):
            checkpoints.rollback(reg, "m", best=True)
        assert reg.path("m").read_bytes() == before
    finally:
        t.close()
    # and a rolled-back model trains on from there
    snap = run(Trainer(reg, "m", max_steps=2))
    assert snap.step == best.step + 2


def test_early_stop_makes_the_best_checkpoint_the_model(tmp_path):
    # a learning rate far too high: validation gets worse, and training stops early
    reg = make_model(tmp_path, target_epochs=200, learning_rate=0.5, early_stop=2, warmup=0)
    snap = run(Trainer(reg, "m", eval_interval=1))
    assert snap.state == "done" and "early stop" in snap.message, snap.message
    assert snap.epochs_trained < 200
    best = [c for c in checkpoints.listing(_ckdir(reg)) if c.best][0]
    info = reg.info("m")
    assert info.meta.steps == best.step < snap.step
    val = np.asarray(reg.history("m")["val_loss"])
    assert info.meta.last_val_loss == pytest.approx(float(np.nanmin(val)))


def test_schedule_spans_the_model_and_continues_across_runs(tmp_path):
    a = make_model(tmp_path / "a", target_epochs=3, warmup=3)
    b = make_model(tmp_path / "b", target_epochs=3, warmup=3)
    t = Trainer(a, "m")
    total = t.snapshot().total_steps
    run(t)
    lrs_a = []
    for _ in range(total):  # b: one step per run, each a fresh process-like Trainer
        t = Trainer(b, "m", max_steps=1)
        snap = run(t)
        lrs_a.append(snap.lr)
    tc = b.info("m").train
    want = [lr_at(s, total, 3, tc.learning_rate, tc.min_lr) for s in range(total)]
    np.testing.assert_allclose(lrs_a, want, rtol=1e-12)
    np.testing.assert_array_equal(
        np.asarray(b.history("m")["train_loss"]), np.asarray(a.history("m")["train_loss"])
    )
    # past the target the rate stays at min_lr; raising the target stretches the decay
    assert run(Trainer(b, "m", max_steps=1)).lr == pytest.approx(tc.min_lr)
    b.set_settings("m", target_epochs=6)
    snap = run(Trainer(b, "m", max_steps=1))
    assert tc.min_lr < snap.lr < tc.learning_rate


def test_linear_and_constant_schedules():
    kw = dict(max_steps=110, warmup=10, max_lr=1.0, min_lr=0.1)
    assert lr_at(60, schedule="linear", **kw) == pytest.approx(0.55)
    assert lr_at(60, schedule="constant", **kw) == 1.0
    assert lr_at(5, schedule="constant", **kw) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        lr_at(5, schedule="step", **kw)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--keep-checkpoints", "0"], "keep_checkpoints must be from 1"),
        (["--early-stop", "0"], "early_stop must be from 1"),
        (["--schedule", "exponential"], "unknown schedule 'exponential'"),
        (["--sampling", "shuffled"], "unknown sampling"),
        (["--eval-batches", "0"], "eval_batches must be from 1"),
    ],
)
def test_bad_settings_refused_and_nothing_changes(tmp_path, capsys, flags, words):
    reg = make_model(tmp_path)
    before = reg.path("m").read_bytes()
    d = str(reg.dir)
    assert train_main(["m", "--models-dir", d, "--steps", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert cllm_main(["models", "set", "m", "--models-dir", d, *flags]) == 2
    assert words in capsys.readouterr().err
    assert reg.path("m").read_bytes() == before
    assert not _ckdir(reg).exists()


def test_cli_checkpoints_rollback_info_and_dry_run(tmp_path, capsys):
    reg = make_model(tmp_path, target_epochs=2)
    d = str(reg.dir)
    assert train_main(["m", "--models-dir", d, "--keep-checkpoints", "2", "--early-stop", "3"]) == 0
    err = capsys.readouterr().err
    assert "estimate:" in err and "peak memory" in err
    tc = reg.info("m").train
    assert tc.keep_checkpoints == 2 and tc.early_stop == 3
    assert cllm_main(["models", "checkpoints", "m", "--models-dir", d, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"step", "epoch", "train_loss", "val_loss", "best"} <= set(rows[0])
    step = rows[0]["step"]
    assert cllm_main(["models", "rollback", "m", "--models-dir", d, "--step", str(step)]) == 0
    assert f"step {step}" in capsys.readouterr().out
    assert reg.info("m").meta.steps == step
    assert cllm_main(["models", "info", "m", "--models-dir", d]) == 0
    assert "checkpoints" in capsys.readouterr().out
    assert cllm_main(["models", "set", "m", "--models-dir", d, "--no-early-stop"]) == 0
    assert reg.info("m").train.early_stop is None
    capsys.readouterr()
    before = reg.path("m").read_bytes()
    assert train_main(["m", "--models-dir", d, "--dry-run", "--epochs", "5", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["steps"] > 0 and est["peak_bytes"] > 0 and est["probe_cached"] is True
    assert reg.path("m").read_bytes() == before  # a dry run changes nothing


def test_progress_line_past_the_target_says_so():
    from cllm.cli.train import progress_line
    from cllm.train.trainer import TrainSnapshot

    snap = TrainSnapshot(epoch=2, target_epochs=1, run_steps=5, total_steps=10, batch=3)
    line = progress_line(snap)
    assert "epoch 2 (target 1)" in line and "2/1" not in line
    snap = TrainSnapshot(epoch=1, target_epochs=3, run_steps=5, total_steps=10)
    assert "epoch 1/3" in progress_line(snap)


def test_rename_copy_delete_carry_the_checkpoints(tmp_path):
    reg = make_model(tmp_path)
    run(Trainer(reg, "m", max_steps=2))
    assert checkpoints.listing(_ckdir(reg))
    reg.rename("m", "n")
    assert not _ckdir(reg).exists()
    moved = checkpoints.folder(reg.dir, "n")
    assert [c.step for c in checkpoints.listing(moved) if not c.best] == [2]
    reg.copy("n", "c")
    copied = checkpoints.listing(checkpoints.folder(reg.dir, "c"))
    assert [c.step for c in copied if not c.best] == [2]
    checkpoints.rollback(reg, "c", step=2)
    reg.delete("n")
    assert not moved.exists() and checkpoints.folder(reg.dir, "c").exists()
