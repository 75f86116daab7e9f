"""The models folder: every named model with its side files, and the operations on them.

A model ``NAME`` is ``NAME.cllm`` (weights, tokenizer, settings, history) plus its side files
``NAME_queue/``, ``NAME.lock``, ``NAME.progress.json``, the crawler's ``NAME.crawl.sqlite`` (with
its ``-wal`` and ``-shm`` files), ``NAME_crawl/`` (downloaded pages) and ``NAME_checkpoints/``
(cllm.train.checkpoints). The file name is the
model's name; the name stored inside the file follows it (rename rewrites it).

Every operation that changes a model holds the model's lock (cllm.models.locks) while it does, so a
model that is training cannot be renamed, deleted or re-set under the trainer's feet. ``save(lm)``
is the one exception: a process that already holds the lock (the trainer checkpointing) saves under
it. A crawl holds its own lock, ``NAME.crawl.sqlite-lock`` (cllm.crawl.store), not the model's,
because its continuous training takes the model's lock for each round; rename and delete take both.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from cllm.atomic import atomic_open, write_atomic
from cllm.engine.config import PRESETS, GPTConfig, TrainConfig, num_params
from cllm.errors import BusyError, CLLMError, ModelFileError, NotFoundError, ValidationError
from cllm.models import locks, rules
from cllm.pids import pid_alive

SUFFIX = ".cllm"
SIDE_SUFFIXES = (".progress.json", ".crawl.sqlite", ".crawl.sqlite-wal", ".crawl.sqlite-shm")
CRAWL_LOCK = ".crawl.sqlite-lock"  # held by a running crawl (cllm.crawl.store.CrawlDB.try_lock)
PRESETS_FILE = "presets.json"

# Named sets of training settings; applying one clamps seq_len to the model's context.
TRAIN_PRESETS: dict[str, dict] = {
    "quick": dict(batch_size=8, seq_len=64, learning_rate=3e-3, warmup=20, target_epochs=1),
    "balanced": dict(batch_size=16, seq_len=128, learning_rate=1e-3, warmup=100, target_epochs=3),
    "thorough": dict(batch_size=32, seq_len=256, learning_rate=6e-4, warmup=300, target_epochs=10),
}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelInfo:
    """What a listing shows about a model, read from the file's header only."""

    name: str
    path: Path
    config: GPTConfig
    train: TrainConfig
    meta: dict
    n_params: int
    file_size: int
    queue_items: int
    queue_tokens: int
    busy: str | None  # "training by pid 123 on host h since ..." while locked
    tokenizer_kind: str = ""

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(path=str(self.path), config=self.config.to_dict(), train=self.train.to_dict())
        return d


# Listings are re-read often (the app refreshes its model list): what was read from a file is
# kept while the file's identity, size and mtime stay the same. Saves replace the file (new inode).
_cache: dict[str, tuple[tuple, object]] = {}


def _signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _cached(path: Path, read, wal: bool = False):
    key = str(path)
    sig = (_signature(key), _signature(key + "-wal") if wal else None)  # SQLite commits to a WAL
    hit = _cache.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    value = read(path, sig[1] is not None and sig[1][1] > 0) if wal else read(path)
    _cache[key] = (sig, value)
    return value


def _read_header(path: Path) -> dict:
    from cllm.engine.modelfile import read_header

    return read_header(path)


def _queue_size(db: Path, wal_pending: bool) -> tuple[int, int]:
    """(items, tokens) from a queue's index, read directly: a DataQueue needs the tokenizer."""
    if not db.is_file():
        return 0, 0
    # With no write-ahead log pending, the database file is complete and can be read as
    # immutable, which skips SQLite's locking and is several times faster.
    uri = f"file:{db}?mode=ro" + ("" if wal_pending else "&immutable=1")
    try:
        con = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            row = con.execute("SELECT COUNT(*), COALESCE(SUM(n_tokens), 0) FROM items").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0, 0
    return int(row[0]), int(row[1])


def _busy_text(holder: dict | None) -> str | None:
    if not holder:
        return None
    return (
        f"{holder.get('purpose', 'in use')} by pid {holder.get('pid')} on host "
        f"{holder.get('host')} since {holder.get('started')}"
    )


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


