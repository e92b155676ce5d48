"""Matplotlib figures and the dashboard: files are real PNGs, training curves are read from a run
directory's history.jsonl and TensorBoard events, and importing the modules has no side effects."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from instaseg.structures.boxes import masks_to_boxes
from instaseg.structures.instances import Instances
from instaseg.viz.figures import gt_vs_pred, sample_grid, save_figure, three_panel


def _scene():
    image = np.full((48, 64, 3), 90, np.uint8)
    masks = np.zeros((2, 48, 64), bool)
    masks[0, 5:20, 5:25] = True
    masks[1, 15:40, 30:60] = True
    boxes = masks_to_boxes(torch.from_numpy(masks))
    inst = Instances.from_dense((48, 64), boxes=boxes, labels=torch.tensor([3, 7]),
                                scores=torch.tensor([0.9, 0.6]), masks=masks)
    return image, inst


def _png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_three_panel_and_gt_vs_pred(tmp_path):
    image, inst = _scene()
    names = {3: "cat", 7: "dog"}
    w1, h1 = _png_size(save_figure(three_panel(image, inst, names, title="x"), tmp_path / "a.png"))
    w2, h2 = _png_size(save_figure(gt_vs_pred(image, inst, inst, names), tmp_path / "b.png"))
    assert w1 > 2 * h1  # three panels side by side
    assert h2 > h1  # two rows


def test_sample_grid_tiles_images():
    image, inst = _scene()
    empty = Instances.empty((48, 64))
    grid = sample_grid([(image, inst, "a"), (image, empty, "b")], {3: "cat", 7: "dog"}, cell_size=100)
    assert grid.dtype == np.uint8 and grid.ndim == 3
    assert grid.shape[1] >= 200 > grid.shape[0]  # two cells in one row


def test_import_has_no_pyplot_side_effect():
    code = ("import sys, instaseg.viz.figures, instaseg.viz.dashboard, instaseg.evaluation.report;"
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_training_history_from_run_dir(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from instaseg.viz.dashboard import plot_training_curves, read_training_history
    from instaseg.viz.figures import new_figure

    rows = [{"epoch": e, "iteration": 10 * e, "segm": {"AP": 0.1 * e}, "bbox": {"AP": 0.2 * e}}
            for e in (1, 2)]
    rows.append({"epoch": 2, "iteration": 20, "final": True, "segm": {"AP": 0.9}, "bbox": {"AP": 0.9}})
    (tmp_path / "history.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    for step in range(5):
        writer.add_scalar("train/loss", 2.0 - 0.1 * step, step)
    writer.close()
    curves = read_training_history(tmp_path)
    assert curves["val/segm_AP"] == [(10.0, pytest.approx(0.1)), (20.0, pytest.approx(0.2))]
    assert [v for _, v in curves["train/loss"]] == pytest.approx([2.0, 1.9, 1.8, 1.7, 1.6])
    fig = new_figure(4, 3)
    plot_training_curves(fig.add_subplot(1, 1, 1), curves)
    save_figure(fig, tmp_path / "curves.png")
    assert read_training_history(tmp_path / "missing") == {}


def test_dashboard_panels_from_report(tmp_path):
    from instaseg.evaluation.summary import full_report
    from instaseg.viz.dashboard import save_dashboard
    from tests.evaluation.helpers import box_mask, det_from_mask, tiny_gt

    a, b = box_mask(40, 40, 0, 0, 12, 12), box_mask(40, 40, 20, 20, 35, 35)
    gt = tiny_gt([[(a, 1), (b, 2)], [(b, 1)]], cat_ids=[1, 2])
    dets = [det_from_mask(a, 1, 1, 0.9), det_from_mask(b, 1, 1, 0.8), det_from_mask(b, 2, 1, 0.7)]
    report = full_report(gt, dets)
    paths = save_dashboard(report, tmp_path)
    expected = {"dashboard", "map_breakdown", "per_class_ap", "iou_distribution", "quality_vs_size",
                "pr_curves", "confusion_matrix", "error_analysis"}
    assert set(paths) == expected
    for p in paths.values():
        _png_size(p)
