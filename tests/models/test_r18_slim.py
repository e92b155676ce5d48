"""The CPU default model: builds small, trains and predicts with the detection contract."""

from __future__ import annotations

import math

import pytest
import torch

from instaseg.models import get_model, list_models
from tests.models.helpers import (
    empty_target,
    make_sample,
    one_thread,  # noqa: F401  (fixture, used by pytestmark)
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_r18_slim_registered_and_forward() -> None:
    assert "maskrcnn_r18_slim" in list_models()
    torch.manual_seed(0)
    model = get_model("maskrcnn_r18_slim", num_classes=3)
    images, targets = zip(*[make_sample(96, 128, seed=s) for s in range(2)], strict=True)
    model.train()
    losses = model(list(images), [*targets[:1], empty_target(96, 128)])
    expected = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert expected <= set(losses)
    assert all(math.isfinite(v.item()) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(list(images))
    assert len(out) == 2
    assert out[0]["masks"].shape[1:] == (1, 96, 128)


def test_r18_slim_is_the_measured_cpu_recipe() -> None:
    model = get_model("maskrcnn_r18_slim", num_classes=4)
    body = dict(model.backbone.body.named_children())
    assert "layer3" in body and "layer4" not in body  # ResNet-18 stops at layer3
    assert model.backbone.out_channels == 64
    assert model.roi_heads.box_head.fc7.out_features == 256
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    assert model.roi_heads.box_roi_pool.sampling_ratio == model.roi_heads.mask_roi_pool.sampling_ratio == 1
    convs = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32]
    assert model.roi_heads.mask_predictor.conv5_mask.in_channels == 32
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 256
    assert model.rpn._post_nms_top_n == {"training": 300, "testing": 100}  # fewer proposals
    assert model.rpn._pre_nms_top_n == {"training": 600, "testing": 300}
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    sizes = [s[0] for s in model.rpn.anchor_generator.sizes]
    assert sizes == sorted(sizes) and max(sizes) <= 128  # anchors for ~128 px images
    assert model.transform.min_size == (128,) and model.transform.max_size == 128


def test_r18_slim_mask_head_width_is_a_knob_and_is_checked() -> None:
    from instaseg.errors import ConfigError

    wide = get_model("maskrcnn_r18_slim", num_classes=3, mask_head_dims=[64, 64, 64])
    convs = [m for m in wide.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 64] and convs[0].in_channels == 64  # FPN width
    assert wide.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3
    with pytest.raises(ConfigError, match="mask_head_dims"):
        get_model("maskrcnn_r18_slim", num_classes=3, mask_head_dims=[])


def test_proposal_counts_are_knobs_for_crowded_images() -> None:
    crowded = get_model("maskrcnn_r18_slim", num_classes=2, rpn_post_nms_top_n_test=900,
                        rpn_pre_nms_top_n_test=1800, box_detections_per_img=600)
    assert crowded.rpn._post_nms_top_n["testing"] == 900 and crowded.rpn._pre_nms_top_n["testing"] == 1800
    assert crowded.rpn._post_nms_top_n["training"] == 300  # the recipe's own value where not set
    assert get_model("maskrcnn_mobilenet_v3", num_classes=2).rpn._post_nms_top_n["testing"] == 1000


def test_mask_roi_grid_and_mask_roi_cap_are_knobs() -> None:
    from instaseg.errors import ConfigError

    images, targets = zip(*[make_sample(96, 128, seed=s) for s in range(2)], strict=True)
    torch.manual_seed(0)
    plain = get_model("maskrcnn_r18_slim", num_classes=3).train()
    capped = get_model("maskrcnn_r18_slim", num_classes=3, mask_rois_per_image=10_000).train()
    capped.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    want = plain(list(images), list(targets))
    torch.manual_seed(1)
    got = capped(list(images), list(targets))
    assert set(got) == set(want)
    for key in want:  # a cap above the positives is torchvision's loss, term for term
        assert torch.allclose(got[key], want[key]), key

    seen: list[int] = []
    one = get_model("maskrcnn_r18_slim", num_classes=3, mask_rois_per_image=1, mask_roi_size=21).train()
    one.roi_heads.mask_head.register_forward_hook(lambda m, i, o: seen.append(int(o.shape[0])))
    losses = one(list(images), list(targets))
    assert seen == [2] and losses["loss_mask"].item() > 0  # one positive RoI from each image
    losses["loss_mask"].backward()
    one.eval()
    with torch.no_grad():
        lowres = one.forward_lowres(list(images))
    assert lowres[0]["mask_lowres"].shape[-2:] == (42, 42)  # twice the 21 x 21 grid
    with pytest.raises(ConfigError, match="mask_rois_per_image"):
        get_model("maskrcnn_r18_slim", num_classes=3, mask_rois_per_image=0)
