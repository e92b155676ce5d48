import numpy as np

from instaseg.structures.points import PointInstances


def test_from_ids_renumbers_and_labels_by_majority():
    ids = np.array([7, 7, 7, -1, 3, 3, 9])
    sem = np.array([2, 2, 4, 0, 5, 5, 1])
    gt = PointInstances.from_ids(ids, sem, ignore=(1,))
    # raw id 3 first (sorted unique), then 7; id 9 has an ignored class
    assert gt.labels.tolist() == [5, 2]
    assert gt.instance_ids.tolist() == [1, 1, 1, -1, 0, 0, -1]
    assert gt.sizes().tolist() == [2, 3]
    assert gt.point_labels().tolist() == [2, 2, 2, -1, 5, 5, -1]


def test_filter_take_points_and_to_list():
    p = PointInstances(np.array([0, 1, 1, -1, 2]), np.array([3, 4, 5]), np.array([0.9, 0.2, 0.5]))
    f = p.filter(p.scores > 0.3)
    assert f.instance_ids.tolist() == [0, -1, -1, -1, 1] and f.labels.tolist() == [3, 5]
    t = p.take_points(np.array([4, 4, 0]))
    assert t.instance_ids.tolist() == [2, 2, 0]
    items = p.to_list(["a", "b", "c", "d", "e", "f"])
    assert items[1]["point_indices"] == [1, 2] and items[1]["class"] == "e" and items[2]["num_points"] == 1
    assert p.masks().sum(1).tolist() == [1, 2, 1]
