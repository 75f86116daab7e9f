"""Tokenizers: byte-level BPE (default), raw bytes, and characters; all lossless on any str.

Every kind maps each id to a fixed byte string (``token_bytes``), so decoding is one join and one
UTF-8 decode for all kinds, and streaming only has to hold back an incomplete UTF-8 sequence.

Rules shared by all kinds:
- ``encode`` treats its input as plain text: a literal ``<|endoftext|>`` inside a document is
  encoded as ordinary characters, so user text can never inject a document break. Only code that
  means a break appends ``eot_id`` itself.
- Text that UTF-8 cannot encode (a lone surrogate such as ``"\\ud800"``, which only arises from
  broken decoding upstream) is refused with ``ValidationError``: there are no bytes to store.
- ``decode`` renders ``eot_id`` as ``<|endoftext|>`` and replaces invalid UTF-8 (which a sampled
  id sequence may produce) with U+FFFD.
"""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from cllm.engine import schema
from cllm.errors import ValidationError

EOT = "<|endoftext|>"
KINDS = ("bpe", "byte", "char")
MIN_VOCAB = 257  # 256 byte values + end-of-text: every kind can spell any byte string
# A long text is encoded in chunks cut after a lone "\n" between non-spaces: the GPT-2
# pre-tokenizer cuts there too, so the ids are identical to encoding it whole.
_CHUNK_SPLIT = re.compile(r"(?<=\S\n)(?=\S)")
CHUNKED_FROM = 65536  # characters
CHUNK_CHARS = 16384


def _encode_utf8(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValidationError(f"text to encode must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValidationError(
            f"text contains a lone surrogate U+{ord(text[err.start]):04X} at position "
            f"{err.start}, which UTF-8 cannot encode"
        ) from None


class Tokenizer:
    """Base of the three kinds: ``token_bytes[i]`` is the byte string of id ``i``; each kind adds
    ``encode(text) -> int32 array``."""

    kind = ""

    def __init__(self, token_bytes: list[bytes], eot_id: int) -> None:
        self.token_bytes = token_bytes
        self.eot_id = eot_id
        self.vocab_size = len(token_bytes)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        tb, V = self.token_bytes, self.vocab_size
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValidationError(
                f"token ids must be in [0, {V}), got {int(ids.min())}..{int(ids.max())}"
            )
        return b"".join([tb[i] for i in ids.tolist()]).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "version": 1, **self._state()})

    def _state(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _byte_table() -> list[bytes]:
    return [bytes([b]) for b in range(256)] + [EOT.encode()]


class ByteTokenizer(Tokenizer):
    """Ids 0-255 are the byte values, 256 is end-of-text."""

    kind = "byte"

    def __init__(self) -> None:
        super().__init__(_byte_table(), eot_id=256)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(_encode_utf8(text), dtype=np.uint8).astype(np.int32)


class CharTokenizer(Tokenizer):
    """Ids 0-255 are bytes, 256 is end-of-text, 257+ are the non-ASCII characters of the creation
    text. ASCII characters use their byte id; any other character not in the vocabulary falls back
    to its UTF-8 bytes, so nothing is ever unknown."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or any(ord(c) < 128 for c in chars):
            raise ValidationError("char tokenizer: characters must be distinct and non-ASCII")
        self.chars = chars
        super().__init__(_byte_table() + [_encode_utf8(c) for c in chars], eot_id=256)
        # sorted code points -> ids, for a vectorised lookup
        cps = np.array([ord(c) for c in chars], dtype=np.uint32)
        order = np.argsort(cps)
        self._cps = cps[order]
        self._cp_ids = (order + 257).astype(np.int32)

    def _state(self) -> dict:
        return {"chars": self.chars}

    def encode(self, text: str) -> np.ndarray:
        _encode_utf8(text)  # refuse lone surrogates with a clear message
        cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = cp.astype(np.int32)  # ASCII: code point == byte id
        high = np.flatnonzero(cp >= 128)
        if high.size == 0:
            return ids
        if len(self._cps):
            pos = np.minimum(np.searchsorted(self._cps, cp[high]), len(self._cps) - 1)
            known = self._cps[pos] == cp[high]
        else:
            pos, known = high, np.zeros(high.size, dtype=bool)
        ids[high[known]] = self._cp_ids[pos[known]]
        unknown = high[~known]
        if unknown.size == 0:
            return ids
        # byte fallback: splice each unseen character's UTF-8 bytes in place of its slot
        parts, prev = [], 0
        for i in unknown.tolist():
            parts.append(ids[prev:i])
            parts.append(np.frombuffer(text[i].encode("utf-8"), dtype=np.uint8).astype(np.int32))
            prev = i + 1
        parts.append(ids[prev:])
        return np.concatenate(parts)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by the byte-level pre-tokenizer."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


class BPETokenizer(Tokenizer):
    """Byte-level BPE on the Hugging Face ``tokenizers`` engine (GPT-2's pre-tokenizer, no
    normalizer, no added prefix space, so it is lossless). All 256 byte symbols are in the
    vocabulary and end-of-text is a special token there too, so the serialized engine is a
    complete GPT-2-style tokenizer."""

    kind = "bpe"

    def __init__(self, hf_json: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(hf_json)
        except Exception as err:  # the engine raises its own exception types
            raise ValidationError(f"bpe tokenizer: cannot read its definition ({err})") from None
        hf.encode_special_tokens = True  # "<|endoftext|>" in text is text (not saved by to_str)
        vocab = hf.get_vocab(with_added_tokens=True)
        V = len(vocab)
        if sorted(vocab.values()) != list(range(V)) or vocab.get(EOT) is None:
            raise ValidationError("bpe tokenizer: ids are not 0..V-1 or end-of-text is missing")
        inv = {c: b for b, c in _bytes_to_unicode().items()}
        if any(c not in vocab for c in inv):
            raise ValidationError("bpe tokenizer: some byte values are missing from the vocabulary")
        table: list[bytes] = [b""] * V
        for tok, i in vocab.items():
            if tok == EOT:
                table[i] = EOT.encode()
            elif all(c in inv for c in tok):
                table[i] = bytes(inv[c] for c in tok)
            else:
                raise ValidationError(f"bpe tokenizer: token {tok!r} is not byte-level")
        self.hf = hf
        self._hf_json = hf_json
        super().__init__(table, eot_id=vocab[EOT])

    def _state(self) -> dict:
        return {"hf": self._hf_json}

    def encode(self, text: str) -> np.ndarray:
        _encode_utf8(text)
        if len(text) < CHUNKED_FROM:
            return np.array(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)
        # long text: the engine encodes a batch of chunks in parallel
        pieces = _CHUNK_SPLIT.split(text)
        chunks, cur, n = [], [], 0
        for p in pieces:
            cur.append(p)
            n += len(p)
            if n >= CHUNK_CHARS:
                chunks.append("".join(cur))
                cur, n = [], 0
        if cur:
            chunks.append("".join(cur))
        # the "fast" batch skips character offsets, which we never use
        batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        encs = batch(chunks, add_special_tokens=False)
        return np.concatenate([np.array(e.ids, dtype=np.int32) for e in encs])


def train_tokenizer(kind: str, text: str, vocab_size: int) -> Tokenizer:
    """A tokenizer of ``kind`` for ``text``.

    ``byte`` ignores ``vocab_size`` (always 257). ``char`` and ``bpe`` grow up to ``vocab_size``
    (at least 257); on a text too small to reach it, the vocabulary is what the text gave, and
    ``tok.vocab_size`` is what a model must be created with.
    """
    if kind not in KINDS:
        raise ValidationError(f"unknown tokenizer {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "byte":
        return ByteTokenizer()
    if not isinstance(vocab_size, int) or not MIN_VOCAB <= vocab_size <= 1 << 20:
        raise ValidationError(
            f"{kind} tokenizer needs a vocabulary size from {MIN_VOCAB} to {1 << 20}, "
            f"got {vocab_size!r}"
        )
    _encode_utf8(text)
    if kind == "char":
        counts = Counter(c for c in text if ord(c) >= 128)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab_size - MIN_VOCAB]
        return CharTokenizer("".join(sorted(c for c, _ in top)))
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(_pieces(text, 1 << 20), trainer)
    tok = BPETokenizer(hf.to_str())
    if tok.vocab_size > vocab_size:  # the engine never overshoots; guard the model's V anyway
        raise ValidationError(f"bpe training gave {tok.vocab_size} tokens, more than {vocab_size}")
    return tok


def _pieces(text: str, size: int):
    """``text`` in slices of about ``size`` characters cut after a newline (bounded memory in the
    trainer; its words never span a newline anyway, except runs of blank space)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size) + 1 or len(text)
        yield text[start:end]
        start = end


