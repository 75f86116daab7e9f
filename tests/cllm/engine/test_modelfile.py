import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cllm.engine.config import GPTConfig, TrainConfig, num_params
from cllm.engine.meta import ModelMeta
from cllm.engine.modelfile import load_model_file, read_header, save_model_file
from cllm.engine.tokenizer import train_tokenizer
from cllm.errors import ModelFileError, ValidationError

CFG = GPTConfig(vocab_size=300, n_embd=16, n_layer=2, n_head=2, block_size=32)
TRAIN_STATE = {
    "position": {"items": [[1, 0, 50]], "offset": 3, "batch": 2, "loss_sum": 4.5},
    "rng": np.random.default_rng(7).bit_generator.state,
    "run": {"start": 0, "end": 40},
}
TEXT = "hello world, the model file round trip. naïve café 😀\n" * 50


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer("bpe", TEXT, 300)


def _save(path, tok, seed=0, optim=True, **kw):
    rng = np.random.default_rng(seed)
    n = num_params(CFG)
    params = rng.standard_normal(n).astype(np.float32)
    args = dict(
        config=CFG,
        tokenizer=tok,
        params=params,
        meta={"name": "m", "epochs_trained": 2, "epoch_summaries": [{"epoch": 1, "loss": 3.5}]},
        train=TrainConfig(batch_size=4, learning_rate=3e-4),
        optim_state={"m": params * 0.5, "v": params**2, "t": 17} if optim else None,
        train_state=TRAIN_STATE if optim else None,
        history={"step": np.arange(5), "train": np.linspace(5, 3, 5), "val": [np.nan] * 5},
    )
    args.update(kw)
    save_model_file(path, **args)
    return args


def test_roundtrip(tmp_path, tok):
    path = tmp_path / "m.cllm"
    want = _save(path, tok)
    d = load_model_file(path)
    assert d.config == CFG
    assert d.params.dtype == np.float32 and np.array_equal(
        d.params.view(np.uint32), want["params"].view(np.uint32)
    )
    assert d.tokenizer.to_json() == tok.to_json()
    assert d.tokenizer.decode(d.tokenizer.encode(TEXT)) == TEXT
    assert d.meta == ModelMeta.from_dict(want["meta"])
    assert d.train == want["train"]
    assert np.array_equal(d.optim_state["m"], want["optim_state"]["m"])
    assert np.array_equal(d.optim_state["v"], want["optim_state"]["v"])
    assert d.optim_state["t"] == 17
    assert d.train_state == want["train_state"]
    assert d.history["step"].tolist() == list(range(5))
    assert np.allclose(d.history["train"], want["history"]["train"])
    assert np.isnan(d.history["val"]).all()
    h = read_header(path)
    assert h.meta.name == "m" and h.config == CFG and h.has_optim
    assert h.file_size == path.stat().st_size


def test_roundtrip_without_optional_parts(tmp_path, tok):
    path = tmp_path / "m.cllm"
    _save(path, tok, optim=False, history=None)
    d = load_model_file(path)
    assert d.optim_state is None and d.train_state is None and d.history == {}


def test_safetensors_reads_our_files(tmp_path, tok):
    safetensors = pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    path = tmp_path / "m.cllm"
    want = _save(path, tok)
    tensors = load_file(path)
    assert tensors["wte"].shape == (CFG.vocab_size, CFG.n_embd)
    assert np.array_equal(tensors["wte"].ravel(), want["params"][: CFG.vocab_size * CFG.n_embd])
    with safetensors.safe_open(path, "np") as f:
        assert f.metadata()["format"] == "cllm"


def test_numpy_and_nan_in_metadata_are_stored_plainly(tmp_path, tok):
    path = tmp_path / "m.cllm"
    meta = {
        "steps": np.int64(3),
        "last_val_loss": float("nan"),
        "best": np.float32(2.5),
        "curve": np.array([1.0, np.inf]),
    }
    _save(path, tok, meta=meta, train_state={"mine": np.array([1, 2], np.uint64)})
    d = load_model_file(path)
    assert d.meta.steps == 3 and d.meta.last_val_loss is None
    assert d.meta.extra == {"best": 2.5, "curve": [1.0, None]}  # unknown keys kept as they were
    assert d.train_state == {"mine": [1, 2]}


def test_save_refuses_inconsistent_inputs(tmp_path, tok):
    with pytest.raises(ValidationError):
        _save(tmp_path / "a.cllm", tok, params=np.zeros(10, np.float32))
    with pytest.raises(ValidationError, match="tokenizer has"):
        _save(tmp_path / "a.cllm", train_tokenizer("byte", "", 257))
    with pytest.raises(ValidationError, match="plain JSON"):
        _save(tmp_path / "a.cllm", tok, meta={"x": object()})
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left


