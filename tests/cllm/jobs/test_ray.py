"""Jobs on a real local Ray cluster (a head node and a second node joined to it, made with Ray's
own cluster utilities): a 3-job run through the object store, a worker process killed mid-job
and retried from its last checkpoint, a driver killed and restarted, the shared-folder mode.
Skipped without ray (the `cluster` extra); slow, since a Ray cluster takes a while to start."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cllm.cli import main
from cllm.jobs.store import JobStore
from cllm.models.registry import Registry

from .conftest import SMALL, make_models, wait_for

ROOT = Path(__file__).resolve().parents[3]


def test_unreachable_address_is_one_line_within_30_s(tmp_path, capsys):
    models = tmp_path / "models"
    make_models(models, ("a",))
    JobStore(models).add(Registry(models), ["a"], steps=1)
    t0 = time.monotonic()
    assert main(["jobs", "run", "--ray", "127.0.0.1:1", "--models-dir", str(models)]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - t0 < 30
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and len(err.splitlines()) == 1
    assert main(["jobs", "run", "--ray", "nowhere", "--models-dir", str(models)]) == 2
    assert "expected 'auto', 'local' or HOST:PORT" in capsys.readouterr().err
    assert [j.state for j in JobStore(models).list()] == ["queued"]


def test_a_shipped_model_carries_its_inline_and_file_queue_items(tmp_path):
    """pack_model/unpack_model (no Ray needed): small items live in the queue's index, large ones
    in token files; both arrive with the model, token for token."""
    from cllm.jobs.ray_runner import pack_model, unpack_model

    models = tmp_path / "models"
    reg = make_models(models, ("a",))
    dq = reg.queue("a")
    dq.add_text("a long text that needs a token file of its own. " * 2000, source="long")
    want = {it.id: dq.tokens(it.id).tolist() for it in dq.items()}
    assert sorted(dq.token_file(i)[0] is None for i in want) == [False, True]  # one of each
    dq.close()
    unpack_model(pack_model(models, "a"), tmp_path / "there", "b")
    there = Registry(tmp_path / "there")
    assert there.info("b").meta.steps == reg.info("a").meta.steps
    q = there.queue("b")
    assert {it.id: q.tokens(it.id).tolist() for it in q.items()} == want
    q.close()


def _alive(t: threading.Thread, lines: list[str]) -> bool:
    """For wait_for: a driver thread that has ended fails the test now, not at the timeout."""
    assert t.is_alive(), f"the driver stopped early: {lines}"
    return True


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    # The nodes stop in the teardown, on a failure or Ctrl+C (SIGINT) too; on SIGTERM, Ray's own
    # handler stops them, and on SIGKILL its reaper processes (one per node) do.
    c = Cluster()
    try:
        # 3 CPUs in all on a 2-core machine: 2 jobs at once on the head, 1 on the second node
        c.add_node(num_cpus=2, include_dashboard=False)
        c.add_node(num_cpus=1)
        yield c.address
    finally:
        ray.shutdown()
        c.shutdown()


def steps_of(reg, name):
    return reg.history(name)["steps"]


def runner(models, address, **kw):
    from cllm.jobs.ray_runner import RayRunner

    lines: list[str] = []
    return RayRunner(models, address, log=lines.append, **kw), lines


@pytest.mark.slow
def test_three_jobs_through_the_object_store(cluster, tmp_path):
    models = tmp_path / "models"
    reg = make_models(models, ("a", "b", "c"))
    jobs = JobStore(models).add(reg, ["a", "b", "c"], steps=8)
    r, lines = runner(models, cluster)
    assert r.run() == {j.id: "done" for j in jobs}, lines
    for j in JobStore(models).list():
        assert j.state == "done" and j.step == 8 and j.tokens == 8 * 4 * 32
        assert steps_of(reg, j.model) == list(range(1, 9))  # the checkpoints came home
        assert reg.info(j.model).busy is None
    assert sum("training on" in x for x in lines) == 3


@pytest.mark.slow
def test_a_killed_worker_is_retried_from_the_last_checkpoint_home(cluster, tmp_path):
    models = tmp_path / "models"
    bigger = replace(SMALL, n_embd=64, n_inner=0, n_layer=2)  # slow enough to be caught mid-run
    reg = make_models(models, ("a",), config=bigger, checkpoint_minutes=0.003)  # every 0.2 s
    (job,) = JobStore(models).add(reg, ["a"], steps=3000)
    r, lines = runner(models, cluster)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r.run()), daemon=True)
    t.start()
    try:
        wait_for(lambda: _alive(t, lines) and any("training on" in x for x in lines), 180)
        pid = int(next(x for x in lines if "training on" in x).rsplit("pid ", 1)[1].rstrip(")"))
        wait_for(lambda: _alive(t, lines) and (reg.info("a").meta.steps or 0) >= 5, 120, 0.05)
        os.kill(pid, signal.SIGKILL)
        t.join(300)
        assert not t.is_alive()
    finally:
        if t.is_alive():  # a failure or Ctrl+C: stop the driver before the cluster goes
            r.stop()
            t.join(60)
    assert out == {job.id: "done"}, lines
    assert any("retrying" in x for x in lines), lines
    got = JobStore(models).get(job.id)
    assert got.attempts == 2 and got.step == 3000
    steps = steps_of(reg, "a")
    assert steps[-1] == 3000 and steps == sorted(set(steps))


@pytest.mark.slow
def test_driver_killed_and_restarted_picks_the_jobs_up(cluster, tmp_path):
    models = tmp_path / "models"
    bigger = replace(SMALL, n_embd=64, n_inner=0, n_layer=2)
    reg = make_models(models, ("a", "b"), config=bigger, checkpoint_minutes=0.003)
    JobStore(models).add(reg, ["a", "b"], steps=1500)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "cllm",
        "jobs",
        "run",
        "--ray",
        cluster,
        "--models-dir",
        str(models),
    ]
    log = tmp_path / "first.log"
    with open(log, "wb") as err:
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)

    def both_started() -> bool:
        assert first.poll() is None, f"the first driver ended early: {log.read_text()}"
        return all((reg.info(n).meta.steps or 0) >= 5 for n in "ab")

    try:
        wait_for(both_started, 240, 0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert "running" in {j.state for j in JobStore(models).list()}  # killed mid-run
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr
    assert "back in the queue" in second.stderr
    for j in JobStore(models).list():
        assert j.state == "done", j.reason
        steps = steps_of(reg, j.model)
        assert steps[-1] == 1500 and steps == sorted(set(steps))


@pytest.mark.slow
def test_shared_folder(cluster, tmp_path):
    models = tmp_path / "models"
    reg = make_models(models, ("a",))
    (job,) = JobStore(models).add(reg, ["a"], steps=5)
    r, lines = runner(models, cluster, shared_folder=True, num_cpus=1)
    assert r.run() == {job.id: "done"}, lines
    assert steps_of(reg, "a") == list(range(1, 6))


@pytest.mark.slow
def test_data_parallel_equals_one_process(cluster, tmp_path):
    """20 steps with each batch split across 2 actors = 20 steps in one process, to 1e-5."""
    from cllm.jobs.data_parallel import attach
    from cllm.train.trainer import Trainer

    models = tmp_path / "models"
    reg = make_models(models, ("a", "b"), batch_size=6, val_fraction=0.1)
    one = Trainer(reg, "a", max_steps=20, publish=False)
    one.start()
    assert one.join(300)
    dp = Trainer(reg, "b", max_steps=20, publish=False)
    actors = attach(dp, cluster, 2)
    assert len(actors) == 2
    dp.start()
    assert dp.join(300)
    assert one.snapshot().state == dp.snapshot().state == "done", dp.snapshot().message
    ha, hb = reg.history("a"), reg.history("b")
    assert ha["steps"] == hb["steps"] == list(range(1, 21))
    diff = max(abs(x - y) for x, y in zip(ha["train_loss"], hb["train_loss"], strict=True))
    assert diff < 1e-5, diff
    va = [v for v in ha["val_loss"] if v is not None and math.isfinite(v)]
    vb = [v for v in hb["val_loss"] if v is not None and math.isfinite(v)]
    assert va and max(abs(x - y) for x, y in zip(va, vb, strict=True)) < 1e-5
    import ray

    for a in actors:
        ray.kill(a)


def test_data_parallel_refusals(tmp_path, capsys):
    from cllm.cli.train import main as train_main

    models = tmp_path / "models"
    make_models(models, ("a",))
    d = ["--models-dir", str(models)]
    for argv, words in [
        (["a", "--data-parallel", "2"], "--ray and --data-parallel go together"),
        (["a", "--ray", "127.0.0.1:1", "--data-parallel", "2"], "cannot reach the Ray cluster"),
    ]:
        assert train_main(argv + d) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.splitlines()) == 1, err
