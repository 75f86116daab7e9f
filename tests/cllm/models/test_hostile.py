"""Keep it held: hostile model files never crash a command, and kills never lose data.

- A property test: hypothesis mutates a valid model file's header, description, metadata and
  tensors; list, info, generate, import and train each work or refuse with one line (a
  ``CLLMError``, exit status 2), never raise anything else, and never allocate much more than
  the file holds. A few examples by default; many under ``-m slow``.
- The crafted corpus of issue 15 (tests/cllm/models/hostile.py), every file, under ``-m slow``.
- A kill -9 loop over save, rename, copy, grow and export (``-m slow``): after each kill, the next
  open of the folder leaves every model loadable, every queue item in place and no temporary file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.engine.lm import load_model
from cllm.models.registry import Registry
from tests.cllm.models import hostile

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 60


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small trained model (optimizer state, training state, history) and its queue."""
    folder = tmp_path_factory.mktemp("hostile")
    reg = Registry(folder / "src")
    from cllm.engine.config import GPTConfig

    cfg = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=32)
    reg.create(
        "good", config=cfg, tokenizer="byte", text="", train={"batch_size": 2, "seq_len": 16}
    )
    with reg.queue("good") as q:
        q.add_text(TEXT, source="t")
    from cllm.train.trainer import Trainer

    tr = Trainer(reg, "good", max_steps=2, publish=False)
    tr.start()
    tr.join()
    good = reg.path("good").read_bytes()
    (folder / "good.cllm").write_bytes(good)
    return folder, good


def check(results: dict) -> None:
    for cmd, r in results.items():
        assert r["crash"] is None, f"{cmd} raised {r['crash']}"
        assert r["rc"] in (0, 2), f"{cmd} exited {r['rc']}: {r['err']}"
        if r["rc"] == 2:
            assert len(r["err"].strip().splitlines()) == 1, f"{cmd}: {r['err']}"


def judge(folder, name: str, data: bytes) -> dict:
    tracemalloc.start()
    try:
        return hostile.judge(name, data, folder, folder / "src" / "good_queue")
    finally:
        tracemalloc.stop()