def test_history_with_gaps_and_bad_history(tmp_path, tok):
    path = tmp_path / "m.cllm"
    _save(path, tok, history={"steps": [1, 2], "val": [None, 2.5]})
    h = load_model_file(path).history
    assert h["steps"].tolist() == [1, 2] and np.isnan(h["val"][0]) and h["val"][1] == 2.5
    for bad in ({"x": ["a", "b"]}, {"x": [[1, 2]]}):
        with pytest.raises(ValidationError, match="history"):
            _save(path, tok, history=bad)


def test_bad_tokenizer_inside_a_sound_container(tmp_path, tok):
    class Garbled:  # passes the save checks, but its definition is not a tokenizer
        kind, vocab_size = tok.kind, tok.vocab_size

        def to_json(self):
            return '{"kind": "bpe", "version": 1, "hf": "{broken"}'

    path = tmp_path / "m.cllm"
    _save(path, Garbled())
    with pytest.raises(ModelFileError, match="m.cllm.*tokenizer"):
        load_model_file(path)
    read_header(path)  # the header alone is sound: listing still shows the model


def test_save_replaces_and_leaves_no_temp(tmp_path, tok):
    path = tmp_path / "m.cllm"
    _save(path, tok, seed=1)
    _save(path, tok, seed=2)
    assert [p.name for p in tmp_path.iterdir()] == ["m.cllm"]
    assert np.array_equal(
        load_model_file(path).params, _save(tmp_path / "x.cllm", tok, seed=2)["params"]
    )


def test_missing_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model_file(tmp_path / "nope.cllm")
    with pytest.raises(ModelFileError, match="folder"):
        read_header(tmp_path)


def test_truncated_everywhere(tmp_path, tok):
    path = tmp_path / "m.cllm"
    _save(path, tok)
    blob = path.read_bytes()
    bad = tmp_path / "bad.cllm"
    cuts = sorted({*range(0, 64), *random.Random(0).sample(range(len(blob)), 150), len(blob) - 1})
    for cut in cuts:
        bad.write_bytes(blob[:cut])
        with pytest.raises(ModelFileError, match="bad.cllm"):
            load_model_file(bad)
    bad.write_bytes(blob + b"\0")  # trailing garbage is refused too
    with pytest.raises(ModelFileError):
        load_model_file(bad)


def test_random_byte_flips_never_crash(tmp_path, tok):
    path = tmp_path / "m.cllm"
    _save(path, tok)
    blob = path.read_bytes()
    hlen = int.from_bytes(blob[:8], "little")
    bad = tmp_path / "bad.cllm"
    rng = random.Random(1)
    outcomes = {"error": 0, "valid": 0}
    for i in range(400):
        b = bytearray(blob)
        # most flips in the header, where parsing happens; some in the data (checksummed)
        hi = 8 + hlen if i % 4 else len(b)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(hi)] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(b))
        try:
            load_model_file(bad)
            outcomes["valid"] += 1
        except ModelFileError as err:
            assert "bad.cllm" in str(err) and "\n" not in str(err)
            outcomes["error"] += 1
    assert outcomes["error"] > 200


def _rewrite(src: Path, dst: Path, mutate, length=None):
    """Copy a model file with its header JSON changed by ``mutate(header)``."""
    blob = src.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    mutate(header)
    h = json.dumps(header).encode()
    dst.write_bytes(
        (length if length is not None else len(h)).to_bytes(8, "little") + h + blob[8 + n :]
    )


def _meta(h, **kw):
    info = json.loads(h["__metadata__"]["cllm"])
    for k, v in kw.items():
        info[k] = v
    h["__metadata__"]["cllm"] = json.dumps(info)


