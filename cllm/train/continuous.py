"""Continuous training: train a model on its queue while pages keep arriving in it.

`ContinuousTraining` follows a crawl (`cllm.crawl.crawler.Follower`): whenever a training round
has ended and new items have arrived, it starts another round, one more epoch over the queue as
it now stands (or up to the model's own target epochs if those are not reached yet). At the end
of the crawl it lets the round in progress finish, then trains once more if pages came in
meanwhile, so every page gets trained. The Trainer takes the model's lock for each round; a model
that is busy elsewhere, or has too few tokens yet, is tried again after the next page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cllm.errors import CLLMError

Report = Callable[[str, str], None]  # report(kind, text); see cllm.crawl.crawler.Follower


class ContinuousTraining:
    """Trains model `name` of `models_dir` on what a crawl queues (driven from the crawl's thread;
    each round a trainer thread, or with `in_process` a training process of its own, as the
    studio's runs: cllm.train.process)."""

    def __init__(self, models_dir: str | Path, name: str, *, in_process: bool = False) -> None:
        self.models_dir = Path(models_dir)
        self.name = name
        self.in_process = in_process
        self.trainer = None  # the round in progress
        self.untrained = 0  # items queued since that round started
        self._problem = ""  # why the last round could not start (reported once)

    def queued(self, items: int) -> None:
        self.untrained += items

    def poll(self, report: Report) -> None:
        """When the last round has ended and new items have arrived, start a round."""
        if self.trainer is not None:
            if self.trainer.is_alive():
                report("status", _line(self.trainer.snapshot()))
                return
            self._end_round(report)
        if self.untrained:
            self._start_round(report)

    def finish(self, report: Report, wait: Callable[[float], None]) -> None:
        """Let the round in progress finish, then one last round for the pages that came in
        meanwhile. `wait` raises when the crawl is told to stop (which calls stop)."""
        for _ in range(2):
            while self.trainer is not None and self.trainer.is_alive():
                report("message", "training on the last pages")
                report("status", _line(self.trainer.snapshot()))
                wait(0.2)
            self.poll(report)
        if self.trainer is not None and not self.trainer.is_alive():
            self._end_round(report)

    def stop(self, report: Report) -> None:
        if self.trainer is not None:
            self.trainer.stop()  # it saves a checkpoint
            self.trainer.join()
            self._end_round(report)

    def _start_round(self, report: Report) -> None:
        from cllm.models.registry import Registry
        from cllm.train.trainer import Trainer

        registry = Registry(self.models_dir)
        try:
            meta = registry.info(self.name).meta
            epochs = meta.epochs_trained
            # one more epoch, or the rest of the user's own target if that is further
            target = max(epochs + 1, meta.target_epochs)
            if self.in_process:
                from cllm.train.process import TrainerProcess

                trainer = TrainerProcess(self.models_dir, self.name, target_epochs=target)
            else:
                trainer = Trainer(registry, self.name, target_epochs=target)
        except CLLMError as err:  # busy elsewhere, too few tokens yet: try again after a page
            if str(err) != self._problem:
                self._problem = str(err)
                report("error", f"cannot train yet: {err}")
                report("status", f"waiting: {err}")
            return
        self._problem = ""
        trainer.start()
        self.trainer, self.untrained = trainer, 0
        report("trained", f"training epoch {epochs + 1} of {target} of {self.name}")
        report("status", _line(trainer.snapshot()))

    def _end_round(self, report: Report) -> None:
        snap = self.trainer.snapshot()
        self.trainer = None
        loss = f"; loss {snap.train_loss:.4f}" if snap.train_loss is not None else ""
        report("trained" if snap.state == "done" else "error", f"{snap.message}{loss}")
        report("status", f"{snap.state}: {snap.message}{loss}")


def _line(s) -> str:
    loss = f", loss {s.train_loss:.4f}" if s.train_loss is not None else ""
    return f"{s.state}: epoch {s.epoch}, batch {s.batch}/{s.batches_per_epoch}{loss}"
