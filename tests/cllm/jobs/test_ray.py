"""Jobs on a real local Ray cluster (a head node and a second node joined to it, made with Ray's
own cluster utilities): a 3-job run through the object store, a worker process killed mid-job
and retried from its last checkpoint, a driver killed and restarted, the shared-folder mode.
Skipped without ray (the `cluster` extra); slow, since a Ray cluster takes a while to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cllm.cli import main
from cllm.jobs.store import JobStore
from cllm.models.registry import Registry

from .conftest import make_models, wait_for

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


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=1)
    yield c.address
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
    reg = make_models(models, ("a",), checkpoint_minutes=0.003)  # a checkpoint every 0.2 s
    (job,) = JobStore(models).add(reg, ["a"], steps=600)
    r, lines = runner(models, cluster)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r.run()), daemon=True)
    t.start()
    wait_for(lambda: any("training on" in x for x in lines), 180)
    pid = int(next(x for x in lines if "training on" in x).rsplit("pid ", 1)[1].rstrip(")"))
    wait_for(lambda: (reg.info("a").meta.get("steps") or 0) >= 5, 120, 0.05)
    os.kill(pid, signal.SIGKILL)
    t.join(300)
    assert not t.is_alive()
    assert out == {job.id: "done"}, lines
    assert any("retrying" in x for x in lines), lines
    got = JobStore(models).get(job.id)
    assert got.attempts == 2 and got.step == 600
    steps = steps_of(reg, "a")
    assert steps[-1] == 600 and steps == sorted(set(steps))


@pytest.mark.slow
def test_driver_killed_and_restarted_picks_the_jobs_up(cluster, tmp_path):
    models = tmp_path / "models"
    reg = make_models(models, ("a", "b"), checkpoint_minutes=0.003)
    JobStore(models).add(reg, ["a", "b"], steps=400)
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
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: all((reg.info(n).meta.get("steps") or 0) >= 5 for n in "ab"), 240, 0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr
    assert "back in the queue" in second.stderr
    for j in JobStore(models).list():
        assert j.state == "done", j.reason
        steps = steps_of(reg, j.model)
        assert steps[-1] == 400 and steps == sorted(set(steps))


@pytest.mark.slow
def test_shared_folder(cluster, tmp_path):
    models = tmp_path / "models"
    reg = make_models(models, ("a",))
    (job,) = JobStore(models).add(reg, ["a"], steps=5)
    r, lines = runner(models, cluster, shared_folder=True, num_cpus=1)
    assert r.run() == {job.id: "done"}, lines
    assert steps_of(reg, "a") == list(range(1, 6))
