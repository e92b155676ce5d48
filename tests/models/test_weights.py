"""Weights: local files load exactly, nothing downloads, and every failure is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tvm
from torchvision.ops import FrozenBatchNorm2d

from instaseg.errors import CheckpointError, ConfigError
from instaseg.models import get_model
from instaseg.models.backbones import (
    EfficientNetLite0,
    efficientnet_lite0_fpn,
    efficientnet_lite0_weights_file,
)
from tests.models.helpers import one_thread  # noqa: F401  (fixture, used by pytestmark)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def resnet18_file(tmp_path: Path) -> tuple[Path, dict]:
    torch.manual_seed(3)
    state = tvm.resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture()
def no_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_backbone_weights_from_local_file(resnet18_file: tuple[Path, dict]) -> None:
    path, state = resnet18_file
    model = get_model("maskrcnn_r18_slim", num_classes=3, backbone_weights=str(path))
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, state["conv1.weight"])
    assert torch.equal(body.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(body.bn1.running_var, state["bn1.running_var"])
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # pretrained statistics are kept
    assert "layer4" not in dict(body.named_children())  # the slim model stops at layer3
    # torchvision's default for a pretrained trunk: the top 3 stages train, the stem stays frozen.
    assert not body.conv1.weight.requires_grad and body.layer3[0].conv1.weight.requires_grad


def test_missing_backbone_file_is_a_clear_checkpoint_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=f"{missing}.*does not exist"):
        get_model("maskrcnn_r18_slim", backbone_weights=str(missing))


def test_unrelated_or_misshaped_backbone_file_is_refused(tmp_path: Path) -> None:
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(CheckpointError, match="unrelated.pth.*no parameter names match"):
        get_model("maskrcnn_r18_slim", backbone_weights=str(unrelated))
    wrong = tmp_path / "r34.pth"
    torch.save(tvm.resnet34().state_dict(), wrong)
    with pytest.raises(CheckpointError, match="r34.pth.*unexpected"):
        get_model("maskrcnn_r18_slim", backbone_weights=str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        get_model("maskrcnn_r18_slim", backbone_weights=str(garbage))


@pytest.mark.usefixtures("no_hub_cache")
def test_imagenet_and_coco_weights_never_download() -> None:
    with pytest.raises(CheckpointError, match="not cached.*download.*resnet18"):
        get_model("maskrcnn_r18_slim", backbone_weights="imagenet")
    with pytest.raises(CheckpointError, match="not cached.*download.*maskrcnn_resnet50_fpn"):
        get_model("maskrcnn_r50_fpn", weights="DEFAULT")
    with pytest.raises(ConfigError, match="unknown weights 'COCO_V9'.*COCO_V1"):
        get_model("maskrcnn_r50_fpn_v2", weights="COCO_V9")
    with pytest.raises(ConfigError, match="no published pretrained weights"):
        get_model("maskrcnn_r18_slim", weights="DEFAULT")


def test_full_model_checkpoint_roundtrip_and_new_class_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = get_model("maskrcnn_r18_slim", num_classes=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "model_spec": {"name": "maskrcnn_r18_slim"}}, path)
    torch.manual_seed(1)
    same = get_model("maskrcnn_r18_slim", num_classes=3, weights=str(path))
    for (k, a), b in zip(source.state_dict().items(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # Another number of classes: everything but the class-specific predictors is reused.
    more = get_model("maskrcnn_r18_slim", num_classes=5, weights=str(path))
    assert more.roi_heads.box_predictor.cls_score.out_features == 5
    assert torch.equal(more.backbone.body.conv1.weight, source.backbone.body.conv1.weight)
    assert torch.equal(more.roi_heads.box_head.fc6.weight, source.roi_heads.box_head.fc6.weight)


def test_frozen_bn_weights_load_into_plain_model(resnet18_file: tuple[Path, dict]) -> None:
    # A model fine-tuned from pretrained backbone weights (frozen BN) must reload into the model that
    # load_model rebuilds without backbone weights (plain BN), strictly, with identical features.
    pretrained = get_model("maskrcnn_r18_slim", num_classes=3, backbone_weights=str(resnet18_file[0]))
    plain = get_model("maskrcnn_r18_slim", num_classes=3)
    plain.load_state_dict(pretrained.state_dict())
    x = torch.rand(1, 3, 64, 64)
    pretrained.eval()
    plain.eval()
    with torch.no_grad():
        a, b = pretrained.backbone(x), plain.backbone(x)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_mobilenet_backbone_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(4)
    state = tvm.mobilenet_v3_large().state_dict()
    path = tmp_path / "mnv3.pth"
    torch.save(state, path)
    model = get_model("maskrcnn_mobilenet_v3", num_classes=3, backbone_weights=str(path))
    assert torch.equal(model.backbone.body["0"][0].weight, state["features.0.0.weight"])


def test_effnet_lite0_packaged_imagenet_weights_load_exactly() -> None:
    file_state = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    backbone = efficientnet_lite0_fpn(backbone_weights="imagenet")
    body_state = backbone.body.state_dict()
    trunk_keys = [k for k in file_state if not k.startswith(("_conv_head", "_bn1.", "_fc"))]
    matched = [k for k in trunk_keys if not k.endswith("num_batches_tracked")]
    assert len(matched) > 200
    for key in matched:
        assert torch.equal(body_state[key], file_state[key]), key
    model = get_model("maskrcnn_effnet_lite0", num_classes=3, backbone_weights="imagenet")
    assert torch.equal(model.backbone.body._conv_stem.weight, file_state["_conv_stem.weight"])


def _classify(body: EfficientNetLite0, file_state: dict, image: torch.Tensor) -> torch.Tensor:
    """ImageNet class probabilities using the packaged head on top of ``body``'s last features."""
    x = body(image)["2"]
    x = torch.nn.functional.conv2d(x, file_state["_conv_head.weight"])
    bn = file_state
    x = torch.nn.functional.batch_norm(x, bn["_bn1.running_mean"], bn["_bn1.running_var"],
                                       bn["_bn1.weight"], bn["_bn1.bias"], eps=1e-3)
    x = torch.nn.functional.relu6(x).mean((2, 3))
    return torch.softmax(x @ file_state["_fc.weight"].T + file_state["_fc.bias"], 1)


