"""``instaseg annotate``: what one edit costs. Every change rewrites the state file and the COCO file
atomically (fsync), so the save time grows with the work done; this measures it, and a real click.

1. Save: :class:`instaseg.serve.annotate_store.Saver` on Penn-Fudan's real ground-truth masks (RLE),
   the 170 images repeated to ``--sizes`` annotated images (all done but the last), median of
   ``--repeats``: a cold save (every image serialized: the first save of a session), a save after an
   edit of a done image (state + COCO file), and after an edit of the open, not-done image (state only).
2. Click: an :class:`~instaseg.serve.annotate.AnnotationSession` on ``--clicks`` Penn-Fudan images
   with the offline GrabCut backend: open each image, one positive click at its first person's
   interior point (the protocol's first click); wall seconds of the click call (segment + save).

Usage: python benchmarks/bench_annotate.py [--sizes 170,1000,5000] [--clicks 10] [--out annotate]
Needs INSTASEG_DATA. Single-threaded; CPU seconds reported besides wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _gt_states(root: Path) -> list[Any]:
    from instaseg.data.build import build_dataset
    from instaseg.serve.annotate_store import ImageState
    from instaseg.structures.masks import rle_encode

    ds = build_dataset(f"folder:{root}")
    states = []
    for k in range(len(ds)):
        masks = ds.load_annotations(k)[0]
        h, w = masks.shape[1:]
        objects = [{"id": 1000 * k + j, "category_id": 1, "source": "clicks", "clicks": [[10, 10, 1]],
                    "rle": rle_encode(m)} for j, m in enumerate(masks)]
        states.append(ImageState(f"img{k:05d}.png", k + 1, h, w, done=True, prelabeled=True, objects=objects))
    return states


def bench_save(root: Path, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    from instaseg.serve.annotate_store import ImageState, Saver, state_path

    base = _gt_states(root)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "annotations.json"
        for n in sizes:
            # all done but the last image, which is the one being worked on
            states = [ImageState(f"img{i:06d}.png", i + 1, s.height, s.width, i < n - 1, True, s.objects)
                      for i, s in enumerate(base[i % len(base)] for i in range(n))]
            cats = [{"id": 1, "name": "person"}]
            row: dict[str, Any] = {"images": n, "objects": sum(len(s.objects) for s in states)}
            for case in ("cold", "edit_done_image", "edit_open_image"):
                times, cpus = [], []
                for _ in range(repeats):
                    saver = Saver(out, Path(tmp), "rle")
                    if case != "cold":
                        saver.save(states, cats, None, 10**7)  # fills the per-image cache
                        k = 0 if case == "edit_done_image" else n - 1
                        states[k].objects = list(states[k].objects)  # what an edit does
                    t, c = time.perf_counter(), _cpu()
                    saver.save(states, cats, states[-1].file_name, 10**7, coco=case != "edit_open_image")
                    times.append(time.perf_counter() - t)
                    cpus.append(_cpu() - c)
                row[f"{case}_s"] = round(statistics.median(times), 4)
                row[f"{case}_cpu_s"] = round(statistics.median(cpus), 4)
            row["coco_mb"] = round(out.stat().st_size / 1e6, 2)
            row["state_mb"] = round(state_path(out).stat().st_size / 1e6, 2)
            rows.append(row)
            print(row)
    return rows


def bench_clicks(root: Path, count: int) -> dict[str, Any]:
    from instaseg.data.io import read_mask
    from instaseg.ops.clicks import first_click
    from instaseg.predict.interactive import ClickSegmenter
    from instaseg.serve.annotate import AnnotationSession

    names = sorted(p.name for p in (root / "PNGImages").iterdir())[:count]
    with tempfile.TemporaryDirectory() as tmp:
        imgs = Path(tmp) / "imgs"
        imgs.mkdir()
        for name in names:
            (imgs / name).symlink_to(root / "PNGImages" / name)
        session = AnnotationSession(imgs, Path(tmp) / "a.json", interactive=ClickSegmenter(),
                                    classes="person")
        walls, cpus, opens = [], [], []
        try:
            for k, name in enumerate(names):
                t = time.perf_counter()
                session.open(k)
                opens.append(time.perf_counter() - t)
                gt = read_mask(root / "PedMasks" / name.replace(".png", "_mask.png")) == 1
                x, y, _ = first_click(gt)
                t, c = time.perf_counter(), _cpu()
                view = session.click(k, float(x), float(y))
                walls.append(time.perf_counter() - t)
                cpus.append(_cpu() - c)
                assert view["selected"] is not None
        finally:
            session.close()
    return {"images": len(names), "backend": "grabcut", "open_s_median": round(statistics.median(opens), 4),
            "click_s_median": round(statistics.median(walls), 4), "click_s_max": round(max(walls), 4),
            "click_cpu_s_median": round(statistics.median(cpus), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="170,1000,5000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--out", default="annotate")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    root = Path(os.environ["INSTASEG_DATA"]) / "pennfudan"
    start, cpu0 = time.perf_counter(), _cpu()
    result = {
        "date": "2026-12-05", "machine": "CPU-2c, loaded (shared with other engineers)",
        "save": bench_save(root, [int(s) for s in args.sizes.split(",")], args.repeats),
        "click": bench_clicks(root, args.clicks),
    }
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["cpu_s"] = round(_cpu() - cpu0, 1)
    print(json.dumps(result["click"]))
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
