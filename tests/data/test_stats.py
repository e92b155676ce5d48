"""Dataset statistics count what the data holds; the preview draws every requested image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instaseg.data.base import InstanceDataset, Record
from instaseg.data.stats import compute_stats, format_stats, render_preview, save_png
from instaseg.errors import DataError


class _Tiny(InstanceDataset):
    """Two images with hand-made masks whose areas straddle the COCO thresholds."""

    class_names = ["background", "cat", "dog"]
    category_ids = [0, 5, 9]

    def __len__(self) -> int:
        return 2

    def load_record(self, index: int) -> Record:
        if index == 1:  # an image without instances, of another size
            return Record(
                np.zeros((30, 200, 3), np.uint8),
                np.zeros((0, 30, 200), bool),
                np.zeros(0, np.int64),
                np.zeros(0, np.int64),
                1,
            )
        masks = np.zeros((3, 120, 100), bool)
        masks[0, :10, :10] = True  # 100 px: small
        masks[1, :32, :32] = True  # 1024 px = 32^2: medium (COCO: small is < 32^2)
        masks[2, :, :] = True  # 12000 px >= 96^2: large
        return Record(np.zeros((120, 100, 3), np.uint8), masks, np.array([1, 1, 2]), np.array([0, 1, 0]), 0)


def test_counts_sizes_and_classes() -> None:
    s = compute_stats(_Tiny(), source="tiny")
    assert s["images"] == 2 and s["instances"] == 3 and s["images_without_instances"] == 1
    assert s["per_class"] == {"cat": 2, "dog": 1}
    assert s["sizes"] == {"small": 1, "medium": 1, "large": 1}
    assert s["crowd"] == 1
    assert s["image_height"] == {"min": 30, "max": 120} and s["image_width"] == {"min": 100, "max": 200}
    assert s["instances_per_image"] == {"min": 0, "mean": 1.5, "max": 3}
    text = format_stats(s)
    assert "small 1, medium 1, large 1" in text and "cat" in text


def test_shapes_stats_and_preview(tmp_path: Path) -> None:
    from instaseg.data.build import build_dataset

    ds = build_dataset("shapes:6:64")
    s = compute_stats(ds)
    assert s["images"] == 6 and s["instances"] == sum(len(ds.load_record(i).labels) for i in range(6))
    assert sum(s["per_class"].values()) == s["instances"] == sum(s["sizes"].values())
    grid = render_preview(ds, num_images=5, cols=3, cell_size=64)
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[0] > 2 * 64 and grid.shape[1] > 3 * 64  # 2 rows x 3 cols
    out = save_png(grid, tmp_path / "sub" / "p.png")
    assert out.is_file() and out.stat().st_size > 0
    with pytest.raises(DataError, match="png"):
        save_png(grid, tmp_path / "p.jpg")


def test_more_than_255_instances_in_one_image() -> None:
    """pycocotools' area() overflows past 255 RLEs in one call; stats must not."""

    class Many(_Tiny):
        def __len__(self) -> int:
            return 1

        def load_record(self, index: int) -> Record:
            masks = np.zeros((300, 40, 40), bool)
            for k in range(300):
                masks[k, k % 40, (k // 40) * 4] = True
            return Record(
                np.zeros((40, 40, 3), np.uint8), masks, np.ones(300, np.int64), np.zeros(300, np.int64), 0
            )

    s = compute_stats(Many())
    assert s["instances"] == 300 and s["sizes"]["small"] == 300


def test_real_samples(shared_data: Path) -> None:
    from instaseg.data.build import build_dataset

    coco = build_dataset(f"coco:{shared_data / 'coco_tiny/annotations/instances_val2017.json'}")
    s = compute_stats(coco)
    assert s["images"] == 50 and s["instances"] == 382
    city = compute_stats(build_dataset(f"cityscapes:{shared_data / 'cityscapes_sample'}"))
    assert city["per_class"]["person"] == 4 and city["per_class"]["car"] == 3
