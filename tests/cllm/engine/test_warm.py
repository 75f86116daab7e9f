"""The studio's warm-up: the decoding kernels compiled (and cached) in a process of its own."""

from cllm.engine import warm


def test_the_warm_up_process_runs_the_decoding_paths_and_exits():
    p = warm.start(nice=5)
    p.join(120)
    assert p.exitcode == 0 and p.daemon

