"""A tiny model registry: builders are keyword-only functions registered by name.

The registry imports no model code: :mod:`instaseg.models` imports the built-in model modules, whose
``@register_model`` decorators fill it (so ``import instaseg.models`` is all a caller needs).

>>> @register_model()
... def my_model(*, num_classes: int = 2) -> nn.Module: ...
>>> model = get_model("my_model", num_classes=3)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from instaseg.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TASKS: dict[str, str] = {}

TASKS = ("instance", "panoptic", "video", "points", "interactive")
"""What a model does; the engine, validation, predict and export pick their path from it."""

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str | None = None, *, task: str = "instance") -> Callable[[F], F]:
    """Decorator that registers a model builder under ``name`` (default: the function name) for
    ``task`` (one of :data:`TASKS`).

    Raises ValueError if the name is already taken, so two models can never shadow each other.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")

    def wrapper(fn: F) -> F:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"a model named {key!r} is already registered")
        _MODELS[key] = fn
        _TASKS[key] = task
        return fn

    return wrapper


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; ConfigError listing the known names if there is none."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with keyword arguments ``kwargs``."""
    return get_model_builder(name)(**kwargs)


def model_task(name: str) -> str:
    """The task the model registered as ``name`` performs (ConfigError if unknown)."""
    get_model_builder(name)
    return _TASKS[name]


def list_models(task: str | None = None) -> list[str]:
    """Sorted names of the registered models (only those of ``task`` when given)."""
    return sorted(k for k in _MODELS if task is None or _TASKS[k] == task)


def model_table(*, count_params: bool = True, num_classes: int | None = None) -> list[dict]:
    """One row per registered model: name, one-line description and parameter count (builder
    defaults, or ``num_classes`` when given; None when not counted)."""
    rows = []
    for name in list_models():
        builder = get_model_builder(name)
        doc = (builder.__doc__ or "").strip().splitlines()
        row = {"name": name, "description": doc[0].strip() if doc else "", "params": None}
        if count_params:
            kwargs = {} if num_classes is None else {"num_classes": num_classes}
            model = builder(**kwargs)
            row["params"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    return rows
