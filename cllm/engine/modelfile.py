"""The ``.cllm`` model file: a safetensors container written and validated by hand.

Layout (safetensors): 8-byte little-endian header length N, N bytes of JSON header (padded with
spaces so the data starts 8-byte aligned), then the tensor data, contiguous. The header maps each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data)
and holds ``__metadata__`` (str -> str): ``format`` = "cllm", ``version``, ``crc32`` (of the data
bytes) and ``cllm`` = JSON with ``config``, ``train``, ``meta``, ``tokenizer_kind``,
``optim_t``, ``history`` (the dtype of each history array).

Tensors: every parameter by its GPT-2 name (float32); ``tokenizer`` (uint8, the tokenizer JSON);
optionally ``optim.m`` / ``optim.v`` (float32, flat), ``state.train`` (uint8, JSON), and
``history.<key>`` (1-D numbers). Big things live in tensors, so the header stays small and a
listing that reads headers only is fast.

Saving is atomic (temporary file in the same folder, fsync, rename, fsync of the folder); loading
checks every length against the file size before reading or allocating anything.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cllm.atomic import atomic_open, remove_stale_temps
from cllm.engine.config import GPTConfig, TrainConfig, num_params, param_shapes
from cllm.engine.meta import ModelMeta, validate_train_state
from cllm.engine.schema import loads
from cllm.engine.tokenizer import Tokenizer, tokenizer_from_json
from cllm.errors import CLLMError, ModelFileError, ValidationError

FORMAT = "cllm"
VERSION = 1
MAX_HEADER = 16 << 20  # bytes; ours are a few KB, so anything near this is hostile
DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "U8": np.uint8}
_DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


@dataclass
class ModelFileData:
    path: Path
    config: GPTConfig
    tokenizer: Tokenizer
    params: np.ndarray  # flat float32, in param_shapes order
    meta: ModelMeta
    train: TrainConfig
    optim_state: dict | None = None  # {"m": flat, "v": flat, "t": int}
    train_state: dict | None = None
    history: dict[str, np.ndarray] = field(default_factory=dict)
    nonfinite: int = 0  # weights that are NaN or infinite (a diverged run)


@dataclass
class ModelHeader:
    """What the header of a model file says, validated (``read_header``)."""

    path: Path
    file_size: int
    version: int
    config: GPTConfig
    train: TrainConfig
    meta: ModelMeta
    tokenizer_kind: str
    n_params: int
    has_optim: bool
    optim_t: int | None
    history: dict[str, str]  # key -> dtype of each history array
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]]  # name -> (dtype, shape, begin, end)
    data_start: int
    crc32: int


# ---------------------------------------------------------------------------------------- save


def save_model_file(
    path: str | os.PathLike,
    *,
    config: GPTConfig,
    tokenizer: Tokenizer,
    params: np.ndarray,
    meta: ModelMeta | dict,
    train: TrainConfig,
    optim_state: dict | None = None,
    train_state: dict | None = None,
    history: dict | None = None,
) -> None:
    """Write a model file atomically: a crash at any moment leaves the old file or the new one."""
    path = Path(path)
    n = num_params(config)
    if params.dtype != np.float32 or params.size != n:
        raise ValidationError(
            f"params must be {n} float32 values, got {params.size} {params.dtype}"
        )
    if tokenizer.vocab_size != config.vocab_size:
        raise ValidationError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is "
            f"{config.vocab_size}"
        )
    params = np.ascontiguousarray(params)
    # (name, array): 8-byte types first, then float32, then bytes, so every tensor stays aligned
    wide: list[tuple[str, np.ndarray]] = []
    hist_dtypes = {}
    for key, values in sorted((history or {}).items()):
        try:
            a = np.asarray(values)
            a = a.astype(np.int64) if a.dtype.kind in "iub" else a.astype(np.float64)  # None: NaN
        except (TypeError, ValueError):
            a = None
        if a is None or a.ndim != 1 or not isinstance(key, str):
            raise ValidationError(f"history {key!r} must be a one-dimensional list of numbers")
        wide.append((f"history.{key}", a))
        hist_dtypes[key] = _DTYPE_NAMES[a.dtype]
    offset = 0
    tensors: list[tuple[str, np.ndarray]] = list(wide)
    for name, shape in param_shapes(config):
        size = int(np.prod(shape))
        tensors.append((name, params[offset : offset + size].reshape(shape)))
        offset += size
    optim_t = None
    if optim_state is not None:
        m = np.ascontiguousarray(optim_state["m"], dtype=np.float32)
        v = np.ascontiguousarray(optim_state["v"], dtype=np.float32)
        if m.size != n or v.size != n:
            raise ValidationError(f"optimizer moments must have {n} values each")
        tensors += [("optim.m", m.ravel()), ("optim.v", v.ravel())]
        optim_t = int(optim_state["t"])
    tensors.append(("tokenizer", _json_bytes(tokenizer.to_json())))
    if train_state is not None:
        tensors.append(("state.train", _json_bytes(_to_json(train_state, "training state"))))

    entries, begin, crc = {}, 0, 0
    for name, a in tensors:
        end = begin + a.nbytes
        entries[name] = {
            "dtype": _DTYPE_NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [begin, end],
        }
        crc = zlib.crc32(memoryview(a).cast("B"), crc)
        begin = end
    info = {
        "config": config.to_dict(),
        "train": train.to_dict(),
        "meta": meta.to_dict() if isinstance(meta, ModelMeta) else meta,
        "tokenizer_kind": tokenizer.kind,
        "optim_t": optim_t,
        "history": hist_dtypes,
    }
    cllm_json = _to_json(info, "model metadata")
    header = {
        "__metadata__": {
            "format": FORMAT,
            "version": str(VERSION),
            "crc32": str(crc),
            "cllm": cllm_json,
        },
        **entries,
    }
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-(8 + len(hbytes)) % 8)

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    with atomic_open(path) as f:
        f.write(len(hbytes).to_bytes(8, "little"))
        f.write(hbytes)
        for _, a in tensors:
            f.write(memoryview(a).cast("B"))


def _plain(x):
    """JSON-ready copy: NumPy scalars and arrays become Python values, NaN and inf become None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _to_json(obj, what: str) -> str:
    try:
        return json.dumps(_plain(obj), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValidationError(f"{what} is not plain JSON ({err})") from None


def _json_bytes(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-8"), dtype=np.uint8)


# ---------------------------------------------------------------------------------------- load


def read_header(path: str | os.PathLike) -> ModelHeader:
    """Read and validate the header only (never the weights): every field of the description
    checked against its declaration, every tensor's size against the architecture and the file's
    size. Raises ``ModelFileError`` naming the file on anything wrong."""
    path = Path(path)
    with _reading(path) as f:
        return _parse_header(f, os.fstat(f.fileno()).st_size, path)


def _require(ok: bool) -> None:
    if not ok:
        raise ValueError("malformed")


def _bad(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_header(f, size: int, path: Path) -> ModelHeader:
    if size < 8:
        raise _bad(path, f"too short to be a model file ({size} bytes)")
    n = int.from_bytes(f.read(8), "little")
    if n < 2 or n > MAX_HEADER or n > size - 8:
        raise _bad(path, f"header length {n} is impossible for a file of {size} bytes (truncated?)")
    raw = f.read(n)
    if len(raw) != n:
        raise _bad(path, "truncated header")
    try:
        header = loads(raw, "header")
    except UnicodeDecodeError:
        raise _bad(path, "header is not valid JSON (corrupted or not a model file)") from None
    except ValueError as err:
        why = str(err) if "nests" in str(err) else "not valid JSON (corrupted or not a model file)"
        raise _bad(path, f"header is {why}" if "nests" not in why else why) from None
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    md = header.pop("__metadata__", None)
    if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
        raise _bad(path, "header has no valid __metadata__ (not a cllm model file)")
    if md.get("format") != FORMAT:
        raise _bad(path, f"format is {_one_line(repr(md.get('format')), 60)}, not {FORMAT!r}")
    try:
        version = int(md.get("version", ""))
    except ValueError:
        raise _bad(path, f"bad version {_one_line(repr(md.get('version')), 60)}") from None
    if version > VERSION:
        raise _bad(path, f"written by a newer version ({version}; this program reads {VERSION})")
    if version < 1:
        raise _bad(path, f"bad version {version}")
    try:
        info = loads(md.get("cllm", ""), "model description")
        _require(isinstance(info, dict))
        crc = int(md["crc32"])
        _require(0 <= crc < 2**32)
    except (KeyError, TypeError, ValueError) as err:
        raise _bad(path, f"model description is invalid ({_one_line(err)})") from None
    try:  # each part names the field that is wrong
        part = "config"
        config = GPTConfig.from_dict(info.get("config"))
        part = "train"
        train = TrainConfig.from_dict(info.get("train"))  # seq_len vs context: the trainer
        part = "meta"
        meta = ModelMeta.from_dict(info.get("meta"))
        kind, optim_t, hist = info.get("tokenizer_kind"), info.get("optim_t"), info.get("history")
        part = "tokenizer_kind"
        _require(kind in ("bpe", "byte", "char"))
        part = "optim_t"
        _require(optim_t is None or (type(optim_t) is int and 0 <= optim_t < 2**62))
        part = "history"
        hist = hist or {}
        _require(isinstance(hist, dict) and len(hist) <= 64)
    except (KeyError, TypeError, ValueError, CLLMError) as err:
        why = "invalid" if str(err) == "malformed" else _one_line(err)
        raise _bad(path, f"model description: {part}: {why}") from None

    # tensors: known dtypes, sane shapes, offsets contiguous and covering the data exactly
    data_size = size - 8 - n
    tensors = {}
    for name, t in header.items():
        try:
            dtype, shape, (b, e) = t["dtype"], t["shape"], t["data_offsets"]
            _require(dtype in DTYPES and isinstance(shape, list) and len(shape) <= 4)
            _require(all(type(s) is int and 0 <= s <= size for s in shape))
            _require(type(b) is int and type(e) is int and 0 <= b <= e <= data_size)
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"tensor {_one_line(repr(name), 80)} has an invalid entry") from None
        count = 1
        for s in shape:
            count *= s
        if count * np.dtype(DTYPES[dtype]).itemsize != e - b:
            raise _bad(path, f"tensor {name!r}: shape {shape} does not match its {e - b} bytes")
        tensors[name] = (dtype, tuple(shape), b, e)
    pos = 0
    for name, (_, _, b, e) in sorted(tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if b != pos:
            raise _bad(
                path, f"tensor {name!r} overlaps or leaves a gap (offset {b}, expected {pos})"
            )
        pos = e
    if pos != data_size:
        raise _bad(path, f"data is {data_size} bytes but the tensors cover {pos} (truncated?)")

    # the tensors the description promises, with the shapes the architecture implies; the
    # parameters alone must fit in the file before anything is allocated for them
    n_params = num_params(config)
    if n_params * 4 > data_size:
        raise _bad(
            path,
            f"the architecture needs {n_params * 4:,} bytes of weights but the file holds "
            f"{data_size:,} bytes of data",
        )
    expected = {name: ("F32", shape) for name, shape in param_shapes(config)}
    expected["tokenizer"] = ("U8", None)
    if optim_t is not None:
        expected["optim.m"] = expected["optim.v"] = ("F32", (n_params,))
    if "state.train" in tensors:
        expected["state.train"] = ("U8", None)
    for key, dt in hist.items():
        if dt not in ("I64", "F64"):
            raise _bad(path, f"history {_one_line(repr(key), 80)} has an invalid dtype")
        expected[f"history.{key}"] = (dt, None)
    if set(tensors) != set(expected):
        extra = sorted(set(tensors) - set(expected))
        missing = sorted(set(expected) - set(tensors))
        raise _bad(
            path,
            _one_line(
                f"tensors do not match the architecture (missing {missing[:3]}, "
                f"unexpected {extra[:3]})"
            ),
        )
    for name, (dt, shape) in expected.items():
        got_dt, got_shape = tensors[name][:2]
        if got_dt != dt or (shape is not None and got_shape != shape):
            raise _bad(
                path,
                f"tensor {name!r} is {got_dt}{list(got_shape)}, expected "
                f"{dt}{list(shape) if shape else ''}",
            )
        if shape is None and len(got_shape) != 1:
            raise _bad(path, f"tensor {name!r} must be one-dimensional")
    return ModelHeader(
        path=path,
        file_size=size,
        version=version,
        config=config,
        train=train,
        meta=meta,
        tokenizer_kind=kind,
        n_params=n_params,
        has_optim=optim_t is not None,
        optim_t=optim_t,
        history=hist,
        tensors=tensors,
        data_start=8 + n,
        crc32=crc,
    )


@contextmanager
def _reading(path: Path) -> Iterator[BinaryIO]:
    """The open file; what the operating system refuses becomes a ModelFileError naming it."""
    try:
        with open(path, "rb") as f:
            yield f
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a model file") from None
    except MemoryError:
        raise ModelFileError(f"{path}: not enough memory to load this model") from None
    except RecursionError:
        raise ModelFileError(f"{path}: nests too deeply (corrupted or hostile)") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read ({err.strerror or err})") from None


# A file whose blocks on disk cover less than this share of its size has holes: we never write
# one, and reading it would allocate memory for data that is not there.
_MIN_ALLOCATED = 0.5
_SPARSE_FLOOR = 64 << 20  # small files are exempt (file systems may inline or compress them)


def _check_not_sparse(f, size: int, path: Path) -> None:
    st = os.fstat(f.fileno())
    blocks = getattr(st, "st_blocks", None)
    if blocks is None or size < _SPARSE_FLOOR:
        return
    if blocks * 512 < _MIN_ALLOCATED * size:
        raise _bad(
            path,
            f"is sparse ({size:,} bytes, of which {blocks * 512:,} are on disk): not a model "
            "file this program wrote",
        )


def load_model_file(path: str | os.PathLike) -> ModelFileData:
    """Read and fully validate a model file (header, every length, the data checksum, the
    training state); ``nonfinite`` counts NaN or infinite weights."""
    path = Path(path)
    with _reading(path) as f:
        size = os.fstat(f.fileno()).st_size
        h = _parse_header(f, size, path)
        _check_not_sparse(f, size, path)
        data = bytearray(size - h.data_start)  # bounded: equals the bytes on disk
        if f.readinto(data) != len(data):
            raise _bad(path, "file shrank while being read")
    if zlib.crc32(data) != h.crc32:
        raise _bad(path, "checksum mismatch: the data is corrupted")
    tensors = h.tensors

    def arr(name: str) -> np.ndarray:
        dt, shape, b, e = tensors[name]
        return np.frombuffer(
            data, dtype=DTYPES[dt], count=(e - b) // np.dtype(DTYPES[dt]).itemsize, offset=b
        )

    config = h.config
    params = np.empty(h.n_params, dtype=np.float32)
    o = 0
    for name, _ in param_shapes(config):
        a = arr(name)
        params[o : o + a.size] = a
        o += a.size
    nonfinite = int(params.size - np.count_nonzero(np.isfinite(params)))
    what = "tokenizer"
    try:
        tokenizer = tokenizer_from_json(arr("tokenizer").tobytes().decode("utf-8"))
        train_state = None
        if "state.train" in tensors:
            what = "training state"
            train_state = validate_train_state(
                loads(arr("state.train").tobytes().decode("utf-8"), "training state")
            )
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, CLLMError) as err:
        raise _bad(path, f"stored {what} is invalid ({_one_line(err)})") from None
    if tokenizer.vocab_size != config.vocab_size or tokenizer.kind != h.tokenizer_kind:
        raise _bad(
            path,
            f"tokenizer ({tokenizer.kind}, {tokenizer.vocab_size} tokens) does not "
            f"match the model ({h.tokenizer_kind}, {config.vocab_size})",
        )
    optim_state = None
    if h.has_optim:
        optim_state = {"m": arr("optim.m").copy(), "v": arr("optim.v").copy(), "t": h.optim_t}
    history = {key: arr(f"history.{key}").copy() for key in h.history}
    return ModelFileData(
        path=path,
        config=config,
        tokenizer=tokenizer,
        params=params,
        meta=h.meta,
        train=h.train,
        optim_state=optim_state,
        train_state=train_state,
        history=history,
        nonfinite=nonfinite,
    )