class Registry:
    """The models in one folder (None: $CLLM_MODELS_DIR, else ./models)."""

    def __init__(self, models_dir: Path | str | None = None):
        if models_dir is None:
            models_dir = os.environ.get("CLLM_MODELS_DIR") or "models"
        self.dir = Path(models_dir)

    # ------------------------------------------------------------------------------ paths

    def path(self, name: str) -> Path:
        return self.dir / f"{name}{SUFFIX}"

    def queue_dir(self, name: str) -> Path:
        return self.dir / f"{name}_queue"

    def side_paths(self, name: str) -> list[Path]:
        """Everything that belongs to a model except its locks, model file first."""
        return (
            [self.path(name), self.queue_dir(name)]
            + [self.dir / f"{name}{s}" for s in SIDE_SUFFIXES]
            + [self.dir / f"{name}_crawl", self.dir / f"{name}_checkpoints"]
        )

    def names(self) -> list[str]:
        """Names of the models in the folder, sorted (temporary and foreign files ignored)."""
        if not self.dir.is_dir():
            return []
        out = []
        for entry in os.scandir(self.dir):
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                stem = entry.name[: -len(SUFFIX)]
                try:
                    out.append(rules.validate_name(stem))
                except ValidationError:
                    continue
        return sorted(out, key=lambda n: (n.lower(), n))

    def resolve(self, name: str) -> str:
        """The stored name of an existing model; the case may differ from what was typed."""
        rules.validate_name(name)
        if self.path(name).is_file():
            return name
        matches = [n for n in self.names() if n.lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
        raise NotFoundError(f"no model named {name!r} in {self.dir}")

    # ------------------------------------------------------------------------------ locks

    def lock(self, name: str, purpose: str = "in use") -> locks.ModelLock:
        """Take the model's lock now (``BusyError`` names the holder); release with ``with``."""
        rules.validate_name(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        return locks.acquire(self.dir, name, purpose)

    def holder(self, name: str) -> dict | None:
        return locks.lock_holder(self.dir, name)

    @contextmanager
    def _no_crawl(self, name: str) -> Iterator[None]:
        """Hold the crawl lock of ``name`` (as a crawler would), so no crawl runs or starts while
        its files move; BusyError if one is running. The lock file goes when released, also one
        that a killed crawl left behind."""
        path = self.dir / f"{name}{CRAWL_LOCK}"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = _read_pid(path)
                raise BusyError(
                    f"model {name!r} is busy: crawling" + (f" by pid {pid}" if pid else "")
                ) from None
            try:  # same protocol as the crawler: the file may have been unlinked meanwhile
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            try:  # unlink before close, as the crawler does
                path.unlink(missing_ok=True)
            except OSError:
                pass  # a file left behind is free once the flock goes; the next taker reuses it
            os.close(fd)

    def crawling(self, name: str) -> int | None:
        """The pid of the process crawling ``name`` on this host, or None (display only: a lock
        file with a dead pid was left by a killed crawl)."""
        pid = _read_pid(self.dir / f"{name}{CRAWL_LOCK}")
        return pid if pid and pid_alive(pid) else None

    # ------------------------------------------------------------------------------ reading

    def _info_from_header(self, name: str, lock_files: set[str] | None = None) -> ModelInfo:
        path = self.path(name)
        h = _cached(path, _read_header)
        config = h["config"]
        meta = dict(h["meta"])  # shallow: the cached header's nested lists are shared
        meta["name"] = name  # the file name is the model's name
        items, tokens = _cached(self.queue_dir(name) / "queue.sqlite", _queue_size, wal=True)
        has_lock = lock_files is None or f"{name}.lock" in lock_files
        busy = _busy_text(locks.lock_holder(self.dir, name)) if has_lock else None
        if busy is None and (lock_files is None or f"{name}{CRAWL_LOCK}" in lock_files):
            pid = self.crawling(name)
            busy = f"crawling by pid {pid}" if pid else None
        return ModelInfo(
            name=name,
            path=path,
            config=config,
            train=replace(h["train"]),
            meta=meta,
            n_params=num_params(config),
            file_size=h["file_size"],
            queue_items=items,
            queue_tokens=tokens,
            busy=busy,
            tokenizer_kind=h["tokenizer_kind"],
        )

    def list(self) -> list[ModelInfo]:
        """Every model in the folder, sorted by name, from headers only (never the weights)."""
        if not self.dir.is_dir():
            return []
        lock_files = {e.name for e in os.scandir(self.dir) if e.name.endswith("lock")}
        out = []
        for name in self.names():
            try:
                out.append(self._info_from_header(name, lock_files))
            except (CLLMError, OSError):
                continue  # a damaged file does not hide the others; info(name) says what is wrong
        return out

    def info(self, name: str) -> ModelInfo:
        return self._info_from_header(self.resolve(name))

    def load(self, name: str):
        """The whole model (weights, tokenizer, settings, optimizer state) as a LanguageModel."""
        from cllm.engine.lm import load_model

        name = self.resolve(name)
        lm = load_model(self.path(name))
        lm.name = lm.meta["name"] = name  # the file name is the model's name
        return lm

    def queue(self, name: str):
        """The model's data queue (its folder is created if missing)."""
        from cllm.data.dataqueue import DataQueue

        name = self.resolve(name)
        qdir = self.queue_dir(name)
        qdir.mkdir(exist_ok=True)
        return DataQueue(qdir, self._tokenizer(name))

    def _tokenizer(self, name: str):
        """The model's tokenizer, read from its file without the weights."""
        from cllm.engine.modelfile import read_header
        from cllm.engine.tokenizer import tokenizer_from_json

        path = self.path(name)
        h = read_header(path)
        _, _, begin, end = h["tensors"]["tokenizer"]
        with open(path, "rb") as f:
            f.seek(h["data_start"] + begin)
            raw = f.read(end - begin)
        try:
            return tokenizer_from_json(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValidationError) as err:
            raise ModelFileError(f"{path}: stored tokenizer is invalid ({err})") from None

    # ------------------------------------------------------------------------------ writing

    def save(self, lm) -> None:
        """Save a LanguageModel under its name (atomic); locks unless this process holds it."""
        name = rules.validate_name(lm.name)
        lm.meta["modified"] = now_iso()
        if locks.held_here(self.dir, name):
            lm.save(self.path(name))
            return
        with self.lock(name, "saving"):
            others = [n for n in self.names() if n != name]
            rules.check_unique(name, others)
            lm.save(self.path(name))

    def create(
        self,
        name: str | None = None,
        *,
        preset: str = "tiny",
        config: GPTConfig | None = None,
        tokenizer: str = "bpe",
        vocab_size: int | None = None,
        text: str | None = None,
        seed: int = 0,
        train: TrainConfig | dict | None = None,
        target_epochs: int = 1,
        sources: list[str] | None = None,
    ) -> ModelInfo:
        """A new model trained on nothing yet; its tokenizer is trained on ``text``."""
        from cllm.engine.lm import LanguageModel
        from cllm.engine.tokenizer import train_tokenizer

        if name is not None:
            rules.validate_name(name)
            rules.check_unique(name, self.names())
        if config is None:
            if preset not in PRESETS:
                raise ValidationError(
                    f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
                )
            config = PRESETS[preset]
        tc = self._train_config(train, config)
        target = rules.check_target_epochs(target_epochs, 0)
        with self._claim(name) as lock:
            name = lock.name
            if text is None:
                from cllm.data.corpus import demo_corpus

                text = demo_corpus()
            tok = train_tokenizer(tokenizer, text, vocab_size or config.vocab_size)
            config = replace(config, vocab_size=tok.vocab_size)
            lm = LanguageModel.create(config, tok, name, seed=seed, train=tc)
            stamp = now_iso()
            lm.meta.update(
                name=name,
                epochs_trained=0,
                target_epochs=target,
                created=stamp,
                modified=stamp,
                sources=list(sources or []),
            )
            for p in self.side_paths(name)[1:]:
                _remove(p)  # leftovers of a deleted model must not leak into this one
            lm.save(self.path(name))
            self.queue_dir(name).mkdir()
        return self.info(name)

    def _claim(self, name: str | None) -> locks.ModelLock:
        """The lock of a new model's name; with no name, of the first free model_N."""
        busy: list[str] = []  # default names another process is creating right now
        while True:
            existing = self.names()
            chosen = name or rules.default_name(existing + busy)
            rules.check_unique(chosen, existing)
            try:
                lock = self.lock(chosen, "creating")
            except BusyError:
                if name is not None:
                    raise
                busy.append(chosen)
                continue
            try:  # again under the lock: another process may have won the race
                rules.check_unique(chosen, self.names())
            except BaseException:
                lock.release()
                if name is not None:
                    raise
                continue
            return lock

    def _train_config(self, train: TrainConfig | dict | None, config: GPTConfig) -> TrainConfig:
        if train is None:  # defaults, fitted to the context
            base = TrainConfig()
            return replace(base, seq_len=min(base.seq_len, config.block_size))
        d = train.to_dict() if isinstance(train, TrainConfig) else dict(train)
        extra = d.pop("extra", {})
        vals = rules.validate_train_settings(d, config)
        return TrainConfig.from_dict({**vals, "extra": extra})

    def delete(self, name: str) -> None:
        """Remove the model and every side file; refused while the model is locked."""
        name = self.resolve(name)
        with self.lock(name, "deleting"), self._no_crawl(name):
            for p in self.side_paths(name):  # model file first: once it is gone, so is the model
                _remove(p)

    def rename(self, old: str, new: str) -> None:
        """Move the model and its side files to a new name; on failure, roll back to the old one."""
        old = self.resolve(old)
        rules.validate_name(new)
        if new == old:
            return
        rules.check_unique(new, [n for n in self.names() if n != old])
        other = new.lower() != old.lower()
        with self.lock(old, "renaming"), self._no_crawl(old):
            with (
                self.lock(new, "renaming") if other else nullcontext(),
                self._no_crawl(new) if other else nullcontext(),
            ):
                # again under the locks: another process may have created `new` meanwhile
                rules.check_unique(new, [n for n in self.names() if n != old])
                self._rename_locked(old, new)

    def _rename_locked(self, old: str, new: str) -> None:
        from cllm.engine.lm import load_model

        lm = load_model(self.path(old))
        lm.name = new
        lm.meta.update(name=new, modified=now_iso())
        same_file = new.lower() == old.lower() and self.path(new).exists()  # case-insensitive disk
        if not same_file:
            for p in self.side_paths(new):
                _remove(p)  # leftovers of a deleted model named `new`
        # The new file first, with the name inside rewritten; the old one goes last, so until then
        # every failure can be undone and the model stays usable under its old name.
        tmp = self.dir / f".{new}.rename.tmp"
        undo = [lambda: tmp.unlink(missing_ok=True)]
        try:
            lm.save(tmp)
            for src, dst in zip(self.side_paths(old)[1:], self.side_paths(new)[1:], strict=True):
                if src.exists():
                    os.rename(src, dst)
                    undo.append(lambda s=src, d=dst: os.rename(d, s))
            os.rename(tmp, self.path(new))
            if not same_file:
                undo.append(lambda: self.path(new).unlink(missing_ok=True))
                os.unlink(self.path(old))
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except OSError:
                    pass  # best effort; the old model file is still in place
            raise

    def copy(self, src: str, dst: str) -> ModelInfo:
        """A new model ``dst`` with ``src``'s weights, settings, history and queue."""
        from cllm.engine.lm import load_model

        src = self.resolve(src)
        rules.validate_name(dst)
        rules.check_unique(dst, self.names())
        with self.lock(dst, "copying"):
            rules.check_unique(dst, self.names())
            lm = load_model(self.path(src))
            lm.name = dst
            stamp = now_iso()
            lineage = list(lm.meta.get("lineage") or [])
            lineage.append({"copied_from": src, "at": stamp})
            lm.meta.update(
                name=dst, lineage=lineage, copied_from=src, created=stamp, modified=stamp
            )
            done: list[Path] = []
            try:
                for p in self.side_paths(dst)[1:]:
                    _remove(p)
                qsrc, qdst = self.queue_dir(src), self.queue_dir(dst)
                done.append(qdst)
                if (qsrc / "queue.sqlite").is_file():
                    # Item by item through the queue's own transactions: consistent even while
                    # another process (the crawler) is adding to the source queue.
                    from cllm.data.dataqueue import DataQueue

                    tmpq = self.dir / f".{dst}_queue.copy.tmp"
                    _remove(tmpq)
                    done.append(tmpq)
                    with DataQueue(qsrc, lm.tokenizer) as a, DataQueue(tmpq, lm.tokenizer) as b:
                        b.import_from(a)
                    os.rename(tmpq, qdst)
                else:
                    qdst.mkdir()
                csrc, cdst = self.dir / f"{src}_checkpoints", self.dir / f"{dst}_checkpoints"
                if csrc.is_dir():  # the kept checkpoints travel with the copy
                    done.append(cdst)
                    shutil.copytree(csrc, cdst, ignore=shutil.ignore_patterns(".tmp-*"))
                done.append(self.path(dst))
                lm.save(self.path(dst))
            except BaseException:
                for p in reversed(done):
                    _remove(p)
                raise
        return self.info(dst)

    def export(self, name: str, path: Path | str, *, optimizer: bool = True) -> Path:
        """One portable ``.cllm`` file (weights, tokenizer, settings, history)."""
        name = self.resolve(name)
        dst = Path(path)
        if dst.is_dir():
            dst = dst / f"{name}{SUFFIX}"
        if not dst.parent.is_dir():
            raise NotFoundError(f"folder {dst.parent} does not exist")
        if optimizer:
            with open(self.path(name), "rb") as src, atomic_open(dst) as f:
                shutil.copyfileobj(src, f, 1 << 20)
        else:
            from cllm.engine.lm import load_model

            lm = load_model(self.path(name))
            lm.optim_state = None
            lm.save(dst)
        return dst

    def export_hf(self, name: str, out_dir: Path | str) -> Path:
        """A directory that transformers' ``GPT2LMHeadModel.from_pretrained`` loads."""
        from cllm.engine.hf import export_hf

        return export_hf(self.load(name), out_dir)

    def _import_name(self, wanted: str, on_clash: str) -> str:
        if on_clash not in ("refuse", "rename"):
            raise ValidationError(f"on_clash must be 'refuse' or 'rename', got {on_clash!r}")
        rules.validate_name(wanted)
        existing = self.names()
        if on_clash == "rename":
            return rules.free_variant(wanted, existing)
        rules.check_unique(wanted, existing)
        return wanted

    def import_file(
        self, path: Path | str, name: str | None = None, on_clash: str = "refuse"
    ) -> str:
        """Add a model from a ``.cllm`` file (validated); returns the name it got."""
        from cllm.engine.lm import load_model

        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"no file {path}")
        lm = load_model(path)
        if name is None:
            inside = str(lm.meta.get("name") or lm.name or path.stem)
            try:
                name = rules.validate_name(inside)
            except ValidationError:
                name = rules.validate_name(path.stem)
        return self._add_imported(lm, name, on_clash, str(path))

    def import_hf(
        self, in_dir: Path | str, name: str | None = None, on_clash: str = "refuse"
    ) -> str:
        """Add a model from a transformers GPT-2 directory written with our tokenizer."""
        from cllm.engine.hf import import_hf
        from cllm.engine.lm import LanguageModel

        in_dir = Path(in_dir)
        config, params, tok = import_hf(in_dir)
        if tok is None:
            raise ModelFileError(
                f"{in_dir}: no tokenizer (cllm_tokenizer.json); a model needs the one it was "
                "trained with"
            )
        if name is None:  # the folder's name when it is a valid model name
            try:
                name = rules.validate_name(in_dir.resolve().name)
            except ValidationError:
                name = rules.default_name(self.names())
        lm = LanguageModel.create(config, tok, name)
        lm.gpt.params[:] = params
        stamp = now_iso()
        lm.meta.update(epochs_trained=0, target_epochs=0, created=stamp)
        return self._add_imported(lm, name, on_clash, str(in_dir))

    def _add_imported(self, lm, name: str, on_clash: str, source: str) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = self._import_name(name, on_clash)
        with self.lock(name, "importing"):
            rules.check_unique(name, self.names())
            lm.name = name
            lm.meta.update(name=name, imported_from=source, modified=now_iso())
            for p in self.side_paths(name)[1:]:
                _remove(p)
            lm.save(self.path(name))
            self.queue_dir(name).mkdir()
        return name

    def grow(self, name: str, n_layer: int) -> ModelInfo:
        """Add layers (never remove): new blocks start as the identity, so outputs are unchanged."""
        from cllm.engine.lm import load_model

        name = self.resolve(name)
        with self.lock(name, "growing"):
            lm = load_model(self.path(name))
            current = lm.config.n_layer
            n_layer = rules.check_layers(n_layer, current)
            if n_layer > current:
                _grow_lm(lm, n_layer)
                lm.meta["modified"] = now_iso()
                lm.save(self.path(name))
        return self.info(name)

    def set_settings(self, name: str, **settings) -> ModelInfo:
        """Change saved training settings and ``target_epochs``; ``preset=`` applies one first."""
        from cllm.engine.lm import load_model

        name = self.resolve(name)
        preset = settings.pop("preset", None)
        if preset is not None:
            settings = {**self.preset(preset), **settings}
        with self.lock(name, "changing settings"):
            lm = load_model(self.path(name))
            target = settings.pop("target_epochs", None)
            seq = settings.get("seq_len")
            if preset is not None and isinstance(seq, int):  # a preset fits itself to the model
                settings["seq_len"] = min(seq, lm.config.block_size)
            merged = {k: v for k, v in lm.train_config.to_dict().items() if k != "extra"}
            vals = rules.validate_train_settings(settings, lm.config)
            merged.update(vals)
            rules.validate_train_settings(merged, lm.config)  # cross-field rules (min_lr <= lr)
            if target is not None:
                trained = int(lm.meta.get("epochs_trained", 0))
                lm.meta["target_epochs"] = rules.check_target_epochs(target, trained)
            lm.train_config = replace(lm.train_config, **vals)
            lm.meta["modified"] = now_iso()
            lm.save(self.path(name))
        return self.info(name)

    # ------------------------------------------------------------------------------ history

    def history(self, name: str) -> dict:
        """Loss history: {"steps", "train_loss", "val_loss"} per step, and ``epochs`` summaries."""
        lm = self.load(name)
        h = lm.history
        steps = [int(s) for s in h.get("steps", [])]
        train = [float(x) for x in h.get("train", [])]
        val = [float(x) for x in h.get("val", [])]
        return {
            "name": lm.name,
            "steps": steps,
            "train_loss": train,
            "val_loss": val,
            "epochs": list(lm.meta.get("epoch_summaries") or []),
        }

    def history_csv(self, name: str, path: Path | str) -> Path:
        """Write ``step,train_loss,val_loss`` rows (a missing validation loss is left empty)."""
        h = self.history(name)
        rows = ["step,train_loss,val_loss"]
        for i, step in enumerate(h["steps"]):
            tl = h["train_loss"][i] if i < len(h["train_loss"]) else float("nan")
            vl = h["val_loss"][i] if i < len(h["val_loss"]) else float("nan")
            rows.append(f"{step},{_num(tl)},{_num(vl)}")
        path = Path(path)
        write_atomic(path, "\n".join(rows) + "\n")
        return path

    # ------------------------------------------------------------------------------ presets

    def presets(self) -> dict[str, dict]:
        """Training presets by name: the built-in ones, then the user's (presets.json)."""
        return {**TRAIN_PRESETS, **self._user_presets()}

    def preset(self, name: str) -> dict:
        all_ = self.presets()
        if name not in all_:
            raise NotFoundError(f"no training preset {name!r}; have {', '.join(all_)}")
        return dict(all_[name])

    def _user_presets(self) -> dict[str, dict]:
        path = self.dir / PRESETS_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValidationError(f"{path} is not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValidationError(f"{path} must hold a JSON object of presets")
        return {k: v for k, v in data.items() if isinstance(v, dict) and k not in TRAIN_PRESETS}

    def save_preset(self, name: str, **settings) -> dict:
        """Save (or replace) a user preset; built-in presets cannot be replaced."""
        rules.validate_name(name)
        if name in TRAIN_PRESETS:
            raise ValidationError(f"{name!r} is a built-in preset; choose another name")
        if not settings:
            raise ValidationError("a preset needs at least one setting")
        target = settings.pop("target_epochs", None)
        vals = rules.validate_train_settings(settings)
        if target is not None:
            vals["target_epochs"] = rules.check_target_epochs(target, 0)
        user = self._user_presets()
        user[name] = vals
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / PRESETS_FILE, json.dumps(user, indent=2))
        return vals

    def delete_preset(self, name: str) -> None:
        user = self._user_presets()
        if name not in user:
            raise NotFoundError(f"no user preset {name!r}")
        del user[name]
        write_atomic(self.dir / PRESETS_FILE, json.dumps(user, indent=2))


def _num(x: float) -> str:
    return "" if x != x else repr(float(x))


def _grow_lm(lm, n_layer: int) -> None:
    """Grow the GPT and move the optimizer moments into the new layout (new blocks: zero)."""
    from cllm.engine.model import GPT

    old = lm.gpt.config
    lm.gpt.grow_layers(n_layer)
    if lm.optim_state is not None:
        for k in ("m", "v"):
            lm.optim_state[k] = GPT.remap_flat(old, lm.gpt.config, lm.optim_state[k])
