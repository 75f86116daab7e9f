"""A training run in a process of its own, driven like a ``Trainer`` (the studio's runs).

    t = TrainerProcess(models_dir, "alpha", nice=5, **settings)   # loads in the child; errors here
    t.start()
    t.snapshot()            # the latest TrainSnapshot, as the child's trainer made it
    t.pause(); t.resume(); t.stop()
    t.join(timeout); t.is_alive()

Why a process: a trainer thread shares the interpreter lock with the thread that owns it. In the
studio that is the window's thread, and pygame holds the lock for the whole of every draw, so the
trainer's Python between its kernels waited on each repaint (about half of the studio's tax on
training speed, the other half being the window's share of a core). A process of its own shares
nothing but the cores, and at a lower priority it gives the window the core whenever it draws.

The child (``multiprocessing``'s spawn start, the same on every platform) builds a ``Trainer``
and reports over a pipe: ("ready", snapshot) or ("error", exception) once built, then a snapshot
whenever the trainer made a new one (at most every ``SEND_S``; a change of state at once), and
("end",) after the last. A snapshot crosses without its loss history; the history's new steps
ride along and the parent keeps its own append-only copy, so a long run sends only its new steps.
If the parent goes away (its pipe closes), the child stops the run as a Stop would: it checkpoints.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from dataclasses import replace
from pathlib import Path

from cllm.errors import CLLMError
from cllm.train.trainer import TrainSnapshot, _History, freeze_start_up

SEND_S = 0.05  # the child sends at most this often (the studio repaints a snapshot at most 8/s)


class TrainerProcess:
    """``Trainer(Registry(models_dir), name, nice=nice, **settings)`` in a child process (see the
    module docstring). Raises what the trainer's constructor raised (a locked model, a bad
    setting)."""

    def __init__(self, models_dir: str | Path, name: str, *, nice: int = 0, **settings) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child,
            args=(child, str(models_dir), name, int(nice), settings),
            name=f"cllm-trainer-{name}",
            daemon=True,
        )
        self._proc.start()
        child.close()
        try:
            msg = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            raise CLLMError(
                f"the training process for {name!r} ended before it was ready "
                f"(exit code {self._proc.exitcode})"
            ) from None
        if msg[0] == "error":
            self._proc.join(5)
            raise msg[1]
        self._hist = _History()
        self._snap = self._take(msg[1])
        self.name = self._snap.name
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"cllm-trainer-pipe-{name}")
        self._reader.daemon = True

    # ---- the Trainer's interface -----------------------------------------------------------

    def start(self) -> None:
        self._send("start")
        self._reader.start()

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._send("stop")

    def close(self) -> None:
        """Let go of a run that was never started (the child releases the model's lock)."""
        if self._reader.ident is None:
            self._send("close")
            self._proc.join(10)

    def snapshot(self) -> TrainSnapshot:
        return self._snap

    def is_alive(self) -> bool:
        """True until the run's last snapshot has arrived."""
        return self._reader.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (its last snapshot in) and the child to exit; True once so."""
        if self._reader.ident is not None:
            self._reader.join(timeout)
        self._proc.join(timeout if not self._reader.is_alive() else 0)
        return not self._reader.is_alive() and not self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    # ---- the pipe ----------------------------------------------------------------------------

    def _send(self, cmd: str) -> None:
        try:
            with self._send_lock:
                self._conn.send(cmd)
        except (OSError, ValueError):  # the child is gone: nothing left to tell
            pass

    def _take(self, msg: tuple) -> TrainSnapshot:
        light, steps, train, val = msg
        self._hist.extend(steps, train, val)
        return replace(light, history=self._hist.view())

    def _read(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):  # the child died without its end: keep its last word
                snap = self._snap
                if snap.active:
                    self._snap = replace(
                        snap,
                        state="error",
                        message=f"training failed: its process ended (exit code "
                        f"{self._proc.exitcode})",
                        eta=None,
                    )
                return
            if msg[0] == "end":
                return
            self._snap = self._take(msg[1])


def _child(conn, models_dir: str, name: str, nice: int, settings: dict) -> None:
    """The child: build the trainer, report, run it on the parent's word."""
    from cllm.models.registry import Registry
    from cllm.train.trainer import Trainer

    # Ctrl+C in the studio's terminal reaches the whole process group: the studio stops the run
    # (or its pipe closes), so the child must not die of it first, without a checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    if hasattr(signal, "SIGTERM"):  # the parent's exit terminates its daemonic children
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        t = Trainer(Registry(models_dir), name, nice=nice, **settings)
    except BaseException as err:
        try:
            conn.send(("error", err))
        except Exception:  # an exception that does not pickle: its words
            conn.send(("error", CLLMError(f"{type(err).__name__}: {err}")))
        return
    sent = [0]

    def message(snap: TrainSnapshot) -> tuple:
        """The snapshot without its history, and the history's steps not sent yet."""
        h = snap.history
        n0, sent[0] = sent[0], len(h["steps"])
        return replace(snap, history={}), h["steps"][n0:], h["train"][n0:], h["val"][n0:]

    freeze_start_up()
    last = t.snapshot()
    conn.send(("ready", message(last)))
    try:
        first = conn.recv()
    except (EOFError, OSError):
        first = "close"
    if first != "start":
        t.close()
        return
    t.start()
    parent_gone = False
    while True:
        if not parent_gone and conn.poll(SEND_S):
            try:
                cmd = conn.recv()
            except (EOFError, OSError):
                cmd, parent_gone = "stop", True
            if cmd in ("pause", "resume", "stop"):
                getattr(t, cmd)()
        elif parent_gone:
            stop.wait(SEND_S)
        if stop.is_set():
            stop.clear()
            t.stop()
        snap = t.snapshot()
        alive = t.is_alive()
        if snap is not last and not parent_gone:
            last = snap
            try:
                conn.send(("snap", message(snap)))
            except (OSError, ValueError):
                parent_gone = True
                t.stop()
        if not alive:
            t.join()
            final = t.snapshot()
            if not parent_gone:
                try:
                    if final is not last:
                        conn.send(("snap", message(final)))
                    conn.send(("end",))
                except (OSError, ValueError):
                    pass
            return
