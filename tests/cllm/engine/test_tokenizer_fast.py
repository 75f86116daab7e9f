"""The BPE tokenizer's fast path (a compiled split and a table of known words) gives exactly the
ids of the `tokenizers` engine it stands in for, on any text."""

import json
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cllm.engine.tokenizer as T
from cllm.engine.tokenizer import BPETokenizer, train_tokenizer

TEXT = (
    "The quick brown fox jumps over the lazy dog. Über café naïve 日本語 テキスト 😀🚀 ½ Ⅻ ٣\n"
    "def f(x):\n    return x * 2  # tabs\tand\r\nnewlines\n\n it's we're they'll I'd\u00a0\u3000\n"
    * 20
)


@pytest.fixture(scope="module")
def tok():
    t = train_tokenizer("bpe", TEXT, 700)
    assert t._fast
    return t


def engine(tok, text: str) -> list[int]:
    return tok.hf.encode(text, add_special_tokens=False).ids


# pieces that exercise every branch of GPT-2's pattern: contractions, " ?" before each class,
# runs of spaces before words and at the end, other characters, and characters of other scripts
PIECES = ["a", "Z", "s", "t", "re", "ll", "d", "'", "1", "٣", "½", " ", "  ", "\n", "\t", "\r",
          "\x0b", "\x1c", "\u00a0", "\u3000", "\u2028", "\u180e", ".", "!?", "é", "日", "😀",
          "\u0558", "\u0301", "<|endoftext|>"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(x=st.lists(st.sampled_from(PIECES), max_size=80).map("".join))
def test_same_ids_as_the_engine_on_pieces_of_every_kind(tok, x):
    assert tok.encode(x).tolist() == engine(tok, x)


@settings(max_examples=200, deadline=None)
@given(x=st.text(st.characters(exclude_categories=["Cs"]), max_size=300))
def test_same_ids_as_the_engine_on_any_text(tok, x):
    assert tok.encode(x).tolist() == engine(tok, x)


def _probe(code_points) -> str:
    """Each character beside a letter, a digit, a space, itself, punctuation and a contraction."""
    return "".join(f"{c}a{c}1{c} {c}{c}.{c}'s\n" for c in map(chr, code_points))


def test_every_character_below_u0800_and_a_sample_above(tok):
    """The class of a character comes from the engine (its Unicode tables, not Python's), so
    characters whose category changed between Unicode versions split alike too."""
    cps = [*range(0x800), *range(0x800, 0x110000, 211), 0x558, 0x58B, 0x88F, 0xC5C, 0x208F,
           0xA7CE, 0x107BB, 0x10940, 0x180E, 0x1C]  # fmt: skip
    cps = [c for c in cps if not 0xD800 <= c < 0xE000]
    text = _probe(cps)
    assert tok.encode(text).tolist() == engine(tok, text)


@pytest.mark.slow
def test_every_code_point(tok):
    for lo in range(0, 0x110000, 0x10000):
        cps = [c for c in range(lo, lo + 0x10000) if not 0xD800 <= c < 0xE000]
        text = _probe(cps)
        assert tok.encode(text).tolist() == engine(tok, text), hex(lo)


def test_the_table_starts_over_when_full_and_ids_stay_right(tok, monkeypatch):
    fresh = BPETokenizer(tok.hf.to_str())
    monkeypatch.setattr(T._Words, "MAX_ENTRIES", 1 << 12)  # the first size: no room to grow
    words = " ".join(f"w{i}x{i * 7}" for i in range(20_000))  # 20,000 distinct words
    assert fresh.encode(words).tolist() == engine(fresh, words)
    assert fresh._words.generation >= 1  # it did start over
    assert fresh.encode(words[:5000]).tolist() == engine(fresh, words[:5000])


def test_the_table_grows(tok):
    fresh = BPETokenizer(tok.hf.to_str())
    words = " ".join(f"w{i}x{i * 7}" for i in range(30_000))
    first = fresh.encode(words)
    assert first.tolist() == engine(fresh, words)
    assert fresh._words.generation == 0 and len(fresh._words) > 30_000
    assert fresh.encode(words).tolist() == first.tolist()  # every word from the table now


def test_threads_encoding_at_once_agree(tok):
    fresh = BPETokenizer(tok.hf.to_str())
    texts = [" ".join(f"t{k}w{i}" for i in range(3000)) + TEXT for k in range(6)]
    out: dict[int, list[int]] = {}
    threads = [
        threading.Thread(target=lambda k=k: out.__setitem__(k, fresh.encode(texts[k]).tolist()))
        for k in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out[k] == engine(fresh, texts[k]) for k in range(6))


def test_long_text_in_chunks(tok):
    big = TEXT * 800  # > FAST_CHUNK_CHARS: several chunks
    assert len(big) > T.FAST_CHUNK_CHARS
    assert np.array_equal(tok.encode(big), np.array(engine(tok, big)))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(normalizer={"type": "NFC"}),
        lambda d: d["pre_tokenizer"].update(add_prefix_space=True),
        lambda d: d["model"].update(dropout=0.1),
        lambda d: d["added_tokens"].append({**d["added_tokens"][0], "id": 5, "special": False}),
    ],
)
def test_other_shapes_use_the_engine_alone(tok, change):
    d = json.loads(tok.hf.to_str())
    change(d)
    assert not T._gpt2_shaped(json.dumps(d))
