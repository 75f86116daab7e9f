"""Export to and import from a Hugging Face ``transformers`` GPT-2 directory.

Our parameter names are GPT-2's, and matrices are stored ``[in, out]`` like its Conv1D, so the
mapping is only a ``transformer.`` prefix (and ``.weight`` on the embeddings). Export writes
``config.json`` and ``model.safetensors`` by hand (no torch needed) plus our tokenizer as
``cllm_tokenizer.json``; import reads ``model.safetensors`` or, when torch is installed,
``pytorch_model.bin``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from cllm.atomic import atomic_open, write_atomic
from cllm.engine.config import GPTConfig, num_params, param_shapes
from cllm.errors import ModelFileError, ValidationError

TOKENIZER_FILE = "cllm_tokenizer.json"
LN_EPS = 1e-5  # our layer norms, as GPT-2's
MAX_HEADER = 100 << 20  # a safetensors header larger than this is not a GPT-2 checkpoint
_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def hf_name(name: str) -> str:
    """Our flat-buffer name -> the name in ``GPT2LMHeadModel``'s state dict."""
    return f"transformer.{name}.weight" if name in ("wte", "wpe") else f"transformer.{name}"


def hf_config(cfg: GPTConfig, eot_id: int | None = None) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.n_inner,
        "activation_function": "gelu_new",  # GELU with the tanh approximation, as ours
        "layer_norm_epsilon": LN_EPS,
        "tie_word_embeddings": True,
        "scale_attn_weights": True,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "dtype": "float32",
        "bos_token_id": None if eot_id is None else int(eot_id),
        "eos_token_id": None if eot_id is None else int(eot_id),
    }


def export_hf(model, out_dir: str | Path, tokenizer=None) -> Path:
    """Write a directory that ``GPT2LMHeadModel.from_pretrained(out_dir)`` loads.

    ``model`` is a LanguageModel (its tokenizer goes along) or a bare GPT.
    """
    gpt = getattr(model, "gpt", model)
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    return write_hf(gpt.config, gpt.params, out_dir, tokenizer)


