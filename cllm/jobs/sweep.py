"""Sweeps: one copy of a base model per combination of settings, each with a job.

``plan_sweep`` checks everything (every value, every name, the count) before anything is made;
``create_sweep`` copies the base (``Registry.copy``: weights, settings and the base's queue,
imported item by item), grows the copy when ``layers`` asks for more, saves its settings and
queues its job (tagged with the base's name). ``sweep_report`` ranks the copies by best
validation loss.

Copy names are readable and unique: ``BASE-lr3e-4-L6`` (a ``.`` in a value becomes ``p``:
``lr2p5e-4``), the parts in the order the axes were given.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from cllm.errors import CLLMError, ValidationError
from cllm.jobs.store import JobStore
from cllm.models import rules

MAX_WITHOUT_YES = 64

# axis -> (the setting it changes, the name part's prefix, its type); "layers" grows the copy
AXES: dict[str, tuple[str, str, type]] = {
    "lr": ("learning_rate", "lr", float),
    "layers": ("n_layer", "L", int),
    "batch_size": ("batch_size", "b", int),
    "seq_len": ("seq_len", "T", int),
    "warmup": ("warmup", "w", int),
    "weight_decay": ("weight_decay", "wd", float),
}


def parse_values(axis: str, text: str) -> list:
    """``"1e-3,3e-4"`` -> ``[0.001, 0.0003]`` (duplicates dropped, order kept)."""
    _, _, kind = AXES[axis]
    flag = "--" + axis.replace("_", "-")
    out: list = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValidationError(f"{flag} {text!r}: an empty value; use e.g. {flag} 1,2")
        try:
            v = kind(part) if kind is float else int(part)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ValidationError(f"{flag} {text!r}: {part!r} is not {what}") from None
        if v not in out:
            out.append(v)
    return out


def fmt_value(v: float | int) -> str:
    """A value as a name part: 3e-4 -> '3e-4', 0.001 -> '1e-3', 2.5e-4 -> '2p5e-4', 16 -> '16'."""
    if isinstance(v, int):
        return str(v)
    mant, exp = f"{v:.6e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}".replace(".", "p")


@dataclass
class SweepModel:
    name: str
    values: dict  # axis -> value
    settings: dict  # training settings to save into the copy
    layers: int | None  # grow to this many layers (None: as the base)


def plan_sweep(
    registry, base: str, axes: dict[str, list], *, yes: bool = False
) -> list[SweepModel]:
    """The copies a sweep makes; raises (and makes nothing) on any bad value or name."""
    info = registry.info(base)
    base = info.name
    axes = {a: v for a, v in axes.items() if v}
    if not axes:
        raise ValidationError(
            "a sweep needs at least one axis: --lr, --layers, --batch-size, --seq-len, --warmup "
            "or --weight-decay, each with comma-separated values"
        )
    count = 1
    for values in axes.values():
        count *= len(values)
    if count > MAX_WITHOUT_YES and not yes:
        raise ValidationError(
            f"this sweep would create {count} models (more than {MAX_WITHOUT_YES}); add --yes "
            "if you mean it"
        )
    existing = registry.names()
    planned: list[SweepModel] = []
    current = {k: v for k, v in info.train.to_dict().items() if k != "extra"}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        settings = {AXES[a][0]: v for a, v in values.items() if a != "layers"}
        layers = values.get("layers")
        if layers is not None:
            rules.check_layers(layers, info.config.n_layer)
        merged = {**current, **rules.validate_train_settings(settings, info.config)}
        rules.validate_train_settings(merged, info.config)
        name = base + "".join(f"-{AXES[a][1]}{fmt_value(v)}" for a, v in values.items())
        if len(name) > rules.NAME_MAX:
            raise ValidationError(
                f"sweep model name {name!r} would be {len(name)} characters (at most "
                f"{rules.NAME_MAX}): use a shorter base name"
            )
        rules.validate_name(name)
        rules.check_unique(name, existing + [p.name for p in planned])
        planned.append(SweepModel(name, values, settings, layers))
    return planned


def create_sweep(
    registry,
    base: str,
    plan: list[SweepModel],
    *,
    epochs: int | None = None,
    steps: int | None = None,
    progress=None,
) -> list:
    """Make the planned copies and queue a job for each. If one fails, the copies made so far
    are deleted again and no job is queued."""
    base = registry.resolve(base)
    made: list[str] = []
    try:
        for i, m in enumerate(plan):
            if progress:
                progress(i, len(plan), m.name)
            registry.copy(base, m.name)
            made.append(m.name)
            if m.layers is not None and m.layers > registry.info(m.name).config.n_layer:
                registry.grow(m.name, m.layers)
            if m.settings:
                registry.set_settings(m.name, **m.settings)
        return JobStore(registry.dir).add(
            registry, [m.name for m in plan], epochs=epochs, steps=steps, sweep=base
        )
    except BaseException:
        for name in reversed(made):
            try:
                registry.delete(name)
            except CLLMError:
                pass
        raise


REPORT_SETTINGS = [  # column, where it comes from
    ("lr", "learning_rate"),
    ("layers", "n_layer"),
    ("batch_size", "batch_size"),
    ("seq_len", "seq_len"),
    ("warmup", "warmup"),
    ("weight_decay", "weight_decay"),
]


def sweep_report(registry, base: str) -> list[dict]:
    """One row per copy of the sweep of ``base`` (its latest job), best validation loss first."""
    base_name = registry.resolve(base) if registry.path(base).exists() else base
    low = base_name.lower()
    jobs = [j for j in JobStore(registry.dir).list() if (j.sweep or "").lower() == low]
    if not jobs:
        raise ValidationError(f"no sweep of {base!r} in {registry.dir}")
    latest = {}
    for j in jobs:
        latest[j.model.lower()] = j  # ids ascend: the last one wins
    rows = []
    for job in latest.values():
        try:
            info = registry.info(job.model)
        except CLLMError:
            continue  # deleted since
        cfg, tc = info.config.to_dict(), info.train.to_dict()
        settings = {col: cfg.get(key, tc.get(key)) for col, key in REPORT_SETTINGS}
        best = info.meta.best_loss
        rows.append(
            {
                "model": info.name,
                "job": job.id,
                "state": job.state,
                "settings": settings,
                "best_val_loss": best if best is not None else job.best_loss,
                "val_loss": info.meta.last_val_loss,
                "train_loss": info.meta.last_loss,
                "steps": int(info.meta.steps or 0),
                "tokens_per_s": job.tokens_per_s,
                "seconds": job.seconds,
            }
        )
    rows.sort(key=lambda r: (r["best_val_loss"] is None, r["best_val_loss"] or 0.0, r["model"]))
    return rows