def paths_of(obj, prefix=()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += paths_of(v, (*prefix, i))
    return out


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
DEEP = "__DEEP__"
VALUES = JSON | st.just(DEEP) | st.sampled_from([0, -1, 1.5, "", [], {}, 2**63, 10**9])


def _put(obj, path, value):
    if not path:
        return value
    node = obj
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return obj


def _dumps(obj) -> str:
    return json.dumps(obj).replace(json.dumps(DEEP), hostile.deep(50_000))


class Good:
    """The valid file being mutated (kept out of the strategy's repr, which hypothesis prints)."""

    raw = b""

    def __repr__(self) -> str:
        return "<good model file>"


@st.composite
def mutated(draw, good: Good) -> tuple[str, bytes]:
    P = hostile.Parts.read(good.raw)
    good = good.raw
    kind = draw(
        st.sampled_from(
            ["description", "metadata", "tensor entry", "tensor bytes", "json tensor", "cut"]
        )
    )
    if kind == "description":
        info = json.loads(json.dumps(P.info))
        path = draw(st.sampled_from(paths_of(info)))
        info = _put(info, path, draw(VALUES))
        return f"description {path}", P.pack(raw_cllm=_dumps(info))
    if kind == "metadata":
        key = draw(st.sampled_from(["format", "version", "crc32", "cllm"]))
        P.md[key] = draw(st.text(max_size=20) | st.sampled_from(["1", "cllm", "-1", "99", "{}"]))
        return f"__metadata__ {key}", P.pack(
            crc=key != "crc32", raw_cllm=P.md["cllm"] if key == "cllm" else None
        )
    if kind == "tensor entry":
        i = draw(st.integers(0, len(P.tensors) - 1))
        name, dt, shape, data = P.tensors[i]
        packed = P.pack()
        header = json.loads(packed[8 : 8 + int.from_bytes(packed[:8], "little")])
        entry = header[name]
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[field] = draw(VALUES | st.lists(st.integers(-(2**40), 2**40), max_size=3))
        return f"tensor {name} {field}", P.pack(raw_header=_dumps(header))
    if kind == "tensor bytes":
        i = draw(st.integers(0, len(P.tensors) - 1))
        name, dt, shape, data = P.tensors[i]
        if not data:
            return "nothing", good
        raw = bytearray(data)
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] = draw(st.integers(0, 255))
        if dt == "F32" and draw(st.booleans()):
            a = np.frombuffer(bytes(raw), np.float32).copy()
            a[at // 4 % a.size] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 3e38]))
            raw = bytearray(a.tobytes())
        P.tensors[i] = (name, dt, shape, bytes(raw))
        return f"tensor {name} bytes", P.pack(crc=draw(st.booleans()))
    if kind == "json tensor":
        name = draw(st.sampled_from([t[0] for t in P.tensors if t[1] == "U8"]))
        obj = json.loads(P.tensor(name))
        paths = paths_of(obj)
        if paths:
            obj = _put(obj, draw(st.sampled_from(paths)), draw(VALUES))
        P.set_tensor(name, _dumps(obj).encode())
        return f"{name} json", P.pack()
    cut = draw(st.integers(0, len(good) - 1))
    return f"cut at {cut}", good[:cut]


def _property(base, data) -> None:
    folder, good = base
    g = Good()
    g.raw = good
    what, raw = data.draw(mutated(g), label="mutation")
    r = judge(folder, what, raw)
    assert r["clean"], (what, r["problems"])


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_hostile_files_are_refused_cleanly(base, data):
    _property(base, data)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_hostile_files_are_refused_cleanly_many(base, data):
    _property(base, data)


@pytest.mark.slow
def test_every_crafted_file_of_the_corpus(base):
    folder, good = base
    bad = []
    for name, raw in hostile.corpus(good).items():
        r = judge(folder, name, raw)
        if not r["clean"]:
            bad.append((name, r["problems"]))
    assert not bad


# ---------------------------------------------------------------------------- kill -9 loop

WORKER = textwrap.dedent(
    """
    import random, sys, time
    from pathlib import Path
    from cllm.errors import BusyError
    from cllm.models.registry import Registry
    folder, out, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    reg = Registry(folder)
    print("ready", flush=True)
    while True:
        name = reg.names()[0] if reg.names() else None
        if name not in ("a", "b"):
            name = "a" if reg.path("a").exists() else "b"
        op = rng.choice(["save", "rename", "copy", "grow", "export"])
        try:
            if op == "save":
                lm = reg.load(name); lm.meta.steps += 1; reg.save(lm)
            elif op == "rename":
                reg.rename(name, "b" if name == "a" else "a")
            elif op == "copy":
                if reg.path("c").exists():
                    reg.delete("c")
                reg.copy(name, "c")
            elif op == "grow":
                n = reg.info(name).config.n_layer
                if n < 4:
                    reg.grow(name, n + 1)
            else:
                reg.export(name, out / "export.cllm")
        except BusyError:
            pass
    """
)


@pytest.mark.slow
def test_kill9_loop_over_save_rename_copy_grow_export(tmp_path):
    from cllm.engine.config import GPTConfig

    folder, out = tmp_path / "models", tmp_path / "out"
    out.mkdir()
    reg = Registry(folder)
    cfg = GPTConfig(vocab_size=257, n_embd=32, n_layer=1, n_head=2, block_size=32)
    reg.create("a", config=cfg, tokenizer="byte", text="", train={"seq_len": 16})
    with reg.queue("a") as q:
        for i in range(5):
            q.add_text(f"document {i}. " + TEXT, source=str(i))
    rng = random.Random(0)
    trials, intact = 40, 0
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for trial in range(trials):
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), str(out), str(trial)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 1.5))
        assert proc.poll() is None, f"trial {trial}: the worker failed before the kill"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        reg = Registry(folder)  # the next open recovers
        names = reg.names()
        main = [n for n in names if n in ("a", "b")]
        assert len(main) == 1, (trial, names)
        for n in names:
            assert load_model(reg.path(n)).name == n
            assert reg.info(n).queue_items == 5, (trial, n, reg.recovered)
        left = [p.name for p in folder.iterdir() if p.name.startswith(".") or "lock" in p.name]
        assert not left, (trial, left)
        reg.export(main[0], out / "export.cllm")  # the next export sweeps its own leftovers
        assert sorted(p.name for p in out.iterdir()) == ["export.cllm"], trial
        intact += 1
    print(f"kill -9 trials with nothing lost: {intact}/{trials}")
    assert intact == trials
