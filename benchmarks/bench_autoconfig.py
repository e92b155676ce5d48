"""Self-configured training against hand-written configs and YOLO11n-seg, under one time budget.

    .venv/bin/python benchmarks/bench_autoconfig.py --minutes 15                  # instaseg rows
    YOLO_OFFLINE=1 /tmp/ulvenv/bin/python benchmarks/bench_autoconfig.py --minutes 15 --yolo

For each real dataset (``$INSTASEG_DATA``: Penn-Fudan, nuclei; the deterministic 80/20 split, every
fifth image held out) it runs, each in a subprocess with the same budget:

- ``instaseg train --data SPEC --time MINUTES`` (no config: the run configures itself);
- the best hand-written config in ``configs/`` for that data, if any, with ``train.max_time_min``;
- with ``--yolo`` (run the script with a Python that has ultralytics, see bench_realtime.py for the
  venv): YOLO11n-seg from its YAML (no weights can be downloaded) trained by Ultralytics' own trainer
  with ``time=`` on the same training images, its predictions on the held-out images scored by
  ``instaseg evaluate --predictions`` (exact COCO metrics, the same ground truth).

Plus the embedded default, ``instaseg train`` with no arguments (target: mask AP >= 0.75 in <= 600 s).
Records wall time, load average and held-out mask/box AP to benchmarks/results/autoconfig.json, a row
as each run ends; rerunning the same command keeps the rows already there (resume); ``--rerun KIND``
drops the rows of that kind first. ``--yolo`` runs only the YOLO rows and adds them to the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROW = "shapes (embedded default)"
DATASETS = {
    "pennfudan": ("folder:{data}/pennfudan", "configs/pennfudan.yaml"),
    "nuclei": ("folder:{data}/nuclei", None),
}


def _instaseg(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "instaseg.cli", *args]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=cwd, text=True, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        raise SystemExit(f"instaseg {' '.join(args[:3])} failed ({proc.returncode})")
    return proc, wall


def _row(kind: str, command: str, run_dir: Path, wall: float, load0: float) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = run_dir / "history.jsonl"  # absent for scored predictions (the YOLO rows)
    lines = history.read_text().splitlines() if history.is_file() else []
    return {
        "iterations": json.loads(lines[-1]).get("iteration") if lines else None,
        "kind": kind,
        "command": command,
        "wall_s": round(wall, 1),
        "mask_AP": round(metrics["segm"]["AP"], 4),
        "mask_AP50": round(metrics["segm"]["AP50"], 4),
        "box_AP": round(metrics["bbox"]["AP"], 4),
        "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": describe(),
    }


def _ablations(row: dict[str, Any], run: Path, tmp: Path) -> dict[str, Any]:
    """A run that evaluated with test-time flips (eval.tta) is scored again without them, and one that
    refined its masks (eval.refine_masks) again without that, so each row shows what each added."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data = cfg["data"]["val"] or cfg["data"]["train"]
    for key, flag, name in (("tta", "--no-tta", "flips"), ("refine_masks", "--no-refine", "refine")):
        if not cfg["eval"].get(key):
            continue
        metrics = tmp / f"no_{name}.json"
        _instaseg(["evaluate", "--data", data, "--split", cfg["data"]["val_split"], "-c", str(run), flag,
                   "--no-analysis", "--metrics-file", str(metrics)], tmp)
        plain = json.loads(metrics.read_text())
        row[f"mask_AP_without_{name}"] = round(plain["segm"]["AP"], 4)
        row[f"box_AP_without_{name}"] = round(plain["bbox"]["AP"], 4)
    return row


def run_selfconfig(spec: str, minutes: float, tmp: Path) -> dict[str, Any]:
    run = tmp / "auto"
    load0 = os.getloadavg()[0]
    _, wall = _instaseg(["train", "--data", spec, "--time", str(minutes), "--output", str(run)], tmp)
    row = _row("self-configured", f"instaseg train --data {spec} --time {minutes}", run, wall, load0)
    plan = json.loads((run / "autoconfig.json").read_text())
    row["choices"] = {c["key"]: c["value"] for c in plan["choices"] if not c["key"].startswith("data.")}
    row["advice"] = plan["advice"]
    return _ablations(row, run, tmp)


def run_config(config: str, minutes: float, tmp: Path) -> dict[str, Any]:
    run = tmp / "hand"
    load0 = os.getloadavg()[0]
    args = ["train", "-c", str(ROOT / config), "--set", f"train.max_time_min={minutes}", "--output", str(run)]
    _, wall = _instaseg(args, tmp)
    return _row("hand-written config", f"instaseg train -c {config} --set train.max_time_min={minutes}",
                run, wall, load0)


def _yolo_export(spec: str, root: Path) -> Path:
    """The training split of ``spec`` as an Ultralytics segmentation dataset (one polygon per instance
    from its mask's outer contour, normalised xy; class = label - 1)."""
    from instaseg.data.build import build_dataset

    ds = build_dataset(spec, split="train")
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(len(ds)):
        rec = ds.load_record(i)
        h, w = rec.image.shape[:2]
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.ascontiguousarray(rec.image[:, :, ::-1]))
        lines = []
        for mask, label in zip(rec.masks, rec.labels, strict=True):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if not contours:
                continue
            xy = max(contours, key=cv2.contourArea).reshape(-1, 2) / np.array([w, h])
            if len(xy) >= 3:
                lines.append(" ".join([str(int(label) - 1)] + [f"{v:.5f}" for v in xy.reshape(-1)]))
        (root / "labels" / f"{i}.txt").write_text("\n".join(lines) + "\n")
    names = "".join(f"  {k - 1}: {n}\n" for k, n in enumerate(ds.class_names) if k > 0)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images\nval: images\nnames:\n{names}")
    return data


