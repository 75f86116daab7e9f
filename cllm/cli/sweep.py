"""`python -m cllm sweep BASE --lr ... --layers ...` and `python -m cllm sweep report BASE`.

A sweep copies BASE once per combination of the given values and queues a job for each copy
(``python -m cllm jobs run`` trains them); ``report`` ranks the copies (docs/jobs.md).
"""

from __future__ import annotations

import json
import math
import sys

from cllm.cli import add_models_dir, models_dir_of
from cllm.errors import ValidationError
from cllm.jobs.sweep import AXES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="copy a model once per combination of settings and queue their jobs"
    )
    p.add_argument("what", metavar="BASE", help="the base model, or 'report' to rank a sweep")
    p.add_argument(
        "report_of", nargs="?", metavar="REPORT_BASE", help="with 'report': the sweep's base model"
    )
    add_models_dir(p)
    for axis in AXES:
        p.add_argument(
            "--" + axis.replace("_", "-"),
            dest=axis,
            metavar="VALUES",
            help=f"comma-separated values of {AXES[axis][0]}",
        )
    from cllm.cli.jobs import add_target

    add_target(p)
    p.add_argument("--yes", action="store_true", help="allow more than 64 models")
    p.add_argument("--json", action="store_true", help="one JSON list")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from cllm.models.registry import Registry

    reg = Registry(models_dir_of(args))
    given = [a for a in AXES if getattr(args, a) is not None]
    if args.what == "report" and args.report_of is not None:
        extra = ["--" + a.replace("_", "-") for a in given]
        extra += [f for f in ("epochs", "steps") if getattr(args, f) is not None]
        extra += ["--yes"] if args.yes else []
        if extra:
            raise ValidationError(f"sweep report takes no {', '.join(extra)}")
        return report(reg, args.report_of, args.json)
    if args.report_of is not None:
        raise ValidationError(
            f"unexpected {args.report_of!r}: use `sweep BASE --lr ...` or `sweep report BASE`"
        )
    return start(reg, args, given)


def start(reg, args, given: list[str]) -> int:
    from cllm.jobs.sweep import create_sweep, parse_values, plan_sweep

    if args.steps is not None and args.steps < 1:
        raise ValidationError(f"--steps must be at least 1, got {args.steps}")
    axes = {a: parse_values(a, getattr(args, a)) for a in given}
    plan = plan_sweep(reg, args.what, axes, yes=args.yes)
    if args.epochs is not None:  # checked before any copy is made
        from cllm.models import rules

        rules.check_target_epochs(args.epochs, int(reg.info(args.what).meta.epochs_trained))

    def progress(i: int, n: int, name: str) -> None:
        print(f"copying {i + 1}/{n}: {name}", file=sys.stderr, flush=True)

    jobs = create_sweep(
        reg, args.what, plan, epochs=args.epochs, steps=args.steps, progress=progress
    )
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs]))
    else:
        for j in jobs:
            print(f"queued job {j.id}: {j.model}, {j.target}")
        print(f"{len(jobs)} models; run them with: python -m cllm jobs run --workers N")
    return 0


def _num(x, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def report(reg, base: str, as_json: bool) -> int:
    from cllm.jobs.sweep import REPORT_SETTINGS, sweep_report

    rows = sweep_report(reg, base)
    if as_json:
        print(json.dumps(rows))
        return 0
    varying = [
        col for col, _ in REPORT_SETTINGS if len({str(r["settings"][col]) for r in rows}) > 1
    ] or ["lr"]
    head = ["MODEL", *[c.upper() for c in varying], "BEST VAL", "TOKENS/S", "TIME", "STATE"]
    table = [head]
    for r in rows:
        secs = int(r["seconds"] or 0)
        table.append(
            [
                r["model"],
                *[_num(r["settings"][c], "g") for c in varying],
                _num(r["best_val_loss"], ".4f"),
                _num(r["tokens_per_s"], ",.0f"),
                f"{secs // 60}:{secs % 60:02d}",
                r["state"],
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
