"""Self-configuring training: the fingerprint, the rules, and `instaseg train --data ... --time ...`."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from instaseg.cli import main
from instaseg.data.build import build_dataset
from instaseg.engine.autoconfig import (
    MIN_PASSES,
    PRETRAINED,
    SLIM,
    Fingerprint,
    advise,
    anchor_sizes,
    fewer_pixels_for_passes,
    fingerprint,
    plan_training,
    rule_choices,
)
from instaseg.models import get_model

BASE = Fingerprint(
    images=500, sampled=300, classes=2, long_side_median=128, short_side_median=128,
    objects_per_image_median=4, objects_per_image_max=6, empty_images=0,
    object_side_rel_p10=0.1, object_side_rel_median=0.2, object_side_rel_p90=0.3,
    fill_median=0.6, elongation_median=1.2, crowding=0.05,
)


def _choices(fp: Fingerprint) -> dict:
    return {c.key: c.value for c in rule_choices(fp, cuda=False)}


def test_fingerprint_counts_the_objects_of_the_data() -> None:
    ds = build_dataset("shapes:40:96")
    fp = fingerprint(ds, max_images=40)
    counts = [int((ds.load_record(i).iscrowd == 0).sum()) for i in range(len(ds))]
    assert fp.images == fp.sampled == 40 and fp.classes == len(ds.class_names) - 1
    assert fp.objects_per_image_max == max(counts)
    assert fp.objects_per_image_median == float(np.median(counts))
    assert fp.long_side_median == 96
    assert 0 < fp.object_side_rel_p10 <= fp.object_side_rel_median <= fp.object_side_rel_p90 < 1
    assert 0 < fp.fill_median <= 1 and fp.elongation_median >= 1


def test_rules_follow_the_numbers() -> None:
    small = _choices(BASE)
    assert small["model.name"] == SLIM and small["model.kwargs.max_size"] == 128
    # Big photos with small objects: a larger input, the pretrained backbone, a smaller batch.
    photos = _choices(replace(BASE, long_side_median=1000, object_side_rel_p10=0.02,
                              object_side_rel_median=0.1))
    assert photos["model.kwargs.max_size"] == 512 and photos["model.name"] == PRETRAINED
    assert photos["train.batch_size"] == 2 and photos["train.lr"] == pytest.approx(0.005)
    # Crowded images need more detections; few images get stronger augmentation.
    crowded = _choices(replace(BASE, objects_per_image_max=300, images=40))
    assert crowded["model.kwargs.box_detections_per_img"] == 600
    assert crowded["data.augment"]["crop_p"] > 0 and small["data.augment"]["crop_p"] == 0
    # Few images, many objects in each: copy-paste; few images with few objects (or many images): none.
    few_dense = _choices(replace(BASE, images=40, objects_per_image_median=28, objects_per_image_max=300))
    assert few_dense["data.augment"]["copy_paste_p"] == 0.5
    assert "copy_paste_p" not in crowded["data.augment"] and "copy_paste_p" not in small["data.augment"]
    # ... and enough proposals for every object, where the slim model keeps 100 at test time.
    assert crowded["model.kwargs.rpn_post_nms_top_n_test"] == 900
    assert crowded["model.kwargs.rpn_pre_nms_top_n_test"] == 1800
    assert "model.kwargs.rpn_post_nms_top_n_test" not in small
    # Many objects in the median image: more sampled RoIs, so most of them train the mask head.
    dense = _choices(replace(BASE, objects_per_image_median=30, objects_per_image_max=60))
    assert dense["model.kwargs.box_batch_size_per_image"] == 128
    assert "model.kwargs.box_batch_size_per_image" not in small
    # The pretrained model on a CPU samples fewer RoIs at one RoIAlign sample a bin (its costliest op).
    assert photos["model.kwargs.box_batch_size_per_image"] == 128
    assert photos["model.kwargs.roi_sampling_ratio"] == 1
    # Trained with flips, validated with test-time flips.
    assert small["eval.tta"] is True and photos["eval.tta"] is True
    # Box-relative masks (the Mask R-CNNs) are refined along image edges at validation.
    assert small["eval.refine_masks"] is True and photos["eval.refine_masks"] is True
    gpu = {c.key: c.value for c in rule_choices(replace(BASE, long_side_median=1000,
                                                        object_side_rel_p10=0.02), cuda=True)}
    assert "model.kwargs.roi_sampling_ratio" not in gpu


def test_a_model_named_by_the_user_gets_the_choices_that_fit_it() -> None:
    photos = replace(BASE, long_side_median=1000, object_side_rel_p10=0.02, object_side_rel_median=0.1,
                     objects_per_image_max=300)
    # The slim model at the size that would pick Lite0: no ImageNet weights (it has none offline).
    slim = {c.key: c.value for c in rule_choices(photos, cuda=False, model=SLIM)}
    assert slim["model.name"] == SLIM and "model.backbone_weights" not in slim
    assert slim["model.kwargs.max_size"] == 512 and slim["model.kwargs.anchor_sizes"]
    lite2 = {c.key: c.value for c in rule_choices(photos, cuda=False, model="maskrcnn_effnet_lite2")}
    assert lite2["model.backbone_weights"] == "imagenet" and lite2["model.kwargs.roi_sampling_ratio"] == 1
    # Lite anchors follow the objects (20..120 px at 512), one size per level, stride4 adds a level.
    assert lite2["model.kwargs.anchor_sizes"] == slim["model.kwargs.anchor_sizes"]
    assert len(lite2["model.kwargs.anchor_sizes"]) == 4
    fine = {c.key: c.value for c in rule_choices(photos, cuda=False, model="maskrcnn_effnet_lite0",
                                                 stride4=True)}
    assert len(fine["model.kwargs.anchor_sizes"]) == 5 and fine["model.kwargs.anchor_sizes"][0] >= 8
    # A one-stage model: its own size and detections keywords, its optimizer, no Mask R-CNN knobs.
    solo = {c.key: c.value for c in rule_choices(photos, cuda=False, model="solov2_lite")}
    assert solo["model.kwargs.input_size"] == 512 and solo["model.kwargs.max_detections"] == 600
    assert solo["train.optimizer"] == "adamw" and "eval.refine_masks" not in solo
    assert not [k for k in solo if "max_size" in k or "rpn_" in k or "box_" in k or "anchor" in k]


@pytest.mark.parametrize("name", ["solov2_lite", "maskrcnn_r18_slim"])
def test_plan_with_another_model_builds_it(name: str) -> None:
    quiet = lambda _msg: None  # noqa: E731
    plan = plan_training("shapes:20:64", minutes=1, overrides=[f"model.name={name}"], measure=False,
                         log=quiet)
    assert plan.config.model.name == name
    model = get_model(name, num_classes=4, backbone_weights=plan.config.model.backbone_weights,
                      **plan.config.model.kwargs)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_lite_model_with_the_stride4_level_gets_an_anchor_for_each_level() -> None:
    quiet = lambda _msg: None  # noqa: E731
    plan = plan_training("shapes:20:64", minutes=1, measure=False, log=quiet,
                         overrides=["model.name=maskrcnn_effnet_lite0", "model.kwargs.stride4=true"])
    sizes = plan.config.model.kwargs["anchor_sizes"]
    assert len(sizes) == 5 and list(sizes) == sorted(sizes)
    model = get_model("maskrcnn_effnet_lite0", num_classes=4, **plan.config.model.kwargs)
    assert [s[0] for s in model.rpn.anchor_generator.sizes] == list(sizes)


def test_a_budget_of_too_few_passes_buys_a_smaller_input() -> None:
    assert fewer_pixels_for_passes(416, MIN_PASSES + 1, 288) == 416  # enough passes: kept
    # Cost taken as proportional to pixels: 15.5 passes at 416 px are ~18 at 384 px.
    assert fewer_pixels_for_passes(416, 15.5, 288) == 384
    assert fewer_pixels_for_passes(416, 0.5, 288) == 288  # never below the floor
    assert fewer_pixels_for_passes(256, 1.0, 256) == 256
    for size, passes in [(512, 3.0), (384, 10.0), (448, 17.9)]:
        smaller = fewer_pixels_for_passes(size, passes, 128)
        assert smaller % 32 == 0 and smaller < size
        assert passes * (size / smaller) ** 2 >= MIN_PASSES * 0.999


def test_anchor_sizes_cover_the_objects() -> None:
    sizes = anchor_sizes(replace(BASE, object_side_rel_p10=0.05, object_side_rel_p90=0.5), 256)
    assert len(sizes) == 4 and list(sizes) == sorted(sizes)
    assert sizes[0] <= 0.05 * 256 + 1 and sizes[-1] >= 0.5 * 256


def test_advice_reads_the_learning_curve() -> None:
    rising = [{"segm": {"AP": 0.2}}, {"segm": {"AP": 0.3}}]
    flat = [{"segm": {"AP": 0.30}}, {"segm": {"AP": 0.305}}]
    metrics = {"segm": {"AP": 0.3, "APs": 0.05, "APl": 0.6}}
    assert any("longer budget" in t for t in advise(rising, None, BASE))
    assert not any("longer budget" in t for t in advise(flat, None, BASE))
    assert any("higher input resolution" in t for t in advise(flat, metrics, BASE))
    assert any("more labelled images" in t for t in advise(flat, None, replace(BASE, images=50)))
    # One validation is no curve: neither "rising" nor "flattened" can be read from it.
    short = advise(flat[:1], None, BASE)
    assert any("too few to read a learning curve" in t for t in short)
    assert not any("flattened" in t for t in short)
    assert any("flattened" in t for t in advise(flat, None, BASE))
    # The final score with test-time flips is not a point of the (plain) curve: no "still rising".
    flipped = [*flat, {"final": True, "segm": {"AP": 0.36}}]
    assert not any("longer budget" in t for t in advise(flipped, None, BASE))


def test_cli_self_configures_and_fits_the_budget(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    budget_min = 0.75
    t0 = time.perf_counter()
    code = main([
        "train", "--data", "shapes:40:96", "--time", str(budget_min), "--output", str(run),
        "--set", "train.batch_size=2", "--set", "train.num_threads=1",
        "--set", "output.tensorboard=false", "--set", "output.mlflow=false",
    ])
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert code == 0, out
    assert "autoconfig: model.name = maskrcnn_r18_slim" in out and "next:" in out
    plan = json.loads((run / "autoconfig.json").read_text())
    chosen = {c["key"]: c for c in plan["choices"]}
    assert chosen["train.batch_size"]["reason"].startswith("set by --set")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["batch_size"] == 2 and cfg["data"]["val_split"] == "val"
    assert cfg["train"]["max_iters"] == chosen["train.max_iters"]["value"] > 10
    assert (run / "metrics.json").is_file() and plan["advice"]
    assert wall <= budget_min * 60 + 10, f"{wall:.0f} s for a {budget_min * 60:.0f} s budget"


def test_cli_refuses_data_with_config(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", "shapes:8", "--config", "configs/default.yaml"]) == 2
    assert "--data configures the run itself" in capsys.readouterr().err


def test_no_flips_in_training_means_no_test_time_flips() -> None:
    quiet = lambda _msg: None  # noqa: E731
    assert plan_training("shapes:20:64", minutes=1, measure=False, log=quiet).config.eval.tta is True
    plan = plan_training("shapes:20:64", minutes=1, overrides=["data.augment.hflip_p=0"], measure=False,
                         log=quiet)
    assert plan.config.eval.tta is False
    assert {c.key: c.value for c in plan.choices}["eval.tta"] is False
    kept = plan_training("shapes:20:64", minutes=1, overrides=["data.augment.hflip_p=0", "eval.tta=true"],
                         measure=False, log=quiet)
    assert kept.config.eval.tta is True  # the user's word wins
