"""Hugging Face GPT-2 interop, and the PyTorch reference checks of our engine.

The export/import round trip needs nothing optional; the comparisons need torch (and
transformers), and skip cleanly without them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cllm.engine.config import GPTConfig, num_params, param_shapes
from cllm.engine.hf import export_hf, hf_name, import_hf, read_safetensors, write_hf
from cllm.errors import ModelFileError

CFG = GPTConfig(vocab_size=61, n_embd=32, n_layer=2, n_head=4, block_size=16)


def random_params(cfg: GPTConfig, seed: int = 0) -> np.ndarray:
    # larger than GPT-2's init so that every layer visibly matters in the comparisons
    return (np.random.default_rng(seed).standard_normal(num_params(cfg)) * 0.1).astype(np.float32)


def views(cfg: GPTConfig, flat: np.ndarray) -> dict[str, np.ndarray]:
    out, off = {}, 0
    for name, shape in param_shapes(cfg):
        n = math.prod(shape)
        out[name] = flat[off : off + n].reshape(shape)
        off += n
    return out


def test_round_trip_is_exact_with_tokenizer(tmp_path):
    from cllm.engine.tokenizer import train_tokenizer

    tok = train_tokenizer("char", "hello world, the quick brown fox", 300)
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_embd=16, n_layer=1, n_head=2, block_size=8)
    params = random_params(cfg)
    write_hf(cfg, params, tmp_path, tok)
    hc = json.loads((tmp_path / "config.json").read_text())
    assert hc["activation_function"] == "gelu_new" and hc["layer_norm_epsilon"] == 1e-5
    assert hc["eos_token_id"] == tok.eot_id and hc["n_inner"] == 4 * cfg.n_embd
    cfg2, params2, tok2 = import_hf(tmp_path)
    assert cfg2 == cfg
    assert np.array_equal(params2, params)
    assert tok2.to_json() == tok.to_json()
    assert tok2.decode(tok2.encode("the fox")) == "the fox"


def test_safetensors_names_and_layout(tmp_path):
    params = random_params(CFG)
    write_hf(CFG, params, tmp_path)
    state = read_safetensors(tmp_path / "model.safetensors")
    v = views(CFG, params)
    assert set(state) == {hf_name(n) for n, _ in param_shapes(CFG)}
    assert "transformer.h.1.attn.c_attn.weight" in state and "transformer.wte.weight" in state
    for name, arr in v.items():
        assert np.array_equal(state[hf_name(name)], arr)
    st = pytest.importorskip("safetensors.numpy")  # the reference reader agrees with ours
    ref = st.load_file(str(tmp_path / "model.safetensors"))
    assert all(np.array_equal(ref[k], state[k]) for k in state)


def test_import_accepts_original_gpt2_names_and_buffers(tmp_path):
    """OpenAI's GPT-2 checkpoints have no ``transformer.`` prefix and carry ``attn.bias`` masks."""
    params = random_params(CFG)
    write_hf(CFG, params, tmp_path)
    state = read_safetensors(tmp_path / "model.safetensors")
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    state["h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), np.float32))
    from cllm.engine.hf import _write_safetensors

    _write_safetensors(tmp_path / "model.safetensors", state, {"format": "pt"})
    cfg2, params2, tok = import_hf(tmp_path)
    assert cfg2 == CFG and np.array_equal(params2, params) and tok is None


def _rewrite(path, mutate) -> None:
    state = read_safetensors(path)
    mutate(state)
    from cllm.engine.hf import _write_safetensors

    _write_safetensors(path, state, {"format": "pt"})


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "unreadable"),
        (lambda d: (d / "model.safetensors").unlink(), "neither model.safetensors"),
        (lambda d: _edit_config(d, activation_function="gelu"), "tanh approximation"),
        (lambda d: _edit_config(d, layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
        (lambda d: _edit_config(d, n_head=5), "not divisible"),
        (lambda d: _edit_config(d, n_layer=3), "h.2.ln_1.weight is missing"),
        (lambda d: _edit_config(d, vocab_size=60), "has shape [61, 32], expected [60, 32]"),
        (
            lambda d: _rewrite(
                d / "model.safetensors",
                lambda s: s.update({"lm_head.weight": s["transformer.wte.weight"] + 1}),
            ),
            "not tied",
        ),
        (lambda d: _truncate(d / "model.safetensors", 1000), "bad dtype, shape or offsets"),
        (lambda d: _truncate(d / "model.safetensors", 5), "bad header length"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64), "bad header length"),
        (lambda d: _hostile_header(d / "model.safetensors"), "bad dtype, shape or offsets"),
    ],
)
def test_import_refuses_broken_directories(tmp_path, breakage, message):
    write_hf(CFG, random_params(CFG), tmp_path)
    breakage(tmp_path)
    with pytest.raises(ModelFileError, match=None) as err:
        import_hf(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def _edit_config(d, **changes) -> None:
    hc = json.loads((d / "config.json").read_text())
    hc.update(changes)
    (d / "config.json").write_text(json.dumps(hc))


def _truncate(path, n: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n] if n > 100 else data[:n])


