"""Reading images, instance-id masks and JSON with one-line :class:`DataError` messages.

- :func:`read_image`: any Pillow-readable file to uint8 (H, W, 3) RGB, EXIF orientation applied,
  grayscale / RGBA / palette / 16-bit / float converted; corrupt, truncated, non-image and missing files
  and decompression bombs (pixel count read from the header *before* decoding) raise DataError.
- :func:`read_mask`: an id map that keeps 16-bit ids (Cityscapes ``*_instanceIds.png``).
- :func:`image_size`: ``(height, width)`` from the header only, after EXIF orientation.
- :func:`read_json`: malformed or truncated JSON names the file, line and column.

The pixel cap defaults to 100 MP; change it per call (``max_pixels=``) or for the process with the
``INSTASEG_MAX_IMAGE_PIXELS`` environment variable (``0`` disables it).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from instaseg.errors import DataError

DEFAULT_MAX_PIXELS = 100_000_000
EXIF_ORIENTATION = 0x0112


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel cap in force: ``max_pixels`` if given, else $INSTASEG_MAX_IMAGE_PIXELS, else 100 MP."""
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get("INSTASEG_MAX_IMAGE_PIXELS", "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise DataError(None, f"INSTASEG_MAX_IMAGE_PIXELS must be a number, got {env!r}") from None
    return DEFAULT_MAX_PIXELS


def _looks_like_text(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if not head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= 32 or c in b"\t\r\n" for c in head)


@contextmanager
def _open(path: str | Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open lazily (header only), refuse missing/unrecognised files and oversized images."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found")
    if p.is_dir():
        raise DataError(p, "is a folder, expected an image file")
    if p.stat().st_size == 0:
        raise DataError(p, "empty file (0 bytes), not an image")
    cap = max_image_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            # Our own cap below replaces Pillow's bomb warning; Pillow's hard limit still errors.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise DataError(p, f"refused: decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        what = "a text file, not an image" if _looks_like_text(p) else "not a recognised image format"
        raise DataError(p, f"cannot read image: {what} (corrupt or wrong extension?)") from None
    except OSError as exc:
        raise DataError(p, f"cannot read image: {exc}") from None
    with im:
        w, h = im.size
        if cap > 0 and w * h > cap:
            raise DataError(
                p,
                f"refused: {w}x{h} = {w * h / 1e6:.0f} MP exceeds the {cap / 1e6:g} MP limit "
                "(possible decompression bomb; raise it with INSTASEG_MAX_IMAGE_PIXELS)",
            )
        yield im


def _decode(im: Image.Image, path: str | Path) -> None:
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pillow says "image file is truncated", "broken data stream", "unrecognized data stream" ...
        raise DataError(path, f"corrupt or truncated image: {exc}") from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a single-channel integer/float array to uint8 (16-bit: /257, float in [0,1]: *255)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float32))
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        return np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16 or (arr.size and int(arr.max()) > 255):
        return np.clip((arr.astype(np.float32) / 257.0) + 0.5, 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, 3)`` RGB with its EXIF orientation applied.

    Grayscale is replicated to 3 channels, alpha is dropped, palettes are expanded, 16-bit and float
    images are scaled to 8 bits. Raises :class:`DataError` naming ``path`` for a missing, empty,
    non-image, corrupt or truncated file and for images over the pixel cap (checked before decoding).
    """
    with _open(path, max_pixels) as im:
        _decode(im, path)
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a malformed EXIF block must not make the pixels unreadable
            pass
        mode = im.mode
        if mode in ("RGB",):
            arr = np.asarray(im)
        elif mode.startswith(("I", "F")):
            gray = _to_uint8(np.asarray(im))
            arr = np.repeat(gray[..., None], 3, axis=2)
        else:  # L, LA, 1, P, PA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV
            try:
                arr = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise DataError(path, f"cannot convert image mode {mode} to RGB: {exc}") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(path, f"unexpected decoded shape {arr.shape} (mode {mode})")
    if not arr.flags.writeable or not arr.flags.c_contiguous:  # np.asarray(PIL image) is read-only
        arr = np.array(arr, dtype=np.uint8, order="C")
    return arr.astype(np.uint8, copy=False)


def read_mask(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an id/label map as an ``(H, W)`` integer array, keeping 16-bit ids.

    ``L``/``P`` give uint8 (palette *indices*, as VOC and Penn-Fudan store ids), 16-bit PNGs give
    uint16/int32, ``1`` gives 0/1. Colour masks: equal channels give one channel, otherwise each colour
    becomes one id ``(r << 16) | (g << 8) | b`` (int32). No EXIF orientation is applied.
    """
    with _open(path, max_pixels) as im:
        _decode(im, path)
        mode = im.mode
        if mode == "1":
            return np.array(im, dtype=np.uint8)
        if mode in ("L", "P", "I", "F") or mode.startswith("I;16"):
            arr = np.array(im)
            return arr.astype(np.uint16) if arr.dtype.kind == "u" and arr.dtype.itemsize == 2 else arr
        if mode in ("LA", "PA"):
            return np.array(im)[..., 0]
        try:
            rgb = np.array(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise DataError(path, f"cannot read mode {mode} as a mask: {exc}") from None
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def image_size(path: str | Path, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`read_image` would return it, from the header only."""
    with _open(path, max_pixels) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
        except Exception:  # unreadable EXIF: read_image ignores it too
            orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; missing, non-UTF-8, malformed or truncated files raise DataError."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file not found" if not p.exists() else "is a folder, expected a JSON file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(p, f"not UTF-8 text (byte {exc.start}): not a JSON file?") from None
    except OSError as exc:
        raise DataError(p, f"cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # json stops at EOF for a cut file, or reports a string that never closes before EOF
        at_end = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        hint = " (file truncated?)" if at_end else ""
        where = f"line {exc.lineno} column {exc.colno}"
        raise DataError(p, f"malformed JSON at {where}: {exc.msg}{hint}") from None
