import math

import pytest
import torch

from instaseg.errors import ConfigError
from instaseg.export.onnx_export import export_onnx
from instaseg.models.registry import get_model, list_models
from instaseg.predict.runtime import load_onnx_model
from tests.models.rt_synth import mask_ap, overfit_case, synthetic_samples, zero_mask_head
from tests.models.test_yolact import KEYS, assert_parity, empty_target, spread_scores


@pytest.fixture(autouse=True)
def one_thread():
    # On a shared 2-core machine, torch's default thread pool thrashes (10x slower than 1 thread).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(**kw):
    torch.manual_seed(0)
    return get_model("solov2_lite", num_classes=3, input_size=64, **kw)


def test_registered_and_bad_config():
    assert {"solov2", "solov2_lite"} <= set(list_models())
    with pytest.raises(ConfigError, match="multiple of 32"):
        get_model("solov2_lite", num_classes=3, input_size=70)
    with pytest.raises(ConfigError, match="grids"):
        get_model("solov2_lite", num_classes=3, input_size=64, grids=(8, 4))


def test_train_losses_with_empty_targets_are_finite_and_backprop():
    model = tiny().train()
    samples = synthetic_samples(1)
    images = [samples[0][0], torch.rand(3, 50, 70)]
    losses = model(images, [samples[0][1], empty_target(50, 70)])
    assert set(losses) == {"loss_cate", "loss_mask"}
    assert all(v.ndim == 0 and math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    only_empty = model([torch.rand(3, 40, 40)], [empty_target(40, 40)])
    assert only_empty["loss_cate"].item() > 0 and only_empty["loss_mask"].item() == 0


def test_eval_output_contract_variable_sizes():
    model = tiny(score_thresh=0.0, final_threshold=0.0).eval()
    images = [torch.rand(3, 48, 80), torch.rand(3, 90, 60)]
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for img, out in zip(images, outputs, strict=True):
        h, w = img.shape[1:]
        k = out["boxes"].shape[0]
        assert 0 < k <= model.max_detections
        assert out["masks"].shape == (k, 1, h, w)
        assert out["labels"].shape == (k,) and out["scores"].shape == (k,)
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
        assert out["masks"].min() >= 0 and out["masks"].max() <= 1
        assert bool((out["labels"] >= 1).all()) and bool((out["labels"] <= 2).all())
        b = out["boxes"]
        assert bool((b[:, 2] <= w).all()) and bool((b[:, 3] <= h).all())


def test_onnx_export_parity(tmp_path):
    # Eager inference and the export graph run the same tensor-only code (detect_image), so they
    # agree as tightly as YOLACT's. Matrix NMS thresholds mask probabilities at 0.5: random kernels
    # would leave most pixels within float noise of 0.5 (see the README), so the kernels are spread.
    model = tiny(score_thresh=0.0, final_threshold=0.0)
    model = spread_scores(model, ("head.cate_out", "head.kernel_out", "mask_branch.out.0")).eval()
    result = export_onnx(model, tmp_path / "solov2.onnx", meta={"model_spec": {"name": "solov2_lite"}})
    assert all(c["ok"] for c in result.checks)
    onnx_model, _ = load_onnx_model(result.path, score_thresh=0.0)
    images = [torch.rand(3, 64, 64), torch.rand(3, 50, 90)]
    with torch.no_grad():
        want = model.forward_lowres(images)
    for w, g in zip(want, onnx_model.forward_lowres(images), strict=True):
        assert len(w["scores"]) > 0
        assert_parity([g[k][None] for k in KEYS], [w[k][None] for k in KEYS])


def test_mask_stride_option_sets_mask_resolution_and_is_validated():
    with pytest.raises(ConfigError, match="stride must be 2, 4 or 8"):
        tiny(mask_stride=3)
    for stride in (2, 4):
        model = tiny(mask_stride=stride).eval()
        with torch.no_grad():
            masks = model.detect_canvas(torch.rand(1, 3, 64, 64), 0.0)[3]
        assert masks.shape[-2:] == (64 // stride, 64 // stride)


@pytest.mark.slow
def test_overfits_a_handful_of_images():
    # Issue #7: a handful of images is learnt to a high mask AP. Masks at stride 2 on a 128 px canvas
    # (64x64) are fine enough for AP at IoU 0.95. Seeds 0-4 at RT_STEPS=100 gave AP 0.974-1.0, AP50 1.0
    # (benchmarks/results/learning_margin.json); the bars sit below the worst seed.
    model, samples, history = overfit_case("solov2_lite", seed=0)
    assert history[-1] < 0.1 * history[0]
    ap = mask_ap(model, samples)
    assert ap["AP50"] >= 0.95, ap
    assert ap["AP"] >= 0.85, ap
    zero_mask_head(model)  # the same bars on a model without mask signal must fail
    assert mask_ap(model, samples)["AP50"] < 0.5
