"""`python -m cllm.train NAME ...`: train a model headless from its queue (docs/cli.md).

``--create`` makes the model (its tokenizer trained on the ``--data`` text) or, if it exists,
goes on with it; ``--data`` adds files and folders to the model's queue (the same content twice
is stored once, so re-running a command is safe); settings flags are saved into the model;
``--epochs`` is the target total, ``--steps`` the number of optimizer steps for this run. Ctrl+C
or SIGTERM saves a checkpoint and exits; running the command again resumes exactly there.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from cllm.cli import _Parser, add_models_dir, models_dir_of, run_guarded
from cllm.cli.common import ProgressLine, bar, duration, snapshot_json
from cllm.engine.config import PRESETS, GPTConfig
from cllm.engine.tokenizer import KINDS
from cllm.errors import NotFoundError, ValidationError

TOKENIZER_TEXT_MAX = 8 << 20  # characters of --data text used to train a new model's tokenizer
ARCH_FLAGS = {  # flag -> GPTConfig field
    "vocab_size": "vocab_size",
    "layers": "n_layer",
    "heads": "n_head",
    "d_model": "n_embd",
    "context": "block_size",
}
RESULT_FIELDS = (  # of the snapshot, in the --json line (with steps, run_tokens, seconds ...)
    *("state", "epochs_trained", "target_epochs", "run_steps", "tokens", "train_loss"),
    *("val_loss", "best_loss", "batch_size", "seq_len", "batches_per_epoch", "resumed_from"),
    "message",
)
SETTING_FLAGS = {  # flag -> TrainConfig field
    "batch_size": "batch_size",
    "seq_len": "seq_len",
    "lr": "learning_rate",
    "warmup": "warmup",
    "weight_decay": "weight_decay",
    "grad_clip": "grad_clip",
    "val_fraction": "val_fraction",
    "seed": "seed",
    "min_lr": "min_lr",
    "beta1": "beta1",
    "beta2": "beta2",
    "schedule": "schedule",
    "sampling": "sampling",
    "eval_interval": "eval_interval",
    "eval_batches": "eval_batches",
    "checkpoint_interval": "checkpoint_interval",
    "keep_checkpoints": "keep_checkpoints",
    "early_stop": "early_stop",
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cllm.train", description="Train a model from its data queue.")
    p.add_argument(
        "name", nargs="+", metavar="NAME", help="model name; several: queue a job each and run them"
    )
    p.add_argument(
        "--workers", type=int, default=1, metavar="N", help="with several models: jobs at once"
    )
    add_models_dir(p)
    p.add_argument("--create", action="store_true", help="create the model if it does not exist")
    p.add_argument("--preset", choices=list(PRESETS), help="architecture preset (default tiny)")
    p.add_argument("--tokenizer", choices=KINDS, help="tokenizer kind for --create (default bpe)")
    p.add_argument("--vocab-size", type=int, metavar="N")
    p.add_argument("--layers", type=int, metavar="N")
    p.add_argument("--heads", type=int, metavar="N")
    p.add_argument("--d-model", type=int, metavar="N")
    p.add_argument("--context", type=int, metavar="N")
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        type=Path,
        default=[],
        metavar="PATH",
        help="files or folders to add to the model's queue",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, metavar="N", help="target total epochs")
    g.add_argument("--steps", type=int, metavar="N", help="optimizer steps to take in this run")
    p.add_argument("--batch-size", type=int, metavar="N")
    p.add_argument("--seq-len", type=int, metavar="N")
    p.add_argument("--lr", type=float, metavar="X")
    p.add_argument("--warmup", type=int, metavar="N")
    p.add_argument("--weight-decay", type=float, metavar="X")
    p.add_argument("--grad-clip", type=float, metavar="X")
    p.add_argument("--val-fraction", type=float, metavar="F")
    p.add_argument("--seed", type=int, metavar="N")
    add_advanced(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the estimated time, peak memory and checkpoint disk; train nothing",
    )
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    p.add_argument("--ray", metavar="ADDRESS", help="with --data-parallel: the Ray cluster")
    p.add_argument(
        "--data-parallel", type=int, metavar="N", help="split each batch across N Ray actors"
    )
    return p


def add_advanced(p: argparse.ArgumentParser) -> None:
    """The schedule, validation and checkpoint settings (shared with `models set`)."""
    p.add_argument("--min-lr", type=float, metavar="X", help="the schedule decays to this")
    p.add_argument("--beta1", type=float, metavar="X", help="AdamW beta1")
    p.add_argument("--beta2", type=float, metavar="X", help="AdamW beta2")
    p.add_argument("--schedule", metavar="NAME", help="cosine, linear or constant")
    p.add_argument("--sampling", metavar="NAME", help="random (windows) or sequential")
    p.add_argument("--eval-interval", type=int, metavar="N", help="steps between validations")
    p.add_argument("--eval-batches", type=int, metavar="N", help="fixed validation batches")
    p.add_argument(
        "--checkpoint-interval", type=int, metavar="N", help="steps between checkpoints (0: off)"
    )
    p.add_argument("--keep-checkpoints", type=int, metavar="K", help="last K kept (default 3)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--early-stop",
        type=int,
        metavar="N",
        help="stop after N validations without a better loss; the best checkpoint is the model",
    )
    g.add_argument(
        "--no-early-stop",
        dest="early_stop",
        action="store_const",
        const="off",
        help="turn early stopping off",
    )


def _given(args: argparse.Namespace, flags: dict) -> dict:
    out = {field: getattr(args, f) for f, field in flags.items() if getattr(args, f) is not None}
    if out.get("early_stop") == "off":
        out["early_stop"] = None
    return out


def _data_text(paths: list[Path]) -> str:
    """The text of the --data files (up to TOKENIZER_TEXT_MAX characters) to fit a tokenizer on."""
    from cllm.data.dataqueue import walk_files
    from cllm.data.extract import Skipped, extract_file

    parts, total = [], 0
    for path in paths:
        for f in walk_files(path) if path.is_dir() else [path]:
            try:
                text, _ = extract_file(f)
            except Skipped:
                continue
            parts.append(text[: TOKENIZER_TEXT_MAX - total])
            total += len(parts[-1])
            if total >= TOKENIZER_TEXT_MAX:
                return "\n".join(parts)
    return "\n".join(parts)


def _create_or_check(reg, args: argparse.Namespace) -> str:
    """The model's stored name; with --create, a new model when there is none."""
    arch = _given(args, ARCH_FLAGS)
    try:
        name = reg.resolve(args.name)
    except NotFoundError:
        if not args.create:
            raise NotFoundError(
                f"no model named {args.name!r} in {reg.dir} (add --create to make one)"
            ) from None
    else:
        # Re-running a --create command goes on with the model, unless the flags ask for another
        # architecture (the vocabulary follows the tokenizer, so it is not compared).
        info = reg.info(name)
        wanted = {**(PRESETS[args.preset].to_dict() if args.preset else {}), **arch}
        wanted.pop("vocab_size", None)
        wanted.pop("n_inner", None)
        have = info.config.to_dict()
        differ = [k for k, v in wanted.items() if have.get(k) != v]
        if args.tokenizer and args.tokenizer != info.tokenizer_kind:
            differ.append("tokenizer")
        if differ:
            raise ValidationError(
                f"model {name!r} already exists with another {', '.join(differ)}: architecture "
                "and tokenizer are fixed (use `python -m cllm models grow` for layers)"
            )
        return name
    base = PRESETS[args.preset or "tiny"].to_dict()
    base.pop("n_inner")  # follows the width
    config = GPTConfig(**{**base, **arch})
    train = _given(args, SETTING_FLAGS)
    train.setdefault("seq_len", min(64, config.block_size))
    text = _data_text(args.data) if args.data else None
    if args.data and not text.strip():
        raise ValidationError("the --data files hold no text to build a tokenizer from")
    print(f"creating {args.name} ...", file=sys.stderr)
    info = reg.create(
        args.name,
        config=config,
        tokenizer=args.tokenizer or "bpe",
        vocab_size=args.vocab_size,
        text=text,
        seed=args.seed or 0,
        train=train,
        target_epochs=args.epochs if args.epochs is not None else 1,
        sources=[str(p) for p in args.data],
    )
    return info.name


