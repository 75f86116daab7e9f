"""Chat on a plain language model: the turn format, the context window, stop sequences, presets.

A model here is trained on plain text, so a conversation is plain text too, one turn after
another, each on its own line(s) after a marker, and the prompt ends with the marker of the turn
the model is to write::

    You are a helpful poet.            <- a system message, if any, as a plain first line
    User: Write about the sea.
    Assistant: The sea is wide.
    User: And the sky?
    Assistant:

The reply is what the model writes after ``Assistant:`` (its first space dropped), up to the next
``\\nUser:`` (the default stop sequence), end-of-text, or the token limit. When the conversation
no longer fits the context window, the oldest turns are left out (system messages stay), and the
context says how many (``ChatContext.dropped``); a last message too long on its own keeps its end.

The studio's LLM tab, ``cllm chat``, ``cllm generate`` and ``cllm serve`` all use this module, so
they build the same context and stop at the same places.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cllm.engine.generate import sample_stream
from cllm.engine.tokenizer import StreamDecoder
from cllm.errors import ValidationError

USER, ASSISTANT = "User:", "Assistant:"
ROLES = ("system", "user", "assistant")
DEFAULT_STOP = ("\n" + USER,)
MAX_STOPS = 4  # as OpenAI's API
MAX_STOP_CHARS = 256
MAX_TOKENS = 1_000_000

# Named sampling settings, from careful to adventurous (the studio's buttons, `--preset`).
PRESETS: dict[str, dict] = {
    "precise": dict(temperature=0.3, top_k=20, top_p=0.85, repetition_penalty=1.15),
    "balanced": dict(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.1),
    "creative": dict(temperature=1.1, top_k=0, top_p=0.97, repetition_penalty=1.05),
}


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class Sampling:
    """How to sample: checked once (``check``), shared by every front end."""

    max_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def check(self) -> Sampling:
        if not _is_int(self.max_tokens) or not 1 <= self.max_tokens <= MAX_TOKENS:
            raise ValidationError(
                f"max tokens must be an integer from 1 to {MAX_TOKENS}, got {self.max_tokens!r}"
            )
        t = self.temperature
        if not _is_num(t) or not 0 <= t <= 100 or t != t:
            raise ValidationError(f"temperature must be from 0 (greedy) to 100, got {t!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValidationError(f"top-k must be an integer >= 0 (0: off), got {self.top_k!r}")
        if not _is_num(self.top_p) or not 0 < self.top_p <= 1:
            raise ValidationError(f"top-p must be in (0, 1] (1: off), got {self.top_p!r}")
        r = self.repetition_penalty
        if not _is_num(r) or not 0.1 <= r <= 10:
            raise ValidationError(f"repetition penalty must be from 0.1 to 10 (1: off), got {r!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise ValidationError(f"seed must be a non-negative integer, got {self.seed!r}")
        stops = self.stop
        if not isinstance(stops, tuple) or len(stops) > MAX_STOPS + len(DEFAULT_STOP):
            raise ValidationError(f"at most {MAX_STOPS} stop sequences")
        for s in stops:
            if not isinstance(s, str) or not 1 <= len(s) <= MAX_STOP_CHARS:
                raise ValidationError(
                    f"a stop sequence must be a non-empty string of at most {MAX_STOP_CHARS} "
                    f"characters, got {s!r:.40}"
                )
        return self

    def with_preset(self, name: str) -> Sampling:
        key = name.lower()
        if key not in PRESETS:
            raise ValidationError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return replace(self, **PRESETS[key])


# ----------------------------------------------------------------------------------- context


def format_turn(role: str, text: str) -> str:
    """One turn of the conversation as the model sees it (a line or more, ending in ``\\n``)."""
    if role == "system":
        return text + "\n"
    if role == "user":
        return f"{USER} {text}\n"
    if role == "assistant":
        return f"{ASSISTANT} {text}\n"
    raise ValidationError(f"unknown role {role!r}; a message is one of {', '.join(ROLES)}")


def check_messages(messages: Sequence) -> list[tuple[str, str]]:
    """``[{"role", "content"}, ...]`` (or (role, text) pairs) -> [(role, text)], refused when
    malformed. The studio's "model" role is the assistant."""
    out = []
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValidationError("messages must be a non-empty list")
    for m in messages:
        if isinstance(m, dict):
            role, text = m.get("role"), m.get("content", m.get("text"))
        elif isinstance(m, (tuple, list)) and len(m) == 2:
            role, text = m
        else:
            raise ValidationError("each message must have a role and a content")
        role = "assistant" if role == "model" else role
        if role not in ROLES:
            raise ValidationError(f"unknown role {role!r}; a message is one of {', '.join(ROLES)}")
        if not isinstance(text, str):
            raise ValidationError(f"a {role} message's content must be a string")
        out.append((role, text))
    return out


