"""`python -m cllm models ...`: list, inspect, create, rename, copy, delete, export, import, grow,
history, set and presets, all through the Registry."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from cllm.cli import models_dir_of, subcommand
from cllm.engine.config import PRESETS, format_count
from cllm.errors import NotFoundError, ValidationError
from cllm.models.registry import ModelInfo, Registry

# command-line flag -> training setting
SETTING_FLAGS = [
    ("--batch-size", "batch_size", int),
    ("--seq-len", "seq_len", int),
    ("--lr", "learning_rate", float),
    ("--weight-decay", "weight_decay", float),
    ("--warmup", "warmup", int),
    ("--grad-clip", "grad_clip", float),
    ("--val-fraction", "val_fraction", float),
    ("--min-lr", "min_lr", float),
    ("--beta1", "beta1", float),
    ("--beta2", "beta2", float),
    ("--schedule", "schedule", str),
    ("--sampling", "sampling", str),
    ("--eval-interval", "eval_interval", int),
    ("--eval-batches", "eval_batches", int),
    ("--checkpoint-interval", "checkpoint_interval", int),
    ("--keep-checkpoints", "keep_checkpoints", int),
    ("--early-stop", "early_stop", int),
]


def _add_settings(p: argparse.ArgumentParser, epochs: bool = True) -> None:
    if epochs:
        p.add_argument("--target-epochs", type=int, help="total epochs the model should reach")
    for flag, dest, typ in SETTING_FLAGS:
        p.add_argument(flag, dest=dest, type=typ)


def _settings_of(args: argparse.Namespace) -> dict:
    keys = ["target_epochs"] + [dest for _, dest, _ in SETTING_FLAGS]
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "no_early_stop", False):
        out["early_stop"] = None
    return out


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="list and manage the models in the folder")
    sub = models.add_subparsers(dest="models_command", required=True)

    def cmd(name: str, func, help: str) -> argparse.ArgumentParser:
        return subcommand(sub, name, func, help)

    p = cmd("list", cmd_list, "list the models (header-only, instant)")
    p.add_argument("--json", action="store_true", help="one JSON list")

    p = cmd("info", cmd_info, "show one model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")

    p = cmd("create", cmd_create, "create a new model (its tokenizer trained on --data)")
    p.add_argument("name", nargs="?", help="default: the first free model_N")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny")
    p.add_argument("--tokenizer", choices=["bpe", "byte", "char"], default="bpe")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--d-model", type=int)
    p.add_argument("--context", type=int)
    p.add_argument("--data", nargs="+", type=Path, default=[], help="files or folders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-preset", help="training preset (see `models presets`)")
    _add_settings(p)
    p.add_argument("--json", action="store_true")

    p = cmd("rename", cmd_rename, "rename a model and all its files")
    p.add_argument("old")
    p.add_argument("new")

    p = cmd("copy", cmd_copy, "copy a model (weights, settings, history, queue)")
    p.add_argument("src")
    p.add_argument("dst")

    p = cmd("delete", cmd_delete, "delete a model and all its files")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="confirm the deletion")

    p = cmd("export", cmd_export, "export to one portable file (or a transformers directory)")
    p.add_argument("name")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=["cllm", "hf"], default="cllm")
    p.add_argument("--no-optimizer", action="store_true", help="leave the optimizer state out")

    p = cmd("import", cmd_import, "import a .cllm file (or a transformers GPT-2 directory)")
    p.add_argument("path", type=Path)
    p.add_argument("--format", choices=["cllm", "hf"], default="cllm")
    p.add_argument("--name")
    p.add_argument("--on-clash", choices=["refuse", "rename"], default="refuse")

    p = cmd("grow", cmd_grow, "add layers (new blocks start as the identity)")
    p.add_argument("name")
    p.add_argument("--layers", type=int, required=True, help="the new total")

    p = cmd("history", cmd_history, "loss history")
    p.add_argument("name")
    p.add_argument("--csv", type=Path, help="write step,train_loss,val_loss to this file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--clear", action="store_true", help="forget the history (weights stay)")
    p.add_argument("--yes", action="store_true", help="confirm --clear")

    p = cmd("eval", cmd_eval, "score models on one shared text: loss and perplexity")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--text", type=Path, required=True, help="the text file to score them on")
    p.add_argument("--json", action="store_true")

    p = cmd("set", cmd_set, "change saved training settings")
    p.add_argument("name")
    p.add_argument("--train-preset", help="apply a training preset first")
    _add_settings(p)
    p.add_argument("--no-early-stop", action="store_true", help="turn early stopping off")

    register_checkpoints(cmd)

    p = cmd("presets", cmd_presets, "training presets: list, save, delete")
    p.add_argument("action", nargs="?", choices=["list", "save", "delete"], default="list")
    p.add_argument("preset", nargs="?", help="preset name (save, delete)")
    p.add_argument("--from-model", help="save: take the settings of this model")
    _add_settings(p)
    p.add_argument("--json", action="store_true")


def _reg(args: argparse.Namespace) -> Registry:
    return Registry(models_dir_of(args))


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def _row(i: ModelInfo) -> list[str]:
    m = i.meta
    return [
        i.name,
        format_count(i.n_params),
        f"{i.config.n_layer}x{i.config.n_embd}",
        f"{m.epochs_trained}/{m.target_epochs}",
        str(m.steps),
        _num(m.last_loss),
        f"{i.queue_items}/{format_count(i.queue_tokens)}",
        i.busy or "idle",
    ]


def cmd_list(args) -> int:
    infos, problems = _reg(args).scan()
    for p in problems:  # a damaged file is named, never hidden, and never hides the others
        print(f"skipped {p.path.name}: {p.reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([i.to_dict() for i in infos]))
        return 0
    if not infos:
        print(f"no models in {models_dir_of(args)}" + (" that can be read" if problems else ""))
        return 0
    head = ["NAME", "PARAMS", "LAYERSxD", "EPOCHS", "STEPS", "LOSS", "QUEUE", "STATUS"]
    rows = [head] + [_row(i) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(head) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def _print_info(i: ModelInfo) -> None:
    c, t, m = i.config, i.train, i.meta
    print(f"{i.name}  ({format_count(i.n_params)} parameters, {i.file_size:,} bytes)")
    print(
        f"  architecture  V {c.vocab_size}, D {c.n_embd}, L {c.n_layer}, H {c.n_head}, "
        f"C {c.block_size}, F {c.n_inner}; tokenizer {i.tokenizer_kind}"
    )
    print(
        f"  epochs        {m.epochs_trained} of {m.target_epochs}, "
        f"{m.steps} steps, {m.tokens_seen:,} tokens seen"
    )
    print(
        f"  loss          last {_num(m.last_loss)}, best {_num(m.best_loss)}, "
        f"val {_num(m.last_val_loss)}"
    )
    print(
        f"  training      batch {t.batch_size} x {t.seq_len}, lr {t.learning_rate:g}, "
        f"warmup {t.warmup}, weight decay {t.weight_decay:g}, clip {t.grad_clip:g}, "
        f"val fraction {t.val_fraction:g}"
    )
    held = f" ({i.queue_held_out} held out for validation)" if i.queue_held_out else ""
    print(f"  queue         {i.queue_items} items, {i.queue_tokens:,} tokens{held}")
    print(f"  created       {m.created or '-'}, modified {m.modified or '-'}")
    if m.sources:
        print(f"  sources       {', '.join(m.sources[:5])}")
    print(f"  status        {i.busy or 'idle'}")
    print(f"  checkpoints   {checkpoints_summary(i)}")


def cmd_info(args) -> int:
    info = _reg(args).info(args.name)
    if args.json:
        print(json.dumps(info.to_dict()))
    else:
        _print_info(info)
    return 0


def _read_data(paths: list[Path]) -> tuple[str, list[str]]:
    """The text of the --data files (for the tokenizer) and the sources to record."""
    from cllm.data.dataqueue import walk_files
    from cllm.data.extract import Skipped, extract_file

    texts, sources = [], []
    for p in paths:
        if not p.exists():
            raise NotFoundError(f"no file or folder {p}")
        for f in walk_files(p) if p.is_dir() else [p]:
            try:
                texts.append(extract_file(f)[0])
            except Skipped:
                continue  # the queue reports why when the file is added
        sources.append(str(p))
    if paths and not texts:
        raise ValidationError("none of the --data files holds usable text")
    return "\n\n".join(texts), sources


def cmd_create(args) -> int:
    reg = _reg(args)
    config = PRESETS[args.preset]
    dims = {
        "n_layer": args.layers,
        "n_head": args.heads,
        "n_embd": args.d_model,
        "block_size": args.context,
    }
    dims = {k: v for k, v in dims.items() if v is not None}
    if dims:
        # a new width means a new MLP width (0: 4 * n_embd)
        config = replace(config, **dims, **({"n_inner": 0} if "n_embd" in dims else {}))
    settings = _settings_of(args)
    if args.train_preset:
        settings = {**reg.preset(args.train_preset), **settings}
    target = settings.pop("target_epochs", 1)
    if "seq_len" not in settings:
        settings["seq_len"] = min(64, config.block_size)
    text, sources = _read_data(args.data) if args.data else (None, [])
    info = reg.create(
        args.name,
        config=config,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        text=text,
        seed=args.seed,
        train=settings,
        target_epochs=target,
        sources=sources,
    )
    if args.data:
        q = reg.queue(info.name)
        for p in args.data:
            res = q.add_folder(p) if p.is_dir() else q.add_file(p)
            for source, reason in res.skipped:
                print(f"skipped {source}: {reason}")
        q.close()
        info = reg.info(info.name)
    if args.json:
        print(json.dumps(info.to_dict()))
    else:
        print(
            f"created {info.name}: {format_count(info.n_params)} parameters, "
            f"{info.tokenizer_kind} tokenizer of {info.config.vocab_size} tokens, "
            f"queue {info.queue_items} items / {info.queue_tokens:,} tokens"
        )
    return 0


def cmd_rename(args) -> int:
    _reg(args).rename(args.old, args.new)
    print(f"renamed {args.old} -> {args.new}")
    return 0


def cmd_copy(args) -> int:
    _reg(args).copy(args.src, args.dst)
    print(f"copied {args.src} -> {args.dst}")
    return 0


def cmd_delete(args) -> int:
    reg = _reg(args)
    name = reg.resolve(args.name)
    if not args.yes:
        raise ValidationError(f"deleting {name!r} removes it and its queue for good; add --yes")
    reg.delete(name)
    print(f"deleted {name}")
    return 0


def cmd_export(args) -> int:
    reg = _reg(args)
    if args.format == "hf":
        out = reg.export_hf(args.name, args.path)
        from cllm.engine.hf import hf_tokenizer_problem

        problem = None if (out / "tokenizer.json").is_file() else hf_tokenizer_problem(
            reg._tokenizer(reg.resolve(args.name))
        )
        if problem:  # one line: the weights are there, AutoTokenizer will not be
            print(f"note: {problem}")
    else:
        out = reg.export(args.name, args.path, optimizer=not args.no_optimizer)
    print(f"exported {args.name} to {out}")
    return 0


def cmd_import(args) -> int:
    reg = _reg(args)
    if args.format == "hf":
        name = reg.import_hf(args.path, name=args.name, on_clash=args.on_clash)
    else:
        name = reg.import_file(args.path, name=args.name, on_clash=args.on_clash)
    print(f"imported {args.path} as {name}")
    return 0


def cmd_grow(args) -> int:
    info = _reg(args).grow(args.name, args.layers)
    print(f"{info.name} now has {info.config.n_layer} layers, {format_count(info.n_params)} params")
    return 0


def cmd_history(args) -> int:
    reg = _reg(args)
    if args.clear:
        name = reg.resolve(args.name)
        if not args.yes:
            raise ValidationError(
                f"clearing forgets the loss history of {name!r} for good (weights stay); add --yes"
            )
        reg.clear_history(name)
        print(f"cleared the loss history of {name}")
        return 0
    if args.csv:
        reg.history_csv(args.name, args.csv)
        print(f"wrote {args.csv}")
        return 0
    h = reg.history(args.name)
    if args.json:  # NaN (a step without a validation loss) is not JSON: write null
        print(json.dumps(_nan_to_none(h), allow_nan=False))
        return 0
    print("step,train_loss,val_loss")
    for i, step in enumerate(h["steps"]):
        tl = h["train_loss"][i] if i < len(h["train_loss"]) else None
        vl = h["val_loss"][i] if i < len(h["val_loss"]) else None
        print(f"{step},{_num(tl)},{_num(vl)}")
    for e in h["epochs"]:
        print(f"# epoch {json.dumps(e)}")
    return 0


def cmd_eval(args) -> int:
    from cllm.models.evaluate import evaluate, read_text

    reg = _reg(args)
    text, _ = read_text(args.text)
    results = [evaluate(reg.load(name), text, name=reg.resolve(name)) for name in args.names]
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
        return 0
    print(f"{'model':<20} {'tokens':>9} {'loss':>8} {'perplexity':>11} {'bits/byte':>10}")
    for r in results:
        print(
            f"{r.name:<20} {r.tokens:>9,} {r.loss:>8.4f} {r.perplexity:>11.2f} "
            f"{r.bits_per_byte:>10.3f}"
        )
    return 0


def _nan_to_none(x):
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def cmd_set(args) -> int:
    settings = _settings_of(args)
    if args.train_preset:
        settings["preset"] = args.train_preset
    if not settings:
        raise ValidationError("nothing to set: give at least one setting, e.g. --batch-size 16")
    info = _reg(args).set_settings(args.name, **settings)
    t, m = info.train, info.meta
    print(
        f"{info.name}: target epochs {m.target_epochs}, batch {t.batch_size} x "
        f"{t.seq_len}, lr {t.learning_rate:g}, warmup {t.warmup}, weight decay "
        f"{t.weight_decay:g}, clip {t.grad_clip:g}"
    )
    return 0


def cmd_presets(args) -> int:
    reg = _reg(args)
    if args.action in ("save", "delete") and not args.preset:
        raise ValidationError(f"presets {args.action} needs a preset name")
    if args.action == "delete":
        reg.delete_preset(args.preset)
        print(f"deleted preset {args.preset}")
        return 0
    if args.action == "save":
        settings = {}
        if args.from_model:
            info = reg.info(args.from_model)
            settings = {k: v for k, v in info.train.to_dict().items() if k != "extra"}
            settings["target_epochs"] = info.meta.target_epochs
        settings.update(_settings_of(args))
        vals = reg.save_preset(args.preset, **settings)
        print(f"saved preset {args.preset}: {json.dumps(vals)}")
        return 0
    presets = reg.presets()
    if args.json:
        print(json.dumps(presets))
        return 0
    for name, vals in presets.items():
        print(f"{name:12s} {json.dumps(vals)}")
    return 0


# ---- checkpoints (cllm.train.checkpoints) ----------------------------------------------------


def register_checkpoints(cmd) -> None:
    p = cmd("checkpoints", cmd_checkpoints, "list the checkpoints kept beside a model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="one JSON list")

    p = cmd("rollback", cmd_rollback, "make a kept checkpoint the model (refused while training)")
    p.add_argument("name")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--best", action="store_true", help="the best by validation loss")
    g.add_argument("--step", type=int, metavar="S", help="the checkpoint at step S")


def checkpoints_summary(info: ModelInfo) -> str:
    """'3 + best, 12.3 MB on disk beyond the model (keep 3)'."""
    from cllm.train import checkpoints

    d = checkpoints.folder(info.path.parent, info.name)
    kept = checkpoints.listing(d)
    steps = [c for c in kept if not c.best]
    best = any(c.best for c in kept)
    used = checkpoints.disk_use(d, info.path)
    return (
        f"{len(steps)}{' + best' if best else ''}, {used / 1e6:.1f} MB on disk beyond the model "
        f"(keep {info.train.keep_checkpoints})"
    )


def cmd_checkpoints(args) -> int:
    from cllm.train import checkpoints

    reg = _reg(args)
    name = reg.resolve(args.name)
    kept = checkpoints.listing(checkpoints.folder(reg.dir, name))
    if args.json:
        print(json.dumps([c.to_dict() for c in kept]))
        return 0
    if not kept:
        print(f"{name} has no checkpoints yet")
        return 0
    rows = [["STEP", "EPOCH", "TRAIN", "VAL", "SAVED", "FILE"]] + [
        [
            str(c.step),
            str(c.epoch),
            _num(c.train_loss),
            _num(c.val_loss),
            c.saved,
            c.path.name,
        ]
        for c in kept
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_rollback(args) -> int:
    from cllm.train import checkpoints

    reg = _reg(args)
    meta = checkpoints.rollback(reg, args.name, step=args.step, best=args.best)
    print(
        f"{reg.resolve(args.name)} is now its checkpoint at step {meta.steps} "
        f"(epoch {meta.epochs_trained}, val {_num(meta.last_val_loss)})"
    )
    return 0
