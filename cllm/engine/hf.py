"""Export to and import from a Hugging Face ``transformers`` GPT-2 directory.

Our parameter names are GPT-2's, and matrices are stored ``[in, out]`` like its Conv1D, so the
mapping is only a ``transformer.`` prefix (and ``.weight`` on the embeddings).

Export writes ``config.json``, ``model.safetensors`` (by hand, no torch needed) and
``generation_config.json``; with a tokenizer also ``tokenizer.json`` + ``tokenizer_config.json``
(so ``AutoTokenizer`` and ``pipeline("text-generation")`` work) and our own ``cllm_tokenizer.json``
(the exact definition, read back first on import). All three kinds are expressible in the
``tokenizers`` format with ids identical to ours:

- bpe: our definition *is* a ``tokenizers`` byte-level BPE;
- byte: a byte-level BPE with the 256 byte symbols as ids 0-255 and no merges;
- char: a BPE without merges whose vocabulary is the ASCII characters (ids 0-127), ``<0xXX>``
  byte tokens for 128-255 and the learnt characters (257+), with ``byte_fallback`` spelling any
  other character as its UTF-8 bytes, exactly our fallback.

``<|endoftext|>`` is a special token, but ``tokenizer_config.json`` sets ``split_special_tokens``
so that, as in our encoder, the string in text is plain text. Before writing, the export encodes a
probe text both ways; if the ids ever differ it writes no ``tokenizer.json`` and says so
(``hf_tokenizer_problem``), rather than shipping a tokenizer that encodes differently.

Import takes any standard GPT-2 folder: ``model.safetensors`` or ``pytorch_model.bin`` (read with
``torch.load(weights_only=True)``: no pickled code runs), and ``cllm_tokenizer.json``, else
``tokenizer.json``, else ``vocab.json`` + ``merges.txt``.
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
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
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
    write_atomic(out / "generation_config.json", json.dumps(generation_config(eot), indent=2))
    for name in HF_TOKENIZER_FILES:  # never leave an older export's tokenizer beside new weights
        (out / name).unlink(missing_ok=True)
    if tokenizer is not None:
        write_atomic(out / TOKENIZER_FILE, tokenizer.to_json())
        files = hf_tokenizer_files(tokenizer, cfg.block_size)
        if isinstance(files, dict):
            for name, text in files.items():
                write_atomic(out / name, text)
    return out


def generation_config(eot_id: int | None) -> dict:
    """Our sampling defaults (``cllm generate``'s) for ``model.generate`` and pipelines."""
    g = {"do_sample": True, "temperature": 0.8, "top_k": 50, "top_p": 0.9}
    if eot_id is not None:
        g.update(bos_token_id=int(eot_id), eos_token_id=int(eot_id), pad_token_id=int(eot_id))
    return g


def hf_tokenizer_json(tok) -> str:
    """Our tokenizer as a ``tokenizers`` definition (``tokenizer.json``) with the same ids."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    from cllm.engine.tokenizer import EOT, _bytes_to_unicode

    if tok.kind == "bpe":
        return tok._hf_json
    if tok.kind == "byte":
        b2u = _bytes_to_unicode()
        hf = HFTokenizer(models.BPE(vocab={**{b2u[b]: b for b in range(256)}, EOT: 256}, merges=[]))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.decoder = decoders.ByteLevel()
    elif tok.kind == "char":
        vocab = {chr(b): b for b in range(128)}
        vocab.update({f"<0x{b:02X}>": b for b in range(128, 256)})
        vocab[EOT] = tok.eot_id
        vocab.update({c: 257 + i for i, c in enumerate(tok.chars)})
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
        hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    else:
        raise ValidationError(f"a {tok.kind!r} tokenizer has no Hugging Face form")
    hf.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return hf.to_str()


def _probe_text(tok) -> str:
    extra = getattr(tok, "chars", "")
    return (
        "Hello, world!  \t\n\n  <|endoftext|> x<|endoftext|>y <0x41> \u00e9\u00e8 \u65e5\u672c "
        "\U0001f600 \u0301a\r\n" + extra + " ".join(extra[:50])
    )


def hf_tokenizer_problem(tok) -> str | None:
    """None when ``tokenizer.json`` gives our ids; else one line saying why it is not written."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        hf = HFTokenizer.from_str(hf_tokenizer_json(tok))
    except Exception as err:  # tokenizers raises its own exception types
        return f"the {tok.kind} tokenizer cannot be written as tokenizer.json ({err})"
    hf.encode_special_tokens = True
    text = _probe_text(tok)
    if hf.encode(text, add_special_tokens=False).ids != tok.encode(text).tolist():
        return (
            f"the {tok.kind} tokenizer encodes differently in the Hugging Face format; "
            "tokenizer.json is not written (cllm_tokenizer.json is)"
        )
    return None


def hf_tokenizer_files(tok, block_size: int) -> dict[str, str] | str:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``, or the
    one-line reason why the tokenizer cannot be expressed."""
    from cllm.engine.tokenizer import EOT

    problem = hf_tokenizer_problem(tok)
    if problem:
        return problem
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    conf = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": int(block_size),
        # "<|endoftext|>" inside text is text, as in our encoder
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "add_bos_token": False,
    }
    return {
        "tokenizer.json": hf_tokenizer_json(tok),
        "tokenizer_config.json": json.dumps(conf, indent=2),
        "special_tokens_map.json": json.dumps(special, indent=2),
    }


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
    tokenizer = read_tokenizer(d)
    if tokenizer is not None and tokenizer.vocab_size != cfg.vocab_size:
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ModelFileError(
                f"{d}: tokenizer has {tokenizer.vocab_size} tokens, model only {cfg.vocab_size}"
            )
        # a checkpoint padded past its tokenizer (a multiple of 64, say): the rows no text can
        # reach are dropped, every reachable token keeps its logit
        params, cfg = _drop_vocab_rows(cfg, params, tokenizer.vocab_size)
    return cfg, params, tokenizer


def read_tokenizer(d: Path):
    """Our tokenizer from a folder: ``cllm_tokenizer.json``, else ``tokenizer.json``, else
    ``vocab.json`` + ``merges.txt``; None when there is none. Only byte-level BPE with
    ``<|endoftext|>`` (GPT-2's kind) is accepted from the Hugging Face files."""
    from cllm.engine.tokenizer import BPETokenizer, tokenizer_from_json

    def text(name: str) -> str:
        try:
            return (d / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ModelFileError(f"{d / name}: unreadable ({err})") from None

    try:
        if (d / TOKENIZER_FILE).is_file():
            return tokenizer_from_json(text(TOKENIZER_FILE))
        if (d / "tokenizer.json").is_file():
            return BPETokenizer(_plain_hf_json(text("tokenizer.json")))
        if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            return BPETokenizer(_bpe_from_vocab_merges(d / "vocab.json", d / "merges.txt"))
    except ValidationError as err:
        raise ModelFileError(f"{d}: {err}") from None
    return None


def _plain_hf_json(s: str) -> str:
    """A GPT-2 ``tokenizer.json`` without its post-processor and truncation/padding settings,
    which only matter to transformers' batching (ids are the same without them)."""
    try:
        d = json.loads(s)
    except ValueError as err:
        raise ValidationError(f"tokenizer.json is not valid JSON ({err})") from None
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise ValidationError("tokenizer.json has no model")
    if d["model"].get("type", "BPE") != "BPE":
        raise ValidationError(f"tokenizer.json is a {d['model'].get('type')} model, not BPE")
    pre = d.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("add_prefix_space"):
        # a prefix space would not round-trip; GPT-2's own tokenizer has none
        raise ValidationError("tokenizer.json adds a prefix space, which is not lossless")
    if d.get("normalizer"):
        raise ValidationError("tokenizer.json has a normalizer, which is not lossless")
    d.update(truncation=None, padding=None, post_processor=None)
    return json.dumps(d)


def _bpe_from_vocab_merges(vocab: Path, merges: Path) -> str:
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    from cllm.engine.tokenizer import EOT

    try:
        hf = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as err:  # tokenizers raises its own exception types
        raise ValidationError(f"vocab.json/merges.txt unreadable ({err})") from None
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    if hf.token_to_id(EOT) is not None:
        hf.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return hf.to_str()


def _drop_vocab_rows(cfg: GPTConfig, params: np.ndarray, V: int) -> tuple[np.ndarray, GPTConfig]:
    from dataclasses import replace

    new = replace(cfg, vocab_size=V)
    out, src, dst = np.empty(num_params(new), np.float32), 0, 0
    for (_, shape), (_, nshape) in zip(param_shapes(cfg), param_shapes(new), strict=True):
        n, m = math.prod(shape), math.prod(nshape)
        out[dst : dst + m] = params[src : src + n].reshape(shape)[: nshape[0]].reshape(-1)
        src, dst = src + n, dst + m
    return out, new


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
