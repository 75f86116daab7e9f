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
import threading
from collections import Counter
from collections.abc import Iterable

import numpy as np
from numba import njit

from cllm.engine import schema
from cllm.errors import ValidationError

EOT = "<|endoftext|>"
KINDS = ("bpe", "byte", "char")
MIN_VOCAB = 257  # 256 byte values + end-of-text: every kind can spell any byte string
# A long text is encoded in chunks cut after a lone "\n" between two visible ASCII characters:
# the GPT-2 pre-tokenizer cuts there too (whatever its Unicode tables say of other characters),
# so the ids are identical to encoding it whole.
_CHUNK_SPLIT = re.compile(r"(?<=[!-~]\n)(?=[!-~])")
CHUNKED_FROM = 65536  # characters
CHUNK_CHARS = 16384
FAST_CHUNK_CHARS = 1 << 20  # the fast path's chunks bound its working arrays (~20 bytes a char)

# GPT-2's pre-tokenizer pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
# \s+(?!\S)|\s+, as a compiled scan (``_split``) over the text's code points. It needs each
# character's class: letter, number, space or other. ASCII's are fixed; any other character's is
# asked of the engine's own pre-tokenizer the first time it is met, so the engine's Unicode
# tables decide, not Python's.
LETTER, NUMBER, SPACE, OTHER, UNKNOWN = 0, 1, 2, 3, 255


def _ascii_classes() -> np.ndarray:
    table = np.full(0x110000, UNKNOWN, np.uint8)
    table[:128] = OTHER
    for lo, hi in ((65, 90), (97, 122)):
        table[lo : hi + 1] = LETTER
    table[48:58] = NUMBER
    table[[9, 10, 11, 12, 13, 32]] = SPACE
    return table


