"""`python -m cllm generate NAME PROMPT ...`: print a model's continuation as it streams."""

from __future__ import annotations

import argparse
import sys

from cllm.cli import add_models_dir, models_dir_of


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="continue a prompt with a model, streaming tokens")
    p.add_argument("name", help="model name (models/<NAME>.cllm)")
    p.add_argument("prompt", help="text to continue ('' starts a new document)")
    p.add_argument("--max-tokens", type=int, default=200, help="new tokens at most (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="0 turns it off (default 50)")
    p.add_argument("--top-p", type=float, default=0.9, help="1 turns it off (default 0.9)")
    p.add_argument("--seed", type=int, default=None, help="repeatable sampling")
    p.add_argument(
        "--quant",
        choices=("none", "int8"),
        default="none",
        help="weights for decoding: int8 reads a quarter of the bytes (default none)",
    )
    add_models_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cllm.models.registry import (
        Registry,  # the engine loads numba kernels: only when this command runs
    )

    lm = Registry(models_dir_of(args)).load(args.name)
    if args.quant != "none":  # a copy for generation: the model file is not touched
        lm.gpt.set_quant(args.quant)
    pieces = lm.generate(
        args.prompt,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    for piece in pieces:
        _write(piece)
    _write("\n")
    return 0


def _write(text: str) -> None:
    # a terminal that cannot show a character gets a replacement, not a traceback
    out = sys.stdout
    try:
        out.write(text)
    except UnicodeEncodeError:
        enc = out.encoding or "utf-8"
        out.write(text.encode(enc, errors="replace").decode(enc))
    out.flush()
