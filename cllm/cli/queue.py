"""`python -m cllm queue ...`: add, list, cat, set, size, remove, clear and import a model's data
queue."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cllm.cli import models_dir_of, subcommand
from cllm.cli.common import ProgressLine, bar
from cllm.data.dataqueue import AddResult, DataQueue, matches_filter, walk_files
from cllm.errors import NotFoundError, ValidationError


def register(subparsers) -> None:
    queue = subparsers.add_parser("queue", help="manage a model's training data queue")
    sub = queue.add_subparsers(dest="queue_command", required=True)

    def cmd(name: str, func, help: str) -> argparse.ArgumentParser:
        p = subcommand(sub, name, func, help)
        p.add_argument("name", help="the model whose queue this is")
        return p

    p = cmd(
        "add",
        cmd_add,
        "add files and folders (text, code, HTML, Markdown, PDF, DOCX, EPUB, JSONL, CSV, "
        "Parquet, archives); '-' reads standard input",
    )
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    p.add_argument("--text", action="append", default=[], help="add this text as an item")
    p.add_argument(
        "--field",
        metavar="NAME",
        help="the field of JSONL/JSON/CSV/TSV/Parquet records to train on "
        "(default: text, content or body)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="file name pattern inside folders, e.g. '*.txt' (repeatable; default: all files)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out files and folders whose name matches, e.g. '*.log' (repeatable)",
    )
    p.add_argument(
        "--priority", type=int, default=0, help="higher comes first and is sampled more (default 0)"
    )
    p.add_argument("--no-recursive", action="store_true", help="only the folders' top level")
    p.add_argument(
        "--validation",
        action="store_true",
        help="hold these items out whole: measured as validation, never trained on",
    )
    p.add_argument("--json", action="store_true", help="one JSON line")

    p = cmd("list", cmd_list, "list the items in training order")
    p.add_argument("--filter", metavar="TEXT", help="only items whose source or kind contains TEXT")
    p.add_argument("--json", action="store_true", help="one JSON list")

    p = cmd("cat", cmd_cat, "print the text of an item as it was extracted")
    p.add_argument("item_id", type=int, metavar="ITEM_ID")

    p = cmd("set", cmd_set, "change an item's priority or validation flag")
    p.add_argument("item_id", type=int, metavar="ITEM_ID")
    p.add_argument("--priority", type=int, help="higher trains first")
    p.add_argument(
        "--validation",
        choices=("on", "off"),
        help="on: hold the item out whole, measured as validation and never trained on; "
        "off: train on it again",
    )

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
    """The progress line of an add or import: on a terminal only (a log gets the summary). An
    add's line counts files, MB (the files begun) and tokens (as they are made)."""

    def __init__(self, verb: str, files: bool = False) -> None:
        self.verb, self.files = verb, files
        self.line = ProgressLine(interval=0.1)
        self.done = self.total = self.bytes = self.n_tokens = 0
        self.source = ""

    def __call__(self, done: int, total: int, source: str) -> None:
        self.done, self.total, self.source = done, total, source
        if self.files and source and done < total:
            try:
                self.bytes += os.path.getsize(source)
            except OSError:
                pass
        self._show(force=done >= total)

    def tokens(self, n: int) -> None:
        self.n_tokens = n
        self._show()

    def _show(self, force: bool = False) -> None:
        done, total = self.done, self.total
        count = f"{done}/{total}"
        if self.files:
            count += f" files, {self.bytes / 1e6:,.1f} MB, {self.n_tokens:,} tokens"
        name = Path(self.source).name[:40] if self.source else ""
        text = f"{self.verb} {bar(done / max(total, 1), 30)} {count} {name}"
        self.line.show(text, force=force)

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
    for source, note in r.notes:
        print(f"note {source}: {note}")
    print(
        f"added {len(r.added)} item(s), {r.tokens:,} tokens; skipped {len(r.skipped)}; "
        f"queue of {name}: {items} item(s), {tokens:,} tokens"
    )


def cmd_add(args) -> int:
    if not args.paths and not args.text:
        raise ValidationError("name files or folders to add, '-' for standard input, or --text")
    with _open(args) as q:  # an unknown model is refused first
        missing = [p for p in args.paths if str(p) != "-" and not p.exists()]
        if missing:  # refuse before adding anything
            raise NotFoundError(f"no such file or folder: {missing[0]}")
        patterns = tuple(args.include) or ("*",)
        files: list[Path] = []
        walked: list[tuple[str, str]] = []  # entries the walk could not use, with reasons
        r = AddResult()
        for i, text in enumerate(args.text):
            source = "<text>" if len(args.text) == 1 else f"<text {i + 1}>"
            r.extend(
                q.add_text(text, source=source, priority=args.priority, validation=args.validation)
            )
        for p in args.paths:  # named files always count; patterns choose inside folders
            if str(p) == "-":
                r.extend(
                    q.add_stream(
                        sys.stdin.buffer,
                        priority=args.priority,
                        field=args.field,
                        validation=args.validation,
                    )
                )
            elif p.is_dir():
                files += walk_files(
                    p, patterns, not args.no_recursive, exclude=args.exclude, skipped=walked
                )
            else:
                files.append(p)
        progress = _Progress("adding", files=True)
        try:
            r.extend(
                q.add_files(
                    files,
                    priority=args.priority,
                    progress=progress,
                    field=args.field,
                    tokens=progress.tokens,
                    validation=args.validation,
                )
            )
        finally:
            progress.end()
        r.skipped[:0] = walked
        _report(args, args.name, q, r)
    return 0


def cmd_list(args) -> int:
    with _open(args) as q:
        items = q.items()
    if args.filter:
        items = [it for it in items if matches_filter(it, args.filter)]
    if args.json:
        print(json.dumps([it.to_dict() for it in items]))
        return 0
    if not items:
        print(
            f"no item of {args.name}'s queue matches {args.filter!r}"
            if args.filter
            else f"the queue of {args.name} is empty"
        )
        return 0
    rows = [["ID", "PRIORITY", "TOKENS", "VALIDATION", "KIND", "ADDED", "SOURCE"]] + [
        [
            str(it.id),
            str(it.priority),
            f"{it.n_tokens:,}",
            "yes" if it.validation else "-",
            it.kind,
            it.added,
            it.source,
        ]
        for it in items
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [r[c].rjust(w) if c < 3 else r[c].ljust(w) for c, w in enumerate(widths)]
        print("  ".join(cells + [r[-1]]))
    return 0


def cmd_cat(args) -> int:
    with _open(args) as q:
        q.item(args.item_id)  # an unknown item is refused before anything is printed
        end = ""
        for piece in q.iter_text(args.item_id):
            sys.stdout.write(piece)
            end = piece[-1:] or end
        if end != "\n":
            sys.stdout.write("\n")
    return 0


def cmd_set(args) -> int:
    if args.priority is None and args.validation is None:
        raise ValidationError("say what to change: --priority N and/or --validation on|off")
    with _open(args) as q:
        item = q.item(args.item_id)  # an unknown item is refused before anything changes
        if args.priority is not None:
            item = q.set_priority(item.id, args.priority)
            print(f"item {item.id} ({item.source}) now has priority {item.priority}")
        if args.validation is not None:
            item = q.set_item_validation(item.id, args.validation == "on")
            held = "held out for validation" if item.validation else "trained on"
            print(f"item {item.id} ({item.source}) is now {held}")
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
