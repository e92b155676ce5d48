"""`instaseg train` under torchrun: 2 CPU processes (gloo) keep identical weights; only rank 0 writes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch

from tests.engine.helpers import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import os, sys
sys.path.insert(0, {root!r})
import torch
from tests.engine.tiny import ensure_registered
from instaseg.config import load_config
from instaseg.predict.validation import train as run_training
ensure_registered()
result = run_training(load_config(None, {overrides!r}))
torch.save({{k: v.detach() for k, v in result.model.state_dict().items()}},
           os.path.join({out!r}, "rank%s.pt" % os.environ["RANK"]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "ddp_train.py"
    overrides = tiny_overrides("train.epochs=1", "eval.num_overlays=0", "train.checkpoint_period=0")
    script.write_text(SCRIPT.format(root=str(ROOT), overrides=overrides, out=str(tmp_path)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    # Only rank 0 wrote: one run directory (no numbered twin from rank 1), one set of files.
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["train"]
    run = work / "runs" / "train"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len((run / "history.jsonl").read_text().splitlines()) == 1
    # 24 images over 2 ranks x batch 4 = 3 steps; the log line says so.
    assert "3 iterations" in proc.stdout and "batch 4x2" in proc.stdout
    assert proc.stdout.count("run dir") == 1  # rank 1 printed nothing
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == 3 and all(torch.equal(state["model"][k], w0[k]) for k in w0)
