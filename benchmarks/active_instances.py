"""What each selection strategy of ``bench_active.py`` gave the annotator: instances per labelled image
and their mean area relative to the image, per strategy and size, from the stored ``labelled_ids``.

Images are paid for per image in the simulated benchmark, so a strategy that picks images with fewer
objects trains on fewer instances at the same image count; this table shows whether it did.

Usage: INSTASEG_DATA=../shared/data python benchmarks/active_instances.py active_pennfudan
Reads benchmarks/results/NAME.json; prints a Markdown table and writes NAME_instances.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from instaseg.data.convert import spec_to_coco

RESULTS = Path(__file__).parent / "results"


def instance_stats(coco: dict[str, Any], ids: list[int]) -> tuple[float, float]:
    """``(instances per image, mean instance area / image area)`` over the images ``ids`` of a COCO
    dict; crowd annotations are not counted."""
    size = {im["id"]: im["width"] * im["height"] for im in coco["images"]}
    chosen = set(ids)
    rel = [a["area"] / size[a["image_id"]] for a in coco["annotations"]
           if a["image_id"] in chosen and not a.get("iscrowd", 0)]
    return len(rel) / max(len(chosen), 1), sum(rel) / max(len(rel), 1)


def main() -> None:
    for name in sys.argv[1:]:
        data = json.loads((RESULTS / f"{name}.json").read_text())
        root = Path(os.environ["INSTASEG_DATA"]) / data["dataset"]
        with tempfile.TemporaryDirectory() as tmp:
            coco = spec_to_coco(f"folder:{root}", output_dir=Path(tmp), split="train").coco
        pool = instance_stats(coco, [im["id"] for im in coco["images"]])
        per: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        for key, rounds in data["curves"].items():
            strategy = key.split("_seed")[0]
            for r in rounds:
                if r.get("labelled_ids"):
                    per[strategy][int(r["labelled"])].append(instance_stats(coco, r["labelled_ids"]))
        table = {s: {n: [sum(v[0] for v in vals) / len(vals), sum(v[1] for v in vals) / len(vals), len(vals)]
                     for n, vals in sorted(sizes.items())} for s, sizes in per.items()}
        print(f"\n{name}: instances per labelled image, in all, (mean relative area), mean over seeds; "
              f"whole pool {pool[0]:.2f} a image ({pool[1]:.3f})\n")
        print("| images | " + " | ".join(table) + " |\n| --- |" + " --- |" * len(table))
        for n in sorted({n for s in table.values() for n in s}):
            cells = [f"{t[n][0]:.2f}, {t[n][0] * n:.0f} ({t[n][1]:.3f})" if n in t else ""
                     for t in table.values()]
            print(f"| {n} | " + " | ".join(cells) + " |")
        out = RESULTS / f"{name}_instances.json"
        out.write_text(json.dumps({"pool": pool, "by_strategy": table}, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
