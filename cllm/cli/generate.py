"""`python -m cllm generate NAME PROMPT ...`: print a model's continuation as it streams.

``add_sampling_args`` and ``sampling_of`` are the sampling options shared with ``cllm chat``.
"""

from __future__ import annotations

import argparse
import sys

from cllm.cli import add_models_dir, models_dir_of
from cllm.cli.common import first_token_hint

# built-in values of the options a preset can set (a preset, then an explicit option, wins)
BASE = {"temperature": 0.8, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.0}
PRESET_NAMES = ("precise", "balanced", "creative")  # cllm.engine.chat.PRESETS


def add_sampling_args(p: argparse.ArgumentParser, max_tokens: int = 200) -> None:
    p.add_argument(
        "--max-tokens", type=int, default=max_tokens, help=f"new tokens at most ({max_tokens})"
    )
    p.add_argument("--preset", choices=PRESET_NAMES, help="a named set of the options below")
    p.add_argument("--temperature", type=float, help="0 is greedy (0.8)")
    p.add_argument("--top-k", type=int, help="0 turns it off (50)")
    p.add_argument("--top-p", type=float, help="1 turns it off (0.9)")
    p.add_argument(
        "--repetition-penalty", type=float, help="above 1 makes repeats less likely (1: off)"
    )
    p.add_argument("--seed", type=int, default=None, help="repeatable sampling")
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop before TEXT (repeatable; \\n is a newline)",
    )


def sampling_of(args: argparse.Namespace):
    from cllm.engine.chat import PRESETS, Sampling

    values = dict(BASE)
    if args.preset:
        values.update(PRESETS[args.preset])
    for key in BASE:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    stops = tuple(s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop)
    return Sampling(max_tokens=args.max_tokens, seed=args.seed, stop=stops, **values).check()


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="continue a prompt with a model, streaming tokens")
    p.add_argument("name", help="model name (models/<NAME>.cllm)")
    p.add_argument("prompt", help="text to continue ('' starts a new document)")
    add_sampling_args(p)
    p.add_argument(
        "--quant",
        choices=("none", "int8"),
        default="none",
        help="weights for decoding: int8 reads a quarter of the bytes (default none)",
    )
    add_models_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cllm.engine.chat import complete
    from cllm.models.registry import (
        Registry,  # the engine loads numba kernels: only when this command runs
    )

    sampling = sampling_of(args)
    lm = Registry(models_dir_of(args)).load(args.name)
    lm.check_finite("generate")
    if args.quant != "none":  # a copy for generation: the model file is not touched
        lm.gpt.set_quant(args.quant)
    for piece in first_token_hint(complete(lm.gpt, lm.tokenizer, args.prompt, sampling)):
        write(piece)
    write("\n")
    return 0


def write(text: str) -> None:
    # a terminal that cannot show a character gets a replacement, not a traceback
    out = sys.stdout
    try:
        out.write(text)
    except UnicodeEncodeError:
        enc = out.encoding or "utf-8"
        out.write(text.encode(enc, errors="replace").decode(enc))
    out.flush()
