import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from cllm.crawl.store import CrawlDB
from cllm.engine.config import GPTConfig
from cllm.engine.modelfile import read_header
from cllm.errors import (
    AlreadyExistsError,
    BusyError,
    CLLMError,
    ModelFileError,
    NotFoundError,
    ValidationError,
)
from cllm.models import registry
from cllm.models.registry import TRAIN_PRESETS, Registry

CFG = GPTConfig(vocab_size=257, n_embd=16, n_layer=1, n_head=2, block_size=32)
TEXT = "hello world, the quick brown fox jumps over the lazy dog\n" * 4


def make(reg, name=None, **kw):
    kw.setdefault("config", CFG)
    kw.setdefault("tokenizer", "byte")
    kw.setdefault("text", TEXT)
    return reg.create(name, **kw)


def snapshot(folder):
    """Every path under the folder with its bytes (None for folders)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder)] = None
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


def add_side_files(reg, name):
    q = reg.queue(name)
    q.add_text("some queued text for the model", source="test")
    q.close()
    (reg.dir / f"{name}.progress.json").write_text('{"step": 3}')
    (reg.dir / f"{name}.crawl.sqlite").write_bytes(b"crawl")
    (reg.dir / f"{name}.crawl.sqlite-wal").write_bytes(b"wal")
    (reg.dir / f"{name}.crawl.sqlite-shm").write_bytes(b"shm")
    (reg.dir / f"{name}_crawl").mkdir()
    (reg.dir / f"{name}_crawl" / "page.html").write_text("<p>a crawled page</p>")


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "models")


def test_create_default_names_and_info(reg):
    a = make(reg)
    b = make(reg)
    c = make(reg, "Mine", target_epochs=3, sources=["x.txt"])
    assert (a.name, b.name) == ("model_1", "model_2")
    reg.delete("model_1")
    assert make(reg).name == "model_1"  # first free, not a counter
    assert c.meta.epochs_trained == 0 and c.meta.target_epochs == 3
    assert c.meta.sources == ["x.txt"] and c.meta.created
    assert c.config == CFG and c.tokenizer_kind == "byte" and c.busy is None
    assert reg.queue_dir("Mine").is_dir()
    assert [i.name for i in reg.list()] == ["Mine", "model_1", "model_2"]
    assert reg.info("mine").name == "Mine"  # typed in another case: the stored name
    lm = reg.load("Mine")
    assert lm.name == "Mine" and lm.config == CFG


def test_info_counts_the_queue_and_what_it_holds_out(reg, tmp_path):
    import sqlite3

    make(reg, "m")
    with reg.queue("m") as q:
        q.add_text("trained on " * 50, source="a")
        (held,) = q.add_text("held out " * 30, source="b").added
        q.set_item_validation(held.id, True)
        n_held = q.item(held.id).n_tokens
    i = reg.info("m")
    assert (i.queue_items, i.queue_held_out, i.queue_held_out_tokens) == (2, 1, n_held)
    assert 0 < n_held < i.queue_tokens
    # an index from before the validation flag holds nothing out, and its counts still read
    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, n_tokens INTEGER)")
    con.executemany("INSERT INTO items (n_tokens) VALUES (?)", [(5,), (7,)])
    con.commit()
    con.close()
    assert registry._queue_size(old, True) == (2, 12, 0, 0)


def test_env_var_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CLLM_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert Registry().dir == tmp_path / "elsewhere"


@pytest.mark.parametrize("bad", ["../x", "", "x" * 300, "CON", "con.txt", "mödel", "模型", "-x"])
def test_hostile_names_change_nothing(reg, bad):
    make(reg, "keep")
    before = snapshot(reg.dir)
    for op in (
        lambda: make(reg, bad),
        lambda: reg.rename("keep", bad),
        lambda: reg.copy("keep", bad),
        lambda: reg.delete(bad),
        lambda: reg.info(bad),
        lambda: reg.set_settings(bad, batch_size=4),
    ):
        with pytest.raises(ValidationError) as err:
            op()
        assert "\n" not in str(err.value)
    assert snapshot(reg.dir) == before


def test_names_unique_ignoring_case(reg):
    make(reg, "Alpha")
    make(reg, "beta")
    with pytest.raises(AlreadyExistsError, match="already exists"):
        make(reg, "ALPHA")
    with pytest.raises(AlreadyExistsError):
        reg.rename("beta", "alpha")
    with pytest.raises(AlreadyExistsError):
        reg.copy("beta", "aLPHA")
    reg.rename("Alpha", "ALPHA")  # only the case changes: allowed
    assert [i.name for i in reg.list()] == ["ALPHA", "beta"]


def test_list_reads_headers_only_500_models_fast(reg, monkeypatch):
    make(reg, "m000")
    add_side_files(reg, "m000")
    for i in range(1, 500):  # copies are cheap; the name inside does not matter to a listing
        shutil.copyfile(reg.path("m000"), reg.path(f"m{i:03d}"))
        shutil.copytree(reg.queue_dir("m000"), reg.queue_dir(f"m{i:03d}"))

    def no_weights(*a, **k):
        raise AssertionError("list() must not load weights")

    monkeypatch.setattr("cllm.engine.modelfile.load_model_file", no_weights)
    cold = []
    for _ in range(3):
        registry._cache.clear()  # nothing remembered from an earlier listing
        t0, c0 = time.perf_counter(), time.process_time()
        infos = reg.list()
        cold.append((time.perf_counter() - t0, time.process_time() - c0))
    assert [i.name for i in infos] == [f"m{i:03d}" for i in range(500)]
    assert all(i.queue_items == 1 for i in infos)
    wall, cpu = min(cold)
    # CPU time, not wall time, is asserted: the test machine is shared and its load varies
    assert cpu < 0.5, f"listing 500 models took {wall:.3f} s ({cpu:.3f} s CPU)"
    t0 = time.perf_counter()
    reg.list()
    assert time.perf_counter() - t0 < 0.25  # unchanged files are not parsed again


def test_damaged_file_does_not_hide_others(reg):
    make(reg, "good")
    reg.path("bad").write_bytes(b"\x00" * 40)
    assert [i.name for i in reg.list()] == ["good"]
    with pytest.raises(ModelFileError, match="bad.cllm"):
        reg.info("bad")


HOLDER = """
import sys, time
from cllm.models.registry import Registry
lock = Registry(sys.argv[1]).lock(sys.argv[2], "training")
print("held", flush=True)
time.sleep(120)
"""


def test_locked_model_refuses_changes_until_holder_dies(reg):
    make(reg, "busy")
    add_side_files(reg, "busy")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(reg.dir), "busy"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        assert reg.info("busy").busy.startswith(f"training by pid {proc.pid}")
        before = snapshot(reg.dir)
        for op in (
            lambda: reg.delete("busy"),
            lambda: reg.rename("busy", "other"),
            lambda: reg.set_settings("busy", batch_size=4),
            lambda: reg.grow("busy", 2),
            lambda: reg.save(reg.load("busy")),
        ):
            with pytest.raises(BusyError, match=f"training by pid {proc.pid}"):
                op()
        assert snapshot(reg.dir) == before
    finally:
        proc.kill()
        proc.wait()
    reg.rename("busy", "free")  # the dead holder's lock is recovered
    assert reg.info("free").busy is None


def test_delete_removes_every_side_file(reg):
    make(reg, "gone")
    make(reg, "stays")
    add_side_files(reg, "gone")
    reg.delete("gone")
    assert sorted(os.listdir(reg.dir)) == ["stays.cllm", "stays_queue"]
    with pytest.raises(NotFoundError):
        reg.delete("gone")


def test_rename_moves_everything_and_rewrites_the_name(reg):
    make(reg, "old")
    add_side_files(reg, "old")
    reg.rename("old", "new")
    assert sorted(os.listdir(reg.dir)) == [
        "new.cllm",
        "new.crawl.sqlite",
        "new.crawl.sqlite-shm",
        "new.crawl.sqlite-wal",
        "new.progress.json",
        "new_crawl",
        "new_queue",
    ]
    assert (reg.dir / "new_crawl" / "page.html").read_text() == "<p>a crawled page</p>"
    assert read_header(reg.path("new")).meta.name == "new"
    assert reg.load("new").name == "new"
    assert reg.info("new").queue_items == 1
    q = reg.queue("new")
    assert q.size()[0] == 1
    q.close()


def test_rename_rolls_back_on_a_failure_at_every_step(tmp_path, monkeypatch):
    real_rename, real_unlink = os.rename, os.unlink
    fail_at, failures = 1, 0
    while True:  # fail the 1st, 2nd, ... file operation until a rename gets through
        reg = Registry(tmp_path / f"models{fail_at}")
        make(reg, "old")
        add_side_files(reg, "old")
        params = reg.load("old").gpt.params.copy()
        before = snapshot(reg.dir)
        calls = {"n": 0}

        def flaky(real, calls=calls, fail_at=fail_at):
            def f(*a, **k):
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise OSError("injected failure")
                return real(*a, **k)

            return f

        monkeypatch.setattr(os, "rename", flaky(real_rename))
        monkeypatch.setattr(os, "unlink", flaky(real_unlink))
        try:
            reg.rename("old", "new")
        except OSError as err:
            assert "injected" in str(err)
            failures += 1
        else:
            monkeypatch.undo()
            assert reg.names() == ["new"]
            break
        monkeypatch.undo()
        # usable under exactly the old name, nothing left over
        assert snapshot(reg.dir) == before
        lm = reg.load("old")
        assert lm.name == "old" and np.array_equal(lm.gpt.params, params)
        fail_at += 1
    assert failures >= 8  # 6 side files, the new model file, removing the old one


def test_copy_brings_queue_and_lineage(reg):
    make(reg, "src")
    add_side_files(reg, "src")
    info = reg.copy("src", "dst")
    assert info.queue_items == 1 and info.meta.copied_from == "src"
    assert info.meta.lineage[-1]["copied_from"] == "src"
    assert reg.load("dst").name == "dst"
    assert np.array_equal(reg.load("dst").gpt.params, reg.load("src").gpt.params)
    assert not (reg.dir / "dst.progress.json").exists()  # a run's progress is not copied
    with pytest.raises(AlreadyExistsError):
        reg.copy("src", "dst")


def test_export_import_round_trip_and_clash(reg, tmp_path):
    make(reg, "orig")
    out = reg.export("orig", tmp_path)
    assert out == tmp_path / "orig.cllm"
    with pytest.raises(AlreadyExistsError):
        reg.import_file(out)
    assert reg.import_file(out, on_clash="rename") == "orig_2"
    assert reg.import_file(out, on_clash="rename") == "orig_3"
    assert reg.import_file(out, name="fresh") == "fresh"
    lm = reg.load("orig_2")
    assert lm.name == "orig_2"
    assert np.array_equal(lm.gpt.params, reg.load("orig").gpt.params)
    with pytest.raises(ValidationError):
        reg.import_file(out, on_clash="overwrite")


def test_import_of_a_damaged_file_changes_nothing(reg, tmp_path):
    make(reg, "orig")
    out = reg.export("orig", tmp_path)
    data = bytearray(out.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.cllm"
    bad.write_bytes(bytes(data))
    (tmp_path / "short.cllm").write_bytes(out.read_bytes()[:100])
    before = snapshot(reg.dir)
    for p in (bad, tmp_path / "short.cllm", tmp_path / "missing.cllm"):
        with pytest.raises(CLLMError):
            reg.import_file(p, name="x")
    assert snapshot(reg.dir) == before


def test_grow_keeps_logits_and_remaps_optimizer(reg):
    make(reg, "g")
    lm = reg.load("g")
    n = lm.gpt.params.size
    lm.optim_state = {"m": np.full(n, 0.5, np.float32), "v": np.full(n, 0.25, np.float32), "t": 7}
    reg.save(lm)
    ids = np.arange(20, dtype=np.int32) % 200
    before = reg.load("g").logits(ids)
    info = reg.grow("g", 3)
    assert info.config.n_layer == 3
    grown = reg.load("g")
    np.testing.assert_allclose(grown.logits(ids), before, atol=1e-6)
    m = grown.optim_state["m"]
    assert m.size == grown.gpt.params.size and grown.optim_state["t"] == 7
    assert m[0] == 0.5 and 0 < (m == 0).sum() < m.size  # old moments kept, new blocks at zero
    with pytest.raises(ValidationError, match="never goes down"):
        reg.grow("g", 2)
    assert reg.info("g").config.n_layer == 3


def test_set_settings_and_refusals_change_nothing(reg):
    make(reg, "s")
    info = reg.set_settings("s", batch_size=4, seq_len=16, learning_rate=3e-4, target_epochs=5)
    assert (info.train.batch_size, info.train.seq_len) == (4, 16)
    assert info.train.learning_rate == 3e-4 and info.meta.target_epochs == 5
    lm = reg.load("s")
    lm.meta.epochs_trained = 2
    reg.save(lm)
    before = snapshot(reg.dir)
    for bad in (
        {"target_epochs": 1},
        {"seq_len": 33},
        {"batch_size": 0},
        {"batch_size": 10**9},
        {"learning_rate": float("nan")},
        {"learning_rate": -1.0},
        {"grad_clip": 0},
        {"weight_decay": -1},
        {"nonsense": 3},
        {"preset": "nope"},
    ):
        with pytest.raises(CLLMError):
            reg.set_settings("s", **bad)
    assert snapshot(reg.dir) == before
    assert reg.set_settings("s", target_epochs=2).meta.target_epochs == 2  # equal: allowed


def test_presets_builtin_and_user(reg):
    make(reg, "p")
    assert set(TRAIN_PRESETS) <= set(reg.presets())
    info = reg.set_settings("p", preset="thorough")
    assert info.train.batch_size == 32 and info.train.seq_len == 32  # clamped to the context
    assert info.meta.target_epochs == 10
    reg.save_preset("mine", batch_size=3, learning_rate=1e-4, target_epochs=2)
    assert Registry(reg.dir).presets()["mine"]["batch_size"] == 3
    assert reg.set_settings("p", preset="mine").train.batch_size == 3
    with pytest.raises(ValidationError):
        reg.save_preset("quick", batch_size=3)
    with pytest.raises(ValidationError):
        reg.save_preset("bad", batch_size=-3)
    reg.delete_preset("mine")
    assert "mine" not in reg.presets()


def test_history_and_csv(reg, tmp_path):
    make(reg, "h")
    lm = reg.load("h")
    lm.history = {
        "steps": np.array([1, 2, 3]),
        "train": np.array([3.0, 2.5, 2.0]),
        "val": np.array([np.nan, np.nan, 2.2]),
    }
    reg.save(lm)
    h = reg.history("h")
    assert h["steps"] == [1, 2, 3] and h["train_loss"] == [3.0, 2.5, 2.0]
    path = reg.history_csv("h", tmp_path / "h.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "step,train_loss,val_loss"
    assert lines[1] == "1,3.0," and lines[3] == "3,2.0,2.2"


def test_save_under_own_lock(reg):
    make(reg, "t")
    lm = reg.load("t")
    with reg.lock("t", "training"):
        lm.meta.steps = 5
        reg.save(lm)  # the trainer checkpointing under the lock it holds
    assert reg.info("t").meta.steps == 5


def test_concurrent_default_names_are_distinct(reg):
    import threading

    names, errors = [], []

    def go():
        try:
            names.append(make(reg).name)
        except Exception as e:  # any failure is a bug to report
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(names) == ["model_1", "model_2", "model_3", "model_4"]


def test_export_without_optimizer_state(reg, tmp_path):
    make(reg, "o")
    lm = reg.load("o")
    n = lm.gpt.params.size
    lm.optim_state = {"m": np.ones(n, np.float32), "v": np.ones(n, np.float32), "t": 3}
    reg.save(lm)
    full = reg.export("o", tmp_path / "full.cllm")
    slim = reg.export("o", tmp_path / "slim.cllm", optimizer=False)
    assert read_header(full).has_optim and not read_header(slim).has_optim
    assert slim.stat().st_size < full.stat().st_size
    assert reg.import_file(slim, name="slim") == "slim"
    assert reg.load("slim").optim_state is None
    assert reg.load("o").optim_state["t"] == 3  # the model itself keeps its state


CRAWL_HOLDER = """
import sys, time
from cllm.crawl.store import CrawlDB
db = CrawlDB(sys.argv[1])
assert db.try_lock()
print("crawling", flush=True)
time.sleep(120)
"""


def test_a_running_crawl_refuses_rename_and_delete_until_it_ends(reg):
    make(reg, "web")
    (reg.dir / "web_crawl").mkdir()
    (reg.dir / "web_crawl" / "page.html").write_text("<p>a crawled page</p>")
    proc = subprocess.Popen(
        [sys.executable, "-c", CRAWL_HOLDER, str(reg.dir / "web.crawl.sqlite")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "crawling"
        assert reg.info("web").busy == f"crawling by pid {proc.pid}"
        assert [m.busy for m in reg.list()] == [f"crawling by pid {proc.pid}"]
        held = {p: b for p, b in snapshot(reg.dir).items() if not p.endswith("-lock")}
        for op in (lambda: reg.delete("web"), lambda: reg.rename("web", "site")):
            with pytest.raises(BusyError, match=f"'web' is busy: crawling by pid {proc.pid}"):
                op()
        assert {p: b for p, b in snapshot(reg.dir).items() if not p.endswith("-lock")} == held
        # continuous training inside the crawl takes the model's own lock: not refused
        with reg.lock("web", "training"):
            pass
    finally:
        proc.kill()
        proc.wait()
    # the killed crawl left its lock file behind (the kernel dropped its flock): not busy
    assert (reg.dir / "web.crawl.sqlite-lock").exists()
    assert reg.info("web").busy is None
    reg.rename("web", "site")
    assert not (reg.dir / "web.crawl.sqlite-lock").exists()
    assert (reg.dir / "site_crawl" / "page.html").exists()
    assert not any(p.startswith("web") for p in snapshot(reg.dir))
    with CrawlDB(reg.dir / "site.crawl.sqlite") as db:  # the store moved whole, WAL and all
        assert db.counts()["pending"] == 0


def test_a_crawl_in_this_process_refuses_delete_and_none_starts_during_one(reg):
    make(reg, "web")
    db = CrawlDB(reg.dir / "web.crawl.sqlite")
    try:
        assert db.try_lock()
        with pytest.raises(BusyError, match=f"crawling by pid {os.getpid()}"):
            reg.delete("web")
        db.unlock()
        # while the registry moves the files, a crawl cannot start
        with reg._no_crawl("web"):
            assert not db.try_lock()
        assert db.try_lock()
        db.unlock()
    finally:
        db.close()
    reg.delete("web")
    assert os.listdir(reg.dir) == []
