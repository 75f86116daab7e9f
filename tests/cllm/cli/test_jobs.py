"""`python -m cllm jobs ...`: add, list, cancel, retry and their one-line refusals."""

from __future__ import annotations

import json

import pytest

from cllm.cli import main
from cllm.jobs.store import JobStore
from tests.cllm.jobs.conftest import make_models


def test_add_list_cancel_retry(tmp_path, capsys):
    models = tmp_path / "models"
    make_models(models, ("a", "b"))
    d = ["--models-dir", str(models)]
    assert main(["jobs", "add", "a", "b", "--steps", "5", "--set", "lr=2e-3", *d]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "queued job 1: a, 5 steps",
        "queued job 2: b, 5 steps",
    ]
    assert main(["jobs", "add", "A", "--epochs", "2", "--json", *d]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == "a" and row["epochs"] == 2 and row["state"] == "queued"
    assert main(["jobs", "cancel", "2", *d]) == 0
    assert capsys.readouterr().out == "cancelled job 2 (b)\n"
    assert main(["jobs", "list", *d]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["ID", "MODEL", "STATE"]
    assert out[2].split()[:3] == ["2", "b", "cancelled"]
    assert main(["jobs", "retry", "2", *d]) == 0
    assert main(["jobs", "list", "--json", *d]) == 0
    rows = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [r["state"] for r in rows] == ["queued", "queued", "queued"]
    assert rows[0]["settings"] == {"learning_rate": 2e-3}
    assert {"progress", "eta", "tokens_per_s"} <= set(rows[0])


def test_refusals_are_one_line_and_change_nothing(tmp_path, capsys):
    models = tmp_path / "models"
    make_models(models, ("a",))
    d = ["--models-dir", str(models)]
    for argv, words in [
        (["jobs", "add", "a", "nope", "--steps", "3"], "no model named 'nope'"),
        (["jobs", "add", "a", "--set", "lr"], "KEY=VALUE"),
        (["jobs", "add", "a", "--set", "speed=3"], "unknown training setting 'speed'"),
        (["jobs", "add", "a", "--set", "batch_size=-1"], "batch_size"),
        (["jobs", "add", "a", "--steps", "0"], "steps"),
        (["jobs", "cancel", "7"], "no job 7"),
        (["jobs", "retry", "7"], "no job 7"),
        (["jobs", "run", "--workers", "0"], "--workers"),
        (["jobs", "run", "--num-cpus", "2"], "go with --ray"),
    ]:
        assert main(argv + d) == 2, argv
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert JobStore(models).list() == []
    with pytest.raises(SystemExit) as exc:
        main(["jobs", "add", "a", "--epochs", "1", "--steps", "2", *d])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
