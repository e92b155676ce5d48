"""A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from instaseg.config import load_config
from instaseg.models.checkpoint import load_checkpoint
from instaseg.predict.validation import train as run_training
from tests.engine.helpers import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
# Mid-epoch checkpoints, multi-scale draws, gradient accumulation, dropout (global RNG), a validation
# per epoch; sleep_s slows the killed run down enough to kill it mid-training.
OVERRIDES = tiny_overrides(
    "train.epochs=3",
    "train.accumulate=2",
    "train.batch_size=2",
    "data.scales=[32, 40]",
    "train.checkpoint_period=1",
    "eval.period=1",
    "eval.num_overlays=0",
    "data.augment={hflip_p: 0.5}",
)
SCRIPT = """
import sys
from tests.engine.tiny import ensure_registered
from instaseg.cli import main
ensure_registered()
sys.exit(main(sys.argv[1:]))
"""


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    args = [sys.executable, "-c", SCRIPT, "train", "--output", str(killed)]
    for o in OVERRIDES + ["model.kwargs={sleep_s: 0.15}"]:
        args += ["--set", o]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 900  # generous: a shared CI machine can be very slow to start torch
    try:
        # 24 images / batch 2 = 12 batches = 6 steps per epoch: kill inside the second epoch.
        while time.time() < deadline and proc.poll() is None:
            if last.is_file() and load_checkpoint(last)["iteration"] >= 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()!r}"
        assert last.is_file(), "no checkpoint was written before the deadline"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    state = load_checkpoint(last)
    assert 8 <= state["iteration"] < 18 and state["batch_in_epoch"] % 2 == 0

    resumed = run_training(resume=killed)
    assert resumed.iterations == 18 and resumed.run_dir == killed
    assert resumed.timing["iterations"] == 18 - state["iteration"]  # only the steps this process ran

    cfg = load_config(None, OVERRIDES + ["model.kwargs={sleep_s: 0.0}"])
    straight = run_training(cfg, output=tmp_path / "straight")
    assert straight.iterations == 18
    a, b = _weights(killed), _weights(tmp_path / "straight")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
