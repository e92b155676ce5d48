"""The typed configuration tree: one dataclass per section, loaded from YAML plus dotted overrides.

>>> cfg = load_config("configs/mask_rcnn.yaml", ["train.lr=0.01", "data.scales=[480,512]"])
>>> cfg.train.lr
0.01

A YAML file holds any subset of the tree (missing keys keep the defaults below, which ARE the CPU
default config, ``configs/default.yaml``); there is no inheritance between files. Override values are
parsed as YAML scalars/lists (``train.amp=false``, ``train.milestones=[0.7,0.9]``). Unknown keys and
wrong types raise :class:`~instaseg.errors.ConfigError` naming the key (and the file).

Data specs (``data.train``, ``data.val``) and paths (``model.weights``, ``model.backbone_weights``)
expand environment variables, e.g. ``coco:${INSTASEG_DATA}/coco_tiny/annotations/instances_train2017.json``;
an unset variable is an error naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from instaseg.errors import ConfigError

DEFAULT_MODEL = "maskrcnn_r18_slim"


@dataclass
class ModelConfig:
    """Which registered model to build (``get_model(name, num_classes=..., **kwargs)``)."""

    name: str = DEFAULT_MODEL
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # full-model weights: a local checkpoint file
    backbone_weights: str | None = None  # ImageNet backbone weights: a local file (or builder keyword)


@dataclass
class DataConfig:
    """Datasets (``build_dataset`` specs), input size, augmentation and loading."""

    # 12000 different images: within the 9.5-minute budget the default sees most of them once, which
    # scored 0.742 mask AP against 0.684 for 16 passes over 750 (BENCHMARKS.md, session 10)
    train: str = "shapes:12000:128"
    val: str = "shapes:800:128"  # its val split: 160 other images
    train_split: str | None = "train"
    val_split: str | None = "val"
    # Longest image side after the data transforms. None (the default): the model's own input size
    # (its ``input_size`` or ``max_size`` keyword); a different value is a ConfigError.
    image_size: int | None = None
    scales: list[int] = field(default_factory=list)  # multi-scale training: one drawn per iteration
    # build_transforms keywords; the default keeps flips only (synthetic shapes need no more)
    augment: dict[str, Any] = field(
        default_factory=lambda: {"crop_p": 0.0, "affine_p": 0.0, "noise_p": 0.0, "distortion_p": 0.0}
    )
    num_workers: int = 0
    on_error: str = "skip"  # a bad sample: "skip" (reported, counted) or "raise"
    # few-shot: train on K images per class (drawn with train.seed; an image counts for every class
    # in it); None: all training images
    shots: int | None = None


@dataclass
class TrainConfig:
    """Optimisation and schedule. Iterations count optimizer steps."""

    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    epochs: int = 16  # passes over data.train (the embedded default's budget ends it in the 2nd pass)
    max_iters: int | None = None  # if set, stop after this many optimizer steps (overrides epochs)
    batch_size: int = 4  # per process
    accumulate: int = 1  # gradient accumulation: batches per optimizer step
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    schedule: str = "cosine"  # "step", "cosine" or "constant" (after warmup)
    milestones: list[float] = field(default_factory=lambda: [0.75, 0.9])  # step: fractions of total
    gamma: float = 0.1  # step: lr factor at each milestone
    min_lr_factor: float = 0.0  # cosine: final lr = lr * min_lr_factor
    warmup_iters: int = 50
    warmup_factor: float = 0.001
    warmup_method: str = "linear"  # "linear" or "constant"
    clip_grad_norm: float | None = 10.0
    loss_weights: dict[str, float] = field(default_factory=dict)  # per loss key, default 1.0
    amp: bool = True  # mixed precision (CUDA only; ignored on CPU)
    channels_last: bool = True  # CUDA only
    checkpoint_period: int = 100  # also save last.pt every N iterations (0: at epoch ends only)
    log_period: int = 10  # iterations between scalar logs
    max_time_min: float | None = None  # time budget: the schedule shrinks so training + final validation fit
    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    # "masks": learn masks from the mask labels; "boxes": from the boxes alone (BoxInst-style losses,
    # the masks of the data are never read by the model; models with a ``supervision`` attribute)
    supervision: str = "masks"


@dataclass
class EvalConfig:
    """Validation: COCO mask/box AP every ``period`` epochs and at the end."""

    period: int = 0  # epochs between validations (0: only at the end)
    score_thresh: float = 0.05  # detections with score >= this are scored (the Predictor's filter)
    max_images: int | None = None  # evaluate on the first N val images only
    batch_size: int = 8
    num_overlays: int = 4  # prediction overlay PNGs written per validation (rank 0)
    tta: bool = False  # horizontal-flip test-time augmentation: two forwards an image, views fused;
    # in training, for the final score only (periodic validations stay plain and cheap)
    refine_masks: bool = False  # masks pasted along image edges and scores rescaled by mask quality
    # (instaseg.ops.refine: box-relative masks only)


@dataclass
class OutputConfig:
    """Where runs go and which trackers log them."""

    dir: str = "runs/train"  # without --output: runs/train, then runs/train2, runs/train3...
    tensorboard: bool = True
    mlflow: bool = True
    mlflow_uri: str | None = None  # None: sqlite:///<parent of the run dir>/mlflow.db
    mlflow_experiment: str = "instaseg"
    # Register the run's MLflow pyfunc model (logged as "model" in every MLflow run) under this name.
    mlflow_register_name: str | None = None
    progress: bool = True  # tqdm progress bars


@dataclass
class VideoConfig:
    """Video models (task ``video``, e.g. ``maskrcnn_r18_slim_video``): stage 1 trains ``detector`` on the
    frames with the image engine, stage 2 trains the association head on frame pairs; ``tracker`` holds
    the tracker's birth/death/matching rules (keys of ``instaseg.predict.temporal_tracker.TrackerConfig``:
    high_thresh, low_thresh, new_track_thresh, match_thresh, min_hits, max_age, mask_momentum, ...)."""

    detector: str = "maskrcnn_r18_slim"
    assoc_iters: int = 300
    assoc_batch: int = 8
    assoc_lr: float = 0.001
    max_gap: int = 3  # frame pairs are drawn 1..max_gap frames apart
    eval_videos: int | None = 8  # val videos scored at the end (None: all)
    tracker: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """The whole configuration (see the section classes)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    video: VideoConfig = field(default_factory=VideoConfig)


