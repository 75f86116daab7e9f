"""`python -m cllm`: one entry point, one sub-command module per idea.

Each ``cllm/cli/<group>.py`` exposes ``register(subparsers)``, which adds its sub-command and sets
``func`` on its parser; ``func(args)`` returns the exit status. A ``CLLMError`` raised anywhere
becomes one line on stderr and exit status 2; argparse errors exit 2 as well. What the commands
share (the progress line, durations, the ``--json`` line) is in ``cllm/cli/common.py``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sqlite3
import sys
from pathlib import Path

from cllm.errors import CLLMError
from cllm.models import paths

GROUPS = ["models", "queue", "generate", "chat", "serve", "crawl", "bench", "jobs", "sweep"]


def default_models_dir() -> Path:
    return paths.default_models_dir()


def add_models_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="models folder (default: $CLLM_MODELS_DIR or ./models)",
    )


def subcommand(sub, name: str, func, help: str) -> argparse.ArgumentParser:
    """A sub-command of a command group: its parser, with --models-dir, running ``func``."""
    p = sub.add_parser(name, help=help)
    add_models_dir(p)
    p.set_defaults(func=func)
    return p


def models_dir_of(args: argparse.Namespace) -> Path:
    return args.models_dir if getattr(args, "models_dir", None) else default_models_dir()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for every refused input
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m cllm", description="Crystalline CLLM command line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in GROUPS:
        importlib.import_module(f"cllm.cli.{group}").register(sub)
    return parser


def run_guarded(func, args) -> int:
    """Run a command; user errors become one line and status 2."""
    try:
        return int(func(args) or 0)
    except CLLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk outside an atomic write: one line, not a traceback
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on device while writing {err.filename or 'a file'}; "
              "the write in progress was not saved", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as err:  # a queue, job or crawl store on a full disk
        if "full" not in str(err):
            raise
        print(
            "error: no space left on device while writing to a database; its last transaction "
            "was not saved",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` closed our stdout: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(args.func, args)