def _add_data(reg, name: str, paths: list[Path]) -> None:
    dq = reg.queue(name)
    try:
        for path in paths:
            res = dq.add_folder(path) if path.is_dir() else dq.add_file(path)
            print(
                f"queue: {path}: {len(res.added)} added ({res.tokens} tokens), "
                f"{len(res.skipped)} skipped",
                file=sys.stderr,
            )
            for source, reason in res.skipped[:10]:
                print(f"  skipped {source}: {reason}", file=sys.stderr)
    finally:
        dq.close()


def progress_line(snap, width: int = 24) -> str:
    """One line: bar, epoch, step, losses, tokens/s and ETA."""
    done = snap.run_steps / snap.total_steps if snap.total_steps else 1.0
    loss = "-" if snap.train_loss is None else f"{snap.train_loss:.4f}"
    val = "" if snap.val_loss is None else f" val {snap.val_loss:.4f}"
    if snap.epoch <= snap.target_epochs:
        epoch = f"epoch {snap.epoch}/{snap.target_epochs}"
    else:  # a --steps run goes on past the target
        epoch = f"epoch {snap.epoch} (target {snap.target_epochs})"
    return (
        f"{bar(done, width)} {100 * done:3.0f}% "
        f"{epoch} batch {snap.batch}/{snap.batches_per_epoch} "
        f"step {snap.step} loss {loss}{val} | {snap.tokens_per_s:,.0f} tok/s "
        f"| ETA {duration(snap.eta)}"
    )


