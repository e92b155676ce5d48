"""A DVC pipeline for a dataset: ``dvc.yaml`` (check -> train -> evaluate -> export) and ``params.yaml``.

``params.yaml`` is an instaseg config file (the keys of :mod:`instaseg.config`); ``instaseg train
--config params.yaml`` reads it, and each stage declares the dotted keys it depends on, so ``dvc
repro`` after editing ``train.lr`` reruns train, evaluate and export but not the data check. The
evaluate stage writes ``metrics.json`` (DVC metrics) and ``plots/`` (PR curves, per-class AP).
Data files or folders inside the pipeline's folder are tracked with ``dvc add``; data outside it is
an ordinary (untracked) dependency of the check and train stages.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from instaseg.config import Config, config_to_dict
from instaseg.data.build import coco_args, parse_spec
from instaseg.data.coco import guess_image_dir
from instaseg.data.io import read_json
from instaseg.errors import ConfigError, InstasegError

DVC_HINT = "dvc is not installed (or not on PATH): pip install 'instaseg[pipeline]' (the pipeline extra)"
RUN_DIR = "runs/train"
MODEL_FILE = "model.onnx"
METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
CHECK_DIR = "data_check"
GITIGNORE = (
    "# MLflow's store beside the run directory (instaseg train's default); dvc plots show's output\n"
    "/runs/mlflow.db\n/runs/mlartifacts\n/dvc_plots\n"
)


class ToolMissingError(InstasegError):
    """A command-line tool that this command needs is not installed."""


def find_dvc() -> str:
    """The ``dvc`` executable on PATH; :class:`ToolMissingError` with the install hint otherwise."""
    exe = shutil.which("dvc")
    if exe is None:
        raise ToolMissingError(DVC_HINT)
    return exe


def spec_paths(spec: str, base: str | Path = ".") -> list[str]:
    """The files/folders a dataset spec reads (``coco:ANN.json[:IMAGES]``, ``folder:ROOT``, a bare
    path...), relative paths taken from ``base`` (where the stages run); none for ``shapes``."""
    fmt, args = parse_spec(spec)
    if fmt == "shapes" or not args:
        return []
    base = Path(base)
    if fmt == "coco":
        ann, image_dir = coco_args(args)
        if image_dir is None and (base / ann).is_file():  # the folder the dataset reads its images from
            data = read_json(base / ann)
            images = data.get("images", []) if isinstance(data, dict) else []
            names = [im.get("file_name", "") for im in images if isinstance(im, dict)]
            image_dir = str(guess_image_dir(base / ann, names))
        paths = [str(base / ann)] + ([str(base / image_dir)] if image_dir else [])
    elif fmt == "cityscapes":
        root = args.split(":", 1)[0]
        paths = [str(base / (root if (base / root).exists() else args))]
    else:
        paths = [str(base / args)]
    # a file inside another listed folder is covered by it (and DVC refuses overlapping `dvc add`s)
    full = [Path(p).resolve() for p in paths]
    return [p for p, f in zip(paths, full, strict=True) if not any(o != f and o in f.parents for o in full)]


def _rel(path: str, root: Path) -> tuple[str, bool]:
    """``(path as written in dvc.yaml, inside root)``: relative to ``root`` when inside it."""
    full = Path(path).resolve()
    try:
        return full.relative_to(root.resolve()).as_posix(), True
    except ValueError:
        return str(Path(path).resolve()), False


def _split_opt(split: str | None) -> str:
    return f" --split {split}" if split else ""


def pipeline_files(cfg: Config, root: str | Path = ".") -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(dvc.yaml, params.yaml, in-folder data paths to dvc add)`` for the config ``cfg`` in the
    pipeline folder ``root``. Data specs are written as given (relative paths resolve from ``root``)."""
    root = Path(root)
    params = config_to_dict(cfg)
    data_deps: list[str] = []
    to_add: list[str] = []
    for spec in dict.fromkeys((cfg.data.train, cfg.data.val)):
        for path in spec_paths(spec, root):
            dep, inside = _rel(path, root)
            if dep not in data_deps:
                data_deps.append(dep)
                if inside:
                    to_add.append(dep)
    d = cfg.data
    check_cmds = [
        f"instaseg data check {d.train}{_split_opt(d.train_split)} --output {CHECK_DIR}/train.json",
        f"instaseg data check {d.val}{_split_opt(d.val_split)} --output {CHECK_DIR}/val.json",
    ]
    if d.train == d.val:  # one dataset split in two: check all of it at once
        check_cmds = [f"instaseg data check {d.train} --output {CHECK_DIR}/data.json"]
    data_params = ["data.train", "data.val", "data.train_split", "data.val_split"]
    stages: dict[str, Any] = {
        "check": {
            "desc": "Lint the training and validation data (fails on problems; the reports are kept)",
            "cmd": check_cmds if len(check_cmds) > 1 else check_cmds[0],
            **({"deps": list(data_deps)} if data_deps else {}),
            "params": data_params,
            "outs": [CHECK_DIR],
        },
        "train": {
            "desc": "Train with params.yaml as the config",
            "cmd": f"instaseg train --config params.yaml --output {RUN_DIR}",
            "deps": [CHECK_DIR, *data_deps],
            # every config section training reads (all but output: where logs go)
            "params": [f.name for f in dataclasses.fields(Config) if f.name != "output"],
            "outs": [RUN_DIR],
        },
        "evaluate": {
            "desc": "Score the trained model on the validation data",
            "cmd": (
                f"instaseg evaluate --checkpoint {RUN_DIR} --data {d.val}{_split_opt(d.val_split)} "
                f"--metrics-file {METRICS_FILE} --plots-dir {PLOTS_DIR}"
            ),
            "deps": [RUN_DIR, *data_deps],
            "params": ["data.val", "data.val_split", "eval.score_thresh", "eval.batch_size"],
            "metrics": [{METRICS_FILE: {"cache": False}}],
            "outs": [{PLOTS_DIR: {"cache": False}}],  # drawn by the top-level plots below
        },
        "export": {
            "desc": "Export the trained model to ONNX (checked against PyTorch)",
            "cmd": f"instaseg export --checkpoint {RUN_DIR} --output {MODEL_FILE} --overwrite",
            "deps": [RUN_DIR],
            "outs": [MODEL_FILE],
        },
    }
    plots = [
        {"precision_recall_mask": {
            "template": "linear", "x": "recall", "title": "Mask precision-recall (mean over classes)",
            "y": {f"{PLOTS_DIR}/pr_curve.csv": ["precision_iou50", "precision_iou75"]},
        }},
        {"precision_recall_box": {
            "template": "linear", "x": "recall", "title": "Box precision-recall (mean over classes)",
            "y": {f"{PLOTS_DIR}/pr_curve_bbox.csv": ["precision_iou50", "precision_iou75"]},
        }},
        {"per_class_ap": {
            "template": "bar_horizontal", "x": "mask_AP", "y": {f"{PLOTS_DIR}/per_class_ap.json": "class"},
            "title": "Mask AP per class",
        }},
    ]
    return {"stages": stages, "plots": plots}, params, to_add


