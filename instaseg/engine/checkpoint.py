"""Saving training state: atomic checkpoint writes and RNG state capture/restore.

Loading a checkpoint (and rebuilding its model) lives in :mod:`instaseg.models.checkpoint`. A checkpoint
is a dict saved with :func:`torch.save` and loaded with ``weights_only=True``:

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

from pathlib import Path
from typing import Any

import torch

from instaseg.fileio import atomic_open
from instaseg.models.checkpoint import BEST, LAST

__all__ = ["BEST", "LAST", "capture_rng_state", "restore_rng_state", "save_checkpoint"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsynced, then
    renamed over the target, so a kill at any moment leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        torch.save(state, f)
    return path


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
