"""instaseg: instance segmentation from annotated data to a measured, served, exported model.

>>> import instaseg
>>> predictor = instaseg.load("runs/train")            # a run directory, checkpoint or .onnx file
>>> instances = predictor.predict("image.jpg")         # boxes, labels, scores, to_rles()

Importing ``instaseg`` loads nothing else: :func:`load` imports the predictor on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load"]


def load(source: Any, **kwargs: Any) -> Any:
    """A :class:`~instaseg.predict.predictor.Predictor` for a run directory, a checkpoint file or an
    exported ``.onnx`` file (see :func:`instaseg.predict.predictor.load` for the options)."""
    from instaseg.predict.predictor import load as _load

    return _load(source, **kwargs)
