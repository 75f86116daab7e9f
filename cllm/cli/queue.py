"""`python -m cllm queue ...`: add, list, size, remove, clear and import a model's data queue."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cllm.cli import add_models_dir, models_dir_of
from cllm.cli.common import ProgressLine, bar
from cllm.data.dataqueue import AddResult, DataQueue, walk_files
from cllm.errors import NotFoundError, ValidationError


def register(subparsers) -> None:
    queue = subparsers.add_parser("queue", help="manage a model's training data queue")
    sub = queue.add_subparsers(dest="queue_command", required=True)

    def cmd(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        add_models_dir(p)
        p.add_argument("name", help="the model whose queue this is")
        p.set_defaults(func=func)
        return p

    p = cmd("add", cmd_add, "add files and folders (text, code, HTML, Markdown)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="file name pattern inside folders, e.g. '*.txt' (repeatable; default: all files)",
    )
    p.add_argument("--priority", type=int, default=0, help="higher trains first (default 0)")
    p.add_argument("--no-recursive", action="store_true", help="only the folders' top level")
    p.add_argument("--json", action="store_true", help="one JSON line")

    p = cmd("list", cmd_list, "list the items in training order")
    p.add_argument("--json", action="store_true", help="one JSON list")

    p = cmd("size", cmd_size, "items and tokens in the queue")
    p.add_argument("--json", action="store_true", help="one JSON line")

    p = cmd("remove", cmd_remove, "remove one item")
    p.add_argument("item_id", type=int, metavar="ITEM_ID")

    p = cmd("clear", cmd_clear, "remove every item")
    p.add_argument("--yes", action="store_true", help="confirm")

    p = cmd("import", cmd_import, "copy another model's queue (re-tokenized if needed)")
    p.add_argument("--from", dest="source", required=True, metavar="OTHER")
    p.add_argument("--json", action="store_true", help="one JSON line")


def _open(args, name: str | None = None) -> DataQueue:
    from cllm.models.registry import Registry

    return Registry(models_dir_of(args)).queue(name or args.name)


class _Progress:
    """The progress line of an add or import: on a terminal only (a log gets the summary)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.line = ProgressLine(interval=0.1)

    def __call__(self, done: int, total: int, source: str) -> None:
        name = Path(source).name[:40] if source else ""
        text = f"{self.verb} {bar(done / max(total, 1), 30)} {done}/{total} {name}"
        self.line.show(text, force=done >= total)

    def end(self) -> None:
        self.line.done(clear=True)


def _report(args, name: str, q: DataQueue, r: AddResult) -> None:
    items, tokens = q.size()
    if args.json:
        print(
            json.dumps({"model": name, **r.to_dict(), "queue_items": items, "queue_tokens": tokens})
        )
        return
    for source, reason in r.skipped:
        print(f"skipped {source}: {reason}")
    print(
        f"added {len(r.added)} item(s), {r.tokens:,} tokens; skipped {len(r.skipped)}; "
        f"queue of {name}: {items} item(s), {tokens:,} tokens"
    )


def cmd_add(args) -> int:
    with _open(args) as q:  # an unknown model is refused first
        missing = [p for p in args.paths if not p.exists()]
        if missing:  # refuse before adding anything
            raise NotFoundError(f"no such file or folder: {missing[0]}")
        patterns = tuple(args.include) or ("*",)
        files: list[Path] = []
        for p in args.paths:  # named files always count; patterns choose inside folders
            files += walk_files(p, patterns, not args.no_recursive) if p.is_dir() else [p]
        progress = _Progress("adding")
        try:
            r = q.add_files(files, priority=args.priority, progress=progress)
        finally:
            progress.end()
        _report(args, args.name, q, r)
    return 0


def cmd_list(args) -> int:
    with _open(args) as q:
        items = q.items()
    if args.json:
        print(json.dumps([it.to_dict() for it in items]))
        return 0
    if not items:
        print(f"the queue of {args.name} is empty")
        return 0
    rows = [["ID", "PRIORITY", "TOKENS", "KIND", "ADDED", "SOURCE"]] + [
        [str(it.id), str(it.priority), f"{it.n_tokens:,}", it.kind, it.added, it.source]
        for it in items
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [r[c].rjust(w) if c < 3 else r[c].ljust(w) for c, w in enumerate(widths)]
        print("  ".join(cells + [r[-1]]))
    return 0


def cmd_size(args) -> int:
    with _open(args) as q:
        items, tokens = q.size()
    if args.json:
        print(json.dumps({"model": args.name, "items": items, "tokens": tokens}))
    else:
        print(f"{args.name}: {items} item(s), {tokens:,} tokens")
    return 0


def cmd_remove(args) -> int:
    with _open(args) as q:
        item = q.remove(args.item_id)
    print(f"removed item {item.id} ({item.source}, {item.n_tokens:,} tokens)")
    return 0


def cmd_clear(args) -> int:
    with _open(args) as q:
        if not args.yes:
            n = q.size()[0]
            raise ValidationError(
                f"clearing deletes all {n} item(s) of {args.name}'s queue; add --yes"
            )
        n = q.clear()
    print(f"cleared {n} item(s) from the queue of {args.name}")
    return 0


def cmd_import(args) -> int:
    progress = _Progress("importing")
    with _open(args) as q, _open(args, args.source) as other:
        try:
            r = q.import_from(other, progress=progress)
        finally:
            progress.end()
        _report(args, args.name, q, r)
    return 0
