"""``run_training``: config -> datasets, model, optimizer, hooks -> a finished run directory.

Run directories: ``--output DIR`` is used as given and must be new or empty (unless resuming);
without it, ``output.dir`` (default ``runs/train``) is numbered so nothing is overwritten:
``runs/train``, ``runs/train2``, ``runs/train3``... A run directory holds ``config.yaml`` (resolved),
``checkpoints/{last,best}.pt``, ``metrics.json`` (final validation), ``history.jsonl`` (every
validation), ``overlays/val_*.png``, ``tensorboard/`` and ``mlflow_run_id.txt``. The MLflow store
defaults to ``sqlite:///<parent of the run dir>/mlflow.db`` with artifacts in ``mlartifacts/`` beside
it, so ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` shows every run under ``runs/``.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from instaseg.config import Config, config_to_dict, merge_overrides, save_config
from instaseg.data.build import build_dataset, parse_spec
from instaseg.data.copy_paste import CopyPasteDataset, few_shot_subset
from instaseg.data.transforms import build_transforms
from instaseg.engine import distributed as du
from instaseg.engine.rundir import agree_run_dir, load_resume
from instaseg.errors import ConfigError, DataError
from instaseg.models import get_model, get_model_builder, model_task

WEIGHT_KEYS = ("weights", "backbone_weights")
SIZE_KEYS = ("input_size", "max_size")  # how models state their input size (see model_input_size)
# ``make_validator(cfg) -> validator``; ``validator(model, device, amp=...) -> (metrics, samples)``.
MakeValidator = Callable[[Config], Callable[..., tuple[dict[str, Any], list[Any]]]]


@dataclass
class TrainResult:
    """What a finished run produced (``metrics`` is None on ranks other than 0 and without validation)."""

    run_dir: Path
    model: torch.nn.Module  # the trained model (without a DDP wrapper)
    metrics: dict[str, Any] | None
    iterations: int
    stop_reason: str | None
    skipped: int
    timing: dict[str, float]  # seconds: setup, train (iteration loop), final (validation + saving)


def _log(msg: str) -> None:
    if du.is_main_process():
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stdout)
        sys.stdout.flush()


def pick_device(name: str) -> torch.device:
    """``auto`` is ``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        return torch.device(f"cuda:{du.local_rank()}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'train.device': {name!r} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"config key 'train.device': {exc}") from exc


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _mlflow_uri(cfg: Config, run_dir: Path) -> str:
    if cfg.output.mlflow_uri:
        return cfg.output.mlflow_uri
    return f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"


def model_input_size(name: str, kwargs: dict[str, Any]) -> tuple[str, int] | None:
    """The input size model ``name`` states: its builder's ``input_size`` (letterbox canvas side) or
    ``max_size`` (longest side of its own resize) keyword, as set in ``kwargs`` or by the builder's
    default. Returns ``(where it comes from, size)``, or None for a model that states none."""
    params = inspect.signature(get_model_builder(name)).parameters
    for key in SIZE_KEYS:
        if key in kwargs:
            return f"model.kwargs.{key}", int(kwargs[key])
        param = params.get(key)
        if param is not None and isinstance(param.default, int) and not isinstance(param.default, bool):
            return f"model.kwargs.{key} (default of {name})", int(param.default)
    return None


def resolve_image_size(cfg: Config) -> int:
    """``data.image_size`` for ``cfg``: the model's input size (:func:`model_input_size`) when
    ``data.image_size`` is unset; ConfigError naming both keys when they disagree, or when neither
    the model nor the config gives a size."""
    stated = model_input_size(cfg.model.name, cfg.model.kwargs)
    given = cfg.data.image_size
    if stated is None:
        if given is None:
            raise ConfigError(
                f"config key 'data.image_size' is needed: model {cfg.model.name!r} states no input size "
                f"(no {' or '.join(SIZE_KEYS)} keyword)"
            )
        return given
    key, size = stated
    if given is not None and given != size:
        raise ConfigError(
            f"config key 'data.image_size' is {given} but {key} is {size}: remove data.image_size "
            "(it follows the model) or make the two equal"
        )
    return size


def is_points(cfg: Config) -> bool:
    """Whether ``cfg`` trains a point-cloud model (task ``points``: no images, no image size)."""
    return model_task(cfg.model.name) == "points"


def _build_point_data(cfg: Config) -> tuple[Any, Any]:
    from instaseg.data.points.augment import build_point_augment

    d = cfg.data
    train_ds = build_dataset(d.train, split=d.train_split, transform=build_point_augment(True, **d.augment))
    val_ds = build_dataset(d.val, split=d.val_split)
    if getattr(train_ds, "task", None) != "points" or getattr(val_ds, "task", None) != "points":
        raise ConfigError(f"model {cfg.model.name!r} reads point clouds: data.train and data.val must be "
                          "point datasets (points_shapes[:N[:POINTS]] or points:PATH)")
    return train_ds, val_ds


def _build_data(cfg: Config) -> tuple[Any, Any]:
    if is_points(cfg):
        train_ds, val_ds = _build_point_data(cfg)
        if list(train_ds.class_names) != list(val_ds.class_names) or len(train_ds) == 0:
            raise ConfigError(f"data.train {cfg.data.train!r}: empty, or classes differ from data.val")
        return train_ds, val_ds
    d = cfg.data
    assert d.image_size is not None, "resolve_image_size runs first"
    augment = dict(d.augment)
    paste = {k: augment.pop(k) for k in list(augment) if k.startswith("copy_paste")}
    train_tf = build_transforms(True, image_size=d.image_size, **augment)
    # box-only COCO files train with box supervision: their boxes stand in for the unread masks
    box_coco = cfg.train.supervision == "boxes" and parse_spec(d.train)[0] == "coco"
    boxes_only = {"boxes_as_masks": True} if box_coco else {}
    train_ds = build_dataset(d.train, split=d.train_split, transform=train_tf, **boxes_only)
    if d.shots is not None:
        train_ds = few_shot_subset(train_ds, d.shots, seed=cfg.train.seed)
    if paste:
        train_ds = CopyPasteDataset.from_options(train_ds, paste, seed=cfg.train.seed)
    # Validation runs on the images as they are: the model resizes them itself, as in deployment.
    try:
        val_ds = build_dataset(d.val, split=d.val_split)
    except DataError as exc:
        if box_coco and "has no 'segmentation'" in str(exc):
            raise ConfigError(f"data.val {d.val!r}: box-only, but validation scores masks; give data.val "
                              "(--val) a dataset with true masks") from None
        raise
    if list(train_ds.class_names) != list(val_ds.class_names):
        raise ConfigError(
            f"data.train {d.train!r} and data.val {d.val!r} have different classes: "
            f"{train_ds.class_names} vs {val_ds.class_names}"
        )
    if len(train_ds) == 0:
        raise ConfigError(f"data.train {d.train!r}: the training split is empty")
    return train_ds, val_ds


def panoptic_meta(dataset: Any) -> dict[str, Any]:
    """``{"panoptic": {stuff_category_ids, thing_category_ids, categories}}`` for a panoptic dataset
    (one with ``stuff_category_ids``), ``{}`` otherwise: checkpoint metadata the panoptic outputs need."""
    stuff = getattr(dataset, "stuff_category_ids", None)
    if stuff is None:
        return {}
    return {"panoptic": {
        "stuff_category_ids": [int(c) for c in stuff],
        "thing_category_ids": [int(c) for c in getattr(dataset, "thing_category_ids", [])],
        "categories": [dict(c) for c in getattr(dataset, "panoptic_categories", [])],
    }}


def _panoptic_kwargs(cfg: Config, dataset: Any) -> dict[str, Any]:
    """``num_stuff_classes`` for a panoptic model (ConfigError when the data has no stuff classes)."""
    if model_task(cfg.model.name) != "panoptic":
        return {}
    stuff = getattr(dataset, "stuff_category_ids", None)
    if not stuff:
        raise ConfigError(
            f"model {cfg.model.name!r} is panoptic but data.train {cfg.data.train!r} has no stuff classes "
            "(use a panoptic dataset, e.g. shapes_panoptic or coco_panoptic:...)"
        )
    return {"num_stuff_classes": len(stuff)}


def _build_model(
    cfg: Config, num_classes: int, extra: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    kwargs = dict(cfg.model.kwargs)
    for key, value in (extra or {}).items():  # facts of the data, like num_classes
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(f"config key 'model.kwargs.{key}' is {kwargs[key]} but the data gives {value}")
        kwargs[key] = value
    if "num_classes" in kwargs and int(kwargs["num_classes"]) != num_classes:
        raise ConfigError(
            f"config key 'model.kwargs.num_classes' is {kwargs['num_classes']} but the data has "
            f"{num_classes} classes (with background)"
        )
    kwargs["num_classes"] = num_classes
    spec = {"name": cfg.model.name, "kwargs": {k: v for k, v in kwargs.items() if k not in WEIGHT_KEYS}}
    for key in WEIGHT_KEYS:
        if getattr(cfg.model, key):
            kwargs[key] = getattr(cfg.model, key)
    model = get_model(cfg.model.name, **kwargs)
    if cfg.train.supervision != "masks":
        if not hasattr(model, "supervision"):
            raise ConfigError(f"model {cfg.model.name!r} cannot train with "
                              f"train.supervision={cfg.train.supervision!r} "
                              "(the Mask R-CNN, YOLACT and SOLOv2 models can)")
        model.supervision = cfg.train.supervision
    return model, spec


def run_training(
    cfg: Config | None = None,
    *,
    output: str | Path | None = None,
    resume: str | Path | None = None,
    overrides: list[str] | None = None,
    hooks: list[Any] | None = None,
    make_validator: MakeValidator | None = None,
) -> TrainResult:
    """Train as ``cfg`` says (or continue the run ``resume``); returns the run's result.

    ``hooks`` (:class:`~instaseg.engine.trainer.HookBase`) run after the built-in ones.
    ``make_validator(cfg)`` builds the validation (``validator(model, device, amp=...) -> (metrics,
    samples)``; ``instaseg train`` passes :func:`instaseg.predict.validation.make_validator`); without
    it the run is not validated (no ``metrics.json``, no ``best.pt``). With ``eval.tta`` and periodic
    validations it is called twice: the periodic ones run without flips, the final score with them.
    Under ``torchrun`` every rank
    calls this; rank 0 alone writes files and validates.
    """
    from instaseg.engine import hooks as H
    from instaseg.engine.data import SafeDataset, make_loader
    from instaseg.engine.solver import WarmupScheduler, build_optimizer
    from instaseg.engine.trainer import StepOptions, Trainer

    started = time.perf_counter()
    state = None
    if resume is not None:
        cfg, run_dir, state = load_resume(resume, output, overrides or [])
    else:
        cfg = merge_overrides(cfg or Config(), overrides or [])
    points = is_points(cfg)
    if not points:
        cfg.data.image_size = resolve_image_size(cfg)  # the resolved value goes into config.yaml
    device = pick_device(cfg.train.device)
    distributed = du.init_distributed(device)
    if state is None:
        run_dir = agree_run_dir(cfg, output)
    rank, world = du.get_rank(), du.get_world_size()
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    seed_everything(t.seed + rank)

    train_ds, val_ds = _build_data(cfg)
    if points and "stuff_classes" in inspect.signature(get_model_builder(cfg.model.name)).parameters:
        cfg.model.kwargs.setdefault("stuff_classes", list(train_ds.stuff_classes))
    model, spec = _build_model(cfg, train_ds.num_classes, _panoptic_kwargs(cfg, train_ds))
    if state is not None:
        model.load_state_dict(state["model"])
    use_cuda = device.type == "cuda"
    model.to(device)
    if use_cuda and t.channels_last and not points:
        model.to(memory_format=torch.channels_last)
    module = model
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if use_cuda else None
        )

    safe = SafeDataset(train_ds, on_error=cfg.data.on_error)
    probe = make_loader(safe, batch_size=t.batch_size, seed=t.seed, epoch=0, rank=rank, world_size=world)
    batches_per_epoch = probe.batch_sampler.num_batches()  # type: ignore[union-attr]
    steps_per_epoch = math.ceil(batches_per_epoch / t.accumulate)
    max_iter = t.max_iters or t.epochs * steps_per_epoch

    def loader(epoch: int, start: int) -> Any:
        return make_loader(
            safe,
            batch_size=t.batch_size,
            seed=t.seed,
            epoch=epoch,
            start_batch=start,
            num_workers=cfg.data.num_workers,
            rank=rank,
            world_size=world,
            pin_memory=use_cuda,
        )

    optimizer = build_optimizer(module, t)
    scheduler = WarmupScheduler(optimizer, total=max_iter, cfg=t)
    amp = bool(t.amp and use_cuda)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    options = StepOptions(
        loss_weights=dict(t.loss_weights),
        clip_grad_norm=t.clip_grad_norm,
        accumulate=t.accumulate,
        scales=list(cfg.data.scales),
        amp=amp,
        channels_last=use_cuda and t.channels_last and not points,
    )
    trainer = Trainer(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        make_loader=loader,
        batches_per_epoch=batches_per_epoch,
        max_iter=max_iter,
        device=device,
        seed=t.seed,
        options=options,
        scaler=scaler,
        log=_log,
    )
    if state is not None:
        trainer.load_state_dict(state)
        trainer.resume_rng = state.get("rng")
        _log(f"resuming {run_dir} at iteration {trainer.iter}/{max_iter} (epoch {trainer.epoch + 1})")

    meta = {
        "model_spec": spec,
        "class_names": list(train_ds.class_names),
        "category_ids": [int(c) for c in train_ds.category_ids],
        "config": config_to_dict(cfg),
        **panoptic_meta(train_ds),
    }
    if du.is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        _log(
            f"run dir {run_dir} | model {cfg.model.name} | {len(train_ds)} train / {len(val_ds)} val images "
            f"| {max_iter} iterations ({steps_per_epoch}/epoch, batch {t.batch_size}x{world}) on {device}"
        )
    validator = final_validator = None
    if make_validator is not None and du.is_main_process():
        validator = make_validator(cfg)
        if getattr(validator, "tta", False) and cfg.eval.period:  # flips: the final score only (EvalHook)
            plain = replace(cfg, eval=replace(cfg.eval, tta=False))
            final_validator, validator = validator, make_validator(plain)
    # Every rank must plan the same schedule, so every rank reserves for rank 0's final validation.
    final_cost = float(du.broadcast_object(1.0 if final_validator is None else 3.0))  # type: ignore[arg-type]
    extra, hooks = list(hooks or []), []
    if t.max_time_min:
        val_images = len(val_ds) if make_validator is not None else 0
        if make_validator is not None and cfg.eval.max_images is not None:
            val_images = min(val_images, cfg.eval.max_images)
        hooks.append(
            H.TimeBudgetHook(
                t.max_time_min,
                val_images=val_images,
                images_per_step=t.batch_size * t.accumulate * world,
                elapsed_before_s=time.perf_counter() - started,
                final_cost=final_cost,  # a plain pass and a two-view one, or one validation
                log=_log,
            )
        )
    hooks.append(
        H.ProgressHook(
            bar=cfg.output.progress and sys.stderr.isatty(),
            lines=cfg.output.progress,
            log_period=t.log_period,
            log=_log,
        )
    )
    eval_hook = None
    if make_validator is not None:
        eval_hook = H.EvalHook(
            validator,
            run_dir=run_dir,
            meta=meta,
            period=cfg.eval.period,
            amp=amp,
            class_names=list(train_ds.class_names),
            progress=False,
            log=_log,
            final_validator=final_validator,
        )
        hooks.append(eval_hook)
    hooks.append(H.CheckpointHook(run_dir, meta, period=t.checkpoint_period))
    if cfg.output.tensorboard:
        hooks.append(H.TensorBoardHook(run_dir, period=t.log_period, class_names=list(train_ds.class_names)))
    if cfg.output.mlflow:
        params = _flatten(config_to_dict(cfg))
        hooks.append(
            H.MLflowHook(
                run_dir, uri=_mlflow_uri(cfg, run_dir), experiment=cfg.output.mlflow_experiment,
                params=params, register_name=cfg.output.mlflow_register_name,
            )
        )
    trainer.register_hooks(hooks + extra)
    setup = time.perf_counter() - started
    try:
        trainer.train()
    finally:
        if distributed:
            du.cleanup()
    final = eval_hook.final if eval_hook is not None else None
    if trainer.skipped:
        _log(f"warning: {len(trainer.skipped)} bad sample(s) were skipped (see the warnings above)")
    timing = {
        "setup": setup,
        "train": trainer.loop_seconds,
        "iterations": trainer.loop_iters,
        "final": time.perf_counter() - started - setup - trainer.loop_seconds,
    }
    per_it = timing["train"] / max(trainer.loop_iters, 1)
    _log(
        f"time: set-up {setup:.1f} s, training {timing['train']:.1f} s ({trainer.loop_iters} iterations, "
        f"{per_it:.3f} s/it), final validation and saving {timing['final']:.1f} s"
    )
    return TrainResult(
        run_dir, module, final, trainer.iter, trainer.stop_reason, len(trainer.skipped), timing
    )
