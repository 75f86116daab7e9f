"""Checkpoints kept beside a model: the last K and the best by validation loss.

``models/NAME_checkpoints/`` holds ``step-<step>.cllm`` (the model as saved at that step: weights,
optimizer, position, RNG, history, settings; K of them, the most recently written) and
``best.cllm`` (the save with the lowest validation loss so far). Each is a whole model file whose
header records its step, epoch and losses, so a listing reads headers only.

Writing: the trainer saves ``NAME.cllm`` atomically first; the checkpoint is then a hard link to
that file (no extra write, no extra disk until the next save replaces the model file) made under a
temporary name and renamed into place, or a copy (fsynced, renamed) where the disk has no hard
links. A kill -9 at any moment leaves every ``*.cllm`` here complete; a temporary ``.tmp-*`` file
is swept by the next write. Disk use is bounded: at most K + 1 files, each one model file.

Rolling back (``rollback``) copies a checkpoint over the model under the model's lock, so it is
refused while the model trains. Checkpoints newer than the one restored stay until the retention
limit removes them.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cllm.atomic import fsync_dir
from cllm.errors import NotFoundError, ValidationError
from cllm.models import paths

BEST = "best.cllm"
_STEP_RE = re.compile(r"step-(\d+)\.cllm")


def folder(models_dir: Path | str, name: str) -> Path:
    return paths.checkpoints_dir(models_dir, name)


@dataclass
class Checkpoint:
    path: Path
    step: int
    epoch: int  # epochs finished at that step
    train_loss: float | None
    val_loss: float | None
    best: bool  # this is best.cllm
    saved: str  # ISO time of the save
    size: int  # bytes

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def _place(src: Path, dst: Path) -> None:
    """``dst`` becomes a complete copy of ``src`` (a hard link where possible), atomically."""
    tmp = dst.parent / f".tmp-{os.getpid()}-{dst.name}"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links on this disk: copy, then make it durable before the rename
        with open(src, "rb") as a, open(tmp, "wb") as b:
            shutil.copyfileobj(a, b, 1 << 20)
            b.flush()
            os.fsync(b.fileno())
    os.replace(tmp, dst)


def _sweep(d: Path) -> None:
    for e in os.scandir(d):
        if e.name.startswith(".tmp-"):
            try:
                os.unlink(e.path)
            except OSError:
                pass


def _step_files(d: Path) -> list[tuple[int, Path]]:
    if not d.is_dir():
        return []
    out = []
    for e in os.scandir(d):
        m = _STEP_RE.fullmatch(e.name)
        if m:
            out.append((int(m.group(1)), Path(e.path)))
    return out


def record(model_file: Path, d: Path, step: int, keep: int, best: bool = False) -> None:
    """Keep the just-saved ``model_file`` as checkpoint ``step`` (and as the best); then remove
    all but the ``keep`` most recently written step checkpoints."""
    if keep < 1:
        raise ValidationError(f"keep_checkpoints must be at least 1, got {keep}")
    d.mkdir(parents=True, exist_ok=True)
    _sweep(d)
    _place(model_file, d / f"step-{int(step):010d}.cllm")
    if best:
        _place(model_file, d / BEST)
    fsync_dir(d)
    files = []
    for s, p in _step_files(d):
        try:
            files.append((p.stat().st_mtime_ns, s, p))
        except FileNotFoundError:
            continue
    files.sort(reverse=True)
    for _, _, p in files[keep:]:
        p.unlink(missing_ok=True)


def listing(d: Path) -> list[Checkpoint]:
    """The checkpoints in ``d``, oldest step first, then the best."""
    from cllm.engine.modelfile import read_header
    from cllm.errors import CLLMError

    paths = [p for _, p in sorted(_step_files(d))]
    if (d / BEST).is_file():
        paths.append(d / BEST)
    out = []
    for p in paths:
        try:
            h = read_header(p)
        except (CLLMError, OSError):
            continue  # unreadable files are not offered for a rollback
        m = h.meta
        out.append(
            Checkpoint(
                path=p,
                step=m.steps,
                epoch=m.epochs_trained,
                train_loss=m.last_loss,
                val_loss=m.last_val_loss,
                best=p.name == BEST,
                saved=m.modified or "",
                size=h.file_size,
            )
        )
    return out


def disk_use(d: Path, model_file: Path | None = None) -> int:
    """Bytes the folder takes on disk beyond the model file (hard links counted once)."""
    if not d.is_dir():
        return 0
    seen = set()
    if model_file is not None:
        try:
            st = model_file.stat()
            seen.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    total = 0
    for e in os.scandir(d):
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_size
    return total


def find(d: Path, step: int | None = None, best: bool = False) -> Path:
    """The checkpoint file to restore: the best one or the one at ``step``."""
    if best:
        p = d / BEST
        if not p.is_file():
            raise NotFoundError("no best checkpoint yet (one is kept after a validation loss)")
        return p
    p = d / f"step-{int(step):010d}.cllm"
    if not p.is_file():
        have = ", ".join(str(s) for s, _ in sorted(_step_files(d))) or "none"
        raise NotFoundError(f"no checkpoint at step {step} (have: {have})")
    return p


def restore(registry, name: str, path: Path) -> dict:
    """Make checkpoint ``path`` the model ``name`` (the caller holds the model's lock or the
    registry takes it); returns the restored model's meta."""
    from cllm.engine.lm import load_model

    lm = load_model(path)
    lm.name = lm.meta.name = name
    registry.save(lm)
    return lm.meta


def rollback(registry, name: str, *, step: int | None = None, best: bool = False) -> dict:
    """Restore a checkpoint as the model; ``BusyError`` while the model trains."""
    if best == (step is not None):
        raise ValidationError("give either a step or best, not both")
    name = registry.resolve(name)
    with registry.lock(name, "rolling back"):
        path = find(folder(registry.dir, name), step=step, best=best)
        return restore(registry, name, path)
