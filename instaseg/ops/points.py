"""Pure NumPy geometry on point clouds: voxel grids and radius clustering.

Points are float arrays (N, 3) in metres. Nothing here allocates more than O(N) memory.
"""

from __future__ import annotations

import numpy as np


def voxel_keys(xyz: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer voxel coordinates int64 (N, 3) of ``xyz`` (N, 3) for voxels of ``size`` metres, relative
    to the minimum corner, and that corner (3,)."""
    lo = xyz.min(0) if len(xyz) else np.zeros(3, xyz.dtype)
    return np.floor((xyz - lo) / size).astype(np.int64), lo


def _encode(cells: np.ndarray) -> np.ndarray:
    # cells are >= -1 after neighbour shifts; +1 keeps them non-negative below 2**21
    c = cells + 1
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def voxel_downsample(xyz: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """One representative point per voxel of ``size``: ``(keep_index (M,), inverse (N,))`` where
    ``keep_index`` are indices into ``xyz`` and ``inverse[i]`` is the kept point standing for point i."""
    cells, _ = voxel_keys(xyz, size)
    _, first, inverse = np.unique(_encode(cells), return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def radius_components(xyz: np.ndarray, cell: float) -> np.ndarray:
    """Connected components of points linked through occupied grid cells of side ``cell`` that touch
    (26-neighbourhood): points closer than ``cell`` are always joined, farther than ``2 * sqrt(3) *
    cell`` never. Returns int64 (N,) component ids 0..K-1 (memory O(N), no dense grid)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(xyz) == 0:
        return np.zeros(0, np.int64)
    cells, _ = voxel_keys(xyz, cell)
    if cells.max() >= 2**21 - 2:
        raise ValueError(f"radius_components: scene too large for cell {cell} (more than 2M cells a side)")
    keys, inverse = np.unique(_encode(cells), return_inverse=True)
    uniq = np.stack([(keys >> 42) - 1, ((keys >> 21) & (2**21 - 1)) - 1, (keys & (2**21 - 1)) - 1], 1)
    rows, cols = [np.arange(len(keys))], [np.arange(len(keys))]
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                if (dx, dy, dz) <= (0, 0, 0):  # half of the 26 neighbours suffices (undirected)
                    continue
                nk = _encode(uniq + np.array([dx, dy, dz]))
                pos = np.searchsorted(keys, nk)
                pos = np.minimum(pos, len(keys) - 1)
                hit = keys[pos] == nk
                rows.append(np.flatnonzero(hit))
                cols.append(pos[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(keys), len(keys)))
    _, comp = connected_components(graph, directed=False)
    return comp[inverse.reshape(-1)].astype(np.int64)


def radius_graph_components(xyz: np.ndarray, radius: float) -> np.ndarray:
    """Connected components of the graph linking points closer than ``radius`` (exact, k-d tree).
    Returns int64 (N,) component ids 0..K-1."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if len(xyz) == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(xyz).query_pairs(radius, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(len(xyz), len(xyz)))
    _, comp = connected_components(graph, directed=False)
    return comp.astype(np.int64)