def run_yolo(spec: str, minutes: float, imgsz: int, tmp: Path) -> dict[str, Any]:
    from pycocotools import mask as mask_utils
    from ultralytics import YOLO

    from instaseg.data.build import build_dataset

    data = _yolo_export(spec, tmp / "yolo_data")
    yolo = YOLO("yolo11n-seg.yaml")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    yolo.train(data=str(data), time=minutes / 60.0, epochs=1000, imgsz=imgsz, batch=8, device="cpu",
               workers=0, plots=False, val=False, amp=False, pretrained=False,
               project=str(tmp / "yolo_runs"), name="train", exist_ok=True, verbose=False)
    wall = time.perf_counter() - t0
    val = build_dataset(spec, split="val")
    results = []
    for i in range(len(val)):
        info = val.image_info(i)
        rec = val.load_record(i)
        bgr = np.ascontiguousarray(rec.image[:, :, ::-1])
        pred = yolo.predict(bgr, imgsz=imgsz, conf=0.001, retina_masks=True, verbose=False)[0]
        if pred.masks is None:
            continue
        masks = pred.masks.data.cpu().numpy().astype(np.uint8)
        for m, c, s in zip(masks, pred.boxes.cls.tolist(), pred.boxes.conf.tolist(), strict=True):
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": int(info["id"]), "category_id": int(val.category_ids[int(c) + 1]),
                            "score": float(s), "segmentation": rle})
    pred_file = tmp / "yolo_results.json"
    pred_file.write_text(json.dumps(results))
    out = tmp / "yolo_eval"
    _instaseg(["evaluate", "--data", spec, "--split", "val", "--predictions", str(pred_file),
               "--output", str(out), "--no-analysis"], tmp)
    row = _row("YOLO11n-seg (Ultralytics trainer, from scratch)",
               f"yolo train time={minutes / 60:.3f}h imgsz={imgsz}", out, wall, load0)
    return row


def run_default(tmp: Path) -> dict[str, Any]:
    run = tmp / "default"
    load0 = os.getloadavg()[0]
    _, wall = _instaseg(["train", "--output", str(run)], tmp)
    return _ablations(_row("embedded default", "instaseg train", run, wall, load0), run, tmp)


def _save(path: Path, out: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--yolo", action="store_true", help="also YOLO11n-seg (needs ultralytics)")
    p.add_argument("--yolo-imgsz", type=int, default=320)
    p.add_argument("--skip-default", action="store_true")
    p.add_argument("--rerun", default="", help="comma-separated row kinds to drop and run again "
                   "(e.g. self-configured after a change to the rules)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "autoconfig.json"),
                   help="a results JSON path (rows for the same budget already in it are kept)")
    args = p.parse_args()
    data_root = os.environ.get("INSTASEG_DATA")
    if not data_root or not Path(data_root).is_dir():
        raise SystemExit("set INSTASEG_DATA to the shared data folder (../shared/data)")
    # Rows already in --out for the same budget are kept and not rerun: an interrupted run resumes,
    # and the instaseg and YOLO invocations (two Pythons) fill one file.
    path = Path(args.out)
    out: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if out.get("minutes") != args.minutes:
        out = {"minutes": args.minutes, "rows": {}}
    out.update({
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"CPU, {os.cpu_count()} cores",
        "targets": {"pennfudan_mask_AP": 0.55, "nuclei_mask_AP": 0.35, "default_mask_AP": 0.75,
                    "default_wall_s": 600},
    })
    rows: dict[str, list[dict[str, Any]]] = out["rows"]
    again = tuple(k for k in args.rerun.split(",") if k)
    names = [n for n in args.datasets.split(",") if n]  # --datasets "": the default row only
    running = set(names)
    if not (args.skip_default or args.yolo):
        running.add(DEFAULT_ROW)
    for name in rows:  # only rows this invocation will run again are dropped
        if name in running:
            rows[name] = [r for r in rows[name] if not (again and r["kind"].startswith(again))]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()
    path.parent.mkdir(parents=True, exist_ok=True)

    def record(name: str, kind: str, job: Any) -> None:
        if any(r["kind"].startswith(kind) for r in rows.get(name, [])):
            print(f"{name} / {kind}: already in {path.name}, kept")
            return
        with tempfile.TemporaryDirectory() as tmp:
            row = job(Path(tmp))
        row["commit"] = commit
        rows.setdefault(name, []).append(row)
        print(json.dumps(row), flush=True)
        _save(path, out)

    for name in names:
        spec_t, config = DATASETS[name]
        spec = spec_t.format(data=data_root)
        if args.yolo:
            record(name, "YOLO11n-seg", lambda t, s=spec: run_yolo(s, args.minutes, args.yolo_imgsz, t))
            continue
        record(name, "self-configured", lambda t, s=spec: run_selfconfig(s, args.minutes, t))
        if config:
            record(name, "hand-written", lambda t, c=config: run_config(c, args.minutes, t))
    if not args.skip_default and not args.yolo:
        record(DEFAULT_ROW, "embedded default", run_default)
    _save(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
