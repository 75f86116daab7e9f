import os
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.data.dataqueue import DataQueue, walk_files
from cllm.errors import CLLMError, NotFoundError, ValidationError

ROOT = Path(__file__).resolve().parents[3]


class ByteTok:
    """A minimal lossless tokenizer for these tests: ids are UTF-8 bytes plus ``shift``."""

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift
        self.vocab_size = 256 + shift

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + self.shift

    def decode(self, ids) -> str:
        return bytes((np.asarray(ids) - self.shift).astype(np.uint8)).decode("utf-8", "replace")

    def to_json(self) -> str:
        return f'{{"kind": "test-bytes", "shift": {self.shift}}}'


@pytest.fixture
def q(tmp_path):
    with DataQueue(tmp_path / "m_queue", ByteTok()) as queue:
        yield queue


def test_add_text_round_trip_and_size(q):
    r = q.add_text("hello wörld", source="https://example.org/a")
    assert [it.source for it in r.added] == ["https://example.org/a"] and not r.skipped
    item = r.added[0]
    assert item.n_tokens == len("hello wörld".encode()) and item.kind == "text"
    assert q.tokens(item.id).dtype == np.int32
    assert q.text(item.id) == "hello wörld"
    assert q.size() == (1, item.n_tokens)
    assert not any(q.items_dir.iterdir())  # a small item's tokens live in its index row


def test_order_is_priority_then_fifo(q):
    for i, p in enumerate([0, 5, 0, 5, -1, 0]):
        q.add_text(f"doc {i}", source=f"s{i}", priority=p)
    assert [it.source for it in q.items()] == ["s1", "s3", "s0", "s2", "s5", "s4"]


def test_same_content_is_stored_once(q, tmp_path):
    (tmp_path / "a.txt").write_text("same words")
    (tmp_path / "b.txt").write_text("same words")
    assert len(q.add_file(tmp_path / "a.txt").added) == 1
    r = q.add_file(tmp_path / "b.txt")
    assert r.added == [] and r.skipped == [(str((tmp_path / "b.txt").resolve()), "duplicate")]
    assert q.add_text("same words", source="x").skipped == [("x", "duplicate")]
    assert q.size()[0] == 1


