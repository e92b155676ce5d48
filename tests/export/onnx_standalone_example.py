"""Run an instaseg ONNX export with onnxruntime, NumPy and Pillow only (no instaseg import).

usage: python onnx_standalone_example.py model.onnx image.jpg [masks.npy]

This is the README's standalone example; tests/export/test_onnx.py runs it on a real export.
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map  # instaseg.* keys, JSON values
class_names = json.loads(meta["instaseg.class_names"])  # index = label, [0] = "background"
mask_kind = meta["instaseg.mask_kind"]  # "box": relative to each box; "image" (older files): whole image

rgb = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
image = rgb.transpose(2, 0, 1).astype(np.float32) / 255  # [3, H, W] RGB in [0, 1]; any H, W
threshold = np.array(0.5, dtype=np.float32)  # keep detections scoring >= 0.5
boxes, scores, labels, masks = session.run(None, {"image": image, "score_thresh": threshold})


def resample(n_px: int, lo: float, hi: float, m: int) -> np.ndarray:
    """[n_px, m] bilinear weights that sample m cells spread over [lo, hi] at pixel centres."""
    u = (np.arange(n_px) + 0.5 - lo) / max(hi - lo, 1e-6) * m - 0.5
    if mask_kind == "box":  # zero outside the box
        return np.stack([np.interp(u, np.arange(-1, m + 1), np.eye(m + 2)[j + 1]) for j in range(m)], 1)
    return np.stack([np.interp(u, np.arange(m), np.eye(m)[j]) for j in range(m)], 1)


height, width = rgb.shape[:2]
binary_masks, found = [], []
for box, score, label, mask in zip(boxes, scores, labels, masks, strict=True):
    x1, y1, x2, y2 = box if mask_kind == "box" else (0, 0, width, height)
    prob = resample(height, y1, y2, mask.shape[0]) @ mask @ resample(width, x1, x2, mask.shape[1]).T
    binary = prob >= float(meta["instaseg.mask_thresh"])  # [H, W] bool
    binary_masks.append(binary)
    found.append({"class": class_names[label], "score": round(float(score), 4),
                  "box": [round(float(v), 1) for v in box], "mask_pixels": int(binary.sum())})
print(json.dumps(found))
if len(sys.argv) > 3:
    np.save(sys.argv[3], np.array(binary_masks, dtype=bool).reshape(-1, height, width))
