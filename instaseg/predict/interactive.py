"""Point-prompted (interactive) segmentation behind one interface.

An :class:`InteractiveSegmenter` takes an RGB image, foreground/background clicks and an optional box
and returns candidate masks with scores. Backends:

- :class:`ClickSegmenter` (default, offline, no weights): OpenCV watershed flooded from the clicks
  (foreground clicks vs. background clicks plus the image border, or the outside of the box), refined by
  GrabCut initialised from that region; only the connected parts touching a foreground click are kept.
  The score is the agreement (IoU) of the two methods times the fraction of clicks the mask honours.
- :class:`SamSegmenter`: segment-anything's ``SamPredictor`` when the user has a SAM checkpoint
  (``segment_anything`` is imported lazily; it is not a dependency of instaseg). The image embedding is
  cached, so repeated clicks on the same image only run the light mask decoder.
- :class:`ModelSegmenter`: a trained click model (``task="interactive"``, e.g. ``click_lite0``) from a
  run directory or checkpoint. The first click is answered on the whole image, then once more on a
  crop around that answer (zoom-in); later clicks work on a crop around the previous mask and the
  clicks.

:func:`check_points` turns clicks outside the image into a one-line error.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from instaseg.errors import CheckpointError, ConfigError

MaskWithScore = tuple[np.ndarray, float]


class InteractiveSegmenter(Protocol):
    """Segment the object indicated by clicks (and/or a box)."""

    name: str

    def segment(
        self,
        image: np.ndarray,
        points: np.ndarray,
        point_labels: np.ndarray,
        box: np.ndarray | None = None,
        multimask: bool = False,
        prev_mask: np.ndarray | None = None,
    ) -> list[MaskWithScore]:
        """Masks for the prompted object, best first.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            points: ``(P, 2)`` float ``(x, y)`` pixel coordinates (``P`` may be 0 when a box is given).
            point_labels: ``(P,)`` int, 1 = foreground, 0 = background.
            box: optional ``(4,)`` XYXY pixel box around the object.
            multimask: return several candidates instead of the single best one.
            prev_mask: the previous answer for the same object, ``(H, W)`` bool (click models refine
                it; the other backends ignore it).

        Returns:
            ``[(mask (H, W) bool, score float in [0, 1]), ...]`` sorted by score, best first.
        """
        ...


def _disk_radius(h: int, w: int) -> int:
    return max(2, round(min(h, w) / 100))


def _honoured(mask: np.ndarray, points: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of clicks on the right side of ``mask`` (foreground inside, background outside)."""
    if len(points) == 0:
        return 1.0
    h, w = mask.shape
    xs = np.clip(points[:, 0].astype(int), 0, w - 1)
    ys = np.clip(points[:, 1].astype(int), 0, h - 1)
    inside = mask[ys, xs]
    return float(np.mean(inside == (labels == 1)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _keep_clicked_components(mask: np.ndarray, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Only the connected components of ``mask`` that contain a foreground click (all if none)."""
    import cv2

    fg = points[labels == 1]
    if len(fg) == 0 or not mask.any():
        return mask
    n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    h, w = mask.shape
    ids = {int(comp[min(int(y), h - 1), min(int(x), w - 1)]) for x, y in fg}
    ids.discard(0)
    return np.isin(comp, list(ids)) if ids else mask


class ClickSegmenter:
    """Offline interactive segmentation seeded by clicks: watershed, then GrabCut (see module doc).

    Args:
        iterations: GrabCut iterations.
        max_side: work on a copy downscaled so its longer side is at most this (speed); masks are
            returned at the input size.
    """

    name = "grabcut"

    def __init__(self, *, iterations: int = 3, max_side: int = 400) -> None:
        self.iterations = int(iterations)
        self.max_side = int(max_side)

    def segment(
        self,
        image: np.ndarray,
        points: np.ndarray,
        point_labels: np.ndarray,
        box: np.ndarray | None = None,
        multimask: bool = False,
        prev_mask: np.ndarray | None = None,
    ) -> list[MaskWithScore]:
        import cv2

        h0, w0 = image.shape[:2]
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
        scale = min(1.0, self.max_side / max(h0, w0))
        small = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(w0 * scale)), max(1, round(h0 * scale))), interpolation=cv2.INTER_AREA
        )
        sp = points * scale
        sbox = None if box is None else np.asarray(box, dtype=np.float64) * scale
        shed = self._watershed(small, sp, labels, sbox)
        cut = self._grabcut(small, sp, labels, sbox, shed)
        candidates = []
        for m in (cut, shed):
            m = _keep_clicked_components(m, sp, labels)
            if scale != 1.0:
                m = cv2.resize(m.astype(np.uint8), (w0, h0), interpolation=cv2.INTER_NEAREST).astype(bool)
            candidates.append(m)
        agreement = _iou(candidates[0], candidates[1])
        scored = [(m, round(agreement * _honoured(m, points, labels), 4)) for m in candidates]
        scored.sort(key=lambda ms: -ms[1])
        return scored if multimask else scored[:1]

    def _seed_markers(
        self, shape: tuple[int, int], points: np.ndarray, labels: np.ndarray, box: np.ndarray | None
    ) -> np.ndarray:
        """int32 marker image: 2 = foreground seed, 1 = background seed, 0 = unknown."""
        import cv2

        h, w = shape
        markers = np.zeros((h, w), dtype=np.int32)
        if box is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            markers[:] = 1
            markers[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 0
            if not (labels == 1).any():  # a box alone: its centre is the foreground seed
                cv2.circle(markers, ((x1 + x2) // 2, (y1 + y2) // 2), _disk_radius(h, w), 2, -1)
        else:
            # cv2.watershed overwrites the outermost pixel ring, so the background band is thicker.
            band = max(3, _disk_radius(h, w))
            border = np.ones((h, w), dtype=bool)
            border[band:-band, band:-band] = False
            markers[border] = 1
        r = _disk_radius(h, w)
        for (x, y), lab in zip(points, labels, strict=True):
            cv2.circle(markers, (int(x), int(y)), r, 2 if lab == 1 else 1, -1)
        return markers

    def _watershed(
        self, image: np.ndarray, points: np.ndarray, labels: np.ndarray, box: np.ndarray | None
    ) -> np.ndarray:
        import cv2

        markers = self._seed_markers(image.shape[:2], points, labels, box)
        smooth = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), (5, 5), 0)
        cv2.watershed(smooth, markers)  # ridge pixels become -1
        fg = markers == 2
        # Give watershed ridge pixels to the foreground when they touch it (masks include their edge).
        ridge = markers == -1
        fg |= ridge & (cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        return fg

    def _grabcut(
        self,
        image: np.ndarray,
        points: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None,
        init: np.ndarray,
    ) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        if not init.any() or init.all():
            return init
        gc = np.where(init, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        if box is not None:
            outside = np.ones((h, w), dtype=bool)
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            outside[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = False
            gc[outside] = cv2.GC_BGD
        r = _disk_radius(h, w)
        for (x, y), lab in zip(points, labels, strict=True):
            cv2.circle(gc, (int(x), int(y)), r, int(cv2.GC_FGD if lab == 1 else cv2.GC_BGD), -1)
        # GrabCut only around the watershed region (half its size again on each side): the cost is
        # per pixel and per iteration, and pixels far from the object stay background anyway.
        ys, xs = np.nonzero(init)
        my, mx = (ys.max() - ys.min() + 1) // 2 + 8, (xs.max() - xs.min() + 1) // 2 + 8
        y0, y1 = max(ys.min() - my, 0), min(ys.max() + 1 + my, h)
        x0, x1 = max(xs.min() - mx, 0), min(xs.max() + 1 + mx, w)
        crop = np.ascontiguousarray(gc[y0:y1, x0:x1])
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(
                np.ascontiguousarray(cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2BGR)), crop, None,
                bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK,
            )
        except cv2.error:  # e.g. one of the two colour models has too few samples
            return init
        out = np.zeros((h, w), dtype=bool)
        out[y0:y1, x0:x1] = (crop == cv2.GC_FGD) | (crop == cv2.GC_PR_FGD)
        return out


SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")


def _guess_sam_type(path: Path) -> str:
    name = path.name.lower()
    for t in SAM_MODEL_TYPES:
        if t in name:
            return t
    raise ConfigError(
        f"{path}: cannot tell the SAM model type from the file name; pass --sam-model-type "
        f"({', '.join(SAM_MODEL_TYPES)})"
    )


class SamSegmenter:
    """segment-anything's predictor behind :class:`InteractiveSegmenter`.

    Args:
        checkpoint: path to a SAM checkpoint (``sam_vit_b_01ec64.pth`` ...), loaded with
            ``weights_only=True``.
        model_type: ``vit_h``, ``vit_l`` or ``vit_b``; guessed from the file name when omitted.
        device: torch device for SAM.
    """

    name = "sam"

    def __init__(self, checkpoint: str | Path, *, model_type: str | None = None, device: str = "cpu") -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"{path}: SAM checkpoint file does not exist")
        try:
            import segment_anything
        except ImportError:
            raise CheckpointError(
                f"{path}: the SAM backend needs the segment-anything package, which is not installed "
                "(pip install segment-anything); or leave out --sam-checkpoint to use the offline backend"
            ) from None
        import torch

        model_type = model_type or _guess_sam_type(path)
        if model_type not in segment_anything.sam_model_registry:
            raise ConfigError(f"--sam-model-type: unknown SAM model type {model_type!r}")
        sam = segment_anything.sam_model_registry[model_type]()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            sam.load_state_dict(state)
        except Exception as exc:  # unpickling refusal, wrong file, shape mismatch
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: not a loadable SAM {model_type} checkpoint ({first})") from None
        sam.to(device).eval()
        self.predictor = segment_anything.SamPredictor(sam)
        self._image_key: str | None = None
        self._lock = threading.Lock()

    def _set_image(self, image: np.ndarray) -> None:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
        if key != self._image_key:
            self.predictor.set_image(image, image_format="RGB")
            self._image_key = key

    def segment(
        self,
        image: np.ndarray,
        points: np.ndarray,
        point_labels: np.ndarray,
        box: np.ndarray | None = None,
        multimask: bool = False,
        prev_mask: np.ndarray | None = None,
    ) -> list[MaskWithScore]:
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
        with self._lock:
            self._set_image(image)
            masks, scores, _ = self.predictor.predict(
                point_coords=points if len(points) else None,
                point_labels=labels if len(points) else None,
                box=None if box is None else np.asarray(box, dtype=np.float32),
                multimask_output=multimask,
            )
        order = np.argsort(-np.asarray(scores))
        return [(np.asarray(masks[i], dtype=bool), float(scores[i])) for i in order]


def check_points(points: np.ndarray, labels: np.ndarray, height: int, width: int) -> None:
    """ConfigError (one line) unless ``points`` ``(P, 2)`` ``(x, y)`` all lie in the ``width`` x
    ``height`` image and ``labels`` ``(P,)`` are 1/0, one per point."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lab = np.asarray(labels).reshape(-1)
    if len(lab) != len(pts):
        raise ConfigError(f"clicks: {len(lab)} labels for {len(pts)} points")
    if len(lab) and not np.isin(lab, (0, 1)).all():
        got = sorted(set(lab.tolist()))
        raise ConfigError(f"clicks: labels must be 1 (object) or 0 (background), got {got}")
    for x, y in pts:
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < width and 0 <= y < height):
            raise ConfigError(f"clicks: point ({x:g}, {y:g}) is outside the {width}x{height} image")


def _touches_crop_edge(mask: np.ndarray, box: tuple[float, float, float], height: int, width: int) -> bool:
    """Whether ``mask`` ``(H, W)`` bool reaches (within 2% of its side) an edge of the square crop
    ``box`` ``(x0, y0, side)`` that lies inside the image."""
    if not mask.any():
        return False
    x0, y0, side = box
    band = max(1.0, 0.02 * side)
    ys, xs = np.nonzero(mask)
    return bool((x0 > 0 and xs.min() <= x0 + band) or (y0 > 0 and ys.min() <= y0 + band)
                or (x0 + side < width and xs.max() + 1 >= x0 + side - band)
                or (y0 + side < height and ys.max() + 1 >= y0 + side - band))


class ModelSegmenter:
    """A trained click model (``task="interactive"``) behind :class:`InteractiveSegmenter`.

    Args:
        checkpoint: a run directory or checkpoint file of an interactive model; CheckpointError (one
            line) for anything else, e.g. an instance-segmentation run.
        device: torch device.
        expand: crop side as a multiple of the longer side of the previous mask's box, for objects
            no larger than the network's crop (they are magnified: context is cheap).
        expand_large: the multiple for objects of at least twice the crop's side (they are shrunk
            into the crop: a tighter crop keeps more of their detail); linear in between. Measured
            on Penn-Fudan (objects of 150-400 px, crop 160): NoC@85 5.59 at 1.5 -> 4.70 at 1.2.
        min_crop: smallest crop side, as a fraction of the image's longer side.
        grow: most extra runs on a larger crop when the answer runs into the crop's edge.
        flip: average the probabilities of the crop and of its mirror image (two network runs per
            answer; NoC@90 fell 1-1.5 clicks on Penn-Fudan and nuclei).
    """

    name = "model"

    def __init__(self, checkpoint: str | Path, *, device: str = "cpu", expand: float = 1.5,
                 expand_large: float = 1.2, min_crop: float = 0.1, grow: int = 2, flip: bool = True) -> None:
        from instaseg.models.checkpoint import load_checkpoint, load_model
        from instaseg.models.registry import model_task

        state = load_checkpoint(checkpoint)
        spec = state.get("model_spec")
        name = spec.get("name") if isinstance(spec, dict) else None
        try:
            task = model_task(str(name))
        except ConfigError:
            task = None
        if task != "interactive":
            raise CheckpointError(
                f"{checkpoint}: not an interactive model (model {name!r} does {task or 'an unknown task'}); "
                "train one with configs/interactive.yaml"
            )
        del state
        self.model, self.meta = load_model(checkpoint, device=device)
        self.device = device
        self.expand, self.expand_large = float(expand), float(expand_large)
        self.min_crop, self.grow, self.flip = float(min_crop), int(grow), bool(flip)
        self._image_key: str | None = None
        self._image: Any = None
        self._lock = threading.Lock()

    def _prob(self, image: np.ndarray, box: Any, points: np.ndarray, labels: np.ndarray,
              prev: np.ndarray | None) -> np.ndarray:
        """Object probability ``(H, W)`` float32 from one network run on crop ``box``."""
        import torch

        from instaseg.models.click import click_disks, crop_image, paste_crop, to_crop_points

        m = self.model
        size = m.crop_size
        crop = crop_image(self._image, box, size).transpose(2, 0, 1)
        disks = click_disks(to_crop_points(points, box, size), labels, size, m.radius)
        prev_crop = (np.zeros((1, size, size), np.float32) if prev is None
                     else crop_image(prev.astype(np.float32), box, size)[None])
        maps = np.concatenate([disks, prev_crop], axis=0)
        crops = torch.from_numpy(np.ascontiguousarray(crop))[None].to(self.device)
        maps_t = torch.from_numpy(maps)[None].to(self.device)
        if self.flip:  # one batch of the crop and its mirror
            crops, maps_t = torch.cat([crops, crops.flip(-1)]), torch.cat([maps_t, maps_t.flip(-1)])
        with torch.no_grad():
            prob_t = torch.sigmoid(m.forward_crops(crops, maps_t))[:, 0]
        if self.flip:
            prob_t = (prob_t[0] + prob_t[1].flip(-1))[None] / 2
        prob = prob_t[0].cpu().numpy()
        h, w = image.shape[:2]
        return paste_crop(prob, box, h, w)

    def _box(self, mask: np.ndarray, points: np.ndarray, labels: np.ndarray) -> Any:
        from instaseg.models.click import square_around

        ys, xs = np.nonzero(mask)
        fg = points[labels == 1]
        allx = np.concatenate([xs, fg[:, 0]]) if len(fg) else xs
        ally = np.concatenate([ys, fg[:, 1]]) if len(fg) else ys
        if len(allx) == 0:
            from instaseg.models.click import whole_image_box

            return whole_image_box(*mask.shape)
        x1, y1, x2, y2 = allx.min(), ally.min(), allx.max() + 1, ally.max() + 1
        return square_around(x1, y1, x2, y2, expand=self.expand_for(max(x2 - x1, y2 - y1)),
                             min_side=max(24.0, self.min_crop * max(mask.shape)))

    def expand_for(self, side: float) -> float:
        """The crop expansion for an object whose box's longer side is ``side`` image pixels."""
        size = self.model.crop_size
        t = min(1.0, max(0.0, side / size - 1.0))  # 0 up to one crop side, 1 from two
        return self.expand + t * (self.expand_large - self.expand)

    def _zoomed(self, image: np.ndarray, box: Any, points: np.ndarray, labels: np.ndarray,
                prev: np.ndarray | None) -> np.ndarray:
        """Probability ``(H, W)`` on crop ``box``; while the clicked answer runs into an edge of the
        crop that lies inside the image (the object goes on beyond it: the previous mask, which set
        the crop, was too small), once more on the larger crop around that answer (at most
        ``self.grow`` times)."""
        h, w = image.shape[:2]
        prob = self._prob(image, box, points, labels, prev)
        for _ in range(self.grow):
            mask = _keep_clicked_components(prob > 0.5, points, labels)
            if not _touches_crop_edge(mask, box, h, w):
                break
            bigger = self._box(mask, points, labels)
            if bigger[2] <= 1.1 * box[2]:
                break
            box = bigger
            prob = self._prob(image, box, points, labels, prev)
        return prob

    def segment(
        self,
        image: np.ndarray,
        points: np.ndarray,
        point_labels: np.ndarray,
        box: np.ndarray | None = None,
        multimask: bool = False,
        prev_mask: np.ndarray | None = None,
    ) -> list[MaskWithScore]:
        from instaseg.models.click import square_around, whole_image_box

        h, w = image.shape[:2]
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
        check_points(points, labels, h, w)
        with self._lock:
            key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() + str(image.shape)
            if key != self._image_key:  # the image is converted once per image, not per click
                self._image = np.ascontiguousarray(image, dtype=np.float32) / 255.0
                self._image_key = key
            prev = np.asarray(prev_mask, dtype=bool) if prev_mask is not None else None
            if prev is not None and not prev.any():
                prev = None
            if prev is None:
                crop = (square_around(*np.asarray(box, dtype=np.float64), expand=1.2) if box is not None
                        else whole_image_box(h, w))
                # Only the clicked component sets the zoom: a coarse pass may also light up other
                # objects (e.g. every nucleus), which would zoom back out to the whole image.
                first = _keep_clicked_components(self._prob(image, crop, points, labels, None) > 0.5,
                                                 points, labels)
                prob = self._zoomed(image, self._box(first, points, labels), points, labels, None)
            else:
                prob = self._zoomed(image, self._box(prev, points, labels), points, labels, prev)
        mask = prob > 0.5
        mask = _keep_clicked_components(mask, points, labels)
        score = _honoured(mask, points, labels)
        return [(mask, round(float(score), 4))]


def build_interactive(
    sam_checkpoint: str | Path | None = None,
    *,
    sam_model_type: str | None = None,
    device: str = "cpu",
    model_checkpoint: str | Path | None = None,
) -> Any:
    """The best backend available: a trained click model when ``model_checkpoint`` is given, else SAM
    when a checkpoint is given, else the offline :class:`ClickSegmenter`."""
    if model_checkpoint:
        return ModelSegmenter(model_checkpoint, device=device)
    if sam_checkpoint:
        return SamSegmenter(sam_checkpoint, model_type=sam_model_type, device=device)
    return ClickSegmenter()