def _lite_photos(shared_data: Path, size: int) -> torch.Tensor:
    """Four real photos (coco_tiny) as a [4, 3, size, size] batch normalised as the Lite trunks expect."""
    import numpy as np
    from PIL import Image

    images = sorted((shared_data / "coco_tiny" / "val2017").glob("*.jpg"))[:4]
    return torch.stack([
        torch.from_numpy(np.array(Image.open(p).convert("RGB").resize((size, size)))).permute(2, 0, 1)
        for p in images
    ]).float().div(255).sub(0.498).div(0.502)


def test_effnet_lite0_features_are_pretrained_not_random(shared_data: Path) -> None:
    file_state = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    batch = _lite_photos(shared_data, 224)
    torch.manual_seed(0)
    pretrained = efficientnet_lite0_fpn(backbone_weights="imagenet").body.eval()
    random = efficientnet_lite0_fpn().body.eval()
    with torch.no_grad():
        p_pre, p_rand = _classify(pretrained, file_state, batch), _classify(random, file_state, batch)
    # Real photos: the pretrained trunk makes the ImageNet head confident; a random trunk does not.
    assert float(p_pre.max(1).values.mean()) > 3 * float(p_rand.max(1).values.mean())
    assert float(p_pre.max(1).values.mean()) > 0.15


def test_engine_checkpoint_rebuilds_simple_fpn_trained_from_pretrained_backbone(
    resnet18_file: tuple[Path, dict], tmp_path: Path
) -> None:
    from instaseg.engine.checkpoint import save_checkpoint
    from instaseg.models.checkpoint import load_model

    kwargs = {"num_classes": 3, "fpn_channels": 32}
    trained = get_model("simple_fpn", backbone_weights=str(resnet18_file[0]), **kwargs)
    path = save_checkpoint({"model": trained.state_dict(),
                            "model_spec": {"name": "simple_fpn", "kwargs": kwargs}}, tmp_path / "best.pt")
    rebuilt, meta = load_model(path)
    assert meta["model_spec"]["name"] == "simple_fpn"
    weight = resnet18_file[1]["layer4.0.conv1.weight"]
    assert torch.equal(rebuilt.backbone.body.layer4[0].conv1.weight, weight)