def write_hf(cfg: GPTConfig, params: np.ndarray, out_dir: str | Path, tokenizer=None) -> Path:
    """The same from a config and a flat float32 buffer."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"{out} exists and is not a directory")
    if params.size != num_params(cfg):
        raise ValidationError(f"{params.size} parameters given, the config needs {num_params(cfg)}")
    out.mkdir(parents=True, exist_ok=True)
    tensors, off = {}, 0
    for name, shape in param_shapes(cfg):
        n = math.prod(shape)
        tensors[hf_name(name)] = params[off : off + n].reshape(shape)
        off += n
    _write_safetensors(out / "model.safetensors", tensors, {"format": "pt"})
    eot = getattr(tokenizer, "eot_id", None)
    write_atomic(out / "config.json", json.dumps(hf_config(cfg, eot), indent=2))
    if tokenizer is not None:
        write_atomic(out / TOKENIZER_FILE, tokenizer.to_json())
    return out


def import_hf(in_dir: str | Path) -> tuple[GPTConfig, np.ndarray, object | None]:
    """Read any GPT-2 directory: (config, flat float32 params, our tokenizer or None)."""
    d = Path(in_dir)
    if not (d / "config.json").is_file():
        raise ModelFileError(f"{d}: no config.json, not a Hugging Face model directory")
    try:
        hc = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{d / 'config.json'}: unreadable ({err})") from None
    cfg = _config_from_hf(hc, d)
    state = _read_state(d)
    params = np.empty(num_params(cfg), dtype=np.float32)
    off = 0
    for name, shape in param_shapes(cfg):
        t = state.get(hf_name(name))
        if t is None:
            raise ModelFileError(f"{d}: tensor {hf_name(name)} is missing")
        if tuple(t.shape) != shape:
            raise ModelFileError(
                f"{d}: tensor {hf_name(name)} has shape {list(t.shape)}, expected {list(shape)}"
            )
        n = math.prod(shape)
        params[off : off + n] = t.reshape(-1)
        off += n
    head = state.get("lm_head.weight")
    if head is not None and not np.array_equal(head, state["transformer.wte.weight"]):
        raise ModelFileError(f"{d}: lm_head is not tied to wte; GPT-2 ties them")
    tokenizer = None
    if (d / TOKENIZER_FILE).is_file():
        from cllm.engine.tokenizer import tokenizer_from_json

        tokenizer = tokenizer_from_json((d / TOKENIZER_FILE).read_text(encoding="utf-8"))
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ModelFileError(
                f"{d}: tokenizer has {tokenizer.vocab_size} tokens, model only {cfg.vocab_size}"
            )
    return cfg, params, tokenizer


def _config_from_hf(hc: dict, d: Path) -> GPTConfig:
    def need(key: str, *alts: str) -> int:
        for k in (key, *alts):
            if isinstance(hc.get(k), int) and not isinstance(hc.get(k), bool):
                return hc[k]
        raise ModelFileError(f"{d}: config.json has no integer {key}")

    if hc.get("model_type", "gpt2") != "gpt2":
        raise ModelFileError(f"{d}: model_type is {hc.get('model_type')!r}, not gpt2")
    act = hc.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ModelFileError(f"{d}: activation {act!r} is not GELU with the tanh approximation")
    if abs(float(hc.get("layer_norm_epsilon", LN_EPS)) - LN_EPS) > 1e-12:
        raise ModelFileError(f"{d}: layer_norm_epsilon {hc['layer_norm_epsilon']} is not 1e-5")
    for key, want in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
        ("tie_word_embeddings", True),
    ):
        if hc.get(key, want) != want:
            raise ModelFileError(f"{d}: {key}={hc[key]} is not supported")
    n_inner = hc.get("n_inner") or 0
    try:
        return GPTConfig(
            vocab_size=need("vocab_size"),
            n_embd=need("n_embd", "hidden_size"),
            n_layer=need("n_layer", "num_hidden_layers"),
            n_head=need("n_head", "num_attention_heads"),
            block_size=need("n_positions", "n_ctx"),
            n_inner=int(n_inner),
        )
    except ValidationError as err:
        raise ModelFileError(f"{d}: {err}") from None


def _read_state(d: Path) -> dict[str, np.ndarray]:
    """Tensors by HF name (``transformer.`` prefix added where a checkpoint lacks it)."""
    if (d / "model.safetensors").is_file():
        state = read_safetensors(d / "model.safetensors")
    elif (d / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError:
            raise ModelFileError(
                f"{d}: only pytorch_model.bin is there, and reading it needs torch"
            ) from None
        try:
            sd = torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds on a bad pickle
            raise ModelFileError(f"{d / 'pytorch_model.bin'}: unreadable ({err})") from None
        state = {k: v.detach().float().numpy() for k, v in sd.items() if hasattr(v, "numpy")}
    else:
        raise ModelFileError(f"{d}: neither model.safetensors nor pytorch_model.bin is there")
    return {
        (k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v
        for k, v in state.items()
    }


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Float tensors of a safetensors file as float32 arrays, every offset checked."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
        if not 2 <= n <= min(MAX_HEADER, size - 8):
            raise ModelFileError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(f"{path}: safetensors header is not valid JSON") from None
        if not isinstance(header, dict):
            raise ModelFileError(f"{path}: safetensors header is not a JSON object")
        data = np.memmap(f, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else b""
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape, (a, b) = _DTYPES[info["dtype"]], info["shape"], info["data_offsets"]
                ok = all(isinstance(s, int) and s >= 0 for s in shape)
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok or not 0 <= a <= b <= len(data) or b - a != math.prod(shape) * dtype.itemsize:
                raise ModelFileError(f"{path}: tensor {name!r} has a bad dtype, shape or offsets")
            arr = np.frombuffer(data[a:b], dtype=dtype).reshape(shape)
            if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr.astype(np.float32)
    return out


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    header, off = {"__metadata__": metadata}, 0
    for name, t in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [off, off + t.nbytes],
        }
        off += t.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the format aligns the data to 8 bytes
    with atomic_open(path) as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for t in tensors.values():
            f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())