def tokenizer_from_json(s: str) -> Tokenizer:
    """Rebuild a tokenizer from ``to_json()``; ``ValidationError`` on anything malformed."""
    try:
        d = schema.loads(s, "tokenizer definition")  # depth-limited: files may be hostile
    except (ValueError, TypeError) as err:
        raise ValidationError(f"tokenizer definition is not valid JSON ({err})") from None
    if not isinstance(d, dict) or d.get("version") != 1 or d.get("kind") not in KINDS:
        raise ValidationError("tokenizer definition: unknown kind or version")
    kind = d["kind"]
    if kind == "byte":
        return ByteTokenizer()
    key = "chars" if kind == "char" else "hf"
    if not isinstance(d.get(key), str):
        raise ValidationError(f"tokenizer definition: {kind} needs a string {key!r}")
    return CharTokenizer(d["chars"]) if kind == "char" else BPETokenizer(d["hf"])


class StreamDecoder:
    """Turns ids fed one at a time into text pieces; an incomplete UTF-8 sequence is held until
    its last byte arrives. ``"".join(feed(i) for i in ids) + flush() == tok.decode(ids)``."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        token_id = int(token_id)
        if not 0 <= token_id < self.tok.vocab_size:
            raise ValidationError(f"token id {token_id} is outside [0, {self.tok.vocab_size})")
        return self._dec.decode(self.tok.token_bytes[token_id])

    def flush(self) -> str:
        """Whatever is still held (an unfinished sequence becomes U+FFFD)."""
        return self._dec.decode(b"", final=True)
