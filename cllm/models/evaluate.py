"""Score models on one shared text: mean cross-entropy per token (nats) and perplexity.

Every token of the text after the first is predicted once, from the tokens before it in its
window: the text is cut into consecutive windows of the model's context length (the last one
shorter), so models with different contexts each see the whole text. Comparing models with
different tokenizers by loss per token is not like for like; `bits_per_byte` (loss over the text's
UTF-8 bytes) is comparable across tokenizers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cllm.errors import ValidationError

MAX_TEXT_BYTES = 64 << 20  # a larger file is cut here (and says so)
BATCH_ROWS = 8


@dataclass
class EvalResult:
    name: str
    tokens: int  # tokens predicted
    loss: float  # mean cross-entropy per predicted token, in nats
    perplexity: float  # exp(loss)
    bits_per_byte: float  # total loss in bits over the text's UTF-8 bytes
    text_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def read_text(path: Path | str) -> tuple[str, int]:
    """The file's text (UTF-8, invalid bytes replaced) and its size in bytes, up to the limit."""
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"no text file {p}")
    with open(p, "rb") as f:
        data = f.read(MAX_TEXT_BYTES)
    return data.decode("utf-8", errors="replace"), len(data)


def evaluate(lm, text: str, *, name: str | None = None) -> EvalResult:
    """Score a LanguageModel on text (see the module docstring)."""
    ids = np.asarray(lm.tokenizer.encode(text), np.int64)
    if len(ids) < 2:
        raise ValidationError(
            f"the text is too short to score: {len(ids)} token(s), at least 2 are needed"
        )
    T = int(lm.config.block_size)
    total, count = 0.0, 0
    # windows of T + 1 tokens that overlap by one: each token after the first is a target once
    starts = list(range(0, len(ids) - 1, T))
    full = [s for s in starts if s + T + 1 <= len(ids)]
    for i in range(0, len(full), BATCH_ROWS):
        rows = np.stack([ids[s : s + T + 1] for s in full[i : i + BATCH_ROWS]])
        loss = float(lm.gpt.forward(rows[:, :-1], rows[:, 1:]))
        total += loss * rows.shape[0] * T
        count += rows.shape[0] * T
    tail = [s for s in starts if s + T + 1 > len(ids)]
    for s in tail:  # the last, shorter window
        row = ids[s:][None, :]
        n = row.shape[1] - 1
        if n >= 1:
            total += float(lm.gpt.forward(row[:, :-1], row[:, 1:])) * n
            count += n
    loss = total / count
    n_bytes = len(text.encode("utf-8"))
    return EvalResult(
        name=name or lm.name,
        tokens=count,
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_byte=total / math.log(2) / max(1, n_bytes),
        text_bytes=n_bytes,
    )
