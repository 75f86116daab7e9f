"""The one app state every tab reads: the models folder, the current model, the trainer and
the crawler.

The UI thread owns this object. Disk work goes through the worker and lands back here in
callbacks; the trainer's and the crawler's states are read once per frame through their
snapshots, and `poll` notices when either has ended.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cllm.errors import CLLMError, ValidationError
from cllm.models import paths
from cllm.models.registry import ModelInfo, Registry

from .tabstate import TabState, new_tab_state
from .words import studio_words
from .worker import Worker

if TYPE_CHECKING:  # the trainer takes a third of a second to import: not at start-up
    from cllm.crawl.crawler import CrawlConfig, Crawler, CrawlSnapshot
    from cllm.engine.lm import LanguageModel
    from cllm.train.process import TrainerProcess
    from cllm.train.trainer import Trainer, TrainSnapshot

log = logging.getLogger("app")

STUDIO_FILE = ".studio.json"  # the last model used, reopened at the next start
DEMO_NAME = "demo"
DEMO_TARGET_EPOCHS = 20
# The studio's training threads run at this nice value: the window's thread (and a chat reply)
# gets a core the moment it wants one, and the training has every cycle they leave.
TRAIN_NICE = 10
# A run trains in a process of its own (cllm.train.process): pygame holds the interpreter lock
# through every draw, and a trainer thread in this process waited on each repaint. False: a
# trainer thread here (what the studio did before).
TRAIN_IN_PROCESS = True


@dataclass
class Busy:
    """A model operation in flight, so buttons can show it and refuse a second one."""

    what: str
    name: str


@dataclass
class CrawlSettings:
    """What the Crawler tab edits; START CRAWLER (there or in the Training tab) crawls with it."""

    min_delay: float = 1.0
    max_delay: float = 3.0
    filter: str = "text"
    include: str = ""  # patterns separated by spaces
    exclude: str = ""
    max_pages: int = 100
    max_depth: int = 3
    same_host: bool = True
    train_continuously: bool = False  # train the model on the pages as they arrive

    def config(self) -> CrawlConfig:
        from cllm.crawl.crawler import CrawlConfig

        cfg = CrawlConfig(
            max_pages=int(self.max_pages),
            max_depth=int(self.max_depth),
            min_delay=float(self.min_delay),
            max_delay=float(self.max_delay),
            filter=self.filter,
            include=tuple(self.include.split()),
            exclude=tuple(self.exclude.split()),
            same_host=self.same_host,
        )
        cfg.validate()
        return cfg


@dataclass
class AppState:
    models_dir: Path
    worker: Worker
    notify: Callable[[str, str], None] | None = None  # notify(text, kind): a toast
    registry: Registry = field(init=False)
    models: list[ModelInfo] = field(default_factory=list)  # sorted by name
    listed: bool = False  # the first listing has arrived
    current: str | None = None
    lm: LanguageModel | None = None  # the current model, loaded in the background
    lm_name: str | None = None
    loading: str | None = None
    trainer: Trainer | None = None  # a run this process trains
    trainer_name: str | None = None
    snapshot: TrainSnapshot | None = None  # the current model's run (ours or headless)
    remote: TrainSnapshot | None = None  # a headless run's published progress, current model
    busy: list[Busy] = field(default_factory=list)
    tabs: dict[str, TabState] = field(default_factory=dict)  # each tab's record (tabstate.py)
    finished: dict[str, TrainSnapshot] = field(default_factory=dict)  # a run's last snapshot
    crawler: Crawler | None = None  # the crawl this process runs (one at a time)
    crawl_settings: CrawlSettings = field(default_factory=CrawlSettings)
    crawl_stopping: bool = False  # a stop was asked; the page being fetched finishes first
    crawls_ended: dict[str, CrawlSnapshot] = field(default_factory=dict)  # name -> last snapshot
    demo: bool = True  # create and train a demo model when the folder is empty
    version: int = 0  # bumped whenever `models` changes, so tabs can cache derived data
    adding: dict | None = None  # the queue add in flight: name, done, total, bytes, tokens, cancel

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(self.models_dir)
        self._sig: tuple = ()
        self._told: set[str] = set()
        self._last: str | None = None  # the last model used (.studio.json), read at start

    # ------------------------------------------------------------------ messages
    def say(self, text: str, kind: str = "info") -> None:
        """Show ``text``; an error or warning in the studio's words (cllm's speak to the CLI)."""
        if kind in ("error", "warning"):
            text = studio_words(text)
        if self.notify is not None:
            self.notify(text, kind)

    def fail(self, err: BaseException) -> None:
        """Errors of background jobs: user errors in the studio's words, bugs with their type."""
        if isinstance(err, CLLMError):
            self.say(str(err), "error")
        else:
            self.say(f"{type(err).__name__}: {err}", "error")

    # ------------------------------------------------------------------ listing
    def start(self) -> None:
        """Begin watching the models folder (the worker polls its mtimes about once a second).
        The last model used is read first (the worker keeps the order), so the first listing
        can reopen it."""
        self.worker.submit(self._last_used, done=self._set_last, error=lambda err: None)
        self.worker.every(1.0, self._scan, self._on_scan)

    def _set_last(self, name: str | None) -> None:
        self._last = name

    def tab(self, name: str) -> Any:
        """Tab `name`'s state record (app/tabstate.py), made on first use."""
        state = self.tabs.get(name)
        if state is None:
            state = self.tabs[name] = new_tab_state(name)
        return state

    def _signature(self) -> tuple:
        # the folder's entries with their mtimes; progress files change every second and do not
        # change the listing, so they are left out
        try:
            with os.scandir(self.models_dir) as it:
                return tuple(
                    sorted(
                        (e.name, e.stat().st_mtime_ns)
                        for e in it
                        if not paths.is_progress_file(e.name)
                    )
                )
        except OSError:
            return ()

    def _scan(self) -> tuple[list | None, Any]:
        """Worker: list the models if the folder changed; read the current model's progress."""
        sig = self._signature()
        models, damaged = None, []
        if sig != self._sig or not self.listed:
            models = self.registry.list()
            self._sig = sig
            listed = {m.name for m in models}
            for name in self.registry.names():  # the listing skips damaged files: say why
                if name not in listed:
                    try:
                        self.registry.info(name)
                    except (CLLMError, OSError) as err:
                        damaged.append(str(err))
        remote = None
        name = self.current
        if name and name != self.trainer_name:
            from cllm.train.trainer import read_progress

            remote = read_progress(self.models_dir, name)
        return models, damaged, (name, remote)

    def _on_scan(self, result: tuple) -> None:
        models, damaged, (name, remote) = result
        if models is not None:
            self.set_models(models)
        for msg in damaged:
            if msg not in self._told:  # once per problem, not every second
                self._told.add(msg)
                self.say(msg, "error")
        if name == self.current:
            self.remote = remote

    def refresh(self) -> None:
        """List again now (after an operation of ours)."""
        self.worker.submit(self.registry.list, done=self.set_models, error=self.fail)

    def set_models(self, models: list) -> None:
        first = not self.listed
        self.models, self.listed = list(models), True
        self.version += 1
        names = [m.name for m in self.models]
        if self.current not in names:
            self.current = None
            if self.lm_name not in names:
                self.lm, self.lm_name = None, None
            if names:
                last = self._last if first else None
                self.select(
                    last if last in names else DEMO_NAME if DEMO_NAME in names else names[0]
                )
        if first and not names and self.demo:
            self.create_demo()
        info = self.info()
        if (
            info is not None
            and self.lm_name == info.name
            and not self.loading
            and _stamp(info.meta) != _stamp(self.lm.meta)
        ):
            self.load(info.name)  # the file changed (a checkpoint, a grow): keep st.lm current

    def info(self, name: str | None = None) -> ModelInfo | None:
        name = name or self.current
        return next((m for m in self.models if m.name == name), None)

    def update_info(self, info: ModelInfo) -> None:
        """Replace one model's listing after an operation returned its fresh info."""
        self.models = [info if m.name == info.name else m for m in self.models]
        self.version += 1

    # ------------------------------------------------------------------ selection, loading
    def select(self, name: str | None) -> None:
        """Make `name` the current model of every tab and load it in the background; it is
        remembered (`.studio.json`) and reopened at the next start."""
        if name == self.current:
            return
        self.current, self.remote = name, None
        self.snapshot = None
        if name:
            self.load(name)
            self.worker.submit(self._remember, name, error=lambda err: None)

    def _last_used(self) -> str | None:
        import json

        try:
            data = json.loads((self.models_dir / STUDIO_FILE).read_text("utf-8"))
            return str(data["last_model"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none yet, or unreadable: the default choice

    def _remember(self, name: str) -> None:
        import json

        from cllm.atomic import write_atomic

        write_atomic(self.models_dir / STUDIO_FILE, json.dumps({"last_model": name}))

    def load(self, name: str) -> None:
        self.loading = name

        def done(lm: LanguageModel) -> None:
            if self.loading == name:
                self.loading = None
            self.lm, self.lm_name = lm, name

        def error(err: BaseException) -> None:
            if self.loading == name:
                self.loading = None
            self.fail(err)

        self.worker.submit(self.registry.load, name, done=done, error=error)

    @property
    def loaded(self) -> bool:
        return bool(self.current) and (self.lm_name == self.current or self.training_current)

    # ------------------------------------------------------------------ operations
    def run(
        self,
        what: str,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        done: Callable[[Any], None] | None = None,
        refresh: bool = True,
        **kwargs: Any,
    ) -> None:
        """Run a registry operation in the background, mark it busy meanwhile, toast errors."""
        tag = Busy(what, name)
        self.busy.append(tag)

        def finish() -> None:
            if tag in self.busy:
                self.busy.remove(tag)
            if refresh:
                self.refresh()

        def ok(result: Any) -> None:
            finish()
            if done is not None:
                done(result)

        def error(err: BaseException) -> None:
            finish()
            self.fail(err)

        self.worker.submit(fn, *args, done=ok, error=error, **kwargs)

    def is_busy(self, name: str | None = None) -> bool:
        return any(b.name == (name or self.current) for b in self.busy)

    def create_demo(self) -> None:
        """First launch: a tiny model trained on the project's own docs and source, started live."""
        from cllm.data.corpus import demo_corpus

        def make() -> str:
            text = demo_corpus()
            info = self.registry.create(
                DEMO_NAME,
                preset="tiny",
                text=text,
                target_epochs=DEMO_TARGET_EPOCHS,
                sources=["demo corpus"],
            )
            with self.registry.queue(info.name) as q:
                q.add_text(text, source="demo corpus (the project's docs and source)")
            return info.name

        def done(name: str) -> None:
            self.say(f"Created the demo model {name!r}; training it live", "success")
            self.select(name)
            self.start_training(name)

        self.say("First launch: creating a demo model...", "info")
        self.run("create", DEMO_NAME, make, done=done)

    # ------------------------------------------------------------------ training
    @property
    def training(self) -> bool:
        return self.trainer is not None

    @property
    def training_current(self) -> bool:
        return self.trainer is not None and self.trainer_name == self.current

    def start_training(self, name: str, **kwargs: Any) -> None:
        """Start a trainer for `name`: its constructor loads the model (disk), so in the worker."""
        if self.trainer is not None:
            self.say(f"{self.trainer_name!r} is training; stop it first", "error")
            return

        def make() -> Trainer | TrainerProcess:
            # a third of a second to import: not on the UI thread
            from cllm.train.process import TrainerProcess
            from cllm.train.trainer import Trainer

            if TRAIN_IN_PROCESS:
                t = TrainerProcess(self.registry.dir, name, nice=TRAIN_NICE, **kwargs)
            else:
                t = Trainer(self.registry, name, nice=TRAIN_NICE, **kwargs)
            t.start()
            return t

        def done(t: Trainer | TrainerProcess) -> None:
            self.trainer, self.trainer_name = t, name

        self.run("train", name, make, done=done, refresh=False)

    def stop_training(self) -> None:
        if self.trainer is not None:
            self.trainer.stop()  # the trainer checkpoints and ends; poll() notices

    def poll(self) -> None:
        """Once per frame: take the trainer's snapshot and notice when its run, or the crawl,
        has ended."""
        c = self.crawler
        if c is not None and not c.running:
            self._crawl_ended(c)
        t = self.trainer
        if t is not None:
            alive = t.is_alive()  # first: once it reads False, the snapshot below is the last
            snap = t.snapshot()
            if self.trainer_name == self.current:
                self.snapshot = snap
            if not alive:
                self._trainer_ended(t, snap)
        if not self.training_current:
            # a headless run if there is one, else the end of our last run of this model
            remote, last = self.remote, self.finished.get(self.current)
            if remote is not None and last is not None and _writer(remote) == _writer(last):
                remote = None  # our own run's progress file (its process publishes one): old news
            self.snapshot = remote or last

    def _trainer_ended(self, t: Trainer | TrainerProcess, snap: TrainSnapshot) -> None:
        name = self.trainer_name
        self.trainer, self.trainer_name = None, None
        self.finished[name] = snap
        state = getattr(snap, "state", "")
        msg = getattr(snap, "message", "") or state
        self.say(f"{name}: {msg}", "error" if state == "error" else "success")
        self.worker.submit(t.join, 5.0, done=lambda _: None)
        self.refresh()
        if name == self.current and name:
            self.load(name)  # the saved checkpoint is the freshest model

    # ------------------------------------------------------------------ crawling
    @property
    def crawl_starting(self) -> bool:
        return any(b.what == "crawl" for b in self.busy)

    def start_crawl(self, name: str, urls: list[str] | None = None) -> None:
        """Crawl into model `name`'s queue with `crawl_settings`, adding start `urls` first (a
        crawl with nothing pending is refused). One crawl at a time; it is kept in `crawler`."""
        from cllm.crawl.urls import check_start_url

        if self.crawler is not None or self.crawl_starting:
            who = self.crawler.name if self.crawler is not None else name
            self.say(f"The crawler is already running for {who!r}; stop it first", "error")
            return
        train = self.crawl_settings.train_continuously
        try:
            cfg = self.crawl_settings.config()
            urls = [check_start_url(u) for u in urls or ()]
        except CLLMError as err:
            self.fail(err)
            return

        def make() -> Crawler:
            from cllm.crawl.crawler import Crawler

            follower = None
            if train:
                from cllm.train.continuous import ContinuousTraining

                follower = ContinuousTraining(self.models_dir, name, in_process=TRAIN_IN_PROCESS)
            c = Crawler(self.models_dir, name, cfg, follower=follower)  # opens its store: disk
            try:
                c.add_urls(urls)
                if c.snapshot().pending == 0:
                    raise ValidationError(
                        f"nothing to crawl for {name!r}: add a start URL in the Crawler tab"
                        " (or Reset All URLs to crawl the list again)"
                    )
                c.start()
            except BaseException:
                c.close()
                raise
            return c

        def done(c: Crawler) -> None:
            self.crawler, self.crawl_stopping = c, False
            self.crawls_ended.pop(name, None)
            self.say(f"Crawling into the queue of {name!r}", "success")

        self.run("crawl", name, make, done=done, refresh=False)

    def stop_crawl(self) -> None:
        """Ask the crawl to stop (the page being fetched finishes; the rest stays pending);
        `poll` notices when it has."""
        if self.crawler is not None:
            self.crawler.stop()
            self.crawl_stopping = True

    def close_crawl(self, timeout: float = 10.0) -> None:
        """When the app closes: stop the crawl and wait for it (continuous training saves a
        checkpoint)."""
        c = self.crawler
        if c is not None:
            c.stop()
            c.join(timeout)

    def _crawl_ended(self, c: Crawler) -> None:
        snap = c.snapshot()
        self.crawler, self.crawl_stopping = None, False
        self.crawls_ended[c.name] = snap
        msg = f"{c.name}: {snap.message or snap.state}; {snap.tokens:,} tokens queued"
        pages = f"{snap.pages} page{'s' * (snap.pages != 1)}"
        self.say(f"{msg} from {pages}", "error" if snap.state == "error" else "success")
        self.worker.submit(c.close, done=lambda _: self.refresh(), error=self.fail)

    # ------------------------------------------------------------------ queue
    def add_to_queue(
        self, paths: list[str], name: str | None = None, validation: bool = False
    ) -> None:
        """Add files or folders to a model's queue (default: the current one), in the worker;
        ``validation``: every item is held out for validation from the start."""
        name = name or self.current
        if not name:
            self.say(
                "Select a model first: dropped files go to the selected model's queue", "error"
            )
            return

        # What the add has done so far, for the Training tab's progress bar and Cancel button.
        prog = {"name": name, "done": 0, "total": 0, "bytes": 0, "tokens": 0, "cancel": False}
        self.adding = prog

        def add() -> tuple[int, int, list]:
            try:
                return add_files()
            finally:
                prog["finished"] = True  # the bar goes, whether the add worked or failed

        def add_files() -> tuple[int, int, list]:
            from cllm.data.dataqueue import walk_files

            files: list = []
            walked: list = []  # entries a folder walk could not use, with reasons
            for p in paths:
                if Path(p).is_dir():
                    files += walk_files(Path(p), skipped=walked)
                else:
                    files.append(p)
            prog["total"] = len(files)

            def progress(done: int, total: int, source: str) -> None:
                prog["done"] = done
                try:
                    prog["bytes"] += os.path.getsize(source) if source else 0
                except OSError:
                    pass

            with self.registry.queue(name) as q:
                res = q.add_files(
                    files,
                    progress=progress,
                    cancel=lambda: prog["cancel"],
                    tokens=lambda n: prog.__setitem__("tokens", n),
                    validation=validation,
                )
            return len(res.added), res.tokens, walked + res.skipped

        def done(r: tuple[int, int, list]) -> None:
            if self.adding is prog:
                self.adding = None
            added, tokens, skipped = r
            if prog["cancel"]:
                self.say(f"{name}: add cancelled after {added} item(s)", "warning")
                return
            msg = f"{name}: added {added} item{'s' * (added != 1)} ({tokens:,} tokens)"
            msg += ", held out for validation" if validation and added else ""
            if skipped:
                src, why = skipped[0]
                msg += f"; skipped {len(skipped)} ({Path(str(src)).name}: {why})"
            self.say(msg, "success" if added else "warning")

        self.run("queue", name, add, done=done)


# What the command line's messages tell you to type, said as what to do in the studio.
def _stamp(meta) -> tuple:
    """What changes whenever a model file is saved with new weights or settings."""
    return meta.modified, meta.steps, meta.epochs_trained


def _writer(snap: TrainSnapshot) -> tuple:
    """The process that made a snapshot."""
    return snap.pid, snap.host