@njit(nogil=True, cache=True)
def _split(cp: np.ndarray, cls: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Where GPT-2's pattern ends each piece of the text with code points ``cp``: the first
    alternative that matches at each position wins, as in the regular expression."""
    n = cp.shape[0]
    ends = np.empty(n, np.int64)
    k = 0
    i = 0
    while i < n:
        c = cp[i]
        j = i + 1
        if c == 39 and i + 1 < n:  # the contractions 's 't 're 've 'm 'll 'd
            a = cp[i + 1]
            b = cp[i + 2] if i + 2 < n else 0
            if a == 115 or a == 116 or a == 109 or a == 100:  # s t m d
                j = i + 2
            elif (a == 114 or a == 118) and b == 101:  # re ve
                j = i + 3
            elif a == 108 and b == 108:  # ll
                j = i + 3
        if j == i + 1:
            k0 = cls[c]
            start = i
            if c == 32 and i + 1 < n and cls[cp[i + 1]] != SPACE:  # " ?" then a run
                start = i + 1
                k0 = cls[cp[start]]
            if k0 != SPACE:  # a run of letters, of numbers, or of others
                j = start + 1
                while j < n and cls[cp[j]] == k0:
                    j += 1
            else:  # spaces: all of them at the end or before more spaces, else all but the last
                j = i + 1
                while j < n and cls[cp[j]] == SPACE:
                    j += 1
                if j < n and j - i > 1:
                    j -= 1
        ends[k] = j
        k += 1
        i = j
    return ends[:k]


@njit(nogil=True, cache=True)
def _hash(cp: np.ndarray, a: int, b: int) -> np.uint64:  # pragma: no cover - compiled
    h = np.uint64(14695981039346656037)  # FNV-1a over the code points
    for i in range(a, b):
        h = (h ^ np.uint64(cp[i])) * np.uint64(1099511628211)
    return h


@njit(nogil=True, cache=True)
def _find(cp, a, b, slots, kstart, klen, kcp):  # pragma: no cover - compiled
    """(entry, slot): the table's entry for the word cp[a:b] (-1 if absent) and its slot."""
    mask = slots.shape[0] - 1
    s = np.int64(_hash(cp, a, b) & np.uint64(mask))
    while True:
        e = slots[s]
        if e < 0:
            return -1, s
        if klen[e] == b - a:
            k = kstart[e]
            same = True
            for t in range(b - a):
                if kcp[k + t] != cp[a + t]:
                    same = False
                    break
            if same:
                return e, s
        s = (s + 1) & mask


@njit(nogil=True, cache=True)
def _lookup(cp, ends, slots, kstart, klen, kcp):  # pragma: no cover - compiled
    found = np.empty(ends.shape[0], np.int64)
    a = 0
    for p in range(ends.shape[0]):
        found[p] = _find(cp, a, ends[p], slots, kstart, klen, kcp)[0]
        a = ends[p]
    return found


@njit(nogil=True, cache=True)
def _gather(found, vstart, vlen, vids):  # pragma: no cover - compiled
    total = 0
    for p in range(found.shape[0]):
        total += vlen[found[p]]
    out = np.empty(total, np.int32)
    o = 0
    for p in range(found.shape[0]):
        e = found[p]
        for t in range(vstart[e], vstart[e] + vlen[e]):
            out[o] = vids[t]
            o += 1
    return out


@njit(nogil=True, cache=True)
def _rehash(slots, kstart, klen, kcp, n):  # pragma: no cover - compiled
    """The first ``n`` entries placed again in a larger ``slots``."""
    mask = slots.shape[0] - 1
    for e in range(n):
        a = kstart[e]
        s = np.int64(_hash(kcp, a, a + klen[e]) & np.uint64(mask))
        while slots[s] >= 0:
            s = (s + 1) & mask
        slots[s] = e
    return slots


@njit(nogil=True, cache=True)
def _insert(cp, starts, ends, ids, id_ends, t, used):  # pragma: no cover - compiled
    """Store the words cp[starts[i]:ends[i]] -> ids[id_ends[i-1]:id_ends[i]] that are not there
    yet; ``t``: the table's arrays (room made beforehand), ``used``: entries, code points and
    ids in use. Returns each word's entry."""
    slots, kstart, klen, kcp, vstart, vlen, vids = t
    out = np.empty(starts.shape[0], np.int64)
    i0 = 0
    for w in range(starts.shape[0]):
        a, b, i1 = starts[w], ends[w], id_ends[w]
        e, slot = _find(cp, a, b, slots, kstart, klen, kcp)
        if e < 0:
            e = used[0]
            kstart[e], klen[e], vstart[e], vlen[e] = used[1], b - a, used[2], i1 - i0
            kcp[used[1] : used[1] + b - a] = cp[a:b]
            vids[used[2] : used[2] + i1 - i0] = ids[i0:i1]
            slots[slot] = e
            used[0] += 1
            used[1] += b - a
            used[2] += i1 - i0
        out[w] = e
        i0 = i1
    return out


class _Words:
    """Each word met so far -> the engine's ids for it, in flat arrays that the compiled lookup
    reads (no Python string is made for a word that is already known). The arrays double as
    words come, up to MAX_ENTRIES words (some 200 MB); then the table starts over."""

    MAX_ENTRIES = 1 << 20

    def __init__(self) -> None:
        self.generation = -1
        self.clear()

    def clear(self, entries: int = 1 << 12) -> None:
        self.slots = np.full(2 * entries, -1, np.int64)
        self.kstart, self.klen = np.zeros(entries, np.int64), np.zeros(entries, np.int64)
        self.vstart, self.vlen = np.zeros(entries, np.int64), np.zeros(entries, np.int64)
        self.kcp = np.zeros(16 * entries, np.uint32)  # the words' code points, end to end
        self.vids = np.zeros(16 * entries, np.int32)  # their ids, end to end
        self.used = np.zeros(3, np.int64)  # entries, code points, ids
        self.generation += 1

    def room(self, need_e: int, need_k: int, need_v: int) -> bool:
        """Make room for need_e more words of need_k code points and need_v ids in all, doubling
        what is short; False (and nothing changed) past MAX_ENTRIES words."""
        e, k, v = self.used.tolist()
        if e + need_e > self.MAX_ENTRIES:
            return False
        n = len(self.kstart)
        if e + need_e > n:
            while e + need_e > n:
                n *= 2
            for name in ("kstart", "klen", "vstart", "vlen"):
                old = getattr(self, name)
                setattr(self, name, np.concatenate([old, np.zeros(n - len(old), np.int64)]))
            self.slots = _rehash(np.full(2 * n, -1, np.int64), self.kstart, self.klen, self.kcp, e)
        for name, need in (("kcp", k + need_k), ("vids", v + need_v)):
            old = getattr(self, name)
            if need > len(old):
                size = max(2 * len(old), need)
                setattr(self, name, np.concatenate([old, np.zeros(size - len(old), old.dtype)]))
        return True

    def __len__(self) -> int:
        return int(self.used[0])

    def lookup(self, cp: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return _lookup(cp, ends, self.slots, self.kstart, self.klen, self.kcp)

    def add(self, cp, starts: np.ndarray, ends: np.ndarray, ids: list[np.ndarray]) -> np.ndarray:
        """Each word's entry, the new ones stored (room must have been made)."""
        id_ends = np.cumsum([len(x) for x in ids], dtype=np.int64)
        flat = np.concatenate(ids) if ids else np.empty(0, np.int32)
        t = (self.slots, self.kstart, self.klen, self.kcp, self.vstart, self.vlen, self.vids)
        return _insert(cp, starts, ends, flat, id_ends, t, self.used)

    def gather(self, found: np.ndarray) -> np.ndarray:
        return _gather(found, self.vstart, self.vlen, self.vids)


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


# bytes seen as Latin-1 characters -> the byte-level alphabet (str.translate runs it in C)
_BYTE_LEVEL = {b: c for b, c in _bytes_to_unicode().items()}


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
        # the fast path (see encode) where the definition is GPT-2's byte-level BPE exactly
        self._fast = _gpt2_shaped(hf_json)
        # made at the first encode (a model loaded to chat or to be listed never needs them)
        self._words: _Words | None = None  # each word's ids, as the engine gave them
        self._classes: np.ndarray | None = None  # each code point's class, found when first met
        self._fast_lock = threading.Lock()

    def _state(self) -> dict:
        return {"hf": self._hf_json}

    def encode(self, text: str) -> np.ndarray:
        """The engine's ids for ``text``.

        The fast path gives the same ids faster: it splits the text with GPT-2's pattern (a
        compiled scan, see ``_split``) and looks each word up in a table of the ids that the
        engine's BPE model gave for it (``_Words``); only a word met for the first time reaches
        the engine. Where the tokenizer is not GPT-2's shape, the engine encodes it all, a long
        text as a batch of chunks in parallel."""
        _encode_utf8(text)
        size = FAST_CHUNK_CHARS if self._fast else CHUNK_CHARS
        chunks = [text] if len(text) < CHUNKED_FROM else _chunks(text, size)
        if self._fast:
            return np.concatenate([self._fast_ids(c) for c in chunks] or [np.empty(0, np.int32)])
        if len(chunks) == 1:
            return np.array(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int32)
        # the "fast" batch skips character offsets, which we never use
        batch = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        encs = batch(chunks, add_special_tokens=False)
        return np.concatenate([np.array(e.ids, dtype=np.int32) for e in encs])

    def _fast_ids(self, text: str) -> np.ndarray:
        cp = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        with self._fast_lock:  # the tables grow as words are met
            if self._words is None:
                self._words, self._classes = _Words(), _ascii_classes()
            cls = self._classes
            if not text.isascii():
                for c in np.unique(cp[cls[cp] == UNKNOWN]).tolist():  # characters met first now
                    cls[c] = self._class_of(chr(c))
            ends = _split(cp, cls)
            words = self._words
            for _ in range(2):  # a second time after the table started over
                found = words.lookup(cp, ends)
                missed = np.flatnonzero(found < 0)
                if not missed.size:
                    return words.gather(found)
                # words met for the first time: the engine's BPE model gives their ids, kept
                at: dict[str, list[int]] = {}  # each new word -> where it is in the text
                for p in missed.tolist():
                    at.setdefault(text[(int(ends[p - 1]) if p else 0) : int(ends[p])], []).append(p)
                first = np.array([ps[0] for ps in at.values()], np.int64)
                starts = np.where(first > 0, ends[first - 1], 0)
                ids = [self._bpe_word(w) for w in at]
                if words.room(len(at), int((ends[first] - starts).sum()), sum(map(len, ids))):
                    entries = words.add(cp, starts, ends[first], ids)
                    for e, ps in zip(entries.tolist(), at.values(), strict=True):
                        found[ps] = e
                    return words.gather(found)
                words.clear()  # full: start over
            # one text with more new words than the table holds: word by word, not kept
            e = ends.tolist()
            return np.concatenate(
                [self._bpe_word(text[a:b]) for a, b in zip([0, *e[:-1]], e, strict=True)]
            )

    def _bpe_word(self, word: str) -> np.ndarray:
        """A word's ids from the engine's BPE model: what the engine does to each pre-token."""
        mapped = word.encode("utf-8").decode("latin-1").translate(_BYTE_LEVEL)
        return np.array([t.id for t in self.hf.model.tokenize(mapped)], np.int32)

    def _class_of(self, c: str) -> int:
        """Character ``c``'s class in the engine's pre-tokenizer: a letter ("a" + c is one
        piece), a number ("1" + c is one), a space (c + c + "a" is three pieces) or other."""
        pieces = self.hf.pre_tokenizer.pre_tokenize_str
        if len(pieces("a" + c)) == 1:
            return LETTER
        if len(pieces("1" + c)) == 1:
            return NUMBER
        return SPACE if len(pieces(c + c + "a")) == 3 else OTHER


def _chunks(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, cut where the pre-tokenizer cuts too."""
    chunks, cur, n = [], [], 0
    for p in _CHUNK_SPLIT.split(text):
        cur.append(p)
        n += len(p)
        if n >= size:
            chunks.append("".join(cur))
            cur, n = [], 0
    if cur:
        chunks.append("".join(cur))
    return chunks


def _gpt2_shaped(hf_json: str) -> bool:
    """True when the definition is byte-level BPE with GPT-2's pre-tokenizer and nothing else
    (no normalizer, no dropout, no added tokens but special ones): the fast path's condition."""
    try:
        d = json.loads(hf_json)
        pre, model = d.get("pre_tokenizer") or {}, d.get("model") or {}
        return (
            d.get("normalizer") is None
            and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True) is True
            and not pre.get("add_prefix_space")
            and model.get("type") == "BPE"
            and not model.get("dropout")
            and not model.get("ignore_merges")
            and not model.get("byte_fallback")
            and all(t.get("special") for t in d.get("added_tokens") or [])
        )
    except (ValueError, AttributeError, TypeError):
        return False


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
