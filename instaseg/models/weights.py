"""Loading weights without surprises: local files, or torchvision weights only if already cached.

Nothing here downloads. torchvision's weight enums fetch files from the internet on first use; this
machine (and many servers) cannot, so :func:`torchvision_state_dict` only reads the file from
torch.hub's cache and otherwise raises a :class:`~instaseg.errors.CheckpointError` that says which file
to download and how to pass a local copy instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from instaseg.errors import CheckpointError, ConfigError


def hub_cache_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url`` (the file may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def resolve_torchvision_weights(enum_cls: Any, name: str) -> Any:
    """``enum_cls`` member for ``name`` ("DEFAULT" or a member name such as "COCO_V1");
    ConfigError listing the valid names otherwise."""
    try:
        return enum_cls.verify(name)
    except (ValueError, KeyError) as exc:
        valid = ", ".join(["DEFAULT", *(m.name for m in enum_cls)])
        raise ConfigError(f"unknown weights {name!r} for {enum_cls.__name__}; valid: {valid}") from exc


def torchvision_state_dict(weights: Any) -> dict[str, Tensor]:
    """State dict of torchvision ``weights`` (an enum member) read from the local hub cache only."""
    path = hub_cache_file(weights.url)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: torchvision weights {weights} are not cached and instaseg never downloads at run "
            f"time; download {weights.url} to that path on a machine with internet, or pass a local "
            "checkpoint path instead"
        )
    return load_state_dict_file(path)


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``path``: a plain state dict, an instaseg checkpoint (its ``model``
    entry) or a dict with ``state_dict``. Loaded with ``weights_only=True``; clear CheckpointError
    for a missing, unreadable or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "cannot use this file"
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise CheckpointError(f"{path}: not a readable weights file ({first})") from exc
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    return state


def load_matching(
    module: nn.Module,
    state: dict[str, Tensor],
    *,
    source: str,
    ignore_missing: Iterable[str] = (),
    ignore_unexpected: Iterable[str] = (),
    skip_mismatched: Iterable[str] = (),
) -> list[str]:
    """Load ``state`` into ``module`` and insist that it really fits.

    Keys starting with a prefix in ``ignore_missing`` may be absent from ``state``; keys starting with
    a prefix in ``ignore_unexpected`` may be extra (e.g. a classifier ``fc.``). Keys under
    ``skip_mismatched`` whose shapes differ are dropped (e.g. class-specific predictors when the
    number of classes changes); any other missing, unexpected or mis-shaped key is a CheckpointError
    naming ``source``. Returns the keys that were dropped.
    """
    own = module.state_dict()
    ignore_missing, ignore_unexpected = tuple(ignore_missing), tuple(ignore_unexpected)
    skip_mismatched = tuple(skip_mismatched)
    state = dict(state)
    dropped = []
    for key in list(state):
        if key in own and own[key].shape != state[key].shape:
            if key.startswith(skip_mismatched):
                dropped.append(key)
                del state[key]
            else:
                raise CheckpointError(
                    f"{source}: shape of {key} is {tuple(state[key].shape)}, "
                    f"the model expects {tuple(own[key].shape)}"
                )
    # BatchNorm's step counter is not a weight; frozen BatchNorm has none, so it may be absent or extra.
    missing = [k for k in own if k not in state and not k.startswith(ignore_missing)
               and k not in dropped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.startswith(ignore_unexpected)
                  and not k.endswith("num_batches_tracked")]
    if not any(k in own for k in state):
        raise CheckpointError(f"{source}: no parameter names match the model (wrong file for this model?)")
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return dropped


def load_full_weights(model: nn.Module, weights: str | Path | None, class_specific: Iterable[str]) -> None:
    """Load full-model ``weights`` (a local checkpoint or state-dict file; None: nothing) into
    ``model``; layers under ``class_specific`` whose shapes differ (another number of classes) keep
    their fresh initialisation."""
    if weights is None:
        return
    load_matching(model, load_state_dict_file(weights), source=str(weights), skip_mismatched=class_specific)
