"""The DVC pipeline: `instaseg init-pipeline` + `dvc repro` in a fresh git repository on a tiny config
(reruns only what changed, metrics readable by `dvc metrics show`), the project's own dvc.yaml, and
the hint when dvc is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instaseg.config import config_from_dict, embedded_default, load_config
from instaseg.export.pipeline import DVC_HINT, init_pipeline, pipeline_files, render, spec_paths

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)  # the venv's bin: dvc and the instaseg script
# The smallest run that still goes through every stage: 1 iteration on 32 px synthetic shapes.
TINY = {
    "model": {"kwargs": {"min_size": 32, "max_size": 32}},
    # one spec for train and val (its 80/20 split): one data check command instead of two
    "data": {"train": "shapes:10:32", "val": "shapes:10:32", "image_size": 32, "augment": {}},
    "train": {"max_iters": 1, "batch_size": 2, "warmup_iters": 1, "num_threads": 1, "lr": 0.02},
    "eval": {"batch_size": 2, "num_overlays": 0},
    "output": {"tensorboard": False, "mlflow": False, "progress": False},
}


def _env(path: str) -> dict[str, str]:
    # PYTHONPATH: the stages' `instaseg` must import this checkout (CI installs it editable anyway).
    return {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run(args: list[str], cwd: Path, path: str | None = None) -> subprocess.CompletedProcess:
    env = _env(path if path is not None else BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.mark.slow
def test_repro_reruns_only_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every stage is a fresh `instaseg` process (~5 s CPU of imports each): the config is the smallest
    # that runs them all, and init-pipeline runs in this process (the CLI's wrapper is tested below).
    if shutil.which("dvc", path=BIN) is None:
        pytest.fail(f"dvc is a dev dependency (pipeline extra) but is not in {BIN}")
    repo = tmp_path / "repo"
    repo.mkdir()
    _run(["git", "init", "-q"], repo)
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    init_pipeline(config_from_dict(TINY), repo)
    assert (repo / ".dvc").is_dir()
    # params.yaml is a config file: it loads back to the tiny config
    assert load_config(repo / "params.yaml").train.max_iters == 1

    first = _run(["dvc", "repro"], repo).stdout
    assert _ran(first) == ["check", "train", "evaluate", "export"]
    assert (repo / "model.onnx").is_file() and (repo / "runs/train/checkpoints/best.pt").is_file()
    metrics = json.loads((repo / "metrics.json").read_text())
    assert set(metrics) >= {"segm", "bbox"} and 0.0 <= metrics["segm"]["AP"] <= 1.0
    curve = (repo / "plots/pr_curve.csv").read_text().splitlines()
    assert curve[0] == "recall,precision_iou50,precision_iou75" and len(curve) == 102
    per_class = json.loads((repo / "plots/per_class_ap.json").read_text())
    assert [r["class"] for r in per_class] == ["circle", "square", "triangle"]

    second = _run(["dvc", "repro"], repo).stdout
    assert _ran(second) == [] and "up to date" in second

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = 0.01
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run(["dvc", "repro"], repo).stdout
    assert _ran(third) == ["train", "evaluate", "export"]  # not the data check

    shown = _run(["dvc", "metrics", "show"], repo).stdout
    for name in ("segm.AP", "segm.AP50", "bbox.AP", "pq.PQ"):
        assert name in shown


def test_project_pipeline_is_the_default_one() -> None:
    """The dvc.yaml / params.yaml at the project root are what init-pipeline writes for the default
    config (so they cannot drift from the config tree)."""
    dvc, params, to_add = pipeline_files(embedded_default(), ROOT)
    dvc_text, params_text = render(dvc, params)
    assert (ROOT / "dvc.yaml").read_text() == dvc_text
    assert (ROOT / "params.yaml").read_text() == params_text
    assert to_add == []
    assert (ROOT / ".dvc" / "config").is_file()
    stages = yaml.safe_load(dvc_text)["stages"]
    assert list(stages) == ["check", "train", "evaluate", "export"]
    assert load_config(ROOT / "params.yaml") == embedded_default()


def test_in_folder_data_is_dvc_added(tmp_path: Path, shared_data: Path) -> None:
    """A dataset inside the pipeline folder is tracked with `dvc add`; its paths are stage deps."""
    repo = tmp_path / "repo"
    shutil.copytree(shared_data / "labelme_voc" / "data_dataset_coco", repo / "data")
    _run(["git", "init", "-q"], repo)
    proc = _run([sys.executable, "-m", "instaseg.cli", "init-pipeline", ".", "--data",
                 "coco:data/annotations.json"], repo)
    # the JSON and its images (JPEGImages/ beside it): one folder holds both
    assert "data.dvc" in proc.stdout and (repo / "data.dvc").is_file()
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    assert dvc["stages"]["train"]["deps"] == ["data_check", "data"]
    check = "instaseg data check coco:data/annotations.json --output data_check/data.json"
    assert dvc["stages"]["check"]["cmd"] == check
    assert spec_paths("shapes:20") == []
    coco = shared_data / "coco_tiny"
    ann = coco / "annotations" / "instances_val2017.json"
    assert spec_paths(f"coco:{ann}") == [str(ann), str(coco / "val2017")]


def test_dvc_missing_gives_install_hint(tmp_path: Path) -> None:
    path = "/usr/bin:/bin"
    assert shutil.which("dvc", path=path) is None
    env = _env(path)
    proc = subprocess.run(
        [sys.executable, "-m", "instaseg.cli", "init-pipeline", str(tmp_path / "p")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"instaseg: error: {DVC_HINT}"]
    assert "instaseg[pipeline]" in lines[0]


def test_data_check_output_file(tmp_path: Path) -> None:
    """The check stage's report: `instaseg data check SPEC --output F` writes the JSON report."""
    from instaseg.cli import main

    out = tmp_path / "reports" / "check.json"
    assert main(["data", "check", "shapes:10:32", "--split", "val", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["images"] == 2 and report["problems"] == {}
