"""A trained run as an MLflow ``pyfunc`` model: images in, instances (boxes, labels, scores, RLE) out.

>>> model = mlflow.pyfunc.load_model("runs:/<run id>/model")
>>> out = model.predict(pd.DataFrame({"image": ["a.jpg", base64_png_string]}))
>>> out.loc[0, "rles"][0]          # {"size": [H, W], "counts": "..."}: COCO compressed RLE

Input: a pandas DataFrame whose ``image`` column (else its first column) holds image file paths,
base64-encoded image files or ``(H, W, 3)`` uint8 arrays; or a NumPy ``(H, W, 3)`` / ``(N, H, W, 3)``
uint8 array; or a list of any of these. Output: a DataFrame with a row per image: ``boxes`` (K x 4 XYXY
pixels), ``labels``, ``class_names``, ``scores`` (descending), ``rles``. Detections come from the one
:class:`~instaseg.predict.predictor.Predictor` path, so they equal ``instaseg.load(run).predict(image)``.

The model carries the checkpoint and this package's source (``code_paths``), so ``mlflow models
serve -m runs:/<id>/model`` needs only the pinned pip requirements, not an instaseg install.
"""

from __future__ import annotations

import base64
import binascii
import io
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from PIL import Image

from instaseg.data.io import read_image
from instaseg.errors import DataError
from instaseg.predict.predictor import Predictor

ARTIFACT_PATH = "model"
# What the packaged source imports at prediction time (pinned to this environment's versions).
REQUIREMENTS = (
    "torch", "torchvision", "numpy", "pandas", "pillow", "opencv-python-headless", "pycocotools",
    "pyyaml", "mlflow",
)


class InstasegModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper around a :class:`Predictor` (artifact ``checkpoint``; ``model_config``:
    ``score_thresh``, ``max_detections``)."""

    def load_context(self, context: Any) -> None:
        cfg = dict(getattr(context, "model_config", None) or {})
        self.predictor = Predictor.from_checkpoint(
            context.artifacts["checkpoint"],
            device="cpu",
            score_thresh=float(cfg.get("score_thresh", 0.5)),
            max_detections=int(cfg.get("max_detections", 100)),
        )

    # No type hints here on purpose: MLflow reads them as an input schema and would convert the input.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        images = to_images(model_input)
        rows = []
        for image in images:
            inst = self.predictor.predict(image)
            rows.append({
                "boxes": inst.boxes.tolist(),
                "labels": [int(v) for v in inst.labels.tolist()],
                "class_names": self.predictor.class_names_of(inst),
                "scores": [float(v) for v in inst.scores.tolist()],
                "rles": [{"size": list(r["size"]), "counts": r["counts"]} for r in inst.to_rles()]
                if len(inst) else [],
            })
        return pd.DataFrame(rows, columns=["boxes", "labels", "class_names", "scores", "rles"])


def _decode_one(value: Any, where: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.ndim != 3 or value.shape[2] != 3:
            raise DataError(where, f"expected an (H, W, 3) image array, got shape {value.shape}")
        return value.astype(np.uint8, copy=False)
    if isinstance(value, list):
        return _decode_one(np.asarray(value, dtype=np.uint8), where)
    if isinstance(value, str) and len(value) < 4096 and Path(value).is_file():
        return read_image(value)
    raw = value
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataError(where, "neither an existing image file nor base64 image data") from exc
    if not isinstance(raw, bytes | bytearray):
        raise DataError(where, f"unsupported image value of type {type(value).__name__}")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise DataError(where, f"not a readable image ({exc})") from exc


def to_images(model_input: Any) -> list[np.ndarray]:
    """The ``(H, W, 3)`` uint8 RGB images of a pyfunc input (see the module docstring)."""
    if isinstance(model_input, pd.DataFrame):
        col = "image" if "image" in model_input.columns else model_input.columns[0]
        return [_decode_one(v, f"input row {i} ({col})") for i, v in enumerate(model_input[col].tolist())]
    if isinstance(model_input, np.ndarray):
        if model_input.ndim == 3:
            return [_decode_one(model_input, "input array")]
        if model_input.ndim == 4:
            return [_decode_one(a, f"input array [{i}]") for i, a in enumerate(model_input)]
        if model_input.ndim == 1:  # a column of paths / base64 strings
            return [_decode_one(v, f"input [{i}]") for i, v in enumerate(model_input.tolist())]
        raise DataError("input array", f"expected (H, W, 3) or (N, H, W, 3), got shape {model_input.shape}")
    if isinstance(model_input, list | tuple):
        return [_decode_one(v, f"input [{i}]") for i, v in enumerate(model_input)]
    return [_decode_one(model_input, "input")]


def pip_requirements() -> list[str]:
    """This environment's versions of what the packaged model imports (``name==version``)."""
    out = []
    for name in REQUIREMENTS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(name)
            continue
        out.append(f"{name}=={version.split('+')[0]}")  # local tags (+cpu) are not on PyPI
    return out


def model_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a run is served with: ``best.pt`` (highest validation AP), else ``last.pt``."""
    ckpt = Path(run_dir) / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (ckpt / name).is_file():
            return ckpt / name
    return None


def log_model(
    run_dir: str | Path,
    *,
    register_name: str | None = None,
    score_thresh: float = 0.5,
    max_detections: int = 100,
) -> Any:
    """Log the run's checkpoint as a pyfunc model under ``model`` in the active MLflow run, registered
    as ``register_name`` when given. Returns MLflow's ModelInfo (None when the run has no checkpoint)."""
    checkpoint = model_checkpoint(run_dir)
    if checkpoint is None:
        return None
    package = Path(__file__).resolve().parents[1]  # the instaseg package directory
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / package.name  # the source without bytecode caches
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_PATH,
            python_model=InstasegModel(),
            artifacts={"checkpoint": str(checkpoint)},
            code_paths=[str(code)],
            pip_requirements=pip_requirements(),
            model_config={"score_thresh": score_thresh, "max_detections": max_detections},
            registered_model_name=register_name,
        )
