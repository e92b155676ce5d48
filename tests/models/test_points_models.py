import numpy as np
import torch

from instaseg.data.points.synthetic import generate_scene
from instaseg.models import get_model, list_models, model_task
from instaseg.models.pointgroup import cluster_instances
from instaseg.models.sparse_unet import SparseConv, sparse_inputs
from instaseg.ops.points import radius_components, radius_graph_components, voxel_downsample


def _points(scene):
    return torch.from_numpy(np.concatenate([scene.xyz, scene.rgb], 1))


def test_registered_as_point_models():
    assert {"pointgroup_lite", "dbscan_points"} <= set(list_models("points"))
    assert model_task("pointgroup_lite") == "points"


def test_radius_components_and_downsample():
    a = np.array([[0, 0, 0], [0.03, 0, 0], [0.06, 0, 0], [1, 1, 1], [1.02, 1, 1]], np.float64)
    comp = radius_components(a, 0.04)
    assert comp[0] == comp[1] == comp[2] and comp[3] == comp[4] and comp[0] != comp[3]
    comp = radius_graph_components(a, 0.035)  # exact radius: 0.03 apart joins, 0.06 does not chain
    assert comp[0] == comp[1] == comp[2] and comp[3] == comp[4] and comp[0] != comp[3]
    assert len(np.unique(radius_graph_components(a, 0.025))) == 4
    keep, inv = voxel_downsample(a, 0.5)
    assert len(keep) == 2 and (a[keep][inv] // 0.5 == a // 0.5).all()


def test_cluster_instances_groups_shifted_points():
    xyz = np.array([[0, 0, 0], [0.4, 0, 0], [2, 0, 0], [2.4, 0, 0], [5, 5, 0]], np.float64)
    offsets = np.array([[0.2, 0, 0], [-0.2, 0, 0], [0.2, 0, 0], [-0.2, 0, 0], [0, 0, 0]])
    probs = np.array([[0.1, 0.9, 0], [0.2, 0.8, 0], [0, 0.3, 0.7], [0, 0.1, 0.9], [0.9, 0.1, 0]])
    pred = cluster_instances(xyz, probs, offsets, stuff=(0,), radius=0.05, min_points=2)
    assert len(pred) == 2 and pred.instance_ids.tolist() == [0, 0, 1, 1, -1]
    assert pred.labels.tolist() == [1, 2]
    np.testing.assert_allclose(pred.scores, [0.85, 0.8], atol=1e-6)


def test_cluster_instances_per_class_splits_touching_objects():
    # two objects whose points shift onto the same centre, of different predicted classes
    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [0.3, 0, 0]], np.float64)
    offsets = np.array([[0.15, 0, 0], [0.05, 0, 0], [-0.05, 0, 0], [-0.15, 0, 0]])
    probs = np.array([[0, 0.9, 0.1], [0, 0.8, 0.2], [0, 0.1, 0.9], [0, 0.3, 0.7]])
    kw = {"stuff": (0,), "radius": 0.05, "min_points": 2}
    assert len(cluster_instances(xyz, probs, offsets, per_class=False, **kw)) == 1
    pred = cluster_instances(xyz, probs, offsets, **kw)
    assert pred.instance_ids.tolist() == [0, 0, 1, 1] and pred.labels.tolist() == [1, 2]


def test_sparse_conv_equals_dense_conv_on_occupied_voxels():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ijk = np.unique(rng.integers(0, 6, (80, 3)), axis=0)
    # voxel 1 and half-integer points: exact in float, every point in the voxel it names
    points = torch.from_numpy(np.c_[ijk + 0.5, np.full((len(ijk), 3), 0.5)].astype(np.float32))
    features, cell, _, nbr = sparse_inputs(points, 1.0, 1)
    assert len(features) == len(ijk) and nbr.shape == (len(ijk), 27)
    conv = SparseConv(features.shape[1], 4, 27).eval()
    dense = torch.nn.Conv3d(features.shape[1], 4, 3, padding=1, bias=False)
    # the sparse weight is laid out [cout, offset (i, j, k in -1..1), cin]
    w = conv.linear.weight.detach().reshape(4, 3, 3, 3, -1).permute(0, 4, 1, 2, 3)
    dense.weight.data.copy_(w)
    grid = torch.zeros(1, features.shape[1], 6, 6, 6)
    vox = torch.from_numpy(ijk - ijk.min(0))
    grid[0, :, vox[:, 0], vox[:, 1], vox[:, 2]] = features[cell].T
    want = dense(grid)[0, :, vox[:, 0], vox[:, 1], vox[:, 2]].T
    padded = torch.cat([features, torch.zeros(1, features.shape[1])])
    got = conv.linear(padded[nbr.reshape(-1)].reshape(len(nbr), -1))
    torch.testing.assert_close(got[cell], want, atol=1e-5, rtol=1e-4)


def test_sparse_tables_link_children_and_parents():
    scene = generate_scene(1, 2000)
    inputs = sparse_inputs(_points(scene), 0.05, 3)
    sizes = [len(inputs[3])] + [len(inputs[4 + 3 * (i - 1)]) for i in range(1, 3)]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    for level in (1, 2):
        down, up = inputs[3 * level + 2], inputs[3 * level + 3]
        assert down.shape == (sizes[level], 8) and up.shape == (sizes[level - 1],)
        # every child sits in its parent's down row at the position its up index names
        assert torch.equal(down.reshape(-1)[up], torch.arange(sizes[level - 1]))
        assert int((down < sizes[level - 1]).sum()) == sizes[level - 1]


