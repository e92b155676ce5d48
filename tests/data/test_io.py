"""Image/mask/JSON readers: conversions and one-line DataErrors naming the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instaseg.data.io import image_size, read_image, read_json, read_mask
from instaseg.errors import DataError


def _err(fn, path: Path, *words: str, **kw) -> str:
    with pytest.raises(DataError) as info:
        fn(path, **kw)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def _rgb(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and np.array_equal(out, arr)
    assert image_size(tmp_path / "a.png") == (20, 30)


def test_grayscale_rgba_palette_16bit(tmp_path: Path) -> None:
    gray = _rgb()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (20, 30, 3) and np.array_equal(out[..., 2], gray)

    rgba = np.dstack([_rgb(), np.full((20, 30), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])

    pal = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))

    deep = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d16.png")
    out = read_image(tmp_path / "d16.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.abs(out[..., 0].astype(int) - np.round(deep / 257.0)).max() <= 1
    # read_mask keeps the 16-bit ids untouched
    ids = read_mask(tmp_path / "d16.png")
    assert ids.dtype == np.uint16 and np.array_equal(ids, deep)


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    assert image_size(tmp_path / "r.jpg") == (40, 20)
    assert out[2, 10, 0] > 200 and out[2, 10, 2] < 60  # left (red) half is now on top
    assert out[37, 10, 2] > 200 and out[37, 10, 0] < 60


def test_missing_empty_folder_and_text(tmp_path: Path) -> None:
    _err(read_image, tmp_path / "nope.png", "file not found")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _err(read_image, tmp_path / "empty.jpg", "empty file")
    _err(read_image, tmp_path, "is a folder")
    (tmp_path / "notes.jpg").write_text("these are my notes, not a photo\n")
    _err(read_image, tmp_path / "notes.jpg", "text file")
    (tmp_path / "junk.png").write_bytes(bytes(range(256)) * 4)
    _err(read_image, tmp_path / "junk.png", "not a recognised image")


def test_corrupt_and_truncated(tmp_path: Path) -> None:
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[60:90] = b"\x00" * 30  # damage the compressed pixel data
    (tmp_path / "corrupt.png").write_bytes(bytes(data))
    _err(read_image, tmp_path / "corrupt.png", "corrupt or truncated")

    Image.fromarray(_rgb(64, 64)).save(tmp_path / "ok.jpg", quality=90)
    jpg = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    _err(read_image, tmp_path / "cut.jpg", "corrupt or truncated")
    _err(read_mask, tmp_path / "cut.jpg", "corrupt or truncated")


def _png_header_only(path: Path, width: int, height: int) -> None:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + iend)


def test_decompression_bomb_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    # 12000 x 12000 = 144 MP claimed by a 57-byte file: refused from the header alone.
    _png_header_only(tmp_path / "bomb.png", 12000, 12000)
    _err(read_image, tmp_path / "bomb.png", "refused", "144 MP", "100 MP")
    _err(image_size, tmp_path / "bomb.png", "refused")
    _png_header_only(tmp_path / "huge.png", 60000, 60000)  # beyond Pillow's own hard limit
    _err(read_image, tmp_path / "huge.png", "refused")
    # the cap is configurable per call and through the environment
    Image.fromarray(_rgb()).save(tmp_path / "small.png")
    _err(read_image, tmp_path / "small.png", "refused", max_pixels=100)
    monkeypatch.setenv("INSTASEG_MAX_IMAGE_PIXELS", "100")
    _err(read_mask, tmp_path / "small.png", "refused")
    monkeypatch.setenv("INSTASEG_MAX_IMAGE_PIXELS", "0")  # 0 disables the cap
    assert read_image(tmp_path / "small.png").shape == (20, 30, 3)


def test_read_mask_modes(tmp_path: Path) -> None:
    ids = np.zeros((10, 12), np.uint8)
    ids[2:5, 3:6] = 1
    ids[6:9, 1:4] = 2
    Image.fromarray(ids).save(tmp_path / "l.png")
    assert np.array_equal(read_mask(tmp_path / "l.png"), ids)
    pal = Image.fromarray(ids, mode="L").convert("P")
    pal.save(tmp_path / "p.png")
    assert np.array_equal(read_mask(tmp_path / "p.png"), ids)
    colour = np.zeros((10, 12, 3), np.uint8)
    colour[ids == 1] = (255, 0, 0)
    colour[ids == 2] = (0, 255, 0)
    Image.fromarray(colour).save(tmp_path / "c.png")
    out = read_mask(tmp_path / "c.png")
    assert len(np.unique(out)) == 3 and np.array_equal(out > 0, ids > 0)


def test_read_json(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}
    (tmp_path / "cut.json").write_text('{"images": [{"id": 1, "file_na')
    _err(read_json, tmp_path / "cut.json", "malformed JSON", "line 1", "truncated")
    (tmp_path / "bad.json").write_text('{"a": 1,,}\n')
    _err(read_json, tmp_path / "bad.json", "malformed JSON")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    _err(read_json, tmp_path / "bin.json", "not UTF-8")
    _err(read_json, tmp_path / "none.json", "file not found")


def test_real_samples(shared_data: Path) -> None:
    city = shared_data / "cityscapes_sample"
    ids = read_mask(next(city.glob("gtFine/val/*/*_instanceIds.png")))
    assert ids.dtype == np.uint16 and ids.max() >= 26000
    nuclei_img = next(shared_data.glob("nuclei/*/images/*.png"))  # RGBA on disk
    assert read_image(nuclei_img).shape[2] == 3
    coco_img = next(shared_data.glob("coco_tiny/val2017/*.jpg"))
    img = read_image(coco_img)
    assert image_size(coco_img) == img.shape[:2]
