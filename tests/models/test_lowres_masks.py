"""The one-stage models' low-resolution mask path (box-relative ``mask_lowres``, pasted by
instaseg.structures.paste) gives the masks of the full-size path they had before, without full-image float
masks per detection.

The reference "full-size path" is the models' previous eager post-processing, written out here: the
canvas (letterbox) or resized-image (simple_fpn) mask map of each detection, resampled bilinearly to the
whole input image. Weights: seeded random ones, with the mask-producing layers widened so masks are
decisive (random heads give probabilities within noise of 0.5 everywhere), on images of flat-coloured
shapes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from instaseg.models import get_model
from instaseg.ops.resize import letterbox_image, letterbox_size
from instaseg.structures.paste import paste_masks_dense
from tests.models.helpers import one_thread  # noqa: F401  (fixture, used by pytestmark)
from tests.models.rt_synth import synthetic_samples
from tests.models.test_yolact import spread_scores

pytestmark = pytest.mark.usefixtures("one_thread")

WIDEN = {
    "yolact_lite": ("head.coef", "head.cls"),
    "solov2_lite": ("head.cate_out", "head.kernel_out", "mask_branch.out.0"),
    "simple_fpn": ("controller", "cls_logits"),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"input_size": 128} if name != "simple_fpn" else {"min_size": 96, "max_size": 160}
    if name == "solov2_lite":
        kw["final_threshold"] = 0.0
    model = spread_scores(get_model(name, num_classes=3, **kw), WIDEN[name]).eval()
    if name == "yolact_lite":
        with torch.no_grad():
            model.protonet.post[-1].weight.mul_(200.0)  # prototypes and coefficients of magnitude ~1,
            model.head.coef.weight.mul_(10.0)  # not ~0.01: masks that are clearly in or out
    model.score_thresh = 0.0
    return model


def _full_size_letterbox(model, image: torch.Tensor) -> torch.Tensor:
    """The previous eager path of YOLACT/SOLOv2: canvas mask maps cropped to the image region, resized
    to it (bilinear). (YOLACT then also zeroed the prototype cells outside the box; the box crop is
    applied at pixel resolution in the test instead.)"""
    h, w = image.shape[-2:]
    canvas, _ = letterbox_image(image, model.input_size)
    boxes, scores, labels, maps = (r[0] for r in model.detect_canvas(canvas[None], model.score_thresh))
    maps = maps[scores >= model.score_thresh]
    nh, nw, _ = letterbox_size(h, w, model.input_size)
    cells = maps.shape[-1] / model.input_size
    crop = maps[:, None, : max(1, round(nh * cells)), : max(1, round(nw * cells))]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def _full_size_simple_fpn(model, image: torch.Tensor) -> torch.Tensor:
    """The previous eager path of simple_fpn: the kept detections' mask logits upsampled by the
    stride over the resized image, sigmoid, resized to the input image."""
    batch, _ = model.transform([image])
    logits, box_raw, params, mask_feat, points = model._heads(model._level(batch.tensors))
    size = torch.tensor(batch.image_sizes[0])
    scores = logits[0].sigmoid().permute(1, 2, 0).reshape(-1, model.num_classes - 1)
    loc, _, _, _ = model._select(scores, box_raw[0].permute(1, 2, 0).reshape(-1, 4), points, size,
                                 model.score_thresh)
    m = model._mask_logits(mask_feat[0], params[0].permute(1, 2, 0).reshape(-1, params.shape[1])[loc],
                           points[loc])
    m = F.interpolate(m[:, None], scale_factor=model.stride, mode="bilinear", align_corners=False)
    m = m[:, :, : int(size[0]), : int(size[1])].sigmoid()
    return F.interpolate(m, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


def _ious(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def _inside(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[K, H, W] bool: pixel centres inside each XYXY box."""
    ys, xs = torch.arange(h) + 0.5, torch.arange(w) + 0.5
    b = boxes[:, :, None, None]
    return (ys[:, None] >= b[:, 1]) & (ys[:, None] < b[:, 3]) & (xs >= b[:, 0]) & (xs < b[:, 2])


@pytest.mark.parametrize("name", ["yolact_lite", "solov2_lite", "simple_fpn"])
def test_lowres_masks_match_the_full_size_path(name: str) -> None:
    model = _model(name)
    ious = []
    for image, _ in synthetic_samples(3, seed=4):
        h, w = image.shape[-2:]
        with torch.no_grad():
            low = model.forward_lowres([image])[0]
            reference = _full_size_simple_fpn if name == "simple_fpn" else _full_size_letterbox
            full = reference(model, image)
        assert len(full) == len(low["boxes"]) > 0
        pasted = torch.from_numpy(paste_masks_dense(low["mask_lowres"].numpy(), low["boxes"].numpy(), h, w))
        # Box-relative masks end at their box: compare with the full-size masks inside the box (YOLACT
        # crops each mask to its box by definition; SOLOv2's boxes are its masks' boxes; simple_fpn's
        # masks are cut to the box as Mask R-CNN's are).
        inside = _inside(low["boxes"], h, w)
        ref = (full >= 0.5) & inside
        # Masks of at least 64 px whose probabilities are decisive (random weights leave some masks
        # within noise of 0.5, where any resampling flips pixels): geometry is what is compared.
        area = inside.flatten(1).sum(1).clamp(min=1)
        ambiguous = (((full - 0.5).abs() < 0.1) & inside).flatten(1).sum(1) / area
        keep = (ref.flatten(1).sum(1) >= 64) & (ambiguous < 0.05)
        ious.append(_ious(pasted, ref)[keep])
    ious = torch.cat(ious)
    assert len(ious) >= 10
    assert float(ious.mean()) >= 0.98, (name, ious)
    # the worst: SOLOv2's random-weight masks of a few hundred scattered pixels over a whole-image box
    # (0.88); thin fragments are where two resamplings differ most
    assert float(ious.min()) >= 0.85, (name, ious)


@pytest.mark.parametrize("name", ["yolact_lite", "solov2_lite", "simple_fpn"])
def test_lowres_memory_does_not_scale_with_image_size_times_detections(name: str) -> None:
    model = _model(name)
    small, large = torch.rand(3, 120, 160), torch.rand(3, 1500, 2000)
    with torch.no_grad():
        low_small = model.forward_lowres([small])[0]["mask_lowres"]
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            low_large = model.forward_lowres([large])[0]["mask_lowres"]
    k = low_large.shape[0]
    assert k >= 20 and low_large.shape[1:] == low_small.shape[1:]  # M x M whatever the image size
    biggest = max(e.cpu_memory_usage for e in prof.events())
    full_masks = k * 1500 * 2000 * 4  # what K float masks of the image would take
    assert biggest < full_masks / 10, (biggest, full_masks)
