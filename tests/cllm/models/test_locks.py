import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cllm.errors import BusyError
from cllm.models.locks import ModelLock, acquire, held_here, lock_holder, lock_path

HOLDER = """
import sys, time
from cllm.models.locks import acquire
lock = acquire(sys.argv[1], sys.argv[2], "training")
print("held", flush=True)
time.sleep(120)
"""


def spawn_holder(models_dir, name):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(models_dir), name],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_busy_while_holder_alive_then_recovered_after_sigkill(tmp_path):
    proc = spawn_holder(tmp_path, "m")
    try:
        with pytest.raises(BusyError) as err:
            acquire(tmp_path, "m", "renaming")
        msg = str(err.value)
        assert f"model 'm' is busy: training by pid {proc.pid} on host" in msg
        assert "since" in msg and "\n" not in msg
        holder = lock_holder(tmp_path, "m")
        assert holder["pid"] == proc.pid and holder["purpose"] == "training"
        assert "python" in holder["command"] or holder["command"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_path(tmp_path, "m").exists()  # left behind by the dead holder
    assert lock_holder(tmp_path, "m") is None
    with acquire(tmp_path, "m", "renaming") as lock:
        assert lock.recovered["pid"] == proc.pid
        assert lock_holder(tmp_path, "m")["pid"] == os.getpid()
    assert not lock_path(tmp_path, "m").exists()


def test_same_process_second_acquire_is_busy(tmp_path):
    with ModelLock(tmp_path, "a", "training"):
        assert held_here(tmp_path, "a")
        with pytest.raises(BusyError, match="training by pid"):
            acquire(tmp_path, "a")
        with acquire(tmp_path, "b"):  # other models are independent
            pass
    assert not held_here(tmp_path, "a")
    acquire(tmp_path, "a").release()


def test_stale_files_recovered(tmp_path):
    path = lock_path(tmp_path, "x")
    # a holder that died on this host (its flock died with it)
    path.write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename}))
    acquire(tmp_path, "x").release()
    # a crash between creating the file and writing it: empty and old
    path.write_bytes(b"")
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert lock_holder(tmp_path, "x") is None
    acquire(tmp_path, "x").release()
    # garbage content
    path.write_bytes(b"\x00\xff{not json")
    os.utime(path, (time.time() - 60, time.time() - 60))
    acquire(tmp_path, "x").release()


def test_lock_being_taken_counts_as_busy(tmp_path):
    path = lock_path(tmp_path, "y")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)  # another process has the flock, no JSON yet
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(BusyError, match="busy"):
            acquire(tmp_path, "y")
        assert lock_holder(tmp_path, "y") == {"purpose": "locking"}
    finally:
        os.close(fd)
    acquire(tmp_path, "y").release()  # its flock gone, the empty file is free


@pytest.mark.parametrize("stale", [False, True])
def test_exactly_one_of_many_racers_wins(tmp_path, stale):
    for round_ in range(5):
        if stale:
            path = lock_path(tmp_path, "r")
            path.write_text(json.dumps({"pid": dead_pid(), "host": "elsewhere"}))
            os.utime(path, (time.time() - 60, time.time() - 60))
        barrier = threading.Barrier(8)
        winners, errors = [], []

        def race(barrier=barrier, winners=winners, errors=errors):
            barrier.wait()
            try:
                winners.append(acquire(tmp_path, "r"))
            except BusyError:
                pass
            except Exception as e:  # any other failure is a bug to report
                errors.append(e)

        threads = [threading.Thread(target=race) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(winners) == 1, f"round {round_}: {len(winners)} winners"
        winners[0].release()
        assert not lock_path(tmp_path, "r").exists()
