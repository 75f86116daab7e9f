"""`python -m cllm chat NAME`: an interactive chat in the terminal; replies stream.

The conversation is the context (cllm.engine.chat's turn format); when it no longer fits the
model's window the oldest turns are left out and a line says so. Lines starting with ``/`` are
commands: ``/reset`` forgets the conversation, ``/retry`` writes the last reply again,
``/quit`` (or end of input) leaves. Standard input that is not a terminal works too, one message
a line, so the command can be scripted.
"""

from __future__ import annotations

import argparse
import sys

from cllm.cli import add_models_dir, models_dir_of
from cllm.cli.common import first_token_hint
from cllm.cli.generate import add_sampling_args, sampling_of, write


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="chat with a model in the terminal, streaming replies")
    p.add_argument("name", help="model name (models/<NAME>.cllm)")
    p.add_argument("--system", default="", help="a first line that frames the conversation")
    add_sampling_args(p, max_tokens=120)
    add_models_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cllm.engine.chat import chat
    from cllm.models.registry import Registry

    sampling = sampling_of(args)
    lm = Registry(models_dir_of(args)).load(args.name)
    lm.check_finite("chat")
    tty = sys.stdin.isatty()
    base = [{"role": "system", "content": args.system}] if args.system else []
    history = list(base)
    if tty:
        print(
            f"Chatting with {lm.name} (context {lm.config.block_size} tokens). /reset, /retry, "
            "/quit.",
            file=sys.stderr,
        )
        from cllm.engine import warm

        warm.start()  # the decoding kernels compile while the first message is typed
    turn = 0
    while True:
        if tty:
            write("you> ")
        line = sys.stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        cmd = text.strip()
        if cmd in ("/quit", "/exit"):
            break
        if cmd == "/reset":
            history = list(base)
            print("(conversation forgotten)", file=sys.stderr)
            continue
        if cmd == "/retry":
            if not history or history[-1]["role"] != "assistant":
                print("(no reply to write again)", file=sys.stderr)
                continue
            history.pop()
        elif not cmd:
            continue
        else:
            history.append({"role": "user", "content": text})
        s = sampling
        if s.seed is not None:  # repeatable, yet each turn draws afresh
            from dataclasses import replace

            s = replace(s, seed=s.seed + turn)
        turn += 1
        ctx, gen = chat(lm.gpt, lm.tokenizer, history, s)
        if ctx.dropped:
            print(
                f"({ctx.dropped} earlier message(s) left out: the context is full)", file=sys.stderr
            )
        write(f"{lm.name}> ")
        try:
            for piece in first_token_hint(gen) if turn == 1 else gen:
                write(piece)
        except KeyboardInterrupt:  # Ctrl-C stops this reply, not the chat
            write(" [stopped]")
        write("\n")
        history.append({"role": "assistant", "content": gen.text})
    return 0