def test_folder_patterns_order_and_skip_reasons(q, tmp_path):
    d = tmp_path / "data"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "b.txt").write_text("bee")
    (d / "a.TXT").write_text("ay")
    (d / "sub" / "c.txt").write_text("sea")
    (d / "sub" / "deeper" / "d.txt").write_text("dee")
    (d / "sub" / "e.md").write_text("# ee")
    (d / ".git" / "config.txt").write_text("hidden")
    (d / "empty.txt").write_bytes(b"")
    (d / "blob.txt").write_bytes(bytes(range(256)) * 8)
    (d / "latin.txt").write_bytes(b"caf\xe9")
    (d / "dup.txt").write_text("bee")
    os.symlink(d, d / "sub" / "loop")  # a link back up: must not recurse forever

    r = q.add_folder(d, patterns=["*.txt"])
    names = [Path(it.source).name for it in q.items()]
    assert names == ["a.TXT", "b.txt", "c.txt", "d.txt"]
    reasons = {Path(s).name: why for s, why in r.skipped}
    assert reasons["empty.txt"] == "empty"
    assert reasons["blob.txt"] == "binary"
    assert reasons["latin.txt"].startswith("undecodable")
    assert reasons["dup.txt"] == "duplicate"

    flat = DataQueue(tmp_path / "flat_queue", ByteTok())
    flat.add_folder(d, patterns=["*.txt", "*.md"], recursive=False)
    assert [Path(it.source).name for it in flat.items()] == ["a.TXT", "b.txt"]
    flat.close()
    with pytest.raises(NotFoundError):
        q.add_folder(tmp_path / "missing")
    with pytest.raises(NotFoundError):
        q.add_file(tmp_path / "missing.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    assert q.add_file(tmp_path / "pipe.txt").skipped[0][1] == "not a regular file"


def test_walk_skips_a_queue_inside_the_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    DataQueue(tmp_path / "m_queue", ByteTok()).add_text("inside", "s").added[0]
    assert walk_files(tmp_path) == [tmp_path / "notes.txt"]


def test_markdown_and_html_files_are_extracted(q, tmp_path):
    (tmp_path / "p.html").write_text("<p>Hi <b>there</b></p><script>x()</script>")
    (tmp_path / "r.md").write_text("**Bold** [link](http://x)\n")
    added = q.add_folder(tmp_path).added
    assert [(it.kind, q.text(it.id)) for it in added] == [
        ("html", "Hi there\n"),
        ("markdown", "Bold link\n"),
    ]


def test_remove_clear_and_missing_items(q):
    ids = [q.add_text(f"t{i}", f"s{i}").added[0].id for i in range(3)]
    removed = q.remove(ids[1])
    assert removed.source == "s1"
    assert [it.id for it in q.items()] == [ids[0], ids[2]]
    assert not (q.items_dir / f"{removed.sha256[:16]}.tok").exists()
    with pytest.raises(NotFoundError):
        q.remove(ids[1])
    with pytest.raises(NotFoundError):
        q.tokens(12345)
    assert q.clear() == 2
    assert q.size() == (0, 0) and list(q.items_dir.iterdir()) == []
    assert q.add_text("t1", "again").added  # cleared content can be added again


def test_import_copies_and_retokenizes(tmp_path, q):
    q.add_text("first text", "a", priority=2)
    q.add_text("second text", "b")
    shifted = DataQueue(tmp_path / "other_queue", ByteTok(shift=7))
    shifted.add_text("second text", "already here")
    r = shifted.import_from(q)
    assert [it.source for it in r.added] == ["a"]
    assert r.skipped == [("b", "duplicate")]
    a = r.added[0]
    assert a.priority == 2 and shifted.text(a.id) == "first text"
    assert shifted.tokens(a.id).min() >= 7  # encoded with the importing queue's tokenizer

    same = DataQueue(tmp_path / "same_queue", ByteTok())
    assert [it.source for it in same.import_from(q).added] == ["a", "b"]
    assert np.array_equal(same.tokens(same.items()[1].id), q.tokens(q.items()[1].id))
    shifted.close()
    same.close()


def test_import_into_itself_is_refused(q):
    q.add_text("x", "s")
    again = DataQueue(q.dir / ".." / q.dir.name, ByteTok())
    with pytest.raises(ValidationError, match="itself"):
        q.import_from(again)
    again.close()


def test_reopen_persists_and_sweeps_orphans(tmp_path):
    d = tmp_path / "m_queue"
    with DataQueue(d, ByteTok()) as q:
        item = q.add_text("kept " * 20000, "s").added[0]  # big enough for its own token file
    (d / "items" / "deadbeefdeadbeef.tok").write_bytes(
        b"\0" * 8
    )  # a crash between rename and commit
    old_part = d / "items" / "abc.part"
    old_part.write_bytes(b"\0" * 4)
    os.utime(old_part, (time.time() - 7200, time.time() - 7200))
    fresh_part = d / "items" / "def.part"  # another process may be writing this one
    fresh_part.write_bytes(b"\0" * 4)
    with DataQueue(d, ByteTok()) as q:
        assert [it.id for it in q.items()] == [item.id] and q.text(item.id) == "kept " * 20000
    left = {p.name for p in (d / "items").iterdir()}
    assert left == {"def.part", f"{item.sha256[:16]}.tok"}


def test_damaged_items_and_database_give_clear_errors(tmp_path, q):
    item = q.add_text("some text here " * 5000, "s").added[0]  # big enough for a token file
    path = q.items_dir / f"{item.sha256[:16]}.tok"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(CLLMError, match="damaged"):
        q.tokens(item.id)
    path.write_bytes(np.full(item.n_tokens, 9999, "<i4").tobytes())
    with pytest.raises(CLLMError, match="outside the vocabulary"):
        q.tokens(item.id)
    bad = tmp_path / "bad_queue"
    bad.mkdir()
    (bad / "queue.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CLLMError, match="queue database"):
        DataQueue(bad, ByteTok())


def test_other_tokenizer_on_open_retokenizes_or_refuses(tmp_path):
    tok = pytest.importorskip("cllm.engine.tokenizer")
    d = tmp_path / "m_queue"
    with DataQueue(d, tok.train_tokenizer("byte", "", 0)) as q:
        item = q.add_text("héllo there", "s").added[0]
    char = tok.train_tokenizer("char", "héllo", 300)
    with pytest.raises(ValidationError, match="different tokenizer"):
        DataQueue(d, char, on_mismatch="refuse")
    with DataQueue(d, char) as q:
        assert q.text(item.id) == "héllo there"
        assert q.tokens(item.id).size == len("héllo there")  # é is one char token now
    assert not list((d / "items").iterdir())  # small items stay inline
    with DataQueue(d, char, on_mismatch="refuse") as q:  # now it matches
        assert q.size() == (1, len("héllo there"))


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(_TEXT, max_size=6))
def test_texts_round_trip_through_tokens(q, texts):
    q.clear()
    for i, t in enumerate(texts):
        r = q.add_text(t, f"s{i}")
        assert len(r.added) + len(r.skipped) == 1
    expected = {}
    for t in texts:
        if t.strip():
            expected.setdefault(t, None)
    assert [q.text(it.id) for it in q.items()] == list(expected)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000) | _TEXT.map(lambda t: t.encode("utf-8")))
