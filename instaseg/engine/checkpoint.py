"""Checkpoint files: atomic writes, safe loads, and rebuilding a model from a checkpoint.

A checkpoint is a dict saved with :func:`torch.save` and loaded with ``weights_only=True``:

- ``model``: the model's ``state_dict``;
- ``model_spec``: ``{"name": str, "kwargs": dict}``, so ``get_model(name, **kwargs)`` rebuilds it
  (``kwargs`` holds ``num_classes`` and anything else the builder needs; backbone/weight paths are
  dropped since the state dict carries the weights);
- ``class_names``: list[str] (index 0 = "background"); ``category_ids``: list[int];
- ``config``: the resolved config as plain dicts/lists/scalars;
- training state (optional): ``optimizer``, ``scheduler``, ``scaler``, ``epoch``, ``iteration``,
  ``rng``, ``best_metric``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from instaseg.errors import CheckpointError
from instaseg.fileio import atomic_open

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsynced, then
    renamed over the target, so a kill at any moment leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save(state, f)
    return path


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
    from instaseg.models import get_model

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


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states in ``weights_only``-loadable form."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state` (CUDA states only if this machine has as many GPUs)."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
