"""DataLoader throughput (images/s) with the full train augmentation pipeline.

Measures, on the default synthetic shapes data (``shapes:800:128``, train split):

- ``no_augment``: records -> samples, no albumentations (the floor set by data generation);
- ``train_default``: ``build_transforms(True, image_size=128)`` with its default probabilities
  (RandomResizedCrop, flip 0.5, affine 0.5, noise 0.2, distortion 0.2);
- ``train_all_on``: every augmentation step applied to every sample (worst case);

each with ``num_workers`` 0 and 2, batch size 8; plus the transform alone on 512 px COCO images
(coco_tiny val, when $INSTASEG_DATA is set). Timing starts after the first batch, so worker start-up
is excluded. Writes benchmarks/results/dataloader.json. The engine compares ``train_default`` with
the model's training images/s (target: loader >= 3x model).

    .venv/bin/python benchmarks/bench_dataloader.py [--images 480] [--out benchmarks/results/dataloader.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from instaseg.data.base import collate
from instaseg.data.build import build_dataset
from instaseg.data.transforms import build_transforms

ALL_ON = {"crop_p": 1.0, "hflip_p": 1.0, "affine_p": 1.0, "noise_p": 1.0, "distortion_p": 1.0}


def loader_rate(dataset, *, workers: int, images: int, batch_size: int = 8) -> float:
    """Images/s over ``images`` samples, after the first batch (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
    )
    it = iter(loader)
    next(it)
    seen, start = 0, time.perf_counter()
    for batch_images, _ in it:
        seen += len(batch_images)
        if seen >= images:
            break
    return seen / (time.perf_counter() - start)


def transform_rate(records: list, transform, repeat: int) -> tuple[float, float]:
    """(wall images/s, CPU images/s) of ``transform`` alone in this process. CPU time is what an
    unshared core would need: on a contended machine the wall rate understates it."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        for rec in records:
            transform(rec)
    n = repeat * len(records)
    return n / (time.perf_counter() - wall), n / max(time.process_time() - cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=480, help="images timed per configuration")
    parser.add_argument("--spec", default="shapes:800:128")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/dataloader.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as inside DataLoader workers; the main process would otherwise spin

    configs = {
        "no_augment": None,
        "train_default": build_transforms(True, image_size=args.image_size),
        "train_all_on": build_transforms(True, image_size=args.image_size, **ALL_ON),
    }
    results: dict = {}
    for name, tf in configs.items():
        ds = build_dataset(args.spec, split="train", transform=tf)
        for workers in (0, 2):
            rate = loader_rate(ds, workers=workers, images=min(args.images, len(ds) - 8))
            results[f"{name}/workers{workers}"] = round(rate, 1)
            print(f"{args.spec} {name:14s} num_workers={workers}: {rate:8.1f} images/s", flush=True)

    shapes = build_dataset(args.spec, split="train")
    start = time.process_time()
    records = [shapes.load_record(i) for i in range(100)]
    results["shapes_load_record_cpu"] = round(100 / (time.process_time() - start), 1)
    print(f"{args.spec} load_record alone: {results['shapes_load_record_cpu']:.1f} images/s CPU time")
    for name in ("train_default", "train_all_on"):
        wall, cpu = transform_rate(records, configs[name], repeat=2)
        results[f"{name}/transform_only"] = round(wall, 1)
        results[f"{name}/transform_only_cpu"] = round(cpu, 1)
        print(f"{args.spec} {name} transform only: {wall:.1f} images/s wall, {cpu:.1f} images/s CPU time")

    root = os.environ.get("INSTASEG_DATA")
    coco = Path(root or "") / "coco_tiny" / "annotations" / "instances_val2017.json"
    if root and coco.is_file():
        ds = build_dataset(f"coco:{coco}")
        records = [ds.load_record(i) for i in range(10)]
        inst = sum(len(r.labels) for r in records) / len(records)
        for name, tf in (
            ("coco512_train_default", build_transforms(True, image_size=512)),
            ("coco512_train_all_on", build_transforms(True, image_size=512, **ALL_ON)),
            ("coco512_eval", build_transforms(False, image_size=512)),
        ):
            wall, cpu = transform_rate(records, tf, repeat=2)
            results[name] = round(wall, 1)
            results[f"{name}_cpu"] = round(cpu, 1)
            print(
                f"coco_tiny val 512px {name}: {wall:.1f} images/s wall, {cpu:.1f} images/s CPU time "
                f"(transform only, {inst:.1f} instances/image)",
                flush=True,
            )

    out = {
        "benchmark": "dataloader",
        "spec": args.spec,
        "image_size": args.image_size,
        "batch_size": 8,
        "images_per_config": args.images,
        "images_per_s": results,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