HOSTILE = {
    "huge length": (lambda h: None, 1 << 62),
    "length past file": (lambda h: None, 10_000_000),
    "zero length": (lambda h: None, 0),
    "negative offset": (
        lambda h: h["wpe"].update(data_offsets=[-8, h["wpe"]["data_offsets"][1]]),
        None,
    ),
    "overlap": (lambda h: h["wpe"].update(data_offsets=h["wte"]["data_offsets"]), None),
    "offset past end": (lambda h: h["ln_f.bias"].update(data_offsets=[0, 1 << 60]), None),
    "absurd shape": (lambda h: h["wte"].update(shape=[1 << 40, 1 << 40]), None),
    "negative shape": (lambda h: h["wte"].update(shape=[-300, -16]), None),
    "float shape": (lambda h: h["wte"].update(shape=[300.0, 16]), None),
    "bad dtype": (lambda h: h["wte"].update(dtype="F16"), None),
    "object dtype": (lambda h: h["wte"].update(dtype="O"), None),
    "missing tensor": (lambda h: h.pop("wpe"), None),
    "unknown tensor": (
        lambda h: h.update(extra={"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}),
        None,
    ),
    "not a dict entry": (lambda h: h.update(wte=[1, 2]), None),
    "no metadata": (lambda h: h.pop("__metadata__"), None),
    "other format": (lambda h: h["__metadata__"].update(format="pt"), None),
    "newer version": (lambda h: h["__metadata__"].update(version="99"), None),
    "bad version": (lambda h: h["__metadata__"].update(version="x"), None),
    "non-str metadata": (lambda h: h["__metadata__"].update(version=1), None),
    "bad cllm json": (lambda h: h["__metadata__"].update(cllm="{"), None),
    "config vs shapes": (lambda h: _meta(h, config={**CFG.to_dict(), "n_layer": 3}), None),
    "absurd config": (lambda h: _meta(h, config={**CFG.to_dict(), "vocab_size": 1 << 40}), None),
    "meta not dict": (lambda h: _meta(h, meta=[1]), None),
    "bad checksum": (lambda h: h["__metadata__"].update(crc32="12345"), None),
    "header is a list": (lambda h: h.clear(), None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers(tmp_path, tok, case):
    good = tmp_path / "good.cllm"
    _save(good, tok)
    mutate, length = HOSTILE[case]
    bad = tmp_path / "bad.cllm"
    _rewrite(good, bad, mutate, length)
    with pytest.raises(ModelFileError, match="bad.cllm"):
        load_model_file(bad)


def test_not_json_and_not_object(tmp_path):
    for i, body in enumerate([b"\xff\xfe garbage", b"[1, 2]", b"null", b'"x"']):
        bad = tmp_path / f"bad{i}.cllm"
        bad.write_bytes(len(body).to_bytes(8, "little") + body)
        with pytest.raises(ModelFileError, match=bad.name):
            read_header(bad)


def test_listing_500_headers_fast(tmp_path, tok):
    src = tmp_path / "src.cllm"
    _save(src, tok)
    for i in range(500):
        shutil.copyfile(src, tmp_path / f"m{i}.cllm")
    paths = sorted(tmp_path.glob("m*.cllm"))
    times = []
    for _ in range(2):  # best of two: the machine running the tests is shared
        t = time.perf_counter()
        heads = [read_header(p) for p in paths]
        times.append(time.perf_counter() - t)
    assert min(times) < 0.5
    assert len(heads) == 500 and heads[0].meta.name == "m"


# ------------------------------------------------------------------------------ kill -9 loop

SAVER = textwrap.dedent(
    """
    import sys, numpy as np
    from cllm.engine.config import GPTConfig, TrainConfig, num_params
    from cllm.engine.modelfile import save_model_file
    from cllm.engine.tokenizer import train_tokenizer
    cfg = GPTConfig(vocab_size=257, n_embd=64, n_layer=4, n_head=2, block_size=64)
    tok = train_tokenizer("byte", "", 257)
    n = num_params(cfg)
    i = 0
    while True:
        i += 1
        p = np.full(n, i, dtype=np.float32)
        save_model_file(sys.argv[1], config=cfg, tokenizer=tok, params=p, meta={"i": i},
                        train=TrainConfig(), optim_state={"m": p, "v": p, "t": i})
        print(i, flush=True)
    """
)


def _kill_loop(folder: Path, kills: int) -> None:
    path = folder / "m.cllm"
    rng = random.Random(kills)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    last = 0
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, env=env
        )
        proc.stdout.readline()  # one save done: now kill it somewhere in a later one
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        d = load_model_file(path)  # old or new, never torn
        i = d.meta.extra["i"]
        assert i >= 1 and (d.params == i).all() and (d.optim_state["v"] == i).all()
        last = max(last, i)
    assert last >= 1
    # the next save clears what the killed ones left behind
    save_model_file(
        path, **{k: getattr(d, k) for k in ("config", "tokenizer", "params", "meta")}, train=d.train
    )
    assert [p.name for p in folder.iterdir()] == ["m.cllm"]


def test_kill9_during_saves_fast(tmp_path):
    _kill_loop(tmp_path, kills=3)


@pytest.mark.slow
def test_kill9_during_saves_loop(tmp_path):
    _kill_loop(tmp_path, kills=40)
