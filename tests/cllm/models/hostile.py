"""Hostile model files: a valid ``.cllm`` file taken apart, mutated and packed again.

Used by the property test (tests/cllm/models/test_hostile.py) and runnable on its own to count,
for any checkout, how many crafted files every command handles cleanly:

    python tests/cllm/models/hostile.py OUT_DIR        # one JSON line per crafted file

Works on raw bytes and JSON only (no cllm internals), so the same corpus runs against any version.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

DTYPE_SIZE = {"F32": 4, "F64": 8, "I32": 4, "I64": 8, "U8": 1}


@dataclass
class Parts:
    """A model file taken apart: the ``__metadata__`` strings, the description, the tensors."""

    md: dict
    info: dict
    tensors: list[tuple[str, str, list, bytes]] = field(default_factory=list)

    @classmethod
    def read(cls, raw: bytes) -> Parts:
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + n])
        md = header.pop("__metadata__")
        data = raw[8 + n :]
        tensors = []
        for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            b, e = t["data_offsets"]
            tensors.append((name, t["dtype"], list(t["shape"]), data[b:e]))
        return cls(md, json.loads(md["cllm"]), tensors)

    def tensor(self, name: str) -> bytes:
        return next(t[3] for t in self.tensors if t[0] == name)

    def set_tensor(self, name: str, data: bytes, dtype: str | None = None) -> None:
        for i, (n, dt, _, _) in enumerate(self.tensors):
            if n == name:
                dt = dtype or dt
                self.tensors[i] = (n, dt, [len(data) // DTYPE_SIZE[dt]], data)
                return
        raise KeyError(name)

    def pack(self, *, crc: bool = True, raw_cllm: str | None = None, raw_header=None) -> bytes:
        entries, pos, data = {}, 0, []
        for name, dt, shape, b in self.tensors:
            entries[name] = {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + len(b)]}
            pos += len(b)
            data.append(b)
        blob = b"".join(data)
        md = dict(self.md)
        md["cllm"] = raw_cllm if raw_cllm is not None else json.dumps(self.info)
        if crc:
            md["crc32"] = str(zlib.crc32(blob))
        hb = raw_header if raw_header is not None else json.dumps({"__metadata__": md, **entries})
        hb = hb.encode() if isinstance(hb, str) else hb
        hb += b" " * (-(8 + len(hb)) % 8)
        return struct.pack("<Q", len(hb)) + hb + blob


def deep(n: int = 200_000, leaf: str = "1") -> str:
    return "[" * n + leaf + "]" * n


def _with(parts: Parts, **changes) -> Parts:
    p = Parts(
        json.loads(json.dumps(parts.md)), json.loads(json.dumps(parts.info)), list(parts.tensors)
    )
    for path, value in changes.items():
        node = p.info
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return p


def _raw_info(parts: Parts, path: str, raw_value: str) -> str:
    """The description JSON with one value replaced by raw JSON text (for Infinity, deep nests)."""
    marker = "__HOSTILE_MARKER__"
    p = _with(parts, **{path: marker})
    return json.dumps(p.info).replace(json.dumps(marker), raw_value)


def corpus(good: bytes) -> dict[str, bytes]:
    """Crafted files, by a name that says what is wrong with each (mirrors issue 15's list)."""
    P = Parts.read(good)
    out: dict[str, bytes] = {}

    def info(name: str, **changes) -> None:
        out[name] = _with(P, **changes).pack()

    def raw(name: str, path: str, text: str) -> None:
        out[name] = P.pack(raw_cllm=_raw_info(P, path, text))

    # JSON nested 200,000 deep: in the header, the description, a meta field, the tokenizer,
    # state.train
    n = struct.unpack("<Q", good[:8])[0]
    header = good[8 : 8 + n].decode().rstrip()
    out["deep header"] = P.pack(raw_header=header[:-1] + ',"x":' + deep() + "}")
    out["deep description"] = P.pack(raw_cllm=deep())
    raw("deep meta field", "meta__sources", deep())
    raw("deep train extra", "train__extra", deep(leaf="{}"))
    tok = json.loads(P.tensor("tokenizer"))
    p = _with(P)
    p.set_tensor("tokenizer", (json.dumps(tok)[:-1] + ',"x":' + deep() + "}").encode())
    out["deep tokenizer"] = p.pack()
    if any(t[0] == "state.train" for t in P.tensors):
        p = _with(P)
        p.set_tensor("state.train", ('{"position":' + deep() + "}").encode())
        out["deep state.train"] = p.pack()
        p = _with(P)
        p.set_tensor("state.train", b'{"rng": 5, "position": "x", "run": [1]}')
        out["bogus state.train"] = p.pack()
        p = _with(P)
        p.set_tensor(
            "state.train", b'{"position": {"items": [[1, 5, 2]], "offset": -1, "batch": 0}}'
        )
        out["state.train negative offset"] = p.pack()
    # numbers that are not numbers, containers of the wrong kind
    raw("n_layer Infinity", "config__n_layer", "Infinity")
    raw("n_embd NaN", "config__n_embd", "NaN")
    raw("vocab 1e400", "config__vocab_size", "1e400")
    info("config is a list", config=[1, 2, 3])
    info("train is a list", train=[1, 2, 3])
    info("meta is a list", meta=[1, 2, 3])
    info("meta is null", meta=None)
    info("config missing", config={})
    info("n_head does not divide", config__n_head=3)
    info("vocab_size 0", config__vocab_size=0)
    info("n_layer 10**9", config__n_layer=10**9)
    # wrong-type or absurd settings (issue 15 item 4)
    info("learning_rate fast", train__learning_rate="fast")
    info("batch_size abc", train__batch_size="abc")
    info("batch_size -5", train__batch_size=-5)
    info("seq_len 10**9", train__seq_len=10**9)
    raw("grad_clip NaN", "train__grad_clip", "NaN")
    raw("learning_rate Infinity", "train__learning_rate", "Infinity")
    info("warmup list", train__warmup=[1])
    info("epochs_trained many", meta__epochs_trained="many")
    info("steps [1,2]", meta__steps=[1, 2])
    info("target_epochs -3", meta__target_epochs=-3)
    info("tokens_seen -1", meta__tokens_seen=-1)
    info("best_loss text", meta__best_loss="low")
    info("sources numbers", meta__sources=[1, 2])
    info("sources a string", meta__sources="abc")
    info("epoch_summaries a string", meta__epoch_summaries="x")
    info("epoch_summaries bad epoch", meta__epoch_summaries=[{"epoch": "one"}])
    info("position bogus", meta__position={"batch": "x"})
    info("name a number", meta__name=5)
    info("created a list", meta__created=[1])
    info("tokenizer_kind bogus", tokenizer_kind="morse")
    info("optim_t negative", optim_t=-1)
    info("optim_t a float", optim_t=1.5)
    info("history a list", history=[1])
    info("history bogus dtype", history={"steps": "O"})
    # the container itself
    out["truncated"] = good[: len(good) // 2]
    out["empty"] = b""
    out["header length huge"] = struct.pack("<Q", 1 << 62) + good[8:]
    out["header length 0"] = struct.pack("<Q", 0) + good[8:]
    out["header not json"] = P.pack(raw_header="{not json")
    out["header a list"] = P.pack(raw_header="[1, 2]")
    p = _with(P)
    p.md["format"] = "pt"
    out["other format"] = p.pack()
    p = _with(P)
    p.md["version"] = "99"
    out["newer version"] = p.pack()
    out["description not json"] = P.pack(raw_cllm="{")
    out["bad checksum"] = P.pack(crc=False)[:-1] + bytes([good[-1] ^ 0xFF])
    p = _with(P)
    p.tensors = [t for t in p.tensors if t[0] != "ln_f.bias"]
    out["tensor missing"] = p.pack()
    p = _with(P)
    p.tensors = [(n, "F64" if n == "wpe" else dt, s, b) for n, dt, s, b in p.tensors]
    out["tensor wrong dtype"] = p.pack()
    p = _with(P)
    p.set_tensor("tokenizer", b'{"kind": "char", "version": 1, "chars": "ab"}')
    out["tokenizer vocab mismatch"] = p.pack()
    p = _with(P)
    p.set_tensor("tokenizer", b"\xff\xfe not utf-8")
    out["tokenizer not utf-8"] = p.pack()
    # non-finite weights (issue 15 item 5)
    for what, value in (("NaN", np.nan), ("inf", np.inf)):
        p = _with(P)
        w = np.frombuffer(p.tensor("wte"), np.float32).copy()
        w[::7] = value
        p.tensors = [(n, dt, s, w.tobytes() if n == "wte" else b) for n, dt, s, b in p.tensors]
        out[f"{what} weights"] = p.pack()
    return out


def sparse_file(path, good: bytes, n_embd: int = 768, n_layer: int = 8, vocab: int = 50257) -> int:
    """A valid header declaring a big model, its data a hole (apparent size ~ 4 bytes per
    parameter, a few KB on disk); the checksum is right, so only the size gives it away.
    Returns the apparent size."""
    P = Parts.read(good)
    cfg = dict(P.info["config"], n_embd=n_embd, n_layer=n_layer, n_head=8, vocab_size=vocab)
    cfg["n_inner"] = 4 * n_embd
    C, D, F, V = cfg["block_size"], n_embd, 4 * n_embd, vocab
    shapes = [("wte", [V, D]), ("wpe", [C, D])]
    for i in range(n_layer):
        h = f"h.{i}."
        shapes += [
            (h + "ln_1.weight", [D]),
            (h + "ln_1.bias", [D]),
            (h + "attn.c_attn.weight", [D, 3 * D]),
            (h + "attn.c_attn.bias", [3 * D]),
            (h + "attn.c_proj.weight", [D, D]),
            (h + "attn.c_proj.bias", [D]),
            (h + "ln_2.weight", [D]),
            (h + "ln_2.bias", [D]),
            (h + "mlp.c_fc.weight", [D, F]),
            (h + "mlp.c_fc.bias", [F]),
            (h + "mlp.c_proj.weight", [F, D]),
            (h + "mlp.c_proj.bias", [D]),
        ]
    shapes += [("ln_f.weight", [D]), ("ln_f.bias", [D])]
    tok = b'{"kind": "byte", "version": 1}'
    info = dict(P.info, config=cfg, tokenizer_kind="byte", optim_t=None, history={})
    cfg["vocab_size"] = 257  # the byte tokenizer's vocabulary, and wte to match
    shapes[0] = ("wte", [257, D])
    entries, pos = {}, 0
    for name, shape in shapes:
        size = 4 * int(np.prod(shape))
        entries[name] = {"dtype": "F32", "shape": shape, "data_offsets": [pos, pos + size]}
        pos += size
    entries["tokenizer"] = {
        "dtype": "U8",
        "shape": [len(tok)],
        "data_offsets": [pos, pos + len(tok)],
    }
    crc = zlib.crc32(tok, _crc_zeros(pos))
    md = dict(P.md, cllm=json.dumps(info), crc32=str(crc))
    hb = json.dumps({"__metadata__": md, **entries}).encode()
    hb += b" " * (-(8 + len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        f.seek(pos, 1)  # the hole
        f.write(tok)
    return 8 + len(hb) + pos + len(tok)


def _crc_zeros(n: int) -> int:
    crc, chunk = 0, bytes(1 << 22)
    while n > 0:
        k = min(n, len(chunk))
        crc = zlib.crc32(chunk[:k] if k < len(chunk) else chunk, crc)
        n -= k
    return crc


# ------------------------------------------------------------------------------ running commands


def run_cli(argv: list[str], train: bool = False) -> dict:
    """One command in this process, as the command line runs it: exit status, stdout, stderr,
    the exception that escaped (a crash) and the peak of Python-tracked allocations."""
    import contextlib
    import io
    import traceback
    import tracemalloc

    out, err = io.StringIO(), io.StringIO()
    tracemalloc.reset_peak()
    held = tracemalloc.get_traced_memory()[0]  # what earlier commands still hold
    crash = None
    rc = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if train:
                from cllm.cli.train import main as train_main

                rc = train_main(argv)
            else:
                from cllm.cli import main

                rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException as e:  # noqa: BLE001 - anything escaping is what we count
        crash = f"{type(e).__name__}: {str(e)[:200]}"
        traceback.clear_frames(e.__traceback__)
    peak = tracemalloc.get_traced_memory()[1] - held
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "crash": crash, "peak": peak}


def judge(name: str, data: bytes | None, folder, good_queue, sparse_path=None) -> dict:
    """Run list, info, generate, import and train on one crafted file; say whether each was
    handled cleanly (worked, or one line and exit 2; nothing escaping; no big allocation)."""
    import os
    import shutil
    from pathlib import Path

    folder = Path(folder)
    d = folder / "models"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    shutil.copyfile(folder / "good.cllm", d / "good.cllm")
    shutil.copytree(good_queue, d / "good_queue")
    bad = d / "bad.cllm"
    if sparse_path is not None:
        os.rename(sparse_path, bad)  # a copy would fill the hole
    else:
        bad.write_bytes(data)
    shutil.copytree(good_queue, d / "bad_queue")
    on_disk = os.stat(bad).st_blocks * 512
    limit = 64 * 2**20 + 4 * on_disk
    dd = ["--models-dir", str(d)]
    imp = folder / "imported"
    if imp.exists():
        shutil.rmtree(imp)
    imp.mkdir()
    runs = {
        "list": run_cli(["models", "list", *dd]),
        "info": run_cli(["models", "info", "bad", *dd]),
        "generate": run_cli(["generate", "bad", "Hi", "--max-tokens", "3", "--seed", "0", *dd]),
        "import": run_cli(
            ["models", "import", str(bad), "--name", "imp", "--models-dir", str(imp)]
        ),
        "train": run_cli(["bad", "--steps", "1", *dd], train=True),
    }
    problems = []
    for cmd, r in runs.items():
        if r["crash"]:
            problems.append(f"{cmd} crashed ({r['crash']})")
        elif r["rc"] not in (0, 2):
            problems.append(f"{cmd} exit {r['rc']}")
        elif r["rc"] == 2 and len(r["err"].strip().splitlines()) != 1:
            problems.append(f"{cmd}: {len(r['err'].strip().splitlines())} lines on stderr")
        if r["peak"] > limit:
            problems.append(
                f"{cmd} allocated {r['peak'] / 2**20:.0f} MiB for a file of "
                f"{on_disk / 2**10:.0f} KiB on disk"
            )
    if "good" not in runs["list"]["out"]:
        problems.append("list hid the good model")
    if ("NaN" in name or "inf" in name) and "weights" in name:
        if runs["import"]["rc"] == 0:
            problems.append("import accepted non-finite weights")
        if runs["generate"]["rc"] == 0:
            problems.append("generate ran on non-finite weights")
    named = "bad.cllm" in runs["list"]["err"]
    return {
        "file": name,
        "clean": not problems,
        "problems": problems,
        "list_names_it": named,
        "rc": {k: r["rc"] for k, r in runs.items()},
    }


def main(out_dir: str) -> None:
    """Build a good model, craft the corpus from it, judge every file: one JSON line each."""
    import sys
    import tracemalloc
    from pathlib import Path

    from cllm.cli import main as cli

    tracemalloc.start()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "src"
    text = folder / "text.txt"
    text.write_text("To be, or not to be, that is the question. " * 400)
    dd = ["--models-dir", str(src)]
    assert (
        cli(
            [
                "models",
                "create",
                "good",
                "--tokenizer",
                "byte",
                "--layers",
                "1",
                "--d-model",
                "32",
                "--heads",
                "2",
                "--context",
                "32",
                "--batch-size",
                "2",
                "--seq-len",
                "16",
                "--data",
                str(text),
                *dd,
            ]
        )
        == 0
    )
    from cllm.cli.train import main as train_main

    assert train_main(["good", "--steps", "2", *dd]) == 0  # optimizer state, history, state.train
    good = (src / "good.cllm").read_bytes()
    (folder / "good.cllm").write_bytes(good)
    crafted = corpus(good)
    results = []
    for name, data in crafted.items():
        results.append(judge(name, data, folder, src / "good_queue"))
        print(json.dumps(results[-1]), flush=True)
    sp = folder / "sparse.cllm"
    sparse_file(sp, good)
    results.append(judge("sparse 385 MB", None, folder, src / "good_queue", sparse_path=sp))
    print(json.dumps(results[-1]), flush=True)
    clean = sum(r["clean"] for r in results)
    named = sum(r["list_names_it"] for r in results)
    print(json.dumps({"files": len(results), "clean": clean, "list_names_bad_file": named}))
    sys.stdout.flush()


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
