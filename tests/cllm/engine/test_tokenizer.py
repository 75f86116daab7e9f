import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.data.corpus import demo_corpus
from cllm.engine.tokenizer import (
    EOT,
    KINDS,
    StreamDecoder,
    tokenizer_from_json,
    train_tokenizer,
)
from cllm.errors import ValidationError

TEXT = (
    "The quick brown fox jumps over the lazy dog. Über café naïve 日本語 テキスト 😀🚀\n"
    "def f(x):\n    return x * 2  # tabs\tand\r\nnewlines\n\n" * 20
)

# any str UTF-8 can encode: every code point except the surrogates
utf8_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)


@pytest.fixture(scope="module", params=KINDS)
def tok(request):
    return train_tokenizer(request.param, TEXT, 600)


def test_demo_corpus():
    text = demo_corpus()
    assert len(text) > 20_000
    assert "def train_tokenizer" in text and "class Tokenizer" in text  # this package's source


def test_kinds_and_sizes():
    bpe = train_tokenizer("bpe", demo_corpus(), 1000)
    assert bpe.vocab_size == 1000  # a text large enough reaches the size exactly
    assert train_tokenizer("byte", TEXT, 600).vocab_size == 257
    char = train_tokenizer("char", TEXT, 600)
    assert char.vocab_size == 257 + len({c for c in TEXT if ord(c) >= 128})
    # a small cap keeps only the most frequent non-ASCII characters
    assert train_tokenizer("char", TEXT, 260).vocab_size == 260


def test_small_corpus_gives_smaller_vocab():
    tok = train_tokenizer("bpe", "hello hello", 4096)
    assert 257 <= tok.vocab_size < 4096
    assert tok.decode(tok.encode("anything ünïcode")) == "anything ünïcode"


def test_empty_corpus_still_lossless():
    for kind in KINDS:
        tok = train_tokenizer(kind, "", 1000)
        assert tok.vocab_size == 257
        assert tok.decode(tok.encode("x 😀")) == "x 😀"


def test_refusals():
    with pytest.raises(ValidationError, match="unknown tokenizer"):
        train_tokenizer("wordpiece", TEXT, 1000)
    with pytest.raises(ValidationError, match="at least|from 257"):
        train_tokenizer("bpe", TEXT, 100)
    for kind in KINDS:
        tok = train_tokenizer(kind, TEXT, 1000)
        with pytest.raises(ValidationError, match="surrogate"):
            tok.encode("a\ud800b")
        with pytest.raises(ValidationError, match="must be a str"):
            tok.encode(b"bytes")
    for bad in [
        "",
        "{",
        "[]",
        '{"kind": "bpe", "version": 1}',
        '{"kind": "x", "version": 1}',
        '{"kind": "bpe", "version": 1, "hf": "not json"}',
    ]:
        with pytest.raises(ValidationError):
            tokenizer_from_json(bad)


@settings(max_examples=150, deadline=None)
@given(x=utf8_text)
def test_roundtrip_any_text(tok, x):
    ids = tok.encode(x)
    assert ids.dtype == np.int32
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < tok.vocab_size)
    assert tok.decode(ids) == x


@settings(max_examples=100, deadline=None)
@given(raw=st.lists(st.integers(0, 1 << 20), max_size=60))
def test_stream_decoder_matches_decode(tok, raw):
    ids = [i % tok.vocab_size for i in raw]
    # arbitrary ids, so broken UTF-8 too: the stream must agree with decode, piece by piece
    dec = StreamDecoder(tok)
    pieces = [dec.feed(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == tok.decode(ids)


def test_stream_decoder_holds_partial_utf8():
    tok = train_tokenizer("byte", "", 257)
    dec = StreamDecoder(tok)
    ids = tok.encode("😀")
    assert [dec.feed(i) for i in ids] == ["", "", "", "😀"]
    assert dec.flush() == ""


def test_eot_in_text_is_plain_text(tok):
    ids = tok.encode(f"a{EOT}b")
    assert tok.eot_id not in ids.tolist()
    assert tok.decode(ids) == f"a{EOT}b"
    assert tok.decode([tok.eot_id]) == EOT


def test_char_unseen_characters_use_byte_fallback():
    tok = train_tokenizer("char", "ü", 1000)
    ids = tok.encode("üß")
    assert ids.tolist() == [257, *"ß".encode()]
    assert tok.decode(ids) == "üß"


def test_json_roundtrip(tok):
    tok2 = tokenizer_from_json(tok.to_json())
    assert (tok2.kind, tok2.vocab_size, tok2.eot_id) == (tok.kind, tok.vocab_size, tok.eot_id)
    assert tok2.encode(TEXT).tolist() == tok.encode(TEXT).tolist()
    assert tok2.encode(EOT).tolist() == tok.encode(EOT).tolist()  # still plain text after reload


def test_decode_refuses_out_of_range(tok):
    with pytest.raises(ValidationError):
        tok.decode([tok.vocab_size])


def test_long_text_chunking_matches_whole_encode():
    tok = train_tokenizer("bpe", TEXT, 600)
    big = (TEXT + "\n  indented\n\nword\n\t tab\n") * 40  # > 64K chars: chunked path
    assert tok.encode(big).tolist() == tok.hf.encode(big, add_special_tokens=False).ids


@settings(max_examples=200, deadline=None)
@given(
    x=st.lists(
        st.sampled_from(["a", "b", " ", "\n", "\t", "\r", "'s", "1", "é", ".", "\x1c"]), max_size=60
    ).map("".join)
)
def test_chunk_cuts_never_change_ids(x, monkeypatch_module):
    tok = monkeypatch_module
    assert tok.encode(x).tolist() == tok.hf.encode(x, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def monkeypatch_module():
    # chunk every text, in pieces of a few characters, to test where the cuts fall
    import cllm.engine.tokenizer as T

    mp = pytest.MonkeyPatch()
    mp.setattr(T, "CHUNKED_FROM", 0)
    mp.setattr(T, "CHUNK_CHARS", 3)
    mp.setattr(T, "FAST_CHUNK_CHARS", 3)
    yield train_tokenizer("bpe", TEXT + "a\nb a\n\nb 's\n's", 600)
    mp.undo()


def test_encode_1mb_fast():
    # CPU seconds (all threads), not wall time: the test machine is shared and often loaded. A
    # guard against a pathological path (a pure-Python BPE takes minutes for this), not the speed
    # figure: `python -m cllm bench tokenize` measures that (0.5-1.4 CPU s per MB on AVX2 here).
    tok = train_tokenizer("bpe", TEXT, 1000)
    big = TEXT * (1_000_000 // len(TEXT))
    for kind_tok in (tok, train_tokenizer("char", TEXT, 1000), train_tokenizer("byte", "", 257)):
        t = time.process_time()
        ids = kind_tok.encode(big)
        assert time.process_time() - t < 3.0, kind_tok.kind
        assert kind_tok.decode(ids) == big
