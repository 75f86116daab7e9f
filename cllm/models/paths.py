"""The names of a model's files in the models folder, and where the folder is by default.

Every module that touches a model's files asks here, so the list of what belongs to a model lives
in one place (rename, delete and copy move or remove exactly ``side_files``):

    NAME.cllm                 the model: weights, tokenizer, settings, history
    NAME_queue/               its data queue (queue.sqlite and the item files)
    NAME.progress.json        the running trainer's published progress
    NAME_checkpoints/         training checkpoints (rollback points)
    NAME.crawl.sqlite         the crawler's URL store, with its -wal and -shm files
    NAME_crawl/               the crawler's downloaded pages
    NAME.lock                 the model's lock (held while training, saving, renaming, ...)
    NAME.crawl.sqlite-lock    the crawl's lock (held while a crawl runs)

Locks never move with a model: each belongs to the process holding it. Model names are ASCII
letters, digits, ``_`` and ``-`` (cllm.models.rules), so none of these names can collide with
another model's: ``a_queue`` is not a valid name's model file, and names hold no dots.

Temporary files the folder may hold after a kill (swept when the folder is next opened, once
their writer is dead): ``.FILE.PID.*.tmp`` (an atomic write of FILE), ``.NAME.rename.tmp``
(a rename's new model file), ``.rename.OLD.NEW.json`` (a rename's intent record, rolled forward or
back), ``.delete.NAME.json`` (a delete's, finished) and ``.NAME_queue.copy.tmp/`` (a copy's queue
under construction).
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_SUFFIX = ".cllm"
QUEUE_SUFFIX = "_queue"
LOCK_SUFFIX = ".lock"
PROGRESS_SUFFIX = ".progress.json"
CHECKPOINTS_SUFFIX = "_checkpoints"
CRAWL_STORE_SUFFIX = ".crawl.sqlite"
CRAWL_LOCK_SUFFIX = CRAWL_STORE_SUFFIX + "-lock"
CRAWL_PAGES_SUFFIX = "_crawl"
PRESETS_FILE = "presets.json"
MODELS_DIR_ENV = "CLLM_MODELS_DIR"


def default_models_dir() -> Path:
    """The models folder when none is given: ``$CLLM_MODELS_DIR``, else ``./models``."""
    return Path(os.environ.get(MODELS_DIR_ENV) or "models")


def models_dir(given: Path | str | None = None) -> Path:
    """``given`` as a Path, or the default folder when it is None or empty."""
    return Path(given) if given else default_models_dir()


def model_file(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{MODEL_SUFFIX}"


def queue_dir(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{QUEUE_SUFFIX}"


def lock_file(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{LOCK_SUFFIX}"


def progress_file(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{PROGRESS_SUFFIX}"


def checkpoints_dir(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{CHECKPOINTS_SUFFIX}"


def crawl_store(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{CRAWL_STORE_SUFFIX}"


def crawl_lock(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{CRAWL_LOCK_SUFFIX}"


def crawl_pages(folder: Path | str, name: str) -> Path:
    return Path(folder) / f"{name}{CRAWL_PAGES_SUFFIX}"


def side_files(folder: Path | str, name: str) -> list[Path]:
    """Everything that belongs to model ``name`` except its locks, the model file first (rename,
    copy and delete go through this list in this order)."""
    store = crawl_store(folder, name)
    return [
        model_file(folder, name),
        queue_dir(folder, name),
        progress_file(folder, name),
        checkpoints_dir(folder, name),
        store,
        store.with_name(store.name + "-wal"),
        store.with_name(store.name + "-shm"),
        crawl_pages(folder, name),
    ]


def name_of_model_file(file_name: str) -> str | None:
    """The model name a file name ``NAME.cllm`` stands for (unchecked), else None."""
    if file_name.endswith(MODEL_SUFFIX) and not file_name.startswith("."):
        return file_name[: -len(MODEL_SUFFIX)]
    return None


def is_progress_file(file_name: str) -> bool:
    return file_name.endswith(PROGRESS_SUFFIX)


def rename_tmp(folder: Path | str, new: str) -> Path:
    """Where a rename writes the new model file before moving it into place."""
    return Path(folder) / f".{new}.rename.tmp"


def rename_intent(folder: Path | str, old: str, new: str) -> Path:
    """A rename's intent record (names hold no dots, so the file name parses back)."""
    return Path(folder) / f".rename.{old}.{new}.json"


def parse_rename_intent(file_name: str) -> tuple[str, str] | None:
    parts = file_name.split(".")
    if len(parts) == 5 and parts[:2] == ["", "rename"] and parts[4] == "json":
        return parts[2], parts[3]
    return None


def delete_intent(folder: Path | str, name: str) -> Path:
    """A delete's intent record: the next open finishes a delete that a kill interrupted."""
    return Path(folder) / f".delete.{name}.json"


def parse_delete_intent(file_name: str) -> str | None:
    parts = file_name.split(".")
    if len(parts) == 4 and parts[:2] == ["", "delete"] and parts[3] == "json":
        return parts[2]
    return None


def copy_queue_tmp(folder: Path | str, dst: str) -> Path:
    return Path(folder) / f".{dst}{QUEUE_SUFFIX}.copy.tmp"