def train_main(args: argparse.Namespace) -> int:
    from cllm.models.registry import Registry
    from cllm.train.trainer import Trainer, freeze_start_up

    if len(args.name) > 1:  # several models: a job each (cllm.cli.jobs)
        from cllm.cli.jobs import train_many

        given = [f for f in ("create", "preset", "tokenizer", "data", "ray") if getattr(args, f)]
        given += ["data_parallel"] if args.data_parallel is not None else []
        given += [f for f in ARCH_FLAGS if getattr(args, f) is not None]
        if given:
            flags = ", ".join("--" + f.replace("_", "-") for f in given)
            raise ValidationError(f"{flags} take one model; create the models first")
        return train_many(args, _given(args, SETTING_FLAGS), args.workers)
    if args.workers != 1:
        raise ValidationError("--workers goes with several models")
    if (args.ray is None) != (args.data_parallel is None):
        raise ValidationError("--ray and --data-parallel go together")
    if args.ray is not None:  # before anything is created
        from cllm.jobs.ray_runner import check_reachable

        check_reachable(args.ray)
    args.name = args.name[0]

    if args.steps is not None and args.steps < 1:
        raise ValidationError(f"--steps must be at least 1, got {args.steps}")
    for path in args.data:  # before anything is created
        if not path.exists():
            raise NotFoundError(f"--data {path}: no such file or folder")
    from cllm.models.rules import validate_train_settings
    from cllm.train.estimate import for_model

    settings = _given(args, SETTING_FLAGS)
    validate_train_settings(settings)  # refused before anything is created or added
    reg = Registry(models_dir_of(args))
    if args.dry_run:
        name = reg.resolve(args.name)
        if args.epochs is not None:
            settings["target_epochs"] = args.epochs
        est = for_model(reg, name, max_steps=args.steps, settings=settings)
        if args.data:
            print("dry run: the --data files are not counted", file=sys.stderr)
        print(json.dumps({"model": name, **est.to_dict()}) if args.json else est.line())
        return 0
    name = _create_or_check(reg, args)
    if args.data:
        _add_data(reg, name, args.data)
    if args.epochs is not None:
        settings["target_epochs"] = args.epochs
    if settings:
        reg.set_settings(name, **settings)

    trainer = Trainer(reg, name, max_steps=args.steps)  # refuses a bad model before any output
    freeze_start_up()
    if args.data_parallel is not None:  # the batch's slices on Ray actors (cllm.jobs)
        from cllm.jobs.data_parallel import attach

        try:
            attach(trainer, args.ray, args.data_parallel)
        except BaseException:
            trainer.close()
            raise
    try:
        est = for_model(reg, name, max_steps=args.steps)
        print(est.line(), file=sys.stderr)
    except (OSError, ValueError) as err:  # the estimate is advice; training goes on without it
        print(f"no estimate: {err}", file=sys.stderr)
    tokens_before = trainer.snapshot().tokens
    signals: list[int] = []

    def on_signal(signum, frame) -> None:
        if not signals:
            print("\nstopping: saving a checkpoint ...", file=sys.stderr)
        signals.append(signum)
        trainer.stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    line = ProgressLine(log_every=10.0)  # in a log: a line every 10 s
    t0 = time.monotonic()
    try:
        trainer.start()
        while not trainer.join(0.25):
            snap = trainer.snapshot()
            if snap.state in ("running", "paused"):
                line.show(progress_line(snap))
    finally:
        trainer.join()
        for s, h in old.items():
            signal.signal(s, h)
    seconds = time.monotonic() - t0
    snap = trainer.snapshot()
    if line.live:
        line.show(progress_line(snap), force=True)
    line.done()
    if snap.resumed_from:
        print(snap.resumed_from, file=sys.stderr)
    print(snap.message, file=sys.stderr)
    if args.json:
        run_tokens = snap.tokens - tokens_before
        print(
            snapshot_json(
                name,
                snap,
                RESULT_FIELDS,
                steps=snap.step,
                run_tokens=run_tokens,
                tokens_per_s=run_tokens / seconds if seconds > 0 else 0.0,
                seconds=round(seconds, 3),
            )
        )
    if snap.state == "error":
        return 1
    return 128 + signals[0] if signals else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(train_main, args)


if __name__ == "__main__":
    sys.exit(main())
