import json
import os
import subprocess
import sys

import pytest

from cllm.cli import main

ARCH = [
    "--tokenizer",
    "byte",
    "--layers",
    "1",
    "--heads",
    "2",
    "--d-model",
    "16",
    "--context",
    "32",
]


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit:  # argparse refusals
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mdir(tmp_path):
    return str(tmp_path / "models")


def create(capsys, mdir, *extra):
    code, out, err = run(capsys, "models", "create", *extra, *ARCH, "--models-dir", mdir)
    assert code == 0, err
    return out


def test_create_list_info_json(capsys, mdir, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("some training text about crystals and lattices\n" * 20)
    out = create(capsys, mdir, "--data", str(data), "--target-epochs", "3", "--batch-size", "4")
    assert out.startswith("created model_1")
    create(capsys, mdir, "beta")
    code, out, _ = run(capsys, "models", "list", "--json", "--models-dir", mdir)
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["beta", "model_1"]
    m1 = rows[1]
    assert m1["queue_items"] == 1 and m1["queue_tokens"] > 0
    assert m1["meta"]["target_epochs"] == 3 and m1["train"]["batch_size"] == 4
    assert m1["meta"]["sources"] == [str(data)]
    code, out, _ = run(capsys, "models", "info", "model_1", "--json", "--models-dir", mdir)
    assert json.loads(out)["config"]["n_layer"] == 1
    code, out, _ = run(capsys, "models", "list", "--models-dir", mdir)
    assert out.splitlines()[0].startswith("NAME") and "model_1" in out and "idle" in out
    code, out, _ = run(capsys, "models", "info", "beta", "--models-dir", mdir)
    assert code == 0 and "architecture" in out


def test_rename_copy_delete_grow_set_history(capsys, mdir, tmp_path):
    create(capsys, mdir, "a")
    assert run(capsys, "models", "rename", "a", "b", "--models-dir", mdir)[0] == 0
    assert run(capsys, "models", "copy", "b", "c", "--models-dir", mdir)[0] == 0
    code, _, err = run(capsys, "models", "delete", "c", "--models-dir", mdir)
    assert code == 2 and "--yes" in err
    assert run(capsys, "models", "delete", "c", "--yes", "--models-dir", mdir)[0] == 0
    code, out, _ = run(capsys, "models", "grow", "b", "--layers", "2", "--models-dir", mdir)
    assert code == 0 and "2 layers" in out
    code, _, err = run(capsys, "models", "grow", "b", "--layers", "1", "--models-dir", mdir)
    assert code == 2 and "never goes down" in err
    code, out, _ = run(
        capsys, "models", "set", "b", "--target-epochs", "4", "--lr", "0.0003", "--models-dir", mdir
    )
    assert code == 0 and "target epochs 4" in out
    csv = tmp_path / "h.csv"
    assert run(capsys, "models", "history", "b", "--csv", str(csv), "--models-dir", mdir)[0] == 0
    assert csv.read_text().startswith("step,train_loss,val_loss")
    code, out, _ = run(capsys, "models", "list", "--json", "--models-dir", mdir)
    assert [r["name"] for r in json.loads(out)] == ["b"]


def test_export_import(capsys, mdir, tmp_path):
    create(capsys, mdir, "x")
    out = tmp_path / "x.cllm"
    assert run(capsys, "models", "export", "x", str(out), "--models-dir", mdir)[0] == 0
    code, _, err = run(capsys, "models", "import", str(out), "--models-dir", mdir)
    assert code == 2 and "already exists" in err
    code, o, _ = run(
        capsys, "models", "import", str(out), "--on-clash", "rename", "--models-dir", mdir
    )
    assert code == 0 and "as x_2" in o


def test_hf_export_import(capsys, mdir, tmp_path):
    create(capsys, mdir, "h")
    d = tmp_path / "hf"
    assert (
        run(capsys, "models", "export", "h", str(d), "--format", "hf", "--models-dir", mdir)[0] == 0
    )
    assert (d / "config.json").is_file()
    argv = ["models", "import", str(d), "--format", "hf", "--name", "back", "--models-dir", mdir]
    assert run(capsys, *argv)[0] == 0
    code, out, _ = run(capsys, "models", "info", "back", "--json", "--models-dir", mdir)
    assert json.loads(out)["config"]["n_embd"] == 16


@pytest.mark.parametrize(
    "argv, words",
    [
        (["models", "create", "../x"], "'.'"),
        (["models", "create", ""], "empty"),
        (["models", "rename", "keep", ""], "empty"),
        (["models", "create", "con.txt"], "'.'"),
        (["models", "create", "模型"], "ASCII"),
        (["models", "create", "CON"], "reserved by Windows"),
        (["models", "create", "x" * 300], "at most 64"),
        (["models", "create", "modèle"], "ASCII"),
        (["models", "create", "--", "-x"], "starts with '-'"),
        (["models", "create", "ok", "--heads", "3"], "divisible"),
        (["models", "create", "ok", "--batch-size", "0"], "batch_size"),
        (["models", "create", "ok", "--seq-len", "999"], "context"),
        (["models", "set", "keep", "--lr", "nan"], "finite"),
        (["models", "set", "keep", "--batch-size", "100000"], "batch_size"),
        (["models", "set", "keep"], "nothing to set"),
        (["models", "rename", "keep", "CON"], "reserved"),
        (["models", "info", "nobody"], "no model named"),
        (["models", "import", "/nonexistent.cllm"], "no file"),
        (["models", "copy", "keep", "a/b"], "'/'"),
        (["models", "create", "ok", "--lr", "5"], "learning_rate"),
        (["models", "create", "ok", "--context", "0"], "block_size"),
        (["models", "create", "ok", "--vocab-size", "10", "--tokenizer", "char"], "vocabulary"),
        (["models", "grow", "keep", "--layers", "100000"], "layers"),
        (["models", "export", "keep", "/nonexistent/dir/x.cllm"], "does not exist"),
    ],
)
def test_refusals_exit_2_with_one_line_and_change_nothing(capsys, mdir, argv, words):
    create(capsys, mdir, "keep")
    before = sorted(os.listdir(mdir))
    extra = []
    if argv[1] == "create":  # the small architecture, where the case does not set it itself
        pairs = zip(ARCH[::2], ARCH[1::2], strict=True)
        extra = [x for flag, v in pairs if flag not in argv for x in (flag, v)]
    opts = [*extra, "--models-dir", mdir]
    if "--" in argv:  # options before the end-of-options marker
        i = argv.index("--")
        argv = argv[:i] + opts + argv[i:]
    else:
        argv = argv + opts
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(os.listdir(mdir)) == before


def test_presets_commands(capsys, mdir):
    code, out, _ = run(capsys, "models", "presets", "--json", "--models-dir", mdir)
    assert set(json.loads(out)) >= {"quick", "balanced", "thorough"}
    argv = ["models", "presets", "save", "mine", "--batch-size", "2", "--models-dir", mdir]
    assert run(capsys, *argv)[0] == 0
    create(capsys, mdir, "p")
    code, out, _ = run(capsys, "models", "set", "p", "--train-preset", "mine", "--models-dir", mdir)
    assert code == 0 and "batch 2 x" in out
    assert run(capsys, "models", "presets", "delete", "mine", "--models-dir", mdir)[0] == 0


def test_subprocess_models_list_json(tmp_path):
    env = dict(os.environ, CLLM_MODELS_DIR=str(tmp_path / "m"))
    r = subprocess.run(
        [sys.executable, "-m", "cllm", "models", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    r = subprocess.run(
        [sys.executable, "-m", "cllm", "models", "info", "ghost"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ghost" in r.stderr
