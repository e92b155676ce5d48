from __future__ import annotations

import numpy as np
import pytest

from instaseg.structures.panoptic import (
    SEM_IGNORE,
    SEM_THINGS,
    PanopticResult,
    PanopticSegment,
    id_to_rgb,
    rgb_to_id,
    segments_info,
    stuff_index_map,
)


def test_rgb_id_round_trip_covers_all_three_channels() -> None:
    ids = np.array([[0, 1, 255], [256, 65536 + 7, 256**3 - 1]], dtype=np.int32)
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[1, 1].tolist() == [7, 0, 1]
    assert np.array_equal(rgb_to_id(rgb), ids)
    with pytest.raises(ValueError):
        id_to_rgb(np.array([[256**3]]))


def _result() -> PanopticResult:
    m = np.zeros((4, 6), dtype=np.int32)
    m[:, :2] = 5  # stuff 100
    m[:2, 2:4] = 9  # thing 1
    m[2:, 2:4] = 11  # crowd thing 1
    segs = [
        PanopticSegment(5, 100, isthing=False),
        PanopticSegment(9, 1, isthing=True),
        PanopticSegment(11, 1, isthing=True, iscrowd=True),
    ]
    return PanopticResult(m, segs)


def test_semantic_map_and_segments_info() -> None:
    r = _result()
    assert r.validate() == []
    sem = r.semantic_map(stuff_index_map([100]))
    assert (sem[:, :2] == 1).all() and (sem[:2, 2:4] == SEM_THINGS).all()
    assert (sem[2:, 2:4] == SEM_IGNORE).all() and (sem[:, 4:] == SEM_IGNORE).all()
    info = {s["id"]: s for s in segments_info(r)}
    assert info[9]["bbox"] == [2, 0, 2, 2] and info[9]["area"] == 4 and info[11]["iscrowd"] == 1


def test_validate_names_each_inconsistency() -> None:
    r = _result()
    r.id_map[0, 5] = 42
    r.segments.append(PanopticSegment(77, 3, isthing=True))
    problems = " | ".join(r.validate())
    assert "[42]" in problems and "[77]" in problems
