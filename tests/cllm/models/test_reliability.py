"""Each way to lose data, crash or overreach that a hostile sweep found in the models folder,
reproduced (issue 15 items 1-5, 7-9, 12, 13)."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from cllm import atomic
from cllm.cli import main as cli
from cllm.engine.config import GPTConfig
from cllm.engine.lm import load_model
from cllm.errors import DiskFullError, ModelFileError, NotFoundError, ValidationError
from cllm.models import paths
from cllm.models.registry import Registry
from tests.cllm.models import hostile

CFG = GPTConfig(vocab_size=257, n_embd=16, n_layer=1, n_head=2, block_size=32)
TEXT = "To be, or not to be, that is the question. " * 50


def make(reg: Registry, name: str, items: int = 0) -> None:
    reg.create(name, config=CFG, tokenizer="byte", text="", train={"seq_len": 16})
    if items:
        with reg.queue(name) as q:
            for i in range(items):
                q.add_text(f"item {i}: " + TEXT, source=f"s{i}")


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "models")


# ------------------------------------------------------------------ 1. export over another model


def test_export_into_the_models_folder_is_refused(reg, tmp_path, capsys):
    make(reg, "a")
    make(reg, "b", items=1)
    before = reg.path("b").read_bytes()
    for target in (reg.dir / "b.cllm", reg.dir / "DEMO.cllm", reg.dir, reg.dir / "new.cllm"):
        with pytest.raises(ValidationError, match="cannot export into the models folder"):
            reg.export("a", target)
    assert reg.path("b").read_bytes() == before and reg.names() == ["a", "b"]
    rc, _, err = run(
        capsys, "models", "export", "a", str(reg.dir / "b.cllm"), "--models-dir", str(reg.dir)
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "models copy" in err
    assert reg.export("a", tmp_path / "out.cllm").is_file()  # elsewhere: fine


# ------------------------------------------------------------------ 2. a rename killed half-way

RENAMER = textwrap.dedent(
    """
    import os, signal, sys
    from cllm.models.registry import Registry
    kill_at = int(sys.argv[2])
    calls = [0]
    def killing(real):
        def f(*a, **k):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        return f
    os.rename, os.unlink = killing(os.rename), killing(os.unlink)  # every move and removal
    Registry(sys.argv[1]).rename("old", "new")
    print("done")
    """
)


def test_a_rename_killed_at_every_move_is_finished_or_undone(tmp_path):
    """Killed (SIGKILL, no cleanup) before each of its moves, a rename leaves a folder that the
    next open brings back to exactly one model, under one name, with every queue item."""
    for kill_at in range(1, 20):
        reg = Registry(tmp_path / f"m{kill_at}")
        make(reg, "old", items=3)
        for suffix in (".progress.json", ".crawl.sqlite"):
            (reg.dir / f"old{suffix}").write_text("x")
        r = subprocess.run(
            [sys.executable, "-c", RENAMER, str(reg.dir), str(kill_at)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        finished = r.stdout.strip() == "done"
        assert finished or r.returncode == -signal.SIGKILL, r.stderr
        reg = Registry(reg.dir)  # the next open recovers
        (name,) = reg.names()
        assert reg.info(name).queue_items == 3, (kill_at, name)
        assert load_model(reg.path(name)).name == name
        left = sorted(p.name for p in reg.dir.iterdir())
        assert left == sorted(
            [f"{name}.cllm", f"{name}_queue", f"{name}.progress.json", f"{name}.crawl.sqlite"]
        ), (kill_at, left)
        if finished:
            assert kill_at > 5 and name == "new"
            break
    else:
        raise AssertionError("the rename never got through")


def test_a_queue_with_items_is_never_deleted_for_a_name(reg):
    make(reg, "old", items=1)
    make(reg, "other", items=2)
    # a queue without its model (moved here by hand, or left by an older version's rename)
    os.rename(reg.queue_dir("other"), reg.queue_dir("new"))
    reg.delete("other")
    with pytest.raises(ValidationError, match="holds 2 queue items but there is no model 'new'"):
        reg.rename("old", "new")
    with pytest.raises(ValidationError, match="holds 2 queue items"):
        reg.create("new", config=CFG, tokenizer="byte", text="")
    with pytest.raises(ValidationError, match="holds 2 queue items"):
        reg.copy("old", "new")
    assert (reg.queue_dir("new") / "queue.sqlite").is_file() and reg.names() == ["old"]


# ------------------------------------------------------------------ 3-5. hostile files


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("good") / "models")
    make(reg, "good")
    lm = reg.load("good")  # as a trained model is: optimizer state, training state, history
    n = lm.gpt.params.size
    lm.optim_state = {"m": np.zeros(n, np.float32), "v": np.zeros(n, np.float32), "t": 2}
    lm.train_state = {
        "position": {"items": [[1, 0, 40]], "offset": 3, "batch": 1, "loss_sum": 5.0},
        "rng": np.random.default_rng(1).bit_generator.state,
        "run": {"start": 0, "end": 2},
    }
    lm.history = {"steps": np.arange(1, 3), "train": np.array([5.5, 5.0]), "val": [np.nan] * 2}
    reg.save(lm)
    return reg.path("good").read_bytes()


@pytest.mark.parametrize(
    "case",
    [
        "deep header",
        "deep description",
        "deep meta field",
        "n_layer Infinity",
        "config is a list",
        "train is a list",
        "meta is a list",
    ],
)
def test_list_names_a_bad_file_and_still_lists_the_good_one(reg, good_bytes, case, capsys):
    make(reg, "good")
    reg.path("bad").write_bytes(hostile.corpus(good_bytes)[case])
    rc, out, err = run(capsys, "models", "list", "--models-dir", str(reg.dir))
    assert rc == 0 and "good" in out
    assert err.startswith("skipped bad.cllm: ") and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelFileError):
        reg.info("bad")
    rc, _, err = run(capsys, "models", "info", "bad", "--models-dir", str(reg.dir))
    assert rc == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "case, field",
    [
        ("learning_rate fast", "learning_rate"),
        ("batch_size abc", "batch_size"),
        ("epochs_trained many", "epochs_trained"),
        ("steps [1,2]", "steps"),
        ("bogus state.train", "state.train"),
        ("target_epochs -3", "target_epochs"),
        ("batch_size -5", "batch_size"),
    ],
)
def test_import_refuses_wrong_type_or_absurd_settings_naming_the_field(
    reg, good_bytes, tmp_path, case, field
):
    f = tmp_path / "x.cllm"
    f.write_bytes(hostile.corpus(good_bytes)[case])
    with pytest.raises(ModelFileError, match=field.replace(".", r"\.")) as e:
        reg.import_file(f, name="x")
    assert "\n" not in str(e.value) and reg.names() == []


@pytest.mark.parametrize("case", ["NaN weights", "inf weights"])
def test_non_finite_weights_refused_on_import_and_reported_on_load(
    reg, good_bytes, tmp_path, case, capsys
):
    f = tmp_path / "x.cllm"
    f.write_bytes(hostile.corpus(good_bytes)[case])
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        reg.import_file(f, name="x")
    lm = load_model(f)
    assert lm.nonfinite == len(range(0, 257 * 16, 7))  # every 7th value of wte
    with pytest.raises(ModelFileError, match="cannot generate"):
        list(lm.generate("Hi", max_tokens=3))
    reg.dir.mkdir(exist_ok=True)
    os.link(f, reg.path("nan"))  # placed by hand: generate refuses with one line
    rc, out, err = run(capsys, "generate", "nan", "Hi", "--models-dir", str(reg.dir))
    assert rc == 2 and not out.strip() and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ 7. history to a missing folder


def test_history_csv_to_a_missing_folder_is_one_line(reg, tmp_path, capsys):
    make(reg, "h")
    with pytest.raises(NotFoundError, match="does not exist"):
        reg.history_csv("h", tmp_path / "missing" / "x.csv")
    rc, _, err = run(
        capsys,
        "models",
        "history",
        "h",
        "--csv",
        str(tmp_path / "no" / "x.csv"),
        "--models-dir",
        str(reg.dir),
    )
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err


# ------------------------------------------------------------------ 8. a full disk


@pytest.fixture
def full_disk(monkeypatch):
    """Every write of an atomic save fails as on a full disk."""
    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: Full(real(*a, **k)))


@pytest.mark.parametrize(
    "op",
    ["create", "grow", "set", "copy", "rename", "save", "import", "presets"],
)
def test_a_full_disk_says_so_and_changes_nothing(reg, tmp_path, op, request):
    make(reg, "a", items=2)
    exported = reg.export("a", tmp_path / "a.cllm")
    before = {p.name: p.read_bytes() for p in reg.dir.iterdir() if p.is_file()}
    request.getfixturevalue("full_disk")
    action = {
        "create": lambda: reg.create("b", config=CFG, tokenizer="byte", text=""),
        "grow": lambda: reg.grow("a", 2),
        "set": lambda: reg.set_settings("a", batch_size=3),
        "copy": lambda: reg.copy("a", "b"),
        "rename": lambda: reg.rename("a", "b"),
        "save": lambda: reg.save(reg.load("a")),
        "import": lambda: reg.import_file(exported, name="b"),
        "presets": lambda: reg.save_preset("mine", batch_size=3),
    }[op]
    with pytest.raises(DiskFullError) as e:
        action()
    msg = str(e.value)
    assert msg.startswith("no space left on device while writing ") and msg.endswith(
        "; nothing was changed"
    )
    after = {p.name: p.read_bytes() for p in reg.dir.iterdir() if p.is_file()}
    assert after == before and reg.names() == ["a"] and reg.info("a").queue_items == 2
    assert not [p for p in reg.dir.iterdir() if p.name.startswith(".")]


def test_a_full_disk_on_the_command_line_is_one_line(reg, capsys, request):
    make(reg, "a")
    request.getfixturevalue("full_disk")
    rc, _, err = run(
        capsys, "models", "set", "a", "--batch-size", "3", "--models-dir", str(reg.dir)
    )
    assert rc == 2 and err.count("\n") == 1 and "no space left on device while writing" in err


# ------------------------------------------------------------------ 9. sizes before allocating


def test_a_sparse_file_is_refused_before_anything_big_is_allocated(reg, good_bytes, tmp_path):
    f = tmp_path / "sparse.cllm"
    size = hostile.sparse_file(f, good_bytes)
    st = os.stat(f)
    if st.st_blocks * 512 >= size / 2:
        pytest.skip("this file system does not keep holes")
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="sparse"):
            load_model(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated for a {size / 2**20:.0f} MiB hole"


def test_declared_weights_larger_than_the_file_are_refused_from_the_header(good_bytes, tmp_path):
    p = hostile.Parts.read(good_bytes)
    p.info["config"]["n_layer"] = 200  # the description promises far more than the data holds
    f = tmp_path / "big.cllm"
    f.write_bytes(p.pack())
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="needs .* bytes of weights but the file holds"):
            load_model(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(good_bytes) + 2**20


# ------------------------------------------------------------------ 12. leftovers of kills


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftovers_of_killed_writes_are_swept_when_the_folder_is_opened(reg, tmp_path):
    make(reg, "x", items=1)
    dead, alive = dead_pid(), os.getpid()
    junk = [
        reg.dir / f"..x.rename.tmp.{dead}.abc123.tmp",  # a killed rename's new model file
        reg.dir / f".x.cllm.{dead}.k9j_2.tmp",  # a killed save
        reg.dir / f".presets.json.{dead}.q.tmp",
    ]
    kept = [reg.dir / f".x.cllm.{alive}.live.tmp", reg.dir / "notes.tmp"]
    for p in junk + kept:
        p.write_bytes(b"\0" * 1000)
    items = reg.queue_dir("x") / "items"
    part_dead, part_alive = items / f"{dead}.aa.part", items / f"{alive}.bb.part"
    part_dead.write_bytes(b"")
    part_alive.write_bytes(b"")
    reg2 = Registry(reg.dir)
    assert not any(p.exists() for p in junk) and all(p.exists() for p in kept)
    assert len(reg2.recovered) == 3
    with reg2.queue("x"):  # the queue sweeps its own .part files on open
        pass
    assert not part_dead.exists() and part_alive.exists()
    # an export's leftover in the export folder goes with the next export there
    out = tmp_path / "exp.cllm"
    stale = tmp_path / f".exp.cllm.{dead}.zz.tmp"
    stale.write_bytes(b"\0" * 1000)
    reg2.export("x", out)
    assert out.is_file() and not stale.exists()


def test_a_killed_copy_is_finished_on_the_next_open(reg):
    make(reg, "src", items=2)
    reg.copy("src", "dst")
    os.rename(reg.queue_dir("dst"), paths.copy_queue_tmp(reg.dir, "dst"))  # killed before the move
    reg2 = Registry(reg.dir)
    assert reg2.info("dst").queue_items == 2 and reg2.recovered


# ------------------------------------------------------------------ 13. small things


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_model_files_follow_the_umask(reg, umask, mode):
    old = os.umask(umask)
    try:
        make(reg, "u")
        reg.grow("u", 2)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(reg.path("u")).st_mode) == mode


def test_messages_do_not_glue_a_quote_to_an_apostrophe():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[3]
    for p in list((root / "cllm").rglob("*.py")) + list((root / "app").rglob("*.py")):
        assert "!r}'s" not in p.read_text(), p  # prints model 'kt''s queue


def test_meta_record_checks_every_field_once(tmp_path):
    from cllm.engine.meta import ModelMeta

    m = ModelMeta.from_dict({"steps": 3.0, "future_key": {"a": [1]}})
    assert m.steps == 3 and type(m.steps) is int and m.extra == {"future_key": {"a": [1]}}
    assert m.to_dict()["future_key"] == {"a": [1]}
    for bad in ({"steps": -1}, {"last_loss": float("nan")}, {"sources": "x"}, {"name": 1}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            ModelMeta.from_dict(bad)
    m.update(best_loss=np.float32(1.5), last_loss=float("inf"))
    assert m.best_loss == 1.5 and m.last_loss is None
    with pytest.raises(ValidationError, match="unknown metadata field"):
        m.update(stepz=1)
    json.dumps(m.to_dict(), allow_nan=False)


def test_a_killed_delete_is_finished_and_never_leaves_an_orphan_queue(reg):
    make(reg, "d", items=2)
    make(reg, "keep", items=1)
    intent = paths.delete_intent(reg.dir, "d")
    intent.write_text("{}")
    Registry(reg.dir)  # killed before anything was removed: the model stays, whole
    assert not intent.exists() and reg.info("d").queue_items == 2
    intent.write_text("{}")
    reg.path("d").unlink()  # killed right after the model file went
    reg2 = Registry(reg.dir)
    assert reg2.names() == ["keep"] and not reg.queue_dir("d").exists() and not intent.exists()
    assert reg2.info("keep").queue_items == 1
    reg2.create("d", config=CFG, tokenizer="byte", text="")  # the name is free again
