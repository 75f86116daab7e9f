"""The models folder: every named model with its side files, and the operations on them.

A model ``NAME`` is ``NAME.cllm`` (weights, tokenizer, settings, history) plus its side files,
named by cllm.models.paths (its queue, lock, progress, crawl store and pages, and its kept
checkpoints). The file name is the model's name; the name stored inside the file
follows it (rename rewrites it).

Every operation that changes a model holds the model's lock (cllm.models.locks) while it does, so a
model that is training cannot be renamed, deleted or re-set under the trainer's feet. ``save(lm)``
is the one exception: a process that already holds the lock (the trainer checkpointing) saves under
it. A crawl holds its own lock, ``NAME.crawl.sqlite-lock`` (cllm.crawl.store), not the model's,
because its continuous training takes the model's lock for each round; rename and delete take both.

Opening a folder (``Registry(...)``) finishes what killed operations left: a rename's intent
record is rolled forward (the new model file is in place) or back (it is not), and temporary files
whose writer is dead are removed. A queue that holds items is never deleted to make room for a
name: the operation is refused instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from cllm.atomic import (
    atomic_open,
    disk_full,
    is_disk_full,
    remove_stale_temps,
    sweep_folder,
    write_atomic,
)
from cllm.engine import schema
from cllm.engine.config import PRESETS, GPTConfig, TrainConfig, num_params
from cllm.engine.meta import ModelMeta, now_iso
from cllm.errors import BusyError, CLLMError, ModelFileError, NotFoundError, ValidationError
from cllm.models import locks, paths, rules
from cllm.pids import pid_alive

SUFFIX = paths.MODEL_SUFFIX
CRAWL_LOCK = paths.CRAWL_LOCK_SUFFIX  # held by a running crawl (cllm.crawl.store.CrawlDB.try_lock)
PRESETS_FILE = paths.PRESETS_FILE

# Named sets of training settings; applying one clamps seq_len to the model's context.
TRAIN_PRESETS: dict[str, dict] = {
    "quick": dict(batch_size=8, seq_len=64, learning_rate=3e-3, warmup=20, target_epochs=1),
    "balanced": dict(batch_size=16, seq_len=128, learning_rate=1e-3, warmup=100, target_epochs=3),
    "thorough": dict(batch_size=32, seq_len=256, learning_rate=6e-4, warmup=300, target_epochs=10),
}


@dataclass
class ModelInfo:
    """What a listing shows about a model, read from the file's header only."""

    name: str
    path: Path
    config: GPTConfig
    train: TrainConfig
    meta: ModelMeta
    n_params: int
    file_size: int
    queue_items: int
    queue_tokens: int
    busy: str | None  # "training by pid 123 on host h since ..." while locked
    tokenizer_kind: str = ""
    queue_held_out: int = 0  # items held out for validation, and their tokens
    queue_held_out_tokens: int = 0

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(
            path=str(self.path),
            config=self.config.to_dict(),
            train=self.train.to_dict(),
            meta=self.meta.to_dict(),
        )
        return d


@dataclass
class Problem:
    """A file in the models folder that looks like a model but cannot be read, and why."""

    name: str
    path: Path
    reason: str

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "reason": self.reason}


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


def _read_header(path: Path):
    from cllm.engine.modelfile import read_header

    return read_header(path)


def _queue_size(db: Path, wal_pending: bool) -> tuple[int, int, int, int]:
    """(items, tokens, held-out items, their tokens) from a queue's index, read directly: a
    DataQueue needs the tokenizer. An index older than the validation flag holds none out."""
    if not db.is_file():
        return 0, 0, 0, 0
    # With no write-ahead log pending, the database file is complete and can be read as
    # immutable, which skips SQLite's locking and is several times faster.
    uri = f"file:{db}?mode=ro" + ("" if wal_pending else "&immutable=1")
    try:
        con = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            row = con.execute("SELECT COUNT(*), COALESCE(SUM(n_tokens), 0) FROM items").fetchone()
            try:
                held = con.execute(
                    "SELECT COUNT(*), COALESCE(SUM(n_tokens), 0) FROM items WHERE validation"
                ).fetchone()
            except sqlite3.OperationalError:  # no validation column yet
                held = (0, 0)
        finally:
            con.close()
    except sqlite3.Error:
        return 0, 0, 0, 0
    return int(row[0]), int(row[1]), int(held[0]), int(held[1])