def test_pointgroup_losses_backprop_and_predict():
    torch.manual_seed(0)
    model = get_model("pointgroup_lite", num_classes=7, width=8)
    scene = generate_scene(0, 1500)
    target = {"semantic": torch.from_numpy(scene.semantic), "instance": torch.from_numpy(scene.instance)}
    model.train()
    losses = model([_points(scene)], [target])
    assert set(losses) == {"loss_sem", "loss_offset", "loss_dir"}
    sum(losses.values()).backward()
    assert model.net.offset.weight.grad.abs().sum() > 0
    model.eval()
    pred = model.predict(_points(scene))
    assert pred.num_points == len(scene)
    features, cell, pf, *_ = model.inputs(_points(scene))
    assert cell.max() < len(features) and pf.shape == (1500, 7)


def test_pointgroup_learns_one_scene():
    """Overfitting one scene for 20 steps (measured: loss_sem 1.95 -> 0.77, loss_offset 0.43 -> 0.22)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = get_model("pointgroup_lite", num_classes=7, width=8, levels=3)
    scene = generate_scene(3, 800)
    target = {"semantic": torch.from_numpy(scene.semantic), "instance": torch.from_numpy(scene.instance)}
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    model.train()
    first = None
    for _ in range(20):
        losses = model([_points(scene)], [target])
        if first is None:
            first = {k: float(v.detach()) for k, v in losses.items()}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    last = {k: float(v.detach()) for k, v in losses.items()}
    assert last["loss_sem"] < 0.55 * first["loss_sem"]
    assert last["loss_offset"] < 0.7 * first["loss_offset"]


def test_dbscan_baseline_separates_blobs():
    rng = np.random.default_rng(0)
    floor = np.c_[rng.uniform(0, 3, (3000, 2)), rng.normal(0, 0.003, 3000)]
    a = rng.normal([0.8, 0.8, 0.3], 0.06, (300, 3))
    b = rng.normal([2.0, 2.0, 0.3], 0.06, (300, 3))
    xyz = np.concatenate([floor, a, b]).astype(np.float32)
    pts = torch.from_numpy(np.c_[xyz, np.full((len(xyz), 3), 0.5, np.float32)])
    model = get_model("dbscan_points", eps=0.08, min_points=5)
    model.eval()
    pred = model.predict(pts)
    assert len(pred) == 2
    ids = pred.instance_ids
    ia, ib = np.bincount(ids[3000:3300] + 1).argmax() - 1, np.bincount(ids[3300:] + 1).argmax() - 1
    assert ia >= 0 and ib >= 0 and ia != ib
    assert (ids[3000:3300] == ia).mean() > 0.9 and (ids[3300:] == ib).mean() > 0.9
    assert (ids[:3000] == -1).mean() > 0.95


def test_window_shape_tells_planes_from_spheres():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(0, 1, (3000, 2)), rng.normal(0, 0.002, 3000)]
    d = rng.normal(size=(3000, 3))
    sphere = 0.25 * d / np.linalg.norm(d, axis=1, keepdims=True)
    out = []
    for xyz in (plane, sphere):
        pts = torch.from_numpy(np.c_[xyz, np.full((len(xyz), 3), 0.5)].astype(np.float32))
        out.append(sparse_inputs(pts, 0.05, 2, shape=2)[0][:, 14:])
    flat, round_ = out
    assert flat.shape[1] == round_.shape[1] == 18
    # plane: normal along z (n_z^2 = 1) and no curvature, at both window sizes
    assert flat[:, 2].mean() > 0.95 and flat[:, 11].mean() > 0.95
    assert flat[:, 6].mean() < 0.05 and flat[:, 15].mean() < 0.05
    assert round_[:, 6].mean() > 4 * flat[:, 6].mean() and round_[:, 15].mean() > 4 * flat[:, 15].mean()


def test_vote_smoothing_relabels_a_minority_inside_one_object():
    # ten points voting for one centre: 7 say class 1, 3 say class 2 -> one instance of class 1
    rng = np.random.default_rng(0)
    xyz = rng.normal(0, 0.2, (10, 3))
    offsets = -xyz + rng.normal(0, 0.005, (10, 3))
    probs = np.tile([0.0, 0.6, 0.4], (10, 1))
    probs[7:] = [0.0, 0.35, 0.65]
    kw = {"stuff": (0,), "radius": 0.05, "min_points": 2}
    assert len(cluster_instances(xyz, probs, offsets, **kw)) == 2
    pred = cluster_instances(xyz, probs, offsets, smooth_iters=1, **kw)
    assert len(pred) == 1 and pred.labels.tolist() == [1] and (pred.instance_ids == 0).all()


def test_class_weights_must_match_classes():
    import pytest

    from instaseg.errors import ConfigError

    with pytest.raises(ConfigError, match="class_weights"):
        get_model("pointgroup_lite", num_classes=7, class_weights=[1.0, 2.0])


def test_dense_scenes_cluster_through_representatives():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    xyz = np.concatenate([c + rng.normal(0, 0.1, (1000, 3)) for c in centres])
    offsets = np.concatenate([c - xyz[i * 1000 : (i + 1) * 1000] for i, c in enumerate(centres)])
    offsets += rng.normal(0, 0.01, offsets.shape)
    probs = np.tile([0.1, 0.9], (2000, 1))
    kw = {"stuff": (0,), "radius": 0.05, "min_points": 20, "smooth_iters": 1}
    full = cluster_instances(xyz, probs, offsets, **kw)
    few = cluster_instances(xyz, probs, offsets, max_points=300, **kw)
    for pred in (full, few):
        assert len(pred) == 2 and (pred.instance_ids >= 0).all()
        assert len(np.unique(pred.instance_ids[:1000])) == 1 and pred.instance_ids[0] != pred.instance_ids[-1]
