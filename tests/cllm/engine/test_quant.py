"""int8 weight-only decoding against its dequantised reference."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cllm.engine.config import GPTConfig
from cllm.engine.model import GPT
from cllm.engine.quant import dequantize_int8, dequantized_params, quantize_int8
from cllm.errors import ValidationError

CFG = GPTConfig(vocab_size=41, n_embd=32, n_layer=2, n_head=4, block_size=16)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # no 0 / 0 for a row of subnormals
@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (5, 7), elements=st.floats(-1e3, 1e3, width=32)))
@example(np.where(np.eye(5, 7) > 0, np.float32(1e-45), np.float32(0)))  # scales under float32's
def test_int8_round_trip_error_is_half_a_step(w):
    q, s = quantize_int8(w)
    assert q.shape == (7, 5) and q.dtype == np.int8 and s.shape == (7,)
    err = np.abs(dequantize_int8(q, s) - w)
    assert np.all(err <= 0.5 * s[None, :] * (1 + 1e-5) + 1e-30)
    assert np.all(np.abs(q) <= 127)


def test_int8_decoding_equals_its_dequantised_reference():
    """The kernel (integers turned into floats in registers) computes what float decoding of the
    dequantised weights computes."""
    gpt = GPT(CFG, seed=1)
    gpt.params *= 3
    ref = GPT(CFG, init=False)
    ref.params[:] = dequantized_params(CFG, gpt.params, "int8")
    gpt.set_quant("int8")
    assert gpt.quant == "int8" and ref.quant == "none"
    ids = np.random.default_rng(0).integers(0, CFG.vocab_size, (3, 10))
    for g in (gpt, ref):
        g._c = g.new_cache(3)
        g._out = [g.decode(ids[:, :1], g._c)] + [
            g.decode(ids[:, t : t + 1], g._c) for t in range(1, 10)
        ]
    a, b = np.concatenate(gpt._out, 1), np.concatenate(ref._out, 1)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * np.abs(b).max())
    # and it is not the float model: quantisation moved the logits
    plain = GPT(CFG, init=False)
    plain.params[:] = gpt.params
    c = plain.new_cache(3)
    assert not np.allclose(plain.decode(ids[:, :1], c), a[:, :1], rtol=0, atol=1e-6)


def test_unknown_format_is_refused():
    with pytest.raises(ValidationError, match="quantisation"):
        GPT(CFG).set_quant("q3")
