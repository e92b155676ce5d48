import math
from pathlib import Path

import pytest
import torch

from instaseg.config import load_config
from instaseg.errors import ConfigError
from instaseg.export.onnx_export import export_onnx
from instaseg.models.registry import get_model, list_models
from instaseg.models.yolact import make_anchors
from instaseg.ops.boxes import decode_boxes, encode_boxes
from instaseg.predict.runtime import load_onnx_model
from tests.models.rt_synth import mask_ap, overfit_case, synthetic_samples, zero_mask_head


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared 2-core machine, torch's default thread pool thrashes (10x slower than 1 thread).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny(**kw):
    torch.manual_seed(0)
    return get_model("yolact_lite", num_classes=3, input_size=64, **kw)


def empty_target(h, w):
    return {
        "masks": torch.zeros(0, h, w, dtype=torch.bool),
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "iscrowd": torch.zeros(0, dtype=torch.long),
    }


def test_registered():
    assert {"yolact", "yolact_lite", "yolact_nano"} <= set(list_models())


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("yolact*.yaml")) + sorted(CONFIGS.glob("solov2*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_build_their_model(path, monkeypatch):
    monkeypatch.setenv("INSTASEG_DATA", "/data/root")
    cfg = load_config(path)
    assert "${" not in cfg.data.train and "${" not in cfg.data.val
    model = get_model(cfg.model.name, num_classes=2, **cfg.model.kwargs)
    assert model.input_size == cfg.model.kwargs["input_size"]


def test_nano_is_yolact_lite_on_mobilenet_v3_small():
    nano = get_model("yolact_nano", num_classes=3, input_size=64)
    small = get_model("yolact_lite", num_classes=3, input_size=64, backbone="mobilenet_v3_small")
    assert [tuple(p.shape) for p in nano.state_dict().values()] == [
        tuple(p.shape) for p in small.state_dict().values()
    ]
    lite = get_model("yolact_lite", num_classes=3, input_size=64)
    assert sum(p.numel() for p in nano.parameters()) < sum(p.numel() for p in lite.parameters())


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="multiple of 32"):
        get_model("yolact_lite", num_classes=3, input_size=100)
    with pytest.raises(ConfigError, match="unknown backbone"):
        get_model("yolact", num_classes=3, backbone="vgg1")


def test_box_encoding_roundtrip_and_anchor_count():
    anchors = make_anchors(64, 4.0, (1.0, 0.5, 2.0))
    # levels 8x8, 4x4, 2x2, 1x1, 1x1 cells x 3 aspect ratios
    assert anchors.shape == ((64 + 16 + 4 + 1 + 1) * 3, 4)
    gt = torch.tensor([[3.0, 5.0, 40.0, 20.0]]).expand(anchors.shape[0], 4)
    back = decode_boxes(encode_boxes(gt, anchors), anchors)
    assert torch.allclose(back, gt, atol=1e-3)


def test_train_losses_with_empty_targets_are_finite_and_backprop():
    model = tiny().train()
    samples = synthetic_samples(1)
    images = [samples[0][0], torch.rand(3, 50, 70)]
    targets = [samples[0][1], empty_target(50, 70)]
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask", "loss_semantic", "loss_maskiou"}
    assert all(v.ndim == 0 and math.isfinite(float(v.detach())) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # a batch with no objects at all still trains the classifier towards background
    only_empty = model([torch.rand(3, 40, 40)], [empty_target(40, 40)])
    assert float(only_empty["loss_cls"].detach()) > 0 and float(only_empty["loss_mask"].detach()) == 0


def test_eval_output_contract_variable_sizes():
    model = tiny(score_thresh=0.0).eval()
    images = [torch.rand(3, 48, 80), torch.rand(3, 90, 60)]
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for img, out in zip(images, outputs, strict=True):
        h, w = img.shape[1:]
        k = out["boxes"].shape[0]
        assert 0 < k <= model.max_detections
        assert out["masks"].shape == (k, 1, h, w) and out["labels"].shape == (k,)
        assert out["scores"].shape == (k,) and bool((out["scores"][:-1] >= out["scores"][1:]).all())
        assert out["masks"].min() >= 0 and out["masks"].max() <= 1
        assert bool((out["labels"] >= 1).all()) and bool((out["labels"] <= 2).all())
        b = out["boxes"]
        assert bool((b[:, 0] >= 0).all()) and bool((b[:, 2] <= w).all()) and bool((b[:, 3] <= h).all())


def spread_scores(model, prefixes):
    """Random-init heads give near-identical scores whose order is decided by float noise; wider
    predictor weights make the ranking (and so the parity check) well defined."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(prefixes) and name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def test_onnx_export_parity(tmp_path):
    # through `instaseg export`'s path: the graph runs the very code of forward_lowres
    model = spread_scores(tiny(), ("head.cls", "head.box", "maskiou.")).eval()
    result = export_onnx(model, tmp_path / "yolact.onnx", meta={"model_spec": {"name": "yolact_lite"}})
    assert all(c["ok"] for c in result.checks) and not model.training
    onnx_model, _ = load_onnx_model(result.path, score_thresh=model.score_thresh)
    images = [torch.rand(3, 64, 64), torch.rand(3, 50, 90)]
    with torch.no_grad():
        want = model.forward_lowres(images)
    for w, g in zip(want, onnx_model.forward_lowres(images), strict=True):
        assert len(w["scores"]) > 0
        assert_parity([g[k][None] for k in KEYS], [w[k][None] for k in KEYS])


KEYS = ("boxes", "scores", "labels", "mask_lowres")


def assert_parity(got, want):
    """Scores match everywhere; boxes, labels and masks wherever the score ranking is unambiguous."""
    assert torch.allclose(got[1], want[1], atol=1e-5)
    s = want[1][0]
    one = torch.ones(1)
    gap = torch.minimum(torch.cat([one, s[:-1] - s[1:]]), torch.cat([s[:-1] - s[1:], one]))
    clear = gap > 1e-4
    assert clear.any()
    assert torch.allclose(got[0][0][clear], want[0][0][clear], atol=1e-3)
    assert torch.equal(got[2][0][clear], want[2][0][clear])
    assert torch.allclose(got[3][0][clear], want[3][0][clear], atol=1e-3)


def test_mask_stride_option_sets_mask_resolution_and_is_validated():
    with pytest.raises(ConfigError, match="stride must be 2, 4 or 8"):
        tiny(proto_stride=3)
    for stride in (2, 4):
        model = tiny(proto_stride=stride).eval()
        with torch.no_grad():
            masks = model.detect_canvas(torch.rand(1, 3, 64, 64), 0.0)[3]
        assert masks.shape[-2:] == (64 // stride, 64 // stride)


@pytest.mark.slow
def test_overfits_a_handful_of_images():
    # Issue #7: a handful of images is learnt to a high mask AP. Masks at stride 2 on a 128 px canvas
    # (64x64) are fine enough for AP at IoU 0.95. Seeds 0-4 at RT_STEPS=100 gave AP 1.0, AP50 1.0
    # (benchmarks/results/learning_margin.json); the bars sit below the worst seed.
    model, samples, history = overfit_case("yolact_lite", seed=0)
    assert history[-1] < 0.1 * history[0]
    ap = mask_ap(model, samples)
    assert ap["AP50"] >= 0.95, ap
    assert ap["AP"] >= 0.85, ap
    zero_mask_head(model)  # the same bars on a model without mask signal must fail
    assert mask_ap(model, samples)["AP50"] < 0.5
