"""Point-cloud readers/writers and their one-line errors for bad files."""

import time

import numpy as np
import pytest

from instaseg.data.points.base import PointScene
from instaseg.data.points.io import (
    read_npz,
    read_ply,
    read_points,
    read_results,
    read_s3dis_room,
    write_ply,
    write_results,
    write_scene,
)
from instaseg.errors import DataError
from instaseg.structures.points import PointInstances


def _scene(n: int = 50) -> PointScene:
    rng = np.random.default_rng(0)
    return PointScene(
        rng.random((n, 3)).astype(np.float32),
        rng.random((n, 3)).astype(np.float32),
        rng.integers(0, 4, n),
        rng.integers(-1, 3, n),
    )


@pytest.mark.parametrize("binary", [True, False])
def test_ply_roundtrip(tmp_path, binary):
    s = _scene()
    path = write_scene(tmp_path / "s.ply", s, binary=binary)
    r = read_ply(path)
    np.testing.assert_allclose(r.xyz, s.xyz, atol=1e-6)
    np.testing.assert_allclose(r.rgb, np.round(s.rgb * 255) / 255, atol=1e-6)
    assert r.semantic.tolist() == s.semantic.tolist() and r.instance.tolist() == s.instance.tolist()


def test_npz_roundtrip_and_dispatch(tmp_path):
    s = _scene()
    path = write_scene(tmp_path / "s.npz", s)
    r = read_points(path)
    np.testing.assert_allclose(r.xyz, s.xyz)
    assert r.instance.tolist() == s.instance.tolist()
    with pytest.raises(DataError, match="unknown point-cloud format"):
        read_points(tmp_path / "x.xyz")


def test_s3dis_room(tmp_path):
    ann = tmp_path / "office_1" / "Annotations"
    ann.mkdir(parents=True)
    np.savetxt(ann / "chair_1.txt", [[0, 0, 0, 255, 0, 0], [0, 0, 1, 255, 0, 0]])
    np.savetxt(ann / "table_2.txt", [[1, 1, 1, 0, 255, 0]])
    np.savetxt(ann / "mystery_1.txt", [[2, 2, 2, 0, 0, 255]])
    s = read_s3dis_room(tmp_path / "office_1")
    assert len(s) == 4 and s.name == "office_1"
    assert sorted(set(s.instance.tolist())) == [0, 1, 2]
    assert set(s.semantic.tolist()) == {8, 7, 12}  # chair, table, clutter


def test_results_roundtrip(tmp_path):
    pred = PointInstances(np.array([0, 0, -1, 1]), np.array([2, 3]), np.array([0.9, 0.4]))
    paths = write_results(tmp_path, "scene", np.zeros((4, 3), np.float32), pred, ["a", "b", "c", "d"])
    back = read_results(paths["json"])
    assert back.instance_ids.tolist() == [0, 0, -1, 1] and back.labels.tolist() == [2, 3]
    ply = read_ply(paths["ply"])
    assert ply.instance.tolist() == [0, 0, -1, 1] and ply.semantic.tolist() == [2, 2, -1, 3]


def test_truncated_ply(tmp_path):
    path = write_ply(tmp_path / "t.ply", np.zeros((100, 3), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(DataError, match=r"t\.ply: truncated PLY"):
        read_ply(path)


def test_truncated_ascii_ply(tmp_path):
    path = write_ply(tmp_path / "a.ply", np.zeros((100, 3), np.float32), binary=False)
    path.write_text(path.read_text()[:-400])
    with pytest.raises(DataError, match=r"a\.ply: truncated or malformed PLY"):
        read_ply(path)


def test_ply_without_xyz(tmp_path):
    path = tmp_path / "n.ply"
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float u\nend_header\n1\n")
    with pytest.raises(DataError, match=r"n\.ply: PLY vertices have no x, y, z"):
        read_ply(path)


def test_nan_points_dropped_or_refused(tmp_path):
    s = _scene(10)
    s.xyz[3] = np.nan
    s.xyz[5, 1] = np.inf
    path = write_scene(tmp_path / "nan.ply", s)
    r = read_ply(path)
    assert len(r) == 8 and r.extra["nonfinite"] == 2 and np.isfinite(r.xyz).all()
    with pytest.raises(DataError, match=r"nan\.ply: 2 of 10 points have NaN"):
        read_ply(path, nonfinite="raise")
    assert len(read_ply(path, nonfinite="keep")) == 10


def test_empty_files(tmp_path):
    for name in ("e.ply", "e.npz"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: empty file"):
            read_points(tmp_path / name)


def test_npz_without_xyz(tmp_path):
    np.savez(tmp_path / "b.npz", points=np.zeros((3, 3)))
    with pytest.raises(DataError, match="b.npz: NPZ has no 'xyz' array"):
        read_npz(tmp_path / "b.npz")


def test_huge_header_is_refused_fast(tmp_path):
    path = tmp_path / "huge.ply"
    path.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 50000000\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n" + b"\0" * 1200
    )
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"huge\.ply: PLY declares 50,000,000 points, more than the limit"):
        read_ply(path)
    # under the limit, the size check still refuses it before allocating 600 MB
    with pytest.raises(DataError, match=r"huge\.ply: truncated PLY: 50,000,000 points need"):
        read_ply(path, max_points=60_000_000)
    assert time.perf_counter() - start < 2.0