def _busy_text(holder: dict | None) -> str | None:
    if not holder:
        return None
    return (
        f"{holder.get('purpose', 'in use')} by pid {holder.get('pid')} on host "
        f"{holder.get('host')} since {holder.get('started')}"
    )


def _drop(path: Path) -> None:
    """Remove a file, trying twice; a failure leaves it for recover() to handle."""
    for _ in range(2):
        try:
            path.unlink(missing_ok=True)
            return
        except OSError:
            continue


def _sqlite_full(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and "full" in str(err)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


class Registry:
    """The models in one folder (None: $CLLM_MODELS_DIR, else ./models). Opening it recovers
    what killed operations left behind (``recover``)."""

    def __init__(self, models_dir: Path | str | None = None, *, recover: bool = True):
        self.dir = paths.models_dir(models_dir)
        self.recovered: list[str] = []  # what recover() did, one line each
        if recover:
            self.recover()

    # ------------------------------------------------------------------------------ paths

    def path(self, name: str) -> Path:
        return paths.model_file(self.dir, name)

    def queue_dir(self, name: str) -> Path:
        return paths.queue_dir(self.dir, name)

    def side_paths(self, name: str) -> list[Path]:
        """Everything that belongs to a model except its locks, model file first."""
        return paths.side_files(self.dir, name)

    def names(self) -> list[str]:
        """Names of the models in the folder, sorted (temporary and foreign files ignored)."""
        if not self.dir.is_dir():
            return []
        out = []
        for entry in os.scandir(self.dir):
            stem = paths.name_of_model_file(entry.name)
            if stem is not None:
                try:
                    out.append(rules.validate_name(stem))
                except ValidationError:
                    continue
        return sorted(out, key=lambda n: (n.lower(), n))

    # ------------------------------------------------------------------------------ recovery

    def recover(self) -> list[str]:
        """Finish or undo renames that a kill interrupted and delete temporary files whose
        writer is dead. Returns (and adds to ``self.recovered``) one line per thing done."""
        if not self.dir.is_dir():
            return []
        done: list[str] = []
        try:
            entries = [e.name for e in os.scandir(self.dir) if e.name.startswith(".")]
        except OSError:
            return []
        for n in entries:
            gone = paths.parse_delete_intent(n)
            if gone:
                try:
                    line = self._recover_delete(gone)
                except (BusyError, ValidationError, OSError):
                    line = None
                if line:
                    done.append(line)
            intent = paths.parse_rename_intent(n)
            if intent:
                try:
                    line = self._recover_rename(*intent)
                except (BusyError, ValidationError, OSError):
                    line = None  # in progress in another process, or not ours: leave it
                if line:
                    done.append(line)
        for n in entries:
            p = self.dir / n
            copying = n.endswith(f"{paths.QUEUE_SUFFIX}.copy.tmp")
            if n.endswith(".rename.tmp") or copying:
                name = n[1:].split(".")[0]
                name = name[: -len(paths.QUEUE_SUFFIX)] if copying else name
                if (
                    any(paths.parse_rename_intent(x) for x in os.listdir(self.dir))
                    or not p.exists()
                ):
                    continue  # a rename's own file: its intent decides
                try:
                    rules.validate_name(name)
                    with self.lock(name, "cleaning up"):
                        if (
                            copying
                            and self.path(name).exists()
                            and not self.queue_dir(name).exists()
                        ):
                            os.rename(p, self.queue_dir(name))  # saved model: its queue is complete
                            done.append(f"finished copying {name}'s queue (it was interrupted)")
                            continue
                        _remove(p)
                    done.append(f"removed {n} (left by a killed operation)")
                except (BusyError, ValidationError, OSError):
                    continue
        for p in sweep_folder(self.dir):
            done.append(f"removed {p.name} (left by a killed write)")
        for n in os.listdir(self.dir):  # lock files their dead holders left: take, then release
            if n.endswith(paths.LOCK_SUFFIX) or n.endswith(paths.CRAWL_LOCK_SUFFIX):
                p = self.dir / n
                if locks.holder(p) is None and p.is_file():
                    try:
                        locks.FileLock(p, n, "cleaning up").acquire().release()
                    except (BusyError, OSError):
                        continue
        self.recovered += done
        return done

    def _recover_rename(self, old: str, new: str) -> str | None:
        """Roll an interrupted rename forward (the new model file is in place) or back."""
        rules.validate_name(old)
        rules.validate_name(new)
        intent = paths.rename_intent(self.dir, old, new)
        other = new.lower() != old.lower()
        with self.lock(old, "recovering a rename"), self._no_crawl(old):
            with (
                self.lock(new, "recovering a rename") if other else nullcontext(),
                self._no_crawl(new) if other else nullcontext(),
            ):
                if not intent.exists():
                    return None  # finished by another process meanwhile
                tmp = paths.rename_tmp(self.dir, new)
                # the new model file moved into place is the commit point of a rename
                forward = self.path(new).exists() and not tmp.exists()
                pairs = list(zip(self.side_paths(old)[1:], self.side_paths(new)[1:], strict=True))
                if forward:
                    for src, dst in pairs:
                        if src.exists() and not dst.exists():
                            os.rename(src, dst)
                    if other:
                        self.path(old).unlink(missing_ok=True)
                    what = f"finished renaming {old} to {new} (it was interrupted)"
                else:
                    for src, dst in pairs:
                        if dst.exists() and not src.exists():
                            os.rename(dst, src)
                    what = f"undid the interrupted rename of {old} to {new}"
                _remove(tmp)
                intent.unlink(missing_ok=True)
                return what

    def _recover_delete(self, name: str) -> str | None:
        """Finish a delete that a kill interrupted (its model file gone), or forget one that had
        not started (the model file still there: nothing was deleted)."""
        rules.validate_name(name)
        intent = paths.delete_intent(self.dir, name)
        with self.lock(name, "recovering a delete"), self._no_crawl(name):
            if not intent.exists():
                return None
            finished = not self.path(name).exists()
            if finished:
                for p in self.side_paths(name):
                    _remove(p)
            _drop(intent)
            return f"finished deleting {name} (it was interrupted)" if finished else None

    def _clear_leftovers(self, name: str) -> None:
        """Remove side files that a deleted model ``name`` left behind, before a new model takes
        the name. A queue that holds items is never deleted: the caller is refused instead."""
        items = _queue_size(self.queue_dir(name) / "queue.sqlite", True)[0]
        if items:
            raise ValidationError(
                f"{self.queue_dir(name)} holds {items} queue items but there is no model "
                f"{name!r}: move or delete that folder first (nothing was changed)"
            )
        for p in self.side_paths(name)[1:]:
            _remove(p)

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
        its files move; BusyError if one is running."""
        with locks.crawl_lock(self.dir, name, "moving files"):
            yield

    def crawling(self, name: str) -> int | None:
        """The pid of the process crawling ``name`` on this host, or None."""
        info = locks.holder(paths.crawl_lock(self.dir, name))
        pid = info.get("pid") if info else None
        return pid if type(pid) is int and pid > 0 and pid_alive(pid) else None

    # ------------------------------------------------------------------------------ reading

    def _info_from_header(self, name: str, lock_files: set[str] | None = None) -> ModelInfo:
        path = self.path(name)
        h = _cached(path, _read_header)
        config = h.config
        meta = replace(h.meta, name=name)  # shallow: the cached header's lists are shared
        items, tokens, held, held_tokens = _cached(
            self.queue_dir(name) / "queue.sqlite", _queue_size, wal=True
        )
        has_lock = lock_files is None or paths.lock_file(self.dir, name).name in lock_files
        busy = _busy_text(locks.lock_holder(self.dir, name)) if has_lock else None
        if busy is None and (lock_files is None or f"{name}{CRAWL_LOCK}" in lock_files):
            pid = self.crawling(name)
            busy = f"crawling by pid {pid}" if pid else None
        return ModelInfo(
            name=name,
            path=path,
            config=config,
            train=replace(h.train),
            meta=meta,
            n_params=num_params(config),
            file_size=h.file_size,
            queue_items=items,
            queue_tokens=tokens,
            busy=busy,
            tokenizer_kind=h.tokenizer_kind,
            queue_held_out=held,
            queue_held_out_tokens=held_tokens,
        )

    def list(self) -> list[ModelInfo]:
        """Every readable model in the folder, sorted by name, from headers only (never the
        weights). A damaged file does not hide the others: ``scan`` also says what is wrong."""
        return self.scan()[0]

    def scan(self) -> tuple[list[ModelInfo], list[Problem]]:
        """(every readable model, every model file that cannot be read with its reason)."""
        if not self.dir.is_dir():
            return [], []
        lock_files = {e.name for e in os.scandir(self.dir) if e.name.endswith("lock")}
        out, problems = [], []
        for name in self.names():
            try:
                out.append(self._info_from_header(name, lock_files))
            except (CLLMError, OSError) as err:
                reason = str(err)
                prefix = f"{self.path(name)}: "
                reason = reason[len(prefix) :] if reason.startswith(prefix) else reason
                problems.append(Problem(name, self.path(name), reason))
        return out, problems

    def info(self, name: str) -> ModelInfo:
        return self._info_from_header(self.resolve(name))

    def load(self, name: str):
        """The whole model (weights, tokenizer, settings, optimizer state) as a LanguageModel."""
        from cllm.engine.lm import load_model

        name = self.resolve(name)
        lm = load_model(self.path(name))
        lm.name = lm.meta.name = name  # the file name is the model's name
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
        _, _, begin, end = h.tensors["tokenizer"]
        with open(path, "rb") as f:
            f.seek(h.data_start + begin)
            raw = f.read(end - begin)
        try:
            return tokenizer_from_json(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValidationError) as err:
            raise ModelFileError(f"{path}: stored tokenizer is invalid ({err})") from None

    # ------------------------------------------------------------------------------ writing

    def save(self, lm) -> None:
        """Save a LanguageModel under its name (atomic); locks unless this process holds it."""
        name = rules.validate_name(lm.name)
        lm.meta.modified = now_iso()
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
                sources=[str(s) for s in sources or []],
            )
            self._clear_leftovers(name)  # a deleted model's files must not leak into this one
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
            intent = paths.delete_intent(self.dir, name)  # a kill midway: recover() finishes
            write_atomic(intent, json.dumps({"name": name, "pid": os.getpid()}))
            for p in self.side_paths(name):  # model file first: once it is gone, so is the model
                _remove(p)
            _drop(intent)

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
        """Under both names' locks. An intent record is written before the first move, so a
        kill at any point is rolled forward or back when the folder is next opened (recover)."""
        from cllm.engine.lm import load_model

        lm = load_model(self.path(old))
        lm.name = new
        lm.meta.update(name=new, modified=now_iso())
        same_file = new.lower() == old.lower() and self.path(new).exists()  # case-insensitive disk
        if not same_file:
            self._clear_leftovers(new)  # leftovers of a deleted model named `new`
        intent = paths.rename_intent(self.dir, old, new)
        tmp = paths.rename_tmp(self.dir, new)
        remove_stale_temps(tmp)
        write_atomic(intent, json.dumps({"old": old, "new": new, "pid": os.getpid()}))
        # The new file first, with the name inside rewritten; the old one goes last, so until then
        # every failure can be undone and the model stays usable under its old name.
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
        except BaseException as err:
            undone = True
            for step in reversed(undo):
                try:
                    step()
                except OSError:
                    undone = False  # the intent record stays: the next open finishes the undo
            if undone:
                _drop(intent)
            if is_disk_full(err):
                raise disk_full(tmp) from None
            raise
        _drop(intent)  # done: a record left behind is rolled forward (a no-op) on the next open

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
            lineage = list(lm.meta.lineage)
            lineage.append({"copied_from": src, "at": stamp})
            lm.meta.update(
                name=dst, lineage=lineage, copied_from=src, created=stamp, modified=stamp
            )
            self._clear_leftovers(dst)
            done: list[Path] = []
            try:
                qsrc, qdst = self.queue_dir(src), self.queue_dir(dst)
                # The queue is built aside, then the model file is saved (the commit point), then
                # the queue moves into place; a kill between the two is finished by recover().
                tmpq = paths.copy_queue_tmp(self.dir, dst)
                _remove(tmpq)
                done.append(tmpq)
                if (qsrc / "queue.sqlite").is_file():
                    # Item by item through the queue's own transactions: consistent even while
                    # another process (the crawler) is adding to the source queue.
                    from cllm.data.dataqueue import DataQueue

                    with DataQueue(qsrc, lm.tokenizer) as a, DataQueue(tmpq, lm.tokenizer) as b:
                        b.import_from(a)
                else:
                    tmpq.mkdir()
                done.append(self.path(dst))
                lm.save(self.path(dst))
                os.rename(tmpq, qdst)
                csrc = paths.checkpoints_dir(self.dir, src)
                if csrc.is_dir():  # the kept checkpoints travel with the copy
                    cdst = paths.checkpoints_dir(self.dir, dst)
                    done.append(cdst)
                    shutil.copytree(csrc, cdst, ignore=shutil.ignore_patterns(".tmp-*"))
            except BaseException as err:
                for p in reversed(done):
                    _remove(p)
                if is_disk_full(err) or _sqlite_full(err):
                    raise disk_full(self.queue_dir(dst)) from None
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
        if self.dir.is_dir() and os.path.samefile(dst.parent, self.dir):
            # a file written here would be a model that bypassed the rules of names and locks
            raise ValidationError(
                f"cannot export into the models folder {self.dir}: use `models copy {name} NEW` "
                "to make another model, or export elsewhere"
            )
        remove_stale_temps(dst)  # left by a killed export to the same file
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
        if lm.nonfinite:
            raise ModelFileError(
                f"{path}: {lm.nonfinite:,} weights are NaN or infinite (a diverged model); "
                "not imported"
            )
        if name is None:
            inside = str(lm.meta.name or lm.name or path.stem)
            try:
                name = rules.validate_name(inside)
            except ValidationError:
                name = rules.validate_name(path.stem)
        return self._add_imported(lm, name, on_clash, str(path))

    def import_hf(
        self, in_dir: Path | str, name: str | None = None, on_clash: str = "refuse"
    ) -> str:
        """Add a model from a transformers GPT-2 directory (ours or any standard one: its
        tokenizer from cllm_tokenizer.json, tokenizer.json or vocab.json + merges.txt)."""
        from cllm.engine.hf import import_hf
        from cllm.engine.lm import LanguageModel

        in_dir = Path(in_dir)
        config, params, tok = import_hf(in_dir)
        if tok is None:
            raise ModelFileError(
                f"{in_dir}: no tokenizer (tokenizer.json, vocab.json + merges.txt or "
                "cllm_tokenizer.json); a model needs the one it was trained with"
            )
        if name is None:  # the folder's name when it is a valid model name
            try:
                name = rules.validate_name(in_dir.resolve().name)
            except ValidationError:
                name = rules.default_name(self.names())
        lm = LanguageModel.create(config, tok, name)
        lm.gpt.params[:] = params
        bad = int(lm.gpt.params.size - np.count_nonzero(np.isfinite(lm.gpt.params)))
        if bad:
            raise ModelFileError(f"{in_dir}: {bad:,} weights are NaN or infinite; not imported")
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
            self._clear_leftovers(name)
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
                lm.meta.modified = now_iso()
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
                trained = lm.meta.epochs_trained
                lm.meta.target_epochs = rules.check_target_epochs(target, trained)
            lm.train_config = replace(lm.train_config, **vals)
            lm.meta.modified = now_iso()
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
            "epochs": list(lm.meta.epoch_summaries),
        }

    def clear_history(self, name: str) -> ModelInfo:
        """Forget the per-step loss history and the epoch summaries; the weights, the epochs
        and steps trained, and the last and best losses stay."""
        from cllm.engine.lm import load_model

        name = self.resolve(name)
        with self.lock(name, "clearing its history"):
            lm = load_model(self.path(name))
            lm.history = {}
            lm.meta.epoch_summaries = []
            lm.meta.modified = now_iso()
            lm.save(self.path(name))
        return self.info(name)

    def history_csv(self, name: str, path: Path | str) -> Path:
        """Write ``step,train_loss,val_loss`` rows (a missing validation loss is left empty)."""
        path = Path(path)
        if not path.parent.is_dir():
            raise NotFoundError(f"folder {path.parent} does not exist (cannot write {path.name})")
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
            data = schema.loads(path.read_text(encoding="utf-8"), str(path))
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