def _hostile_header(path) -> None:
    """A tensor claiming a petabyte must be refused before anything is allocated."""
    h = json.dumps(
        {
            "transformer.wte.weight": {
                "dtype": "F32",
                "shape": [1 << 40, 1 << 10],
                "data_offsets": [0, 1 << 52],
            }
        }
    ).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h)


# --- comparisons with PyTorch and transformers ---------------------------------------------------


def test_torch_ref_matches_transformers_and_its_cache(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cllm.engine import torch_ref

    params = random_params(CFG)
    write_hf(CFG, params, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ref = torch_ref.from_flat(CFG, params).eval()
    ids = torch.as_tensor(np.random.default_rng(1).integers(0, CFG.vocab_size, (2, 16)))
    with torch.no_grad():
        want = hf(ids).logits.numpy()
        got = ref(ids).numpy()
        assert np.abs(got - want).max() < 1e-5
        cache = ref.new_cache(2)  # prefill 9, then 4 at once, then one by one
        parts = [ref(ids[:, :9], cache=cache, pos=0), ref(ids[:, 9:13], cache=cache, pos=9)]
        parts += [ref(ids[:, t : t + 1], cache=cache, pos=t) for t in range(13, 16)]
        assert np.abs(torch.cat(parts, 1).numpy() - want).max() < 1e-5
        out = hf.generate(
            ids[:1, :4],
            attention_mask=torch.ones_like(ids[:1, :4]),
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            pad_token_id=0,
        )
    assert torch_ref.generate(ref, ids[0, :4].numpy(), 12) == out[0, 4:].tolist()
    assert np.array_equal(ref.flat(), params)


def test_import_pytorch_model_bin(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    params = random_params(CFG)
    write_hf(CFG, params, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")  # the older checkpoint format
    cfg2, params2, _ = import_hf(tmp_path)
    assert cfg2 == CFG and np.array_equal(params2, params)


# --- our engine against both ---------------------------------------------------------------------


def _gpt(cfg: GPTConfig, params: np.ndarray):
    model = pytest.importorskip("cllm.engine.model")
    gpt = model.GPT(cfg, seed=0)
    gpt.params[:] = params
    return gpt


def test_our_logits_match_transformers_after_export(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    gpt = _gpt(CFG, random_params(CFG, seed=3))
    export_hf(gpt, tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(2).integers(0, CFG.vocab_size, (3, 16)).astype(np.int32)
    with torch.no_grad():
        want = hf(torch.as_tensor(ids.astype(np.int64))).logits.numpy()
    got = gpt.forward(ids)
    assert np.abs(got - want).max() < 1e-4
    cfg2, params2, _ = import_hf(tmp_path)
    assert cfg2 == CFG and np.array_equal(params2, gpt.params)


def test_training_step_matches_torch_reference():
    """Loss, every gradient, the clipped norm and one AdamW update against PyTorch."""
    torch = pytest.importorskip("torch")
    from cllm.engine import torch_ref

    params = random_params(CFG, seed=4)
    gpt = _gpt(CFG, params)
    optim = pytest.importorskip("cllm.engine.optim")
    ref = torch_ref.from_flat(CFG, params)
    data = np.random.default_rng(5).integers(0, CFG.vocab_size, (4, 13)).astype(np.int32)
    x, y = data[:, :-1], data[:, 1:]

    loss = gpt.forward(x, y)
    gpt.backward()
    want = ref(torch.as_tensor(x), torch.as_tensor(y))
    want.backward()
    assert abs(loss - want.item()) < 1e-5
    g_ours, g_ref = views(CFG, gpt.grads), views(CFG, ref.flat(grads=True))
    for name in g_ours:
        scale = max(1.0, float(np.abs(g_ref[name]).max()))
        assert np.abs(g_ours[name] - g_ref[name]).max() < 1e-4 * scale, name

    clip = 0.5
    norm = optim.clip_grad_norm(gpt.grads, clip)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
    assert abs(float(norm) - float(ref_norm)) < 1e-4 * float(ref_norm)
    assert np.abs(gpt.grads - ref.flat(grads=True)).max() < 1e-5

    opt = optim.AdamW.for_model(gpt, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99))
    ref_opt = torch_ref.make_optimizer(ref, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.99))
    with torch.no_grad():  # identical gradients in: Adam's step on a near-zero one is sign-like
        for name, g in views(CFG, gpt.grads).items():
            ref.tensor(name).grad.copy_(torch.from_numpy(g))
    for _ in range(3):  # the same gradients each time: moments and bias correction move
        opt.step(gpt.params, gpt.grads)
        ref_opt.step()
    assert np.abs(gpt.params - ref.flat()).max() < 1e-6


def test_models_export_and_import_hf_through_the_command_line(tmp_path, capsys):
    """The user's path: `models export NAME DIR --format hf`, transformers loads it, and
    `models import DIR --format hf` brings back the same weights and tokenizer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from cllm.cli import main
    from cllm.models.registry import Registry

    reg = Registry(tmp_path / "models")
    cfg = GPTConfig(vocab_size=300, n_embd=32, n_layer=2, n_head=2, block_size=32)
    reg.create("m", config=cfg, tokenizer="char", vocab_size=300, text="the cat sat on the mat")
    lm = reg.load("m")
    md = ["--models-dir", str(tmp_path / "models")]
    assert main(["models", "export", "m", str(tmp_path / "hf"), "--format", "hf", *md]) == 0
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = lm.tokenizer.encode("the mat sat")
    with torch.no_grad():
        want = hf(torch.as_tensor(ids.astype(np.int64))[None]).logits[0].numpy()
    assert np.abs(lm.logits(ids) - want).max() < 1e-4
    assert (
        main(["models", "import", str(tmp_path / "hf"), "--format", "hf", "--name", "back", *md])
        == 0
    )
    back = reg.load("back")
    assert back.config == lm.config and np.array_equal(back.gpt.params, lm.gpt.params)
    assert back.tokenizer.to_json() == lm.tokenizer.to_json()


def test_a_tokenizer_without_a_hugging_face_form_is_named_not_written(tmp_path):
    """Export never writes a tokenizer.json that encodes differently: it says why instead."""
    from cllm.engine.hf import hf_tokenizer_problem
    from cllm.engine.tokenizer import ByteTokenizer

    class Shifted(ByteTokenizer):  # a kind the Hugging Face format has no form for
        kind = "shifted"

    tok = Shifted()
    problem = hf_tokenizer_problem(tok)
    assert problem and "\n" not in problem and "shifted" in problem
    cfg = GPTConfig(vocab_size=257, n_embd=16, n_layer=1, n_head=2, block_size=8)
    write_hf(cfg, random_params(cfg), tmp_path, tok)
    names = {p.name for p in tmp_path.iterdir()}
    assert "tokenizer.json" not in names and "cllm_tokenizer.json" in names
    assert hf_tokenizer_problem(ByteTokenizer()) is None
