import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cllm.cli import main
from cllm.engine.config import GPTConfig

ROOT = Path(__file__).resolve().parents[3]
TINY = GPTConfig(vocab_size=300, n_embd=8, n_layer=1, n_head=1, block_size=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from cllm.models.registry import Registry

    d = tmp_path_factory.mktemp("models")
    reg = Registry(d)
    reg.create("alpha", config=TINY, tokenizer="byte")
    reg.create("beta", config=TINY, tokenizer="char", text="héllo wörld", vocab_size=300)
    return d


@pytest.fixture
def models(built, tmp_path):
    d = tmp_path / "models"
    shutil.copytree(built, d)
    return d


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "one.txt").write_text("first file\n")
    (d / "two.md").write_text("**Second** *file*\n")
    (d / "sub" / "three.txt").write_text("third file\n")
    (d / "sub" / "four.bin").write_bytes(bytes(range(256)))
    return d


def run(models: Path, *argv: str, capsys) -> tuple[int, str, str]:
    code = main([*argv, "--models-dir", str(models)])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_size_remove_clear(models, data, capsys):
    code, out, _ = run(models, "queue", "add", "alpha", str(data), "--json", capsys=capsys)
    assert code == 0
    r = json.loads(out)
    assert [Path(it["source"]).name for it in r["added"]] == ["one.txt", "two.md", "three.txt"]
    assert r["skipped"] == [{"source": str(data / "sub" / "four.bin"), "reason": "binary"}]
    assert r["queue_items"] == 3 and r["queue_tokens"] == r["tokens"] == 11 + 11 + 12

    code, out, _ = run(models, "queue", "list", "alpha", "--json", capsys=capsys)
    items = json.loads(out)
    assert [it["n_tokens"] for it in items] == [11, 12, 11]

    code, out, _ = run(models, "queue", "list", "alpha", capsys=capsys)
    assert (
        code == 0
        and "one.txt" in out
        and out.splitlines()[0].split()[:3] == ["ID", "PRIORITY", "TOKENS"]
    )

    assert run(models, "queue", "remove", "alpha", str(items[0]["id"]), capsys=capsys)[0] == 0
    code, out, _ = run(models, "queue", "size", "alpha", "--json", capsys=capsys)
    assert json.loads(out) == {"model": "alpha", "items": 2, "tokens": 23}

    code, _, err = run(models, "queue", "clear", "alpha", capsys=capsys)
    assert code == 2 and "--yes" in err and len(err.strip().splitlines()) == 1
    assert run(models, "queue", "clear", "alpha", "--yes", capsys=capsys)[0] == 0
    assert "0 item(s)" in run(models, "queue", "size", "alpha", capsys=capsys)[1]


def test_include_patterns_priority_and_duplicates(models, data, capsys):
    run(models, "queue", "add", "alpha", str(data / "one.txt"), capsys=capsys)
    code, out, _ = run(
        models,
        "queue", "add", "alpha", str(data), "--include", "*.txt", "--priority", "3", "--json",
        capsys=capsys,
    )  # fmt: skip
    r = json.loads(out)
    assert [Path(it["source"]).name for it in r["added"]] == ["three.txt"]
    assert [s["reason"] for s in r["skipped"]] == ["duplicate"]
    code, out, _ = run(models, "queue", "list", "alpha", "--json", capsys=capsys)
    assert [(Path(it["source"]).name, it["priority"]) for it in json.loads(out)] == [
        ("three.txt", 3),
        ("one.txt", 0),
    ]


def test_import_retokenizes_and_refuses_itself(models, data, capsys):
    run(models, "queue", "add", "alpha", str(data), capsys=capsys)
    code, out, _ = run(
        models, "queue", "import", "beta", "--from", "alpha", "--json", capsys=capsys
    )
    assert code == 0 and len(json.loads(out)["added"]) == 3
    from cllm.models.registry import Registry

    with Registry(models).queue("beta") as q:
        texts = [q.text(it.id) for it in q.items()]
    assert texts == ["first file\n", "Second file\n", "third file\n"]
    code, _, err = run(models, "queue", "import", "alpha", "--from", "alpha", capsys=capsys)
    assert code == 2 and "itself" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["queue", "add", "nobody", "x"], "nobody"),
        (["queue", "add", "alpha", "/no/such/path"], "no such file"),
        (["queue", "remove", "alpha", "99"], "no item 99"),
        (["queue", "list", "../x"], ""),
    ],
)
def test_refusals_are_one_line_exit_2(models, capsys, argv, words):
    code, out, err = run(models, *argv, capsys=capsys)
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and words in err


