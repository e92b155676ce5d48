"""The interactive backends live in :mod:`instaseg.predict.interactive` (evaluation and the service
share them); this module keeps the service's import path."""

from instaseg.predict.interactive import (
    SAM_MODEL_TYPES,
    ClickSegmenter,
    InteractiveSegmenter,
    MaskWithScore,
    SamSegmenter,
    build_interactive,
)

__all__ = [
    "SAM_MODEL_TYPES",
    "ClickSegmenter",
    "InteractiveSegmenter",
    "MaskWithScore",
    "SamSegmenter",
    "build_interactive",
]