@dataclass
class ChatContext:
    ids: np.ndarray  # the prompt's token ids, ending with the assistant marker
    prompt: str  # their text
    kept: int  # messages in the context
    dropped: int  # earlier messages left out for room (system messages are never dropped)
    truncated: bool  # the newest message itself was cut to its end


def build_context(tokenizer, messages: Sequence, block_size: int, reserve: int) -> ChatContext:
    """The prompt for the model's next reply: as many of the newest turns as fit in
    ``block_size - reserve`` tokens (``reserve``: room kept for the reply, at most half the
    window), system messages always, then ``Assistant:``."""
    msgs = check_messages(messages)
    budget = max(1, block_size - min(max(0, int(reserve)), block_size // 2))
    system = "".join(format_turn(r, t) for r, t in msgs if r == "system")
    turns = [format_turn(r, t) for r, t in msgs if r != "system"]
    n_sys = len(tokenizer.encode(system)) if system else 0
    n_tail = len(tokenizer.encode(ASSISTANT))
    lengths = [len(tokenizer.encode(t)) for t in turns]
    first, total = len(turns), n_sys + n_tail
    while first > 0 and (first == len(turns) or total + lengths[first - 1] <= budget):
        total += lengths[first - 1]  # the newest turn always goes in, cut below if it must
        first -= 1
    prompt = system + "".join(turns[first:]) + ASSISTANT
    ids = tokenizer.encode(prompt)
    truncated = len(ids) > budget
    if truncated:  # keep the system part and the end of the rest
        head = tokenizer.encode(system) if system and n_sys < budget // 2 else ids[:0]
        ids = np.concatenate([head, ids[len(ids) - (budget - len(head)) :]])
        prompt = tokenizer.decode(ids)
    return ChatContext(ids, prompt, len(turns) - first, first, truncated)


def completion_ids(tokenizer, prompt: str) -> np.ndarray:
    """A plain continuation's prompt ids; an empty prompt starts a new document."""
    ids = tokenizer.encode(prompt)
    return ids if len(ids) else np.array([tokenizer.eot_id], np.int32)


# --------------------------------------------------------------------------------- generation


@dataclass(eq=False)  # compared by identity
class Generation:
    """Text pieces of one continuation of ``ids``, stopped at the first stop sequence (which is
    not part of the text), at end-of-text, after ``max_tokens`` tokens, or when ``cancel`` is
    set. Iterate it once (or drive it with start/feed/end); afterwards ``text``,
    ``finish_reason`` ("stop", "length" or "cancelled") and ``completion_tokens`` say how it
    ended.

    A piece that might be the start of a stop sequence is held back until it is known not to be,
    so no stop sequence, or part of one, is ever shown."""

    gpt: object
    tokenizer: object
    ids: np.ndarray
    sampling: Sampling
    cancel: threading.Event | None = None
    strip_leading_space: bool = False  # a chat reply drops the space after "Assistant:"
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    on_token: Callable[[int], None] | None = None  # called with each token as it is sampled
    prompt_tokens: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.sampling.check()
        self.prompt_tokens = int(len(self.ids))

    def sample_args(self) -> dict:
        """What to sample with, as ``sample_stream`` and ``BatchDecoder.add`` take it (after the
        prompt ids)."""
        s = self.sampling
        return dict(
            max_new_tokens=s.max_tokens,
            temperature=float(s.temperature),
            top_k=int(s.top_k),
            top_p=float(s.top_p),
            seed=s.seed,
            eot_id=self.tokenizer.eot_id,
            repetition_penalty=float(s.repetition_penalty),
        )

    def __iter__(self) -> Iterator[str]:
        stream = sample_stream(self.gpt, self.ids, stop=self.cancel, **self.sample_args())
        self.start()
        try:
            for tok in stream:
                out = self.feed(tok)
                if out:
                    yield out
                if self.stopped:
                    break
        finally:
            stream.close()
        out = self.end()
        if out:
            yield out

    # Driven token by token (a batched decoder samples the tokens; ``__iter__`` is these three
    # over ``sample_stream``): start(), then feed(token) for each until ``stopped`` or no more
    # tokens, then end().

    def start(self) -> None:
        self._scan = StopScanner(self.sampling.stop)
        self._dec = StreamDecoder(self.tokenizer)
        self._started = not self.strip_leading_space  # a first piece of only spaces is dropped

    def feed(self, tok: int) -> str:
        """Take the next sampled token; the text that can be shown now ("" if none)."""
        self.completion_tokens += 1
        if self.on_token is not None:
            self.on_token(tok)
        piece = self._dec.feed(tok)
        if not self._started:
            piece = piece.lstrip(" ")
            self._started = bool(piece)
        return self._scan.feed(piece)

    @property
    def stopped(self) -> bool:
        """A stop sequence has ended the text: feed no more tokens."""
        return self._scan.stopped

    def end(self) -> str:
        """No more tokens: the text still held back; sets ``text`` and ``finish_reason``."""
        scan, out = self._scan, ""
        if not scan.stopped:
            tail = self._dec.flush()
            out = scan.feed(tail if self._started else tail.lstrip(" "))
        out += scan.finish()
        self.text = scan.text
        if scan.stopped:
            self.finish_reason = "stop"
        elif self.completion_tokens >= self.sampling.max_tokens:
            self.finish_reason = "length"
        elif self.cancel is not None and self.cancel.is_set():
            self.finish_reason = "cancelled"
        else:
            self.finish_reason = "stop"  # end-of-text
        return out

    def run(self) -> str:
        """Generate it all; the text."""
        for _ in self:
            pass
        return self.text


class StopScanner:
    """Streams text while watching for stop sequences: ``feed(piece)`` returns what can be shown
    now, holding back an end that might begin a stop; once a stop is seen, ``stopped`` is set and
    the text ends before it. ``text`` is everything shown (after ``finish``)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(dict.fromkeys(x for x in stops if x))
        self.longest = max((len(x) for x in self.stops), default=0)
        self._buf = ""  # everything fed, up to the stop once found
        self._shown = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        self._buf += piece
        start = max(0, self._shown - self.longest)
        found = [i for i in (self._buf.find(x, start) for x in self.stops) if i >= 0]
        if found:
            self.stopped = True
            self._buf = self._buf[: min(found)]
            return self._take(len(self._buf))
        return self._take(len(self._buf) - self._held())

    def finish(self) -> str:
        """The text held back at the end (no stop can complete any more)."""
        return self._take(len(self._buf))

    @property
    def text(self) -> str:
        return self._buf[: self._shown]

    def _take(self, end: int) -> str:
        out = self._buf[self._shown : end] if end > self._shown else ""
        self._shown = max(self._shown, end)
        return out

    def _held(self) -> int:
        """How many characters at the end (not yet shown) could begin a stop sequence."""
        buf, best = self._buf, 0
        for x in self.stops:
            for k in range(min(len(x) - 1, len(buf) - self._shown), best, -1):
                if x.startswith(buf[len(buf) - k :]):
                    best = k
                    break
        return best


def chat(
    gpt,
    tokenizer,
    messages: Sequence,
    sampling: Sampling,
    cancel: threading.Event | None = None,
    on_token: Callable[[int], None] | None = None,
) -> tuple[ChatContext, Generation]:
    """The context for the next reply and the reply's ``Generation`` (stopping at the next user
    turn as well as at ``sampling.stop``)."""
    sampling = sampling.check()
    ctx = build_context(tokenizer, messages, gpt.config.block_size, sampling.max_tokens)
    stops = tuple(dict.fromkeys(DEFAULT_STOP + tuple(sampling.stop)))
    gen = Generation(
        gpt,
        tokenizer,
        ctx.ids,
        replace(sampling, stop=stops),
        cancel,
        strip_leading_space=True,
        on_token=on_token,
    )
    return ctx, gen


def complete(
    gpt,
    tokenizer,
    prompt: str,
    sampling: Sampling,
    cancel: threading.Event | None = None,
) -> Generation:
    """A plain continuation of ``prompt`` (stopping only at ``sampling.stop``)."""
    return Generation(gpt, tokenizer, completion_ids(tokenizer, prompt), sampling.check(), cancel)