def test_unknown_model_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="option.*'rpn_batchsize'.*rpn_batch_size_per_image"):
        get_model("maskrcnn_r50_fpn", rpn_batchsize=3)
    model = get_model("maskrcnn_r18_slim", num_classes=3, box_batch_size_per_image=16, score_thresh=0.3,
                      bbox_reg_weights=[1, 1, 1, 1])
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 16
    assert model.roi_heads.score_thresh == 0.3
    assert model.roi_heads.box_coder.weights == (1.0, 1.0, 1.0, 1.0)


def test_effnet_lite0_stride4_level_keeps_the_imagenet_trunk_and_adds_a_finer_level() -> None:
    file_state = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = get_model("maskrcnn_effnet_lite0", num_classes=2, min_size=128, max_size=128,
                      backbone_weights="imagenet", stride4=True)
    assert torch.equal(model.backbone.body._conv_stem.weight, file_state["_conv_stem.weight"])
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 128, 128))
    # Strides 4, 8, 16, 32 and the pool level; one anchor size per level, 8 px at stride 4.
    assert [f.shape[-1] for f in feats.values()] == [32, 16, 8, 4, 2]
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    plain = get_model("maskrcnn_effnet_lite0", num_classes=2, min_size=128, max_size=128)
    assert len(plain.rpn.anchor_generator.sizes) == 4
    with pytest.raises(ConfigError, match="anchor_sizes needs 5 sizes"):
        get_model("maskrcnn_effnet_lite0", num_classes=2, stride4=True, anchor_sizes=[16, 32, 64, 128])


@pytest.mark.parametrize("norm, kind", [("gn", torch.nn.GroupNorm), ("bn", torch.nn.BatchNorm2d)])
def test_effnet_lite_mask_head_norm_normalises_each_mask_conv_and_still_trains(norm: str, kind: type) -> None:
    torch.manual_seed(0)
    model = get_model("maskrcnn_effnet_lite0", num_classes=2, min_size=96, max_size=96, mask_head_norm=norm)
    convs = list(model.roi_heads.mask_head)
    assert len(convs) == 4 and all(isinstance(block[1], kind) for block in convs)
    assert not any(isinstance(m, torch.nn.GroupNorm | torch.nn.BatchNorm2d)
                   for m in get_model("maskrcnn_effnet_lite0", num_classes=2).roi_heads.mask_head.modules())
    mask = torch.zeros(1, 96, 96, dtype=torch.uint8)
    mask[0, 20:70, 30:60] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([1]), "masks": mask}
    model.train()
    losses = model([torch.rand(3, 96, 96)], [target])
    losses["loss_mask"].backward()
    assert model.roi_heads.mask_head[0][1].weight.grad is not None
    with pytest.raises(ConfigError, match="mask_head_norm must be one of"):
        get_model("maskrcnn_effnet_lite0", num_classes=2, mask_head_norm="layer")


@pytest.mark.parametrize("variant", [1, 2])
def test_effnet_lite1_lite2_packaged_weights_load_exactly_and_classify_photos(
    variant: int, shared_data: Path
) -> None:
    from instaseg.models.backbones import efficientnet_lite_fpn, efficientnet_lite_weights_file

    file_state = torch.load(efficientnet_lite_weights_file(variant), map_location="cpu", weights_only=True)
    model = get_model(f"maskrcnn_effnet_lite{variant}", num_classes=3, backbone_weights="imagenet")
    body_state = model.backbone.body.state_dict()
    trunk = [k for k in file_state if not k.startswith(("_conv_head", "_bn1.", "_fc", "num_batches"))
             and not k.endswith("num_batches_tracked")]
    assert len(trunk) > 300  # deeper than Lite0 (240 tensors)
    for key in trunk:
        assert torch.equal(body_state[key], file_state[key]), key
    batch = _lite_photos(shared_data, 240)
    torch.manual_seed(0)
    random = efficientnet_lite_fpn(variant=variant).body.eval()
    with torch.no_grad():
        p_pre = _classify(model.backbone.body.eval(), file_state, batch)
        p_rand = _classify(random, file_state, batch)
    assert float(p_pre.max(1).values.mean()) > 3 * float(p_rand.max(1).values.mean())
