"""`python -m cllm jobs ...`: the job queue of the models folder (docs/jobs.md).

``add`` queues a job per model, ``list`` shows them with live progress, ``cancel`` and ``retry``
change one, ``run`` runs the queue (each job in its own process, N at once).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from cllm.cli import models_dir_of, subcommand
from cllm.errors import ValidationError


def register(subparsers) -> None:
    jobs = subparsers.add_parser("jobs", help="queue training jobs for many models and run them")
    sub = jobs.add_subparsers(dest="jobs_command", required=True)

    def cmd(name: str, func, help: str) -> argparse.ArgumentParser:
        return subcommand(sub, name, func, help)

    p = cmd("add", cmd_add, "queue one job per model")
    p.add_argument("names", nargs="+", metavar="NAME", help="the models")
    add_target(p)
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting for these jobs (repeatable), e.g. lr=3e-4",
    )
    p.add_argument("--json", action="store_true", help="print the new jobs as one JSON list")

    p = cmd("list", cmd_list, "list the jobs with their state and progress")
    p.add_argument("--json", action="store_true", help="one JSON list")

    p = cmd("cancel", cmd_cancel, "cancel a queued or running job")
    p.add_argument("job_id", type=int, metavar="ID")

    p = cmd("retry", cmd_retry, "put a failed or cancelled job back in the queue")
    p.add_argument("job_id", type=int, metavar="ID")

    p = cmd("run", cmd_run, "run the queued jobs, each in its own process")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="jobs at once (default 1)")
    p.add_argument("--watch", action="store_true", help="keep waiting for new jobs")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the jobs as Ray tasks: 'auto', 'local' or a cluster address (needs ray)",
    )
    p.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        metavar="N",
        help="with --ray: CPUs per job (default 1)",
    )
    p.add_argument(
        "--shared-folder",
        action="store_true",
        help="with --ray: the workers see this models folder at the same path",
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=None,
        metavar="N",
        help="with --ray: retries of a job whose worker died (default 3)",
    )


def add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, metavar="N", help="target total epochs")
    g.add_argument("--steps", type=int, metavar="N", help="optimizer steps for the job")


def _store(args):
    from cllm.jobs.store import JobStore

    return JobStore(models_dir_of(args))


def cmd_add(args) -> int:
    from cllm.jobs.store import parse_settings
    from cllm.models.registry import Registry

    settings = parse_settings(args.settings)
    reg = Registry(models_dir_of(args))
    added = _store(args).add(
        reg, args.names, epochs=args.epochs, steps=args.steps, settings=settings
    )
    if args.json:
        print(json.dumps([j.to_dict() for j in added]))
    else:
        for j in added:
            print(f"queued job {j.id}: {j.model}, {j.target}")
    return 0


def _duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _loss(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def cmd_list(args) -> int:
    from cllm.jobs.store import job_rows

    rows = job_rows(models_dir_of(args))
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no jobs in {models_dir_of(args)}")
        return 0
    table = [("ID", "MODEL", "STATE", "TARGET", "DONE", "ETA", "LOSS", "VAL", "TIME", "NOTE")]
    for r in rows:
        target = f"{r['steps']} steps" if r["steps"] is not None else f"{r['epochs']} epochs"
        if r["steps"] is None and r["epochs"] is None:
            target = "target"
        done = "-" if r["progress"] is None else f"{100 * r['progress']:.0f}%"
        table.append(
            (
                str(r["id"]),
                r["model"],
                r["state"],
                target,
                done,
                _duration(r["eta"]),
                _loss(r["train_loss"]),
                _loss(r["val_loss"]),
                _duration(r["seconds"]) if r["seconds"] else "-",
                r["reason"][:60],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_cancel(args) -> int:
    job = _store(args).cancel(args.job_id)
    print(f"cancelled job {job.id} ({job.model})")
    return 0


def cmd_retry(args) -> int:
    job = _store(args).retry(args.job_id)
    print(f"queued job {job.id} ({job.model}) again")
    return 0


def _check_workers(n: int) -> int:
    if n < 1 or n > 256:
        raise ValidationError(f"--workers must be from 1 to 256, got {n}")
    return n


def summary(ran: dict[int, str]) -> str:
    counts: dict[str, int] = {}
    for state in ran.values():
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(counts.items())]
    return f"ran {len(ran)} job(s)" + (": " + ", ".join(parts) if parts else "")


def cmd_run(args) -> int:
    from cllm.jobs.scheduler import Scheduler

    workers = _check_workers(args.workers)
    ray_only = [
        f
        for f, v in (("--num-cpus", args.num_cpus), ("--max-retries", args.max_retries))
        if v is not None
    ] + (["--shared-folder"] if args.shared_folder else [])
    if args.ray is None and ray_only:
        raise ValidationError(f"{', '.join(ray_only)} go with --ray")
    if args.ray is not None:
        from cllm.jobs.ray_runner import RayRunner

        runner = RayRunner(
            models_dir_of(args),
            args.ray,
            num_cpus=args.num_cpus or 1,
            shared_folder=args.shared_folder,
            max_retries=3 if args.max_retries is None else args.max_retries,
            workers=workers if workers > 1 else None,
            watch=args.watch,
        )
        ran = runner.run()
    else:
        sched = Scheduler(models_dir_of(args), workers, watch=args.watch)
        ran = sched.run()
    print(summary(ran))
    return 1 if any(s == "failed" for s in ran.values()) else 0


def train_many(args, settings: dict, workers: int = 1) -> int:
    """``python -m cllm.train a b c``: queue a job per model and run just those."""
    from cllm.jobs.scheduler import Scheduler
    from cllm.jobs.store import JobStore, job_rows
    from cllm.models.registry import Registry

    models_dir = models_dir_of(args)
    added = JobStore(models_dir).add(
        Registry(models_dir), args.name, epochs=args.epochs, steps=args.steps, settings=settings
    )
    for j in added:
        print(f"queued job {j.id}: {j.model}, {j.target}", file=sys.stderr)
    ran = Scheduler(models_dir, _check_workers(workers), only={j.id for j in added}).run()
    rows = {r["id"]: r for r in job_rows(models_dir)}
    if getattr(args, "json", False):
        print(json.dumps([rows[j.id] for j in added]))
    print(summary(ran), file=sys.stderr)
    return 1 if any(s == "failed" for s in ran.values()) else 0
