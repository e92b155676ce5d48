"""Loading checkpoints safely and rebuilding the model saved in one.

A checkpoint (written by :mod:`instaseg.engine.checkpoint`) is a dict loaded with ``weights_only=True``:
``model`` (the ``state_dict``), ``model_spec`` (``{"name", "kwargs"}`` for ``get_model``),
``class_names`` (index 0 = "background"), ``category_ids``, ``config`` and, for ``last.pt``, training
state. A run directory stands for its ``best.pt`` (else ``last.pt``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instaseg.errors import CheckpointError
from instaseg.models.registry import get_model

LAST = "last.pt"
BEST = "best.pt"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (then its ``best.pt``, else ``last.pt``,
    looked up directly and under ``checkpoints/``)."""
    path = Path(path)
    if path.is_dir():
        for sub in (path, path / "checkpoints"):
            for name in (BEST, LAST):
                if (sub / name).is_file():
                    return sub / name
        raise CheckpointError(f"{path}: no {BEST} or {LAST} in this run directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); pickles that need arbitrary code are refused."""
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe pickle"
        raise CheckpointError(
            f"{path}: refused to load, the file needs arbitrary code to unpickle ({first})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not an instaseg checkpoint (no 'model' entry)")
    return state


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in checkpoint (or run directory) ``path``, in eval mode.

    Returns ``(model, meta)`` where ``meta`` is the checkpoint without the weights/training state:
    ``model_spec``, ``class_names``, ``category_ids``, ``config``, and ``path``.
    """
    state = load_checkpoint(path)
    spec = state.get("model_spec")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path}: checkpoint has no model_spec; cannot rebuild the model")
    model = get_model(spec["name"], **dict(spec.get("kwargs", {})))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model {spec['name']!r}: {exc}") from exc
    model.to(device).eval()
    skip = {"model", "optimizer", "scheduler", "scaler", "rng"}
    meta = {k: v for k, v in state.items() if k not in skip}
    meta["path"] = str(resolve_checkpoint(path))
    return model, meta
