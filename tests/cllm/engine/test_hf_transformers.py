"""Hugging Face both ways, with transformers and tokenizers as the other side.

Import: a GPT-2 built in transformers with random weights and a byte-level BPE trained with
`tokenizers`, saved with ``save_pretrained`` as any GPT-2 folder is (no file of ours), comes in
with the same logits and ids and trains on. Export: our bpe, byte and char tokenizers load in
``AutoTokenizer`` with identical ids on generated text, and ``pipeline("text-generation")`` runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm.engine.config import GPTConfig
from cllm.engine.hf import (
    TOKENIZER_FILE,
    export_hf,
    hf_tokenizer_problem,
    import_hf,
    read_tokenizer,
)
from cllm.engine.tokenizer import EOT, ByteTokenizer, train_tokenizer
from cllm.errors import ModelFileError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Grüße aus Köln! 日本語のテキスト。\n"
    "  indented   lines\twith tabs\n\n<|endoftext|> is text here. 😀 café naïve\n"
) * 20

# Text that stresses the pre-tokenizers: Unicode of every plane, runs of mixed whitespace, the
# end-of-text marker as plain text, and the byte-fallback token spelling "<0x41>".
TEXT = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
        st.sampled_from([EOT, " ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "<0x41>", "é", "😀"]),
        st.text(" \t\n\r\x0b\x0c\u00a0\u3000", max_size=6),
    ),
    max_size=12,
).map("".join)


def hf_bpe_folder(path, V=320, C=64):
    """A stock GPT-2 folder: transformers' model with random weights and a trained BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf_tok = Tokenizer(models.BPE())
    hf_tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf_tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=V,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf_tok.train_from_iterator([CORPUS], trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=hf_tok, eos_token=EOT, bos_token=EOT, split_special_tokens=True
    )
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=hf_tok.get_vocab_size(),
        n_positions=C,
        n_embd=48,
        n_layer=2,
        n_head=3,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.1,  # larger than GPT-2's so every layer visibly matters
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return model, fast


def test_import_a_transformers_gpt2_folder_then_train_on(tmp_path):
    from cllm.models.registry import Registry
    from cllm.train.trainer import Trainer

    model, fast = hf_bpe_folder(tmp_path / "gpt2")
    assert not (tmp_path / "gpt2" / TOKENIZER_FILE).exists()
    cfg, params, tok = import_hf(tmp_path / "gpt2")
    assert cfg.vocab_size == model.config.vocab_size and cfg.block_size == 64
    text = "The quick brown fox <|endoftext|> Grüße 日本語 😀  tabs\t\n"
    ids = tok.encode(text)
    assert ids.tolist() == fast(text)["input_ids"]
    reg = Registry(tmp_path / "models")
    name = reg.import_hf(tmp_path / "gpt2", name="stock")
    lm = reg.load(name)
    with torch.no_grad():
        want = model(torch.as_tensor(ids.astype(np.int64))[None]).logits[0].numpy()
    assert np.abs(lm.logits(ids) - want).max() < 1e-4
    assert lm.tokenizer.decode(ids) == text

    dq = reg.queue(name)  # fine-tune: the imported weights train on
    dq.add_text(CORPUS, source="corpus")
    dq.close()
    t = Trainer(reg, name, max_steps=3, batch_size=2, seq_len=32, learning_rate=1e-3, warmup=1)
    t.start()
    assert t.join(120)
    snap = t.snapshot()
    assert snap.step == 3 and np.isfinite(snap.train_loss), snap.message
    after = reg.load(name)
    assert not np.array_equal(after.gpt.params, lm.gpt.params)


