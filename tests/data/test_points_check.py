import json
import subprocess
import sys

import numpy as np

from instaseg.data.points.base import PointScene
from instaseg.data.points.io import write_scene


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "instaseg.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_check_finds_problems_without_tracebacks(tmp_path):
    xyz = np.zeros((6, 3), np.float32)
    xyz[:, 0] = np.arange(6)
    xyz[2, 1] = np.nan
    scene = PointScene(
        xyz, np.zeros((6, 3), np.float32), np.array([0, 0, 1, -1, 1, 1]), np.array([-1, -1, 0, 0, 1, 1])
    )
    write_scene(tmp_path / "a.ply", scene)
    (tmp_path / "b.ply").write_bytes(b"")
    (tmp_path / "c.ply").write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1\n2\n"
    )
    res = _run("data", "check", str(tmp_path), "--json")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    problems = json.loads(res.stdout)["problems"]
    assert problems["nonfinite_points"]["count"] == 1
    assert problems["instance_without_class"]["count"] == 1
    assert problems["empty_scene"]["count"] == 1
    assert "no x, y, z" in problems["unloadable_scene"]["examples"][0]


def test_stats_on_synthetic():
    res = _run("data", "stats", "points_shapes:4:1500", "--json")
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert stats["scenes"] == 4 and stats["points"] == 6000 and stats["instances"] > 8
    assert stats["classes"]["floor"]["stuff"] and stats["classes"]["box"]["points"] > 0
