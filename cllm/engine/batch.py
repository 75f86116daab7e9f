"""Continuous batching: many streams decoded together, each in its own key-value cache slot.

    dec = BatchDecoder(gpt, max_streams=8)
    a = dec.add(prompt_ids, max_new_tokens=64, temperature=0.0)   # its prompt runs now
    while dec.active:
        for ev in dec.step():          # one token for every active stream, in one model call
            print(ev.stream, ev.token, ev.done)
        # between steps: dec.add(...) joins a free slot, dec.cancel(a) leaves at once

Streams may sit at different lengths; a step runs every active stream's next token through
``GPT.step`` at once, so the weights are read once for all of them (decoding is bound by that
reading), and the streams are shared out among the engine's threads. A finished stream frees its
slot for the next ``add``. Under greedy decoding each stream gets the tokens that
``generate.sample_stream`` gives it alone: a row's arithmetic does not depend on its neighbours
(bit for bit on one thread; see ``GPT.step`` for several).

Not thread-safe: one thread drives a decoder (a server's loop), others hand it work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cllm.engine.generate import sample_next
from cllm.errors import ValidationError


@dataclass(frozen=True)
class Event:
    """What a step did for one stream: ``token`` (None when it ended on end-of-text) and whether
    the stream is done, with ``reason`` "stop" (end-of-text) or "length" (max_new_tokens made).
    A cancelled stream just leaves: no event."""

    stream: int
    token: int | None
    done: bool
    reason: str | None = None


@dataclass
class _Stream:
    sid: int
    slot: int
    ctx: list[int]
    max_new: int
    temperature: float
    top_k: int
    top_p: float
    eot_id: int | None
    rng: np.random.Generator
    logits: np.ndarray
    penalty: float = 1.0
    made: int = 0
    pos: int = 0  # tokens in the cache slot


class BatchDecoder:
    """Up to ``max_streams`` streams of one model decoded together (see the module docstring)."""

    def __init__(self, gpt, max_streams: int = 8):
        if not 1 <= max_streams <= 1024:
            raise ValidationError(f"max streams must be from 1 to 1024, got {max_streams}")
        self.gpt = gpt
        self.cache = gpt.new_cache(max_streams)
        self._free = list(range(max_streams))[::-1]
        self._streams: dict[int, _Stream] = {}
        self._next_id = 0

    @property
    def active(self) -> int:
        return len(self._streams)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def add(
        self,
        prompt_ids: Sequence[int] | np.ndarray,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int = 50,
        top_p: float = 0.9,
        seed: int | None = None,
        eot_id: int | None = None,
        repetition_penalty: float = 1.0,
    ) -> int:
        """Start a stream: its prompt (the last block_size tokens of it) runs now, into a free
        slot. Returns the stream's id. Raises ValidationError when every slot is taken. The
        arguments mean what they mean to ``generate.sample_stream``."""
        if not self._free:
            raise ValidationError(f"all {self.cache.batch} streams are busy")
        if max_new_tokens < 1:
            raise ValidationError(f"max new tokens must be at least 1, got {max_new_tokens}")
        C = self.gpt.config.block_size
        ctx = [int(t) for t in np.asarray(prompt_ids).reshape(-1)][-C:]
        if not ctx:
            if eot_id is None:
                raise ValidationError("the prompt is empty")
            ctx = [int(eot_id)]
        slot = self._free[-1]
        logits = self._run_prompt(ctx, slot)
        self._free.pop()
        sid = self._next_id
        self._next_id += 1
        rng = np.random.default_rng(seed)
        st = _Stream(sid, slot, ctx, int(max_new_tokens), temperature, top_k, top_p, eot_id, rng,
                     logits, float(repetition_penalty), pos=len(ctx))  # fmt: skip
        self._streams[sid] = st
        return sid

    def _run_prompt(self, ctx: list[int], slot: int) -> np.ndarray:
        """Run ctx into ``slot`` from position 0; the next token's logits. One token takes the
        one-token step, as ``GPT.decode`` does for a stream alone, so the logits are the same."""
        if len(ctx) == 1:
            return self.gpt.step(ctx, self.cache, [slot], [0])[0]
        return self.gpt.prefill(np.array(ctx, np.int32), self.cache, slot, last=True)

    def cancel(self, sid: int) -> None:
        """End a stream now and free its slot (a no-op for an unknown or finished stream)."""
        st = self._streams.pop(sid, None)
        if st is not None:
            self._free.append(st.slot)

    def step(self) -> list[Event]:
        """One token for every active stream; finished streams leave and free their slots."""
        C = self.gpt.config.block_size
        events, feed = [], []
        for st in list(self._streams.values()):
            tok = sample_next(
                st.logits, st.temperature, st.top_k, st.top_p, st.rng, st.ctx, st.penalty
            )
            if st.eot_id is not None and tok == st.eot_id:
                events.append(Event(st.sid, None, True, "stop"))
                self.cancel(st.sid)
                continue
            st.made += 1
            if st.made >= st.max_new:
                events.append(Event(st.sid, tok, True, "length"))
                self.cancel(st.sid)
                continue
            events.append(Event(st.sid, tok, False))
            st.ctx.append(tok)
            if st.pos >= C:  # the slot is full: keep the last half of the text and run it again
                st.ctx = st.ctx[-(C // 2) :] if C > 1 else st.ctx[-1:]
                st.logits = self._run_prompt(st.ctx, st.slot)
                st.pos = len(st.ctx)
            else:
                feed.append(st)
        if feed:
            logits = self.gpt.step(
                [st.ctx[-1] for st in feed],
                self.cache,
                [st.slot for st in feed],
                [st.pos for st in feed],
            )
            for st, row in zip(feed, logits, strict=True):
                st.logits = row
                st.pos += 1
        return events


def generate_batch(
    gpt,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    max_streams: int = 8,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    eot_id: int | None = None,
) -> list[list[int]]:
    """The new tokens of every prompt, decoded ``max_streams`` at a time: when one finishes,
    the next prompt takes its slot (continuous batching). Prompt i samples with seed + i."""
    dec = BatchDecoder(gpt, min(max_streams, max(1, len(prompts))))
    out: list[list[int]] = [[] for _ in prompts]
    owner: dict[int, int] = {}
    nxt = 0
    while nxt < len(prompts) or dec.active:
        while nxt < len(prompts) and dec.free_slots:
            s = None if seed is None else seed + nxt
            sid = dec.add(prompts[nxt], max_new_tokens, temperature, top_k, top_p, s, eot_id)
            owner[sid] = nxt
            nxt += 1
        for ev in dec.step():
            if ev.token is not None:
                out[owner[ev.stream]].append(ev.token)
    return out
