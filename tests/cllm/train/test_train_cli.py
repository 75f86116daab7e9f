"""`python -m cllm.train`: create, queue data, train, JSON line, and one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cllm.cli.train import main
from cllm.models.registry import Registry

TINY = [
    "--tokenizer",
    "byte",
    "--layers",
    "1",
    "--heads",
    "2",
    "--d-model",
    "32",
    "--context",
    "32",
]
SMALL_BATCH = ["--batch-size", "4", "--seq-len", "16"]


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.txt").write_text("the cat sat on the mat. " * 20)
    (d / "b.md").write_text("# Title\n\nSome *markdown* text about dogs and logs. " * 10)
    (d / "blob.bin").write_bytes(bytes(range(256)) * 4)
    return d


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_create_train_json(tmp_path, data, capsys):
    models = tmp_path / "models"
    argv = ["m", "--models-dir", str(models), "--create", *TINY, "--data", str(data)]
    rc = main([*argv, *SMALL_BATCH, "--steps", "5", "--lr", "0.005", "--seed", "3", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = last_json(out)
    for key in (
        "model",
        "epochs_trained",
        "steps",
        "tokens",
        "train_loss",
        "val_loss",
        "tokens_per_s",
        "seconds",
    ):
        assert key in res
    assert res["model"] == "m" and res["steps"] == 5 and res["tokens"] == 5 * 64
    assert res["state"] == "done" and res["tokens_per_s"] > 0 and res["train_loss"] > 0
    assert res["val_loss"] > 0  # every run ends with a validation loss
    assert "skipped" in err and "blob.bin" in err  # the binary file was skipped with a reason
    info = Registry(models).info("m")
    assert info.queue_items == 2 and info.config.n_layer == 1
    assert info.train.learning_rate == 0.005 and info.train.seed == 3
    assert info.meta.steps == 5

    # again with --create and the same data: the model goes on, the data is not added twice
    rc = main([*argv, "--epochs", "1", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = last_json(out)
    assert res["epochs_trained"] == 1 and res["resumed_from"] == "resumed at epoch 1, step 5"
    assert Registry(models).info("m").queue_items == 2


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--epochs", "2", "--steps", "3"], "not allowed with"),
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "abc"], "invalid float"),
        (["--val-fraction", "0.9"], "val_fraction"),
        (["--seq-len", "999"], "context"),
        (["--data", "/no/such/path"], "no such file"),
        (["--preset", "huge"], "invalid choice"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, data, capsys, extra, words):
    models = tmp_path / "models"
    argv = ["m", "--models-dir", str(models), "--create", *TINY, "--data", str(data / "a.txt")]
    try:
        rc = main([*argv, *extra])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3
    assert not list(models.glob("*.cllm"))  # a refused command created nothing


def test_refusals_on_existing_model(tmp_path, data, capsys):
    models = tmp_path / "models"
    argv = ["m", "--models-dir", str(models)]
    assert main([*argv, "--data", str(data)]) == 2
    assert "--create" in capsys.readouterr().err  # unknown model: says how to make one
    assert main([*argv, "--create", *TINY, *SMALL_BATCH, "--data", str(data), "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*argv, "--epochs", "0"]) == 2
    assert "prevent reducing epochs" in capsys.readouterr().err
    assert main([*argv, "--create", "--layers", "3"]) == 2
    assert "already exists with another n_layer" in capsys.readouterr().err
    assert main(["bad/name", "--models-dir", str(models), "--create"]) == 2
    capsys.readouterr()


def test_subprocess_bad_args_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for argv in (["--epochs", "x"], ["m", "--models-dir", str(tmp_path)]):
        r = subprocess.run(
            [sys.executable, "-m", "cllm.train", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) <= 3