def test_any_file_is_added_or_skipped_never_crashes(q, tmp_path, data):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    r = q.add_file(path)
    assert len(r.added) + len(r.skipped) == 1
    for it in r.added:
        assert q.tokens(it.id).size == it.n_tokens
    q.clear()


def test_big_file_is_streamed_with_low_memory(tmp_path):
    path = tmp_path / "big.txt"
    line = ("All work and no play makes Jack a dull boy. " * 4 + "\n").encode()
    with open(path, "wb") as f:
        f.write(line * (50_000_000 // len(line)))
    size = path.stat().st_size
    q = DataQueue(tmp_path / "m_queue", ByteTok())
    tracemalloc.start()
    r = q.add_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    item = r.added[0]
    assert item.n_tokens == size
    assert (q.items_dir / f"{item.sha256[:16]}.tok").stat().st_size == 4 * size
    assert peak < 40_000_000, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
    ids = q.tokens(item.id)  # memory-mapped, not read whole
    assert isinstance(ids, np.memmap) and ids.size == size and ids[:3].tolist() == [65, 108, 108]
    del ids
    q.close()


_WRITER = """
import sys
from tests.cllm.data.test_dataqueue import ByteTok
from cllm.data.dataqueue import DataQueue
q = DataQueue(sys.argv[1], ByteTok())
i = int(sys.argv[2])
while True:
    q.add_text(f"document {i}\\n" + "lorem ipsum dolor " * (2000 + i % 7 * 500), f"doc{i}")
    print(i, flush=True)
    i += 1
"""


def _expected(source: str) -> str:
    i = int(source[3:])
    return f"document {i}\n" + "lorem ipsum dolor " * (2000 + i % 7 * 500)


def test_kill_9_while_adding_leaves_a_loadable_queue(tmp_path):
    d = tmp_path / "m_queue"
    start = 0
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(d), str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        last = None
        for _ in range(5 + 4 * round_):  # a few reported adds, then kill at a varying point
            last = int(proc.stdout.readline())
        time.sleep(0.003 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with DataQueue(d, ByteTok()) as q:
            items = q.items()
            sources = [it.source for it in items]
            assert f"doc{last}" in sources  # everything reported as added survived
            for it in items:
                assert q.text(it.id) == _expected(it.source)
            assert len(list(q.items_dir.glob("*.tok"))) == len(items)  # orphans swept
            start = int(sources[-1][3:]) + 1
        with sqlite3.connect(d / "queue.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


_SHARER = """
import sys
from tests.cllm.data.test_dataqueue import ByteTok
from cllm.data.dataqueue import DataQueue
for i in range(40):  # reopening each time also sweeps while the other process adds
    with DataQueue(sys.argv[1], ByteTok()) as q:
        q.add_text(f"shared {i} " * 3000, f"{sys.argv[2]}-{i}")
"""


def test_two_processes_share_one_queue(tmp_path):
    d = tmp_path / "m_queue"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _SHARER, str(d), who], cwd=ROOT, env=env)
        for who in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with DataQueue(d, ByteTok()) as q:
        items = q.items()
        assert len(items) == 40  # each text once, whichever process won
        for it in items:
            i = int(it.source.split("-")[1])
            assert q.text(it.id) == f"shared {i} " * 3000


def test_folder_add_skips_each_bad_entry_and_adds_the_rest(q, tmp_path, monkeypatch):
    d = tmp_path / "data"
    (d / "locked").mkdir(parents=True)
    (d / "open").mkdir()
    for name in ("a.txt", "c.txt", "e.txt", "open/f.txt", "locked/g.txt"):
        (d / name).write_text(f"text of {name}\n")
    os.symlink(d / "nowhere.txt", d / "b.txt")  # dangling
    locked = str(d / "locked")
    real_scandir = os.scandir

    def scandir(path="."):  # root ignores permission bits: refuse this folder as a user's would
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    def vanish(done, total, source):  # e.txt is deleted after the walk, before it is read
        if source.endswith("c.txt"):
            (d / "e.txt").unlink()

    r = q.add_folder(d, progress=vanish)
    assert sorted(Path(it.source).name for it in r.added) == ["a.txt", "c.txt", "f.txt"]
    reasons = {Path(s).name: why for s, why in r.skipped}
    assert reasons == {
        "b.txt": "dangling symbolic link",
        "locked": "unreadable folder (Permission denied)",
        "e.txt": "disappeared before it was read",
    }


def test_a_file_that_fails_mid_read_is_skipped(q, tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("x" * 20000)
    (tmp_path / "b.txt").write_text("fine\n")
    import cllm.data.extract as ex

    real_open = open

    class Failing:
        def __init__(self, f):
            self.f, self.n = f, 0

        def read(self, n=-1):
            self.n += 1
            if self.n > 1:
                raise OSError(5, "Input/output error")
            return self.f.read(n)

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Failing(f) if str(path).endswith("a.txt") and "b" in mode else f

    monkeypatch.setattr(ex, "open", fake_open, raising=False)
    r = q.add_files([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert [Path(it.source).name for it in r.added] == ["b.txt"]
    assert r.skipped == [(str(tmp_path / "a.txt"), "unreadable (Input/output error)")]
    assert not list(q.items_dir.glob("*.part"))


_HUGE_ITEM = """
import sys
from cllm.models.registry import Registry
from cllm.train.trainer import Trainer
reg = Registry(sys.argv[1])
t = Trainer(reg, "big", max_steps=3, eval_interval=2)  # validation windows too
t.start()
assert t.join(240), "the trainer did not finish"
snap = t.snapshot()
assert snap.state == "done", (snap.state, snap.message)
with reg.queue("big") as q:
    (item,) = q.items()
    assert q.read(item.id, item.n_tokens - 5).tolist() == [0] * 5
    windows = sum(w.size for w in q.iter_tokens(item.id, 0, 3 << 20))
# VmHWM is this process's own peak: ru_maxrss would also count the parent's memory, which
# Linux carries over the exec of a forked (or vforked) child
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(snap.step, windows, hwm // 1024)
"""


_WARM = """
import sys
from cllm.models.registry import Registry
from cllm.train.trainer import Trainer
t = Trainer(Registry(sys.argv[1]), "big", max_steps=3, eval_interval=2)  # the same paths
t.start()
assert t.join(240) and t.snapshot().state == "done", t.snapshot().message
"""


def test_training_a_2_gib_item_reads_windows_never_the_whole_item(tmp_path):
    from cllm.engine.config import GPTConfig
    from cllm.models.registry import Registry

    reg = Registry(tmp_path / "models")
    cfg = GPTConfig(vocab_size=257, n_embd=16, n_layer=1, n_head=2, block_size=32)
    reg.create(
        "big",
        config=cfg,
        tokenizer="byte",
        text="x",
        train={"batch_size": 2, "seq_len": 16, "warmup": 1},
    )
    with reg.queue("big") as q:
        item = q.add_text("x" * 100_000, "big").added[0]
        path = q.items_dir / f"{item.sha256[:16]}.tok"
        db = q.dir / "queue.sqlite"
    # A first run on the small item compiles the kernels into numba's cache: compiling takes
    # hundreds of MB of its own, which the measured run must not count.
    warm = subprocess.run(
        [sys.executable, "-c", _WARM, str(tmp_path / "models")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert warm.returncode == 0, warm.stderr[-2000:]
    n = (2 << 30) // 4
    with open(path, "r+b") as f:  # sparse: 2 GiB of token 0 that costs no disk
        f.truncate(4 * n)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE items SET n_tokens = ? WHERE id = ?", (n, item.id))
    out = subprocess.run(
        [sys.executable, "-c", _HUGE_ITEM, str(tmp_path / "models")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    steps, windows, rss_mb = map(int, out.stdout.split())
    assert steps == 3 + 3 and windows == 3 << 20  # the warm-up steps, then three
    assert rss_mb < 400, f"{rss_mb} MB resident while training on a 2 GiB item"
    with reg.queue("big") as q:
        with pytest.raises(ValidationError, match="read it in windows"):
            q.tokens(item.id)


def test_many_tiny_files_cost_few_fsyncs_and_transactions(q, tmp_path, monkeypatch):
    d = tmp_path / "tiny"
    d.mkdir()
    for i in range(1200):
        (d / f"f{i:05d}.txt").write_text(f"tiny file {i}\n")
    calls = {"fsync": 0}
    real_fsync = os.fsync

    def fsync(fd):
        calls["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    commits = []
    real_commit = DataQueue._commit_many

    def commit_many(self, pending):
        commits.append(len(pending))
        return real_commit(self, pending)

    monkeypatch.setattr(DataQueue, "_commit_many", commit_many)
    monkeypatch.setattr("cllm.data.dataqueue.BATCH_SECONDS", 1e9)  # batches by count only
    monkeypatch.setattr("cllm.data.dataqueue.BATCH_ITEMS", 500)
    r = q.add_folder(d)
    assert len(r.added) == 1200 and not r.skipped
    assert calls["fsync"] == 0  # tiny items live in the index: SQLite's WAL commit makes them safe
    assert commits == [500, 500, 200]  # one transaction per batch of files
    assert [q.text(it.id) for it in q.items()[:2]] == ["tiny file 0\n", "tiny file 1\n"]


def test_short_texts_are_tokenized_in_one_batch_call_exactly_as_alone(tmp_path):
    from cllm.engine.tokenizer import train_tokenizer

    tok = train_tokenizer("bpe", "the quick brown fox jumps over the lazy dog. " * 50, 300)
    d = tmp_path / "small"
    d.mkdir()
    texts = [f"the fox number {i} jumps over dog {i * 7}.\n" for i in range(40)]
    for i, t in enumerate(texts):
        (d / f"f{i:02d}.txt").write_text(t)
    (d / "g.txt").write_text(texts[3])  # a duplicate inside the same batch
    (d / "h.txt").write_text("   \n")
    with DataQueue(tmp_path / "m_queue", tok) as q:
        r = q.add_folder(d)
        assert len(r.added) == 40
        assert dict((Path(s).name, w) for s, w in r.skipped) == {
            "g.txt": "duplicate",
            "h.txt": "empty",
        }
        for it, t in zip(q.items(), texts, strict=True):
            assert q.tokens(it.id).tolist() == tok.encode(t).tolist() and q.text(it.id) == t


def test_validation_flags_persist_refuse_unknown_items_and_move_the_stamp(tmp_path):
    d = tmp_path / "m_queue"
    with DataQueue(d, ByteTok()) as q:
        ids = [q.add_text(f"text number {i}", f"s{i}").added[0].id for i in range(4)]
        assert q.stamp() == 0  # adds do not move it
        assert q.set_validation(ids[1:3]) == 2
        assert q.stamp() == 1
        with pytest.raises(NotFoundError, match="no item 999"):
            q.set_validation([ids[0], 999])  # one transaction: item 0 stays as it was
        assert q.stamp() == 1 and not q.item(ids[0]).validation
        back = q.set_item_validation(ids[2], False)
        assert not back.validation and q.stamp() == 2
        with pytest.raises(NotFoundError):
            q.set_item_validation(999, True)
    with DataQueue(d, ByteTok()) as q:  # stored in the index: a reopened queue has them
        assert [it.validation for it in q.items()] == [False, True, False, False]
        assert q.stamp() == 2
        q.remove(ids[3])
        assert q.stamp() == 3
        q.clear()
        assert q.stamp() == 4


_FLAGGER = """
import sys
from tests.cllm.data.test_dataqueue import ByteTok
from cllm.data.dataqueue import DataQueue
q = DataQueue(sys.argv[1], ByteTok())
ids = [it.id for it in q.items()]
n = 0
while True:
    q.set_validation(ids, n % 2 == 0)
    n += 1
    print(n, flush=True)
"""


def test_kill_9_while_flagging_leaves_all_flags_of_one_change_or_none(tmp_path):
    d = tmp_path / "m_queue"
    with DataQueue(d, ByteTok()) as q:
        for i in range(300):
            q.add_text(f"item {i} " * (1 + i % 5), f"s{i}")
    for round_ in range(3):
        with DataQueue(d, ByteTok()) as q:
            before = q.stamp()
        proc = subprocess.Popen(
            [sys.executable, "-c", _FLAGGER, str(d)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(3 + 5 * round_):
            last = int(proc.stdout.readline())
        time.sleep(0.002 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with DataQueue(d, ByteTok()) as q:
            flags = {it.validation for it in q.items()}
            moved = q.stamp() - before
            assert moved >= last  # every reported change survived
            assert flags == {moved % 2 == 1}  # the last committed change, whole: never half
        with sqlite3.connect(d / "queue.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_folder_add_reports_its_tokens_as_they_are_made(q, tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(5):
        (d / f"small{i}.txt").write_text(f"small file {i}\n")
    (d / "big.txt").write_text("a big file of many words.\n" * 120_000)  # read in 1 MB pieces
    (d / "copy.txt").write_text("small file 0\n")  # a duplicate: not counted
    seen, at_files = [], []

    def progress(done, total, source):
        at_files.append(len(seen))

    r = q.add_files(sorted(d.iterdir()), progress=progress, tokens=seen.append)
    assert len(r.added) == 6 and r.skipped[0][1] == "duplicate"
    assert seen[-1] == r.tokens == sum(it.n_tokens for it in r.added)
    assert seen == sorted(seen)  # it only grows (no big duplicate here)
    big = 26 * 120_000
    assert any(0 < n < big for n in seen)  # counted while the big file was being read
    assert len(set(seen)) > 7  # more often than once a file


def test_an_add_holds_its_items_out_in_its_own_transaction_and_import_keeps_flags(tmp_path, q):
    commits = []
    real = DataQueue._commit_many

    def commit_many(self, pending):
        out = real(self, pending)
        # flagged in the rows the add's own transaction wrote: no moment without the flag
        commits.append([self.item(it.id).validation for it in out if it is not None])
        return out

    d = tmp_path / "held"
    d.mkdir()
    (d / "a.txt").write_text("held out a\n")
    (d / "b.txt").write_text("held out b\n")
    try:
        DataQueue._commit_many = commit_many
        r = q.add_folder(d, validation=True)
        t = q.add_text("trained on", "t")
        s = q.add_text("held text", "s", validation=True)
    finally:
        DataQueue._commit_many = real
    assert commits == [[True, True], [False], [True]]
    assert [it.validation for it in r.added + t.added + s.added] == [True, True, False, True]
    assert q.stamp() == 0  # no flag changed after the fact
    with DataQueue(tmp_path / "other_queue", ByteTok(shift=3)) as other:
        other.import_from(q)  # re-tokenized
        assert [(it.source, it.validation) for it in other.items()] == [
            (it.source, it.validation) for it in q.items()
        ]
    with DataQueue(tmp_path / "same_queue", ByteTok()) as same:
        same.import_from(q)  # copied
        assert [it.validation for it in same.items()] == [True, True, False, True]
