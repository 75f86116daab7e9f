"""`python -m cllm bench`: one JSON line with the numbers and the configuration, on tiny models."""

from __future__ import annotations

import json

import pytest

from cllm.cli import main

TINY = "--vocab-size 64 --d-model 32 --layers 1 --heads 2 --context 32 --seq-len 16".split()


def run_json(capsys, *argv: str) -> dict:
    assert main(["bench", *argv]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_bench_train_no_torch(capsys):
    out = run_json(capsys, "train", *TINY, "--batch-size", "2", "--steps", "2", "--no-torch")
    assert out["bench"] == "train" and out["tokens_per_s"] > 0
    assert "torch_tokens_per_s" not in out and "ratio" not in out
    cfg = out["config"]
    assert (cfg["vocab_size"], cfg["d_model"], cfg["layers"], cfg["heads"]) == (64, 32, 1, 2)
    assert (cfg["seq_len"], cfg["batch_size"], cfg["steps"]) == (16, 2, 2)
    assert out["threads"] >= 1 and 0 < out["loss"] < 10


def test_bench_train_with_torch_trains_the_same_model(capsys):
    pytest.importorskip("torch")
    out = run_json(capsys, "train", *TINY, "--batch-size", "2", "--steps", "4", "--block", "2")
    assert out["torch_tokens_per_s"] > 0
    assert out["ratio"] == pytest.approx(out["tokens_per_s"] / out["torch_tokens_per_s"], rel=0.01)
    # same weights, same batches, same optimizer: the two engines end at the same loss
    assert out["loss"] == pytest.approx(out["torch_loss"], abs=2e-3)
    # each figure names the ISA both engines ran: PyTorch's kernels' as well as the CPU's
    assert out["torch_isa"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "SVE256", "unknown")
    assert 0 < out["share_of_sgemm_peak"] < 2 and out["sgemm_peak_gflops_per_s"] > 0


def test_bench_generate(capsys):
    pytest.importorskip("torch")
    argv = [*TINY, "--max-new-tokens", "8", "--prompt-len", "4", "--repeats", "1"]
    out = run_json(capsys, "generate", *argv)
    assert out["bench"] == "generate" and out["tokens_per_s"] > 0
    assert out["config"]["max_new_tokens"] == 8
    assert out["same_tokens_as_torch"] is True
    if "hf_tokens_per_s" in out:  # transformers installed
        assert out["same_tokens_as_hf"] is True and out["ratio"] > 0


def test_bench_refuses_bad_arguments(capsys):
    assert main(["bench", "train", *TINY, "--seq-len", "33", "--no-torch"]) == 2
    assert "seq-len" in capsys.readouterr().err
    assert main(["bench", "train", *TINY, "--heads", "3", "--no-torch"]) == 2
    assert "divisible" in capsys.readouterr().err
    assert main(["bench", "train", *TINY, "--steps", "0", "--no-torch"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_startup_cold_then_warm(capsys):
    out = run_json(capsys, "startup", *TINY, "--batch-size", "2")
    assert out["cold_s"] > 0 and out["warm_s"] > 0
    # a warm numba cache skips compilation: the first step is much faster than the cold one
    assert out["warm_first_step_s"] < out["cold_first_step_s"]