def test_import_vocab_and_merges_and_pytorch_bin(tmp_path):
    model, fast = hf_bpe_folder(tmp_path / "gpt2")
    d = tmp_path / "gpt2"
    hf_tok = json.loads((d / "tokenizer.json").read_text())
    vocab = hf_tok["model"]["vocab"]
    merges = hf_tok["model"]["merges"]
    (d / "vocab.json").write_text(json.dumps(vocab))
    lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")
    (d / "tokenizer.json").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    cfg, params, tok = import_hf(d)
    text = "The lazy dog <|endoftext|> café"
    assert tok.encode(text).tolist() == fast(text)["input_ids"]
    want = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    assert params.size == want.size  # every parameter came across (lm_head is tied)


def test_import_pads_past_tokenizer_and_refuses_other_tokenizers(tmp_path):
    model, fast = hf_bpe_folder(tmp_path / "gpt2")
    d = tmp_path / "gpt2"
    V = model.config.vocab_size
    big = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=V + 7, n_positions=64, n_embd=48, n_layer=2, n_head=3)
    ).eval()
    big.save_pretrained(d)  # a checkpoint padded past its tokenizer
    cfg, params, tok = import_hf(d)
    assert cfg.vocab_size == tok.vocab_size == V
    from cllm.engine.model import GPT

    gpt = GPT(cfg, init=False)
    gpt.params[:] = params
    ids = tok.encode("quick brown fox")
    with torch.no_grad():
        want = big(torch.as_tensor(ids.astype(np.int64))[None]).logits[0, :, :V].numpy()
    assert np.abs(gpt.forward(ids[None].astype(np.int32))[0] - want).max() < 1e-4

    hf = json.loads((d / "tokenizer.json").read_text())
    hf["pre_tokenizer"]["add_prefix_space"] = True
    (d / "tokenizer.json").write_text(json.dumps(hf))
    with pytest.raises(ModelFileError, match="prefix space"):
        read_tokenizer(d)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Our three tokenizer kinds exported with a small model each, loaded by AutoTokenizer."""
    from cllm.engine.model import GPT

    out = {}
    for kind in ("bpe", "byte", "char"):
        vocab = 340 if kind == "bpe" else 300
        tok = ByteTokenizer() if kind == "byte" else train_tokenizer(kind, CORPUS, vocab)
        cfg = GPTConfig(vocab_size=tok.vocab_size, n_embd=32, n_layer=1, n_head=2, block_size=64)
        gpt = GPT(cfg, seed=1)
        d = tmp_path_factory.mktemp(kind)
        assert hf_tokenizer_problem(tok) is None
        export_hf(gpt, d, tok)
        out[kind] = (tok, gpt, d, transformers.AutoTokenizer.from_pretrained(d))
    return out


@pytest.mark.parametrize("kind", ["bpe", "byte", "char"])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=TEXT)
def test_exported_tokenizer_encodes_as_ours(exported, kind, text):
    tok, _, _, auto = exported[kind]
    ids = tok.encode(text).tolist()
    assert auto(text)["input_ids"] == ids
    assert auto.decode(ids) == tok.decode(ids) == text


@pytest.mark.parametrize("kind", ["bpe", "byte", "char"])
def test_exported_folder_loads_whole_in_transformers(exported, kind):
    tok, gpt, d, auto = exported[kind]
    files = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= files
    assert {"tokenizer_config.json", TOKENIZER_FILE} <= files
    assert auto.eos_token == EOT and auto.eos_token_id == tok.eot_id
    model = transformers.GPT2LMHeadModel.from_pretrained(d).eval()
    ids = tok.encode("Grüße, fox")
    with torch.no_grad():
        want = model(torch.as_tensor(ids.astype(np.int64))[None]).logits[0].numpy()
    assert np.abs(gpt.forward(ids[None].astype(np.int32))[0] - want).max() < 1e-4
    assert model.generation_config.eos_token_id == tok.eot_id
    pipe = transformers.pipeline("text-generation", model=str(d), device="cpu")
    out = pipe("The quick", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("The quick") and len(out) > len("The quick")
    # and the folder comes back in as the same model
    cfg2, params2, tok2 = import_hf(d)
    assert cfg2 == gpt.config and np.array_equal(params2, gpt.params)
    assert tok2.to_json() == tok.to_json()