def test_command_line_end_to_end(models, data):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLLM_MODELS_DIR": str(models)}
    cmd = [sys.executable, "-m", "cllm", "queue"]
    ok = subprocess.run(cmd + ["add", "alpha", str(data)], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "added 3 item(s)" in ok.stdout
    bad = subprocess.run(cmd + ["remove", "alpha", "x"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal(models, data, monkeypatch, capsys):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["queue", "add", "alpha", str(data), "--models-dir", str(models)]) == 0
    shown = term.getvalue()
    assert "\radding [" in shown and "4/4 files, 0.0 MB, 34 tokens" in shown
    assert shown.endswith("\r")  # the line is wiped once done


def test_folder_add_with_a_dangling_link_adds_the_rest_and_lists_it(models, data, capsys):
    os.symlink(data / "gone.txt", data / "broken.txt")
    code, out, err = run(models, "queue", "add", "alpha", str(data), capsys=capsys)
    assert code == 0, err
    assert f"skipped {data / 'broken.txt'}: dangling symbolic link" in out.splitlines()
    assert "added 3 item(s)" in out


FRENCH = "Le café crème est très bon, à côté de la fenêtre. Ça coûte cher, même à Noël.\n"


def test_stdin_text_cat_set_filter_and_field(models, tmp_path, capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(FRENCH.encode("latin-1")))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, err = run(models, "queue", "add", "alpha", "-", "--json", capsys=capsys)
    assert code == 0, err
    piped = json.loads(out)["added"][0]
    assert piped["source"] == "<stdin>" and piped["encoding"] == "cp1252"
    code, out, _ = run(models, "queue", "cat", "alpha", str(piped["id"]), capsys=capsys)
    assert out == FRENCH

    code, out, _ = run(
        models,
        "queue",
        "add",
        "alpha",
        "--text",
        "a literal text",
        "--priority",
        "2",
        capsys=capsys,
    )
    assert code == 0 and "added 1 item(s)" in out
    (tmp_path / "recs.jsonl").write_text('{"title": "x", "summary": "one"}\n{"summary": "two"}\n')
    code, out, _ = run(models, "queue", "add", "alpha", str(tmp_path / "recs.jsonl"), capsys=capsys)
    assert "no text field: name one with --field (fields: title, summary)" in out
    code, out, _ = run(
        models,
        "queue",
        "add",
        "alpha",
        str(tmp_path / "recs.jsonl"),
        "--field",
        "summary",
        "--json",
        capsys=capsys,
    )
    recs = json.loads(out)["added"][0]
    assert recs["kind"] == "jsonl" and recs["n_tokens"] == len("one") + 1 + len("two")

    code, out, _ = run(
        models, "queue", "list", "alpha", "--filter", "jsonl", "--json", capsys=capsys
    )
    assert [it["id"] for it in json.loads(out)] == [recs["id"]]
    code, out, _ = run(
        models, "queue", "list", "alpha", "--filter", "nothing-like-it", capsys=capsys
    )
    assert "no item" in out
    code, out, _ = run(
        models, "queue", "set", "alpha", str(recs["id"]), "--priority", "9", capsys=capsys
    )
    assert code == 0 and "priority 9" in out
    code, out, _ = run(models, "queue", "list", "alpha", "--json", capsys=capsys)
    assert json.loads(out)[0]["id"] == recs["id"]  # the highest priority trains first

    code, _, err = run(models, "queue", "cat", "alpha", "999", capsys=capsys)
    assert code == 2 and "no item 999" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(models, "queue", "add", "alpha", capsys=capsys)
    assert code == 2 and "--text" in err


def test_a_full_disk_during_queue_add_is_one_line(tmp_path, capsys, monkeypatch):
    """SQLite says 'database or disk is full' (not an OSError): one line, exit 2."""
    import sqlite3

    from cllm.cli import main
    from cllm.data.dataqueue import DataQueue

    models = tmp_path / "models"
    assert main(["models", "create", "m", "--tokenizer", "byte", "--models-dir", str(models)]) == 0
    (tmp_path / "a.txt").write_text("some text\n")

    def full(self, *a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(DataQueue, "add_files", full)
    capsys.readouterr()
    rc = main(["queue", "add", "m", str(tmp_path / "a.txt"), "--models-dir", str(models)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "no space left" in err


def test_set_validation_on_and_off_shows_in_list_and_json(models, data, capsys):
    run(models, "queue", "add", "alpha", str(data), capsys=capsys)
    code, out, _ = run(models, "queue", "list", "alpha", "--json", capsys=capsys)
    first, second = json.loads(out)[:2]
    assert not first["validation"] and not second["validation"]
    code, out, _ = run(
        models, "queue", "set", "alpha", str(second["id"]), "--validation", "on", capsys=capsys
    )
    assert (
        code == 0
        and out == f"item {second['id']} ({second['source']}) is now held out for validation\n"
    )
    code, out, _ = run(models, "queue", "list", "alpha", capsys=capsys)
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["ID", "PRIORITY", "TOKENS", "VALIDATION", "KIND"]
    assert [r.split()[3] for r in rows] == ["-", "yes", "-"]
    code, out, _ = run(models, "queue", "list", "alpha", "--json", capsys=capsys)
    assert [it["validation"] for it in json.loads(out)] == [False, True, False]
    code, out, _ = run(
        models,
        "queue",
        "set",
        "alpha",
        str(second["id"]),
        "--validation",
        "off",
        "--priority",
        "4",
        capsys=capsys,
    )
    assert code == 0 and "priority 4" in out and "is now trained on" in out
    code, out, _ = run(models, "queue", "list", "alpha", "--json", capsys=capsys)
    assert [(it["priority"], it["validation"]) for it in json.loads(out)][0] == (4, False)

    code, _, err = run(models, "queue", "set", "alpha", str(first["id"]), capsys=capsys)
    assert code == 2 and "--validation on|off" in err
    code, _, err = run(models, "queue", "set", "alpha", "999", "--validation", "on", capsys=capsys)
    assert code == 2 and "no item 999" in err
    code, out, _ = run(
        models, "queue", "add", "alpha", "--text", "held", "--validation", "--json", capsys=capsys
    )
    assert [it["validation"] for it in json.loads(out)["added"]] == [True]
    with pytest.raises(SystemExit):  # argparse: on or off only
        main(["queue", "set", "alpha", "1", "--validation", "yes", "--models-dir", str(models)])