_CHOICES = {
    "data.on_error": ("skip", "raise"),
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("step", "cosine", "constant"),
    "train.warmup_method": ("linear", "constant"),
    "train.supervision": ("masks", "boxes"),
}
_POSITIVE = ("data.image_size", "train.batch_size", "train.accumulate", "eval.batch_size", "train.epochs",
             "data.shots")
# Old names of keys that were renamed: an unknown-key error names the new key.
_RENAMED = {
    "box_score_thresh": "score_thresh",
    "score_threshold": "score_thresh",
    "default_score_threshold": "score_thresh",
}
_EXPAND = ("data.train", "data.val", "model.weights", "model.backbone_weights")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain dicts/lists/scalars (YAML/JSON/checkpoint ready)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config to ``path`` as YAML; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (YAML; None = the defaults), apply ``overrides`` (``"a.b=value"``), validate."""
    data: dict[str, Any] = {}
    where = ""
    if path is not None:
        path = Path(path)
        where = f"{path}: "
        if not path.is_file():
            raise ConfigError(f"{path}: config file does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping, got {type(loaded).__name__}")
        data = loaded
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(data, key, value)
    cfg = config_from_dict(data, where=where)
    _expand_env(cfg, where)
    return cfg


EMBEDDED_BUDGET_MIN = 9.5  # `instaseg train` with no config trains for this long (at most)


def embedded_default(overrides: list[str] | None = None) -> Config:
    """What ``instaseg train`` runs with no config: the dataclass defaults plus a
    :data:`EMBEDDED_BUDGET_MIN`-minute budget, test-time flips and refined masks
    (``configs/default.yaml`` spells it out). A YAML of the user's own that leaves
    ``train.max_time_min``, ``eval.tta`` or ``eval.refine_masks`` out has none of them; ``overrides``
    win over all three."""
    embedded = [f"train.max_time_min={EMBEDDED_BUDGET_MIN}", "eval.tta=true", "eval.refine_masks=true"]
    return load_config(None, [*embedded, *(overrides or [])])


def config_from_dict(data: dict[str, Any], *, where: str = "") -> Config:
    """Build and validate a :class:`Config` from nested dicts (missing keys keep defaults)."""
    cfg = _build(Config, data, prefix="", where=where)
    _check_values(cfg, where)
    return cfg


def merge_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of ``cfg`` with dotted ``overrides`` applied and validated."""
    data = config_to_dict(cfg)
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(data, key, value)
    new = config_from_dict(data)
    _expand_env(new, "")
    return new


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=0.01")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, *, prefix: str, where: str) -> Any:
    if not isinstance(data, dict):
        name = prefix.rstrip(".")
        what = f"config key {name!r}" if name else "the config"
        raise ConfigError(f"{where}{what}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            full = f"{prefix}{key}"
            if key in _RENAMED:
                raise ConfigError(
                    f"{where}unknown config key {full!r}: it is now {prefix}{_RENAMED[key]!s} "
                    f"(one score threshold, kept when score >= it)"
                )
            raise ConfigError(
                f"{where}unknown config key {full!r}; known keys under "
                f"{prefix.rstrip('.') or 'the root'}: {', '.join(sorted(names))}"
            )
    values = {}
    for name in names:
        if name not in data:
            continue
        hint = hints[name]
        full = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, data[name], prefix=f"{full}.", where=where)
        else:
            values[name] = _coerce(data[name], hint, full, where)
    return cls(**values)


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Check ``value`` against ``hint`` (int/float/bool/str, X | None, list[X], dict[str, X], Any)."""

    def fail() -> ConfigError:
        return ConfigError(
            f"{where}config key {key!r}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})"
        )

    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except ConfigError:
                continue
        raise fail()
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise fail()
        return [_coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise fail()
        return {str(k): _coerce(v, item, f"{key}.{k}", where) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if hint is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads "1e-4" (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise fail()
        return value
    raise fail()  # pragma: no cover - a field type this loader does not know


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _check_values(cfg: Config, where: str) -> None:
    for key, choices in _CHOICES.items():
        if _get(cfg, key) not in choices:
            raise ConfigError(
                f"{where}config key {key!r}: expected one of {', '.join(choices)}, got {_get(cfg, key)!r}"
            )
    for key in _POSITIVE:
        if _get(cfg, key) is not None and _get(cfg, key) < 1:
            raise ConfigError(f"{where}config key {key!r}: must be >= 1, got {_get(cfg, key)!r}")
    if cfg.train.lr <= 0:
        raise ConfigError(f"{where}config key 'train.lr': must be > 0, got {cfg.train.lr}")
    if cfg.train.max_iters is not None and cfg.train.max_iters < 1:
        raise ConfigError(f"{where}config key 'train.max_iters': must be >= 1 or null")
    if not 0.0 <= cfg.eval.score_thresh <= 1.0:
        raise ConfigError(
            f"{where}config key 'eval.score_thresh': must be in [0, 1], got {cfg.eval.score_thresh}"
        )
    if any(s < 1 for s in cfg.data.scales):
        raise ConfigError(f"{where}config key 'data.scales': scales must be >= 1, got {cfg.data.scales}")
    if any(not 0.0 < m < 1.0 for m in cfg.train.milestones):
        raise ConfigError(
            f"{where}config key 'train.milestones': fractions of training in (0, 1), "
            f"got {cfg.train.milestones}"
        )
    if len(cfg.train.betas) != 2:
        raise ConfigError(f"{where}config key 'train.betas': expected 2 values, got {cfg.train.betas}")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_VAR = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def expand_env(text: str, key: str = "value", where: str = "") -> str:
    """Expand ``$VAR`` / ``${VAR}`` in ``text``; an unset variable is a ConfigError naming it."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise ConfigError(
                f"{where}config key {key!r}: environment variable {name} is not set (in {text!r})"
            )
        return os.environ[name]

    return _VAR.sub(repl, text)


def _expand_env(cfg: Config, where: str) -> None:
    for key in _EXPAND:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if isinstance(value, str):
            setattr(getattr(cfg, section), name, expand_env(value, key, where))
