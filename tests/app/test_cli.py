"""`python -m app` on the command line: arguments, --screenshot, --bench-frames."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pygame
import pytest

from app.studio import build_parser, parse_size

ROOT = Path(__file__).resolve().parents[2]


def test_arguments():
    a = build_parser().parse_args(["--size", "1280x720", "--models-dir", "m", "--fullscreen"])
    assert a.size == (1280, 720) and a.models_dir == Path("m") and a.fullscreen
    assert build_parser().parse_args([]).size == (1600, 900)
    for bad in ("12x", "axb", "10x10", "99999x100"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


def _run(args, timeout=120):
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_size_exits_2():
    r = _run(["--size", "huge"])
    assert r.returncode == 2 and "size must look like" in r.stderr


def test_screenshot_saves_every_tab_and_the_dropdown(models_dir, tmp_path):
    out = tmp_path / "shots"
    r = _run(["--models-dir", str(models_dir), "--screenshot", str(out), "--model", "beta"])
    assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "crawler.png",
        "dropdown.png",
        "llm.png",
        "models.png",
        "research.png",
        "training.png",
    ]
    img = pygame.image.load(str(out / "dropdown.png"))
    assert img.get_size() == (1600, 900)
    assert img.get_at((1290 + 150, 90 + 30 + 15))[:3] != img.get_at((1290 + 150, 300))[:3]


@pytest.mark.slow
def test_bench_frames_prints_one_json_line(models_dir):
    from cllm.models.registry import Registry

    Registry(models_dir).set_settings("alpha", target_epochs=100_000)  # still training at the end
    r = _run(
        ["--models-dir", str(models_dir), "--bench-frames", "60", "--train", "alpha"], timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["frames"] == 60 and line["size"] == [1600, 900]
    assert line["frame_ms_p50"] <= line["frame_ms_p95"] <= line["frame_ms_max"]
    assert line["run_state"] == "running"
    assert line["train_tokens_per_s"] > 0 and line["headless_tokens_per_s"] > 0
    assert 0 < line["window_thread_cpu_share"] <= 1.05  # the window drew: it used some CPU


@pytest.mark.slow
def test_bench_chat_replies_idle_and_while_training(models_dir):
    from cllm.models.registry import Registry

    Registry(models_dir).set_settings("alpha", target_epochs=100_000)  # still training at the end
    r = _run(
        ["--models-dir", str(models_dir), "--bench-chat", "2", "--train", "alpha"], timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    for when in ("idle", "training"):
        assert 0 < line[when]["first_token_s_median"] <= line[when]["first_token_s_max"]
        assert line[when]["tokens_per_s_median"] > 0
    assert line["run_state"] == "running" and line["train_tokens_per_s_during_replies"] > 0


def _terminate_after_start(args, tmp_path) -> subprocess.CompletedProcess:
    """Start the app, let its window loop run, send SIGTERM, collect it."""
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, stdout=out, stderr=out
        )
        try:
            time.sleep(4.0)  # the window is up and its loop (the kiosk's too) runs
            assert proc.poll() is None, log.read_text()[-2000:]
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        finally:
            proc.kill()
    return subprocess.CompletedProcess(args, rc, log.read_text(), "")


@pytest.mark.parametrize("kiosk", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_sigterm_ends_the_app_cleanly_even_in_kiosk_mode(tmp_path, kiosk):
    # SDL turns SIGTERM into a window-close event, which the kiosk ignores; the app keeps
    # Python's signal instead, so a service manager (or `kill`) can always stop it
    args = ["--models-dir", str(tmp_path / "models"), "--no-demo"] + (["--kiosk"] if kiosk else [])
    r = _terminate_after_start(args, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