HEADER = (
    "# instaseg pipeline (written by `instaseg init-pipeline`): check -> train -> evaluate -> export.\n"
    "# `dvc repro` reruns only what changed; params.yaml is the instaseg config (see docs/pipelines.md).\n"
)
PARAMS_HEADER = (
    "# The instaseg config of this pipeline (the keys of instaseg/config.py); each dvc.yaml stage\n"
    "# depends on the keys it uses: edit a value and `dvc repro` reruns the stages downstream of it.\n"
)


def render(dvc: dict[str, Any], params: dict[str, Any]) -> tuple[str, str]:
    """The text of ``dvc.yaml`` and ``params.yaml``."""
    return (
        HEADER + yaml.safe_dump(dvc, sort_keys=False, width=110),
        PARAMS_HEADER + yaml.safe_dump(params, sort_keys=False, width=110),
    )


def _run(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ConfigError(f"{cwd}: `{' '.join(args)}` failed: {detail[-1] if detail else proc.returncode}")


def init_pipeline(cfg: Config, directory: str | Path, *, force: bool = False) -> list[Path]:
    """Write ``dvc.yaml``, ``params.yaml`` and ``.gitignore`` lines into ``directory`` (created if
    needed), run ``dvc init`` there if it is not a DVC repository yet (``--no-scm`` outside git) and
    ``dvc add`` the data inside it. Returns the written files. Needs ``dvc`` on PATH."""
    dvc = find_dvc()
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    targets = [root / "dvc.yaml", root / "params.yaml"]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]}: already exists (pass --overwrite to replace it)")
    dvc_yaml, params, to_add = pipeline_files(cfg, root)
    dvc_text, params_text = render(dvc_yaml, params)
    targets[0].write_text(dvc_text)
    targets[1].write_text(params_text)
    ignore = root / ".gitignore"
    old = ignore.read_text() if ignore.is_file() else ""
    if GITIGNORE not in old:
        ignore.write_text(old + ("\n" if old and not old.endswith("\n") else "") + GITIGNORE)
    written = [*targets, ignore]
    if not (root / ".dvc").is_dir():
        in_git = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True, text=True
        ).stdout.strip() == "true" if shutil.which("git") else False
        _run([dvc, "init", "-q", *([] if in_git else ["--no-scm"])], root)
    for path in to_add:
        _run([dvc, "add", "-q", path], root)
        written.append(root / f"{path}.dvc")
    return written
