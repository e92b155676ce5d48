import numpy as np
import pytest

from instaseg.data.build import build_dataset
from instaseg.data.points.augment import PointAugment, build_point_augment, dropout, elastic, flip, rotate_z
from instaseg.data.points.synthetic import CLASS_NAMES, generate_scene
from instaseg.errors import ConfigError


def test_scene_is_deterministic_and_has_touching_things_on_the_floor():
    a, b = generate_scene(5, 4000), generate_scene(5, 4000)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert len(a) == 4000 and a.xyz.dtype == np.float32
    assert set(np.unique(a.semantic[a.instance < 0])) <= {0, 1}  # only stuff lacks an instance
    things = a.instance >= 0
    assert np.isin(a.semantic[things], [2, 3, 4, 5, 6]).all()
    n_inst = len(np.unique(a.instance[things]))
    assert n_inst >= 3
    # every standing instance reaches the floor (within noise), over a batch of scenes
    low = [generate_scene(s, 3000) for s in range(6)]
    touching = 0
    for sc in low:
        for i in np.unique(sc.instance[sc.instance >= 0]):
            touching += sc.xyz[sc.instance == i, 2].min() < 0.05
    assert touching >= 0.6 * sum(len(np.unique(s.instance[s.instance >= 0])) for s in low)


def test_spec_splits_and_samples():
    train = build_dataset("points_shapes:10:2000", split="train")
    val = build_dataset("points_shapes:10:2000", split="val")
    assert len(train) == 10 and len(val) == 2 and train.class_names == CLASS_NAMES
    assert not np.array_equal(train.scene(0).xyz[:5], val.scene(0).xyz[:5])
    points, target = train[0]
    assert (
        points.shape == (2000, 6)
        and target["semantic"].shape == (2000,)
        and target["instance"].dtype.is_floating_point is False
    )
    with pytest.raises(ConfigError, match="POINTS must be an integer"):
        build_dataset("points_shapes:3:many")


def test_augmentations_keep_labels_and_geometry():
    s = generate_scene(1, 2000)
    r = rotate_z(s, 0.7)
    d0 = np.linalg.norm(s.xyz[0] - s.xyz[1])
    assert np.isclose(np.linalg.norm(r.xyz[0] - r.xyz[1]), d0, atol=1e-5)
    np.testing.assert_allclose(r.xyz[:, 2], s.xyz[:, 2], atol=1e-6)
    f = flip(s, 0)
    np.testing.assert_allclose(flip(f, 0).xyz, s.xyz, atol=1e-5)
    rng = np.random.default_rng(0)
    dr = dropout(s, 0.5, rng)
    assert 800 < len(dr) < 1200 and len(dr.semantic) == len(dr)
    e = elastic(s, rng, magnitude=0.04)
    assert 0 < np.abs(e.xyz - s.xyz).max() <= 0.0401
    out = PointAugment(dropout=0.2, elastic_p=1.0)(s, rng)
    assert len(out.instance) == len(out) and len(out) <= len(s)
    with pytest.raises(ConfigError, match="unknown point augmentation keys"):
        build_point_augment(True, crop_p=0.5)
