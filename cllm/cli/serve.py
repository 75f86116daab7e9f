"""`python -m cllm serve`: the models folder behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from cllm.cli import add_models_dir, models_dir_of


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the models over an OpenAI-compatible HTTP API")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks one)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument(
        "--max-tokens-limit", type=int, default=2048, help="largest max_tokens (default 2048)"
    )
    add_models_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cllm.errors import ValidationError
    from cllm.models.registry import Registry
    from cllm.serve.server import LOCAL_HOSTS, Server

    if args.max_tokens_limit < 1:
        raise ValidationError(f"--max-tokens-limit must be at least 1, got {args.max_tokens_limit}")
    from cllm.serve.app import Limits

    server = Server(
        Registry(models_dir_of(args)),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        limits=Limits(max_tokens=args.max_tokens_limit),
    )
    if args.host not in LOCAL_HOSTS and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key", file=sys.stderr)
    # Ctrl-C and SIGTERM end the wait below as an event, not as an exception that could land
    # anywhere in the loop; the server then stops within its grace period
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()  # signals reach that one only
    sigs = (signal.SIGINT, signal.SIGTERM) if main else ()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in sigs}
    try:
        server.start()
        print(f"serving {models_dir_of(args)} at {server.url} (Ctrl-C stops)", flush=True)
        from cllm.engine import warm

        warm.start()  # a fresh install's first request need not wait for the compiler
        while server.running and not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0
