"""Sweeps: names, checks before anything is made, the copies and their jobs, and the report."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cllm.cli import main
from cllm.errors import ValidationError
from cllm.jobs.store import JobStore
from cllm.jobs.sweep import create_sweep, fmt_value, parse_values, plan_sweep, sweep_report
from cllm.models import rules

from .conftest import make_models


def test_value_names():
    assert [fmt_value(v) for v in (1e-3, 3e-4, 2.5e-4, 0.1, 1.0, 16)] == [
        "1e-3",
        "3e-4",
        "2p5e-4",
        "1e-1",
        "1e0",
        "16",
    ]
    assert parse_values("lr", "1e-3, 3e-4,1e-3") == [1e-3, 3e-4]
    with pytest.raises(ValidationError, match="not a whole number"):
        parse_values("layers", "2,x")
    with pytest.raises(ValidationError, match="empty value"):
        parse_values("lr", "1e-3,")


@given(st.floats(min_value=1e-9, max_value=1.0, allow_nan=False))
def test_every_lr_makes_a_valid_name_part(v):
    rules.validate_name("m-lr" + fmt_value(v))


def test_plan_checks_everything_before_making_anything(models):
    reg = make_models(models, ("base",))
    plan = plan_sweep(reg, "base", {"lr": [1e-3, 3e-4], "layers": [1, 2]})
    assert [m.name for m in plan] == [
        "base-lr1e-3-L1",
        "base-lr1e-3-L2",
        "base-lr3e-4-L1",
        "base-lr3e-4-L2",
    ]
    with pytest.raises(ValidationError, match="layers must be from 1"):
        plan_sweep(reg, "base", {"layers": [0, 2]})
    with pytest.raises(ValidationError, match="learning_rate"):
        plan_sweep(reg, "base", {"lr": [2.0]})
    with pytest.raises(ValidationError, match="seq_len"):
        plan_sweep(reg, "base", {"seq_len": [32, 65]})
    with pytest.raises(ValidationError, match="more than 64"):
        plan_sweep(reg, "base", {"lr": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3], "warmup": list(range(13))})
    assert len(plan_sweep(reg, "base", {"warmup": list(range(65))}, yes=True)) == 65
    with pytest.raises(ValidationError, match="at least one axis"):
        plan_sweep(reg, "base", {})
    reg.copy("base", "base-lr1e-3")
    with pytest.raises(ValidationError, match="already exists"):
        plan_sweep(reg, "base", {"lr": [3e-4, 1e-3]})
    assert reg.names() == ["base", "base-lr1e-3"]


def test_sweep_copies_jobs_and_report(models, capsys):
    reg = make_models(models, ("base",))
    jobs = create_sweep(
        reg, "base", plan_sweep(reg, "base", {"lr": [3e-3, 1e-3], "layers": [2]}), steps=4
    )
    assert [j.model for j in jobs] == ["base-lr3e-3-L2", "base-lr1e-3-L2"]
    assert all(j.sweep == "base" and j.steps == 4 for j in jobs)
    for j, lr in zip(jobs, (3e-3, 1e-3), strict=True):
        info = reg.info(j.model)
        assert info.config.n_layer == 2 and info.train.learning_rate == lr
        assert info.queue_tokens == reg.info("base").queue_tokens  # the base's queue, imported
        assert info.meta.copied_from == "base"
    # report before any training: every copy, no losses yet
    rows = sweep_report(reg, "base")
    assert {r["model"] for r in rows} == {j.model for j in jobs}
    # fake nothing: train them for real, then the report ranks by best validation loss
    from cllm.jobs.scheduler import Scheduler

    assert Scheduler(models, workers=2, log=lambda s: None).run() == {j.id: "done" for j in jobs}
    rows = sweep_report(reg, "base")
    bests = [r["best_val_loss"] for r in rows]
    assert bests == sorted(bests) and all(b is not None for b in bests)
    assert all(r["tokens_per_s"] > 0 and r["seconds"] > 0 and r["steps"] == 4 for r in rows)
    assert rows[0]["settings"]["lr"] in (3e-3, 1e-3) and rows[0]["settings"]["layers"] == 2
    assert main(["sweep", "report", "base", "--models-dir", str(models), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows
    assert main(["sweep", "report", "base", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["MODEL", "LR", "BEST", "VAL", "TOKENS/S", "TIME", "STATE"]
    assert out[1].startswith(rows[0]["model"])


def test_sweep_cli_refusals_change_nothing(models, capsys):
    make_models(models, ("base",))
    d = ["--models-dir", str(models)]
    for argv, words in [
        (["sweep", "nope", "--lr", "1e-3"], "no model named 'nope'"),
        (["sweep", "base"], "at least one axis"),
        (["sweep", "base", "--lr", "1e-3,fast"], "'fast' is not a number"),
        (["sweep", "base", "--warmup", ",".join(map(str, range(65)))], "add --yes"),
        (["sweep", "base", "--lr", "1e-3", "--epochs", "-1"], "target_epochs"),
        (["sweep", "report", "base", "--lr", "1e-3"], "takes no --lr"),
        (["sweep", "report", "base"], "no sweep of 'base'"),
    ]:
        assert main(argv + d) == 2, argv
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in models.iterdir() if p.suffix == ".cllm"] == ["base.cllm"]
    assert JobStore(models).list() == []
