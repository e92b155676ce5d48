"""Every registered model honours the model contract (train: finite losses and gradients; eval:
instances from ``forward_lowres`` and ``forward``, no NaN; export graph; input size).

Models are built once per module at tiny sizes with weights=None (the ResNet-50 ones, including the
paper-sized ``yolact`` and ``solov2``, are the slow part: built once, forwarded at 64 px).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from instaseg.models import (
    InputSpec,
    InstanceSegmentationModel,
    get_model,
    get_model_builder,
    list_models,
    model_task,
)
from instaseg.models.protocol import ExportGraph
from tests.models.helpers import (
    empty_target,
    make_sample,
    one_thread,  # noqa: F401  (fixture, used by pytestmark)
)

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_CLASSES = 3
_CACHE: dict[str, torch.nn.Module] = {}
# The image-model contract (InstanceSegmentationModel); point-cloud and click models have contracts of
# their own, tested in test_points_models.py and test_click_model.py.
IMAGE_TASKS = ("instance", "panoptic", "video")
MODELS = [
    n for n in list_models()
    # Other test modules may register stand-in models; the contract is for the shipped zoo.
    if get_model_builder(n).__module__.startswith("instaseg.models") and model_task(n) in IMAGE_TASKS
]


def test_every_shipped_model_is_tested() -> None:
    assert {"maskrcnn_r50_fpn", "maskrcnn_r18_slim", "simple_fpn", "yolact", "yolact_lite", "yolact_nano",
            "solov2", "solov2_lite"} <= set(MODELS)


def tiny_kwargs(name: str) -> dict:
    """Small inputs and few sampled RoIs/detections: same code paths, a fraction of the time."""
    params = inspect.signature(get_model_builder(name)).parameters
    kw = {"num_classes": NUM_CLASSES}
    small = {"min_size": 64, "max_size": 64, "box_batch_size_per_image": 32, "rpn_batch_size_per_image": 64,
             "box_detections_per_img": 10, "detections_per_img": 10, "input_size": 64}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in small.items():
        if key in params or (takes_any and name.startswith("maskrcnn") and key.startswith(("box", "rpn"))):
            kw[key] = value
    if name.startswith("solov2"):
        kw["final_threshold"] = 0.0  # random category scores sit at the 1% prior, below the default 0.05
    return kw


def with_sem_seg(name: str, target: dict) -> dict:
    """Panoptic models also train on ``sem_seg`` (0 on the objects, stuff class 1 elsewhere)."""
    if model_task(name) != "panoptic":
        return target
    return {**target, "sem_seg": (~target["masks"].any(0)).long()}


def built(name: str) -> torch.nn.Module:
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = get_model(name, **tiny_kwargs(name))
    return _CACHE[name]


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    yield
    _CACHE.clear()


@pytest.mark.parametrize("name", MODELS)
def test_train_forward_gives_finite_losses_and_gradients(name: str) -> None:
    model = built(name).train()
    image, target = make_sample(64, 64, seed=1)
    targets = [with_sem_seg(name, target), with_sem_seg(name, empty_target(48, 64))]
    losses = model([image, torch.rand(3, 48, 64)], targets)
    assert isinstance(losses, dict) and losses
    for key, value in losses.items():
        assert value.ndim == 0 and math.isfinite(value.item()), (key, value)  # no NaN / inf
    model.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def _check_common(out: dict, h: int, w: int) -> int:
    k = out["boxes"].shape[0]
    assert out["boxes"].shape == (k, 4) and out["boxes"].dtype == torch.float32
    assert out["labels"].shape == (k,) and out["labels"].dtype == torch.int64
    assert out["scores"].shape == (k,) and out["scores"].is_floating_point()
    for value in out.values():
        assert not bool(torch.isnan(value).any())
    if k:
        assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) < NUM_CLASSES
        assert float(out["scores"].min()) >= 0.0 and float(out["scores"].max()) <= 1.0
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
        boxes = out["boxes"]
        assert bool((boxes[:, 0] >= -1e-3).all() and (boxes[:, 2] <= w + 1e-3).all())
        assert bool((boxes[:, 1] >= -1e-3).all() and (boxes[:, 3] <= h + 1e-3).all())
    return k


@pytest.mark.parametrize("name", MODELS)
def test_eval_output_contract(name: str) -> None:
    model = built(name).eval()
    assert isinstance(model, InstanceSegmentationModel)
    sizes = [(64, 64), (48, 80)]
    images = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in sizes]
    saved = model.score_thresh
    model.score_thresh = 0.0  # every candidate: non-empty outputs to check
    try:
        with torch.no_grad():
            lowres = model.forward_lowres(images)
            outputs = model(images)
    finally:
        model.score_thresh = saved
    assert isinstance(outputs, list) and len(outputs) == len(lowres) == len(images)
    for (h, w), low, out in zip(sizes, lowres, outputs, strict=True):
        k = _check_common(low, h, w)
        assert k > 0
        m = low["mask_lowres"]
        assert m.ndim == 3 and m.shape[0] == k and m.shape[1] == m.shape[2] and m.is_floating_point()
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
        # forward(images) is the same detections with the masks pasted into the image
        assert _check_common(out, h, w) == k
        assert out["masks"].shape == (k, 1, h, w) and out["masks"].is_floating_point()
        assert float(out["masks"].min()) >= 0.0 and float(out["masks"].max()) <= 1.0
        torch.testing.assert_close(out["boxes"], low["boxes"])
        torch.testing.assert_close(out["scores"], low["scores"])


@pytest.mark.parametrize("name", MODELS)
def test_input_spec_and_export_graph(name: str) -> None:
    model = built(name).eval()
    spec = model.input_spec
    assert isinstance(spec, InputSpec) and len(spec.mean) == len(spec.std) == 3
    assert spec.fixed_size == 64 or (spec.min_size, spec.max_size) == (64, 64)
    graph = model.export_graph()
    assert isinstance(graph, ExportGraph) and graph.model is model and graph.mask_kind == "box"
    assert graph.default_score_thresh == model.score_thresh
    with torch.no_grad():
        boxes, scores, labels, masks, *extra = graph(torch.rand(3, 40, 56), torch.tensor(0.0))
    if model_task(name) == "panoptic":  # + the semantic map at the input size
        assert len(extra) == 1 and extra[0].shape == (40, 56) and extra[0].dtype == torch.int64
    assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape
    assert masks.ndim == 3 and masks.shape[0] == len(scores)


def _bad_targets() -> list[tuple[str, dict]]:
    _, good = make_sample(64, 64, seed=2)
    n = good["labels"].shape[0]
    return [
        ("boxes", {**good, "boxes": torch.zeros(n, 5)}),
        ("labels", {**good, "labels": torch.full((n,), NUM_CLASSES)}),
        ("labels", {**good, "labels": torch.zeros(n, dtype=torch.int64)}),
        ("masks", {**good, "masks": good["masks"][:, :32]}),
        ("degenerate", {**good, "boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]] * n)}),
    ]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("case", range(len(_bad_targets())))
def test_bad_targets_raise_value_error(name: str, case: int) -> None:
    model = built(name).train()
    image, _ = make_sample(64, 64, seed=2)
    word, target = _bad_targets()[case]
    with pytest.raises(ValueError, match=word if word != "degenerate" else "x2 > x1"):
        model([image], [target])


@pytest.mark.parametrize("name", MODELS)
def test_missing_targets_in_training_raise(name: str) -> None:
    model = built(name).train()
    with pytest.raises(ValueError):
        model([torch.rand(3, 64, 64)])
