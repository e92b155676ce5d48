"""A sparse voxel U-Net in pure PyTorch (no sparse-convolution library): convolutions run only on the
occupied voxels, through neighbour tables built by hashing voxel coordinates.

Structure of one scene (:func:`sparse_inputs`), for ``levels`` resolutions (voxel, 2 voxel, 4 voxel...):

- ``features`` float [M0, VOXEL_FEATURES]: per occupied voxel of level 0, the mean of its points' colour
  (- 0.5), position inside the voxel, height / 2, second moments of the positions (local surface shape)
  and log point count;
- ``cell`` int64 [N]: the level-0 voxel of each point; ``point_features`` float [N, POINT_FEATURES];
- ``nbr_l`` int64 [M_l, 27]: the 3x3x3 neighbours of each level-l voxel (``M_l`` = missing: a zero row);
- ``down_l`` int64 [M_l, 8] (l >= 1): the 2x2x2 children of each level-l voxel in level l-1 (``M_{l-1}``
  = missing);
- ``up_l`` int64 [M_{l-1}] (l >= 1): ``8 * parent + child position``, to scatter a level-l voxel's
  transposed-convolution output back to its children.

Only gathers, matmuls and batch norm: the network exports to ONNX with all sizes dynamic.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

POINT_FEATURES = 7  # position inside the voxel (3), rgb - 0.5 (3), height / 2 (1)
# rgb (3), mean position inside (3), height (1), covariance (6), log count (1); then optionally the local
# shape in the 3x3x3 voxel window (SHAPE_FEATURES, :func:`window_shape`)
VOXEL_FEATURES = 14
SHAPE_FEATURES = 9
_OFF27 = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
_OFF8 = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])


def _encode(c: Tensor) -> Tensor:
    c = c + 1  # neighbour shifts reach -1
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def _lookup(keys: Tensor, query: Tensor, missing: int) -> Tensor:
    """Index of each ``query`` key in the sorted unique ``keys`` (``missing`` where absent)."""
    pos = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
    return torch.where(keys[pos] == query, pos, torch.full_like(pos, missing))


def sparse_inputs(
    points: Tensor, voxel: float, levels: int, *, shape: int = 2, max_cells: int = 2**20
) -> tuple[Tensor, ...]:
    """The network's inputs for one scene ``points`` [N, 6] (x, y, z, r, g, b): ``(features, cell,
    point_features, nbr_0, nbr_1, down_1, up_1, ..., nbr_{L-1}, down_{L-1}, up_{L-1})`` (see the module
    docstring); ``features`` has ``VOXEL_FEATURES + shape * SHAPE_FEATURES`` columns: the local shape in
    windows of 3, 6... voxels (``shape`` scales, at most ``levels``). A scene wider than ``max_cells``
    voxels along an axis uses coarser voxels."""
    xyz, rgb = points[:, :3].float(), points[:, 3:6].float()
    lo = xyz.min(0).values if len(xyz) else torch.zeros(3)
    extent = float((xyz.max(0).values - lo).max()) if len(xyz) else 0.0
    voxel = max(voxel, extent / (max_cells - 2))
    rel = (xyz - lo) / voxel
    ijk = rel.floor().long()
    keys, cell = torch.unique(_encode(ijk), return_inverse=True)
    inside = rel - ijk.float() - 0.5
    height = xyz[:, 2:3] / 2.0 - lo[2] / 2.0
    ii, jj = (0, 1, 2, 0, 0, 1), (0, 1, 2, 1, 2, 2)
    m = len(keys)
    moments = torch.cat([rgb - 0.5, inside, height, inside[:, ii] * inside[:, jj]], 1)
    acc = torch.zeros(m, 13).index_add_(0, cell, moments)
    count = torch.bincount(cell, minlength=m).float()[:, None]
    mean = acc / count.clamp(min=1)
    cov = (mean[:, 7:] - mean[:, 3:6][:, ii] * mean[:, 3:6][:, jj]) * 12.0  # ~unit scale in a filled voxel
    coords = ijk.new_zeros(0, 3) if m == 0 else _decode(keys)
    tables: list[Tensor] = [_neighbours(coords, keys)]
    point_features = torch.cat([inside, rgb - 0.5, height], 1)
    for _ in range(1, max(levels, shape)):
        parent_keys, up = torch.unique(_encode(coords // 2), return_inverse=True)
        parent = _decode(parent_keys)
        child = (parent[:, None, :] * 2 + _OFF8[None]).reshape(-1, 3)
        down = _lookup(keys, _encode(child), len(keys)).reshape(-1, 8) if len(keys) else child.new_zeros(0, 8)
        pos = ((coords % 2) * torch.tensor([4, 2, 1])).sum(1)
        coords, keys = parent, parent_keys
        tables += [_neighbours(coords, keys), down, up * 8 + pos]
    features = [mean[:, :7], cov, count.log1p() - 1.0]
    point_voxel, level0_voxel = cell, torch.arange(m)  # voxels at the current scale
    for scale in range(shape):
        if scale:
            parent = tables[3 * scale] // 8  # up_scale: level scale-1 voxel -> its parent
            point_voxel, level0_voxel = parent[point_voxel], parent[level0_voxel]
        nbr = tables[0] if scale == 0 else tables[3 * scale - 2]
        counts = torch.bincount(point_voxel, minlength=len(nbr)).float()[:, None]
        pos = (xyz - lo) / (voxel * 2**scale)
        features.append(window_shape(pos, point_voxel, counts, nbr)[level0_voxel])
    return (torch.cat(features, 1), cell, point_features, *tables[: 1 + 3 * (levels - 1)])


def window_shape(pos: Tensor, cell: Tensor, count: Tensor, nbr: Tensor) -> Tensor:
    """Local surface shape of each voxel from the points in its 3x3x3 window (a fixed size, so it does
    not depend on the point density): the normal's outer product (6, sign-free), curvature, linearity
    and planarity from the eigenvalues of the window's covariance. ``pos`` [N, 3] in voxel units.
    Returns [M, 9]."""
    if len(nbr) == 0:
        return pos.new_zeros(0, 9)
    p = pos.double()
    ii, jj = (0, 1, 2, 0, 0, 1), (0, 1, 2, 1, 2, 2)
    m = len(nbr)
    sums = torch.zeros(m, 9, dtype=torch.float64).index_add_(0, cell, torch.cat([p, p[:, ii] * p[:, jj]], 1))
    window = _gather(torch.cat([count.double(), sums], 1), nbr).reshape(m, 27, 10).sum(1)
    n = window[:, :1].clamp(min=1)
    mu = window[:, 1:4] / n
    c6 = window[:, 4:] / n - mu[:, ii] * mu[:, jj]
    cov = torch.stack([c6[:, [0, 3, 4]], c6[:, [3, 1, 5]], c6[:, [4, 5, 2]]], 1)
    cov = cov + torch.eye(3, dtype=cov.dtype) * 1e-6
    lam, vec = torch.linalg.eigh(cov)  # ascending
    normal = vec[:, :, 0]
    lam = lam.clamp(min=0)
    total = lam.sum(1).clamp(min=1e-9)
    top = lam[:, 2].clamp(min=1e-9)
    out = torch.cat(
        [
            normal[:, ii] * normal[:, jj],
            (3 * lam[:, 0] / total)[:, None],
            ((lam[:, 2] - lam[:, 1]) / top)[:, None],
            ((lam[:, 1] - lam[:, 0]) / top)[:, None],
        ],
        1,
    )
    return out.float()


def _decode(keys: Tensor) -> Tensor:
    mask = 2**21 - 1
    return torch.stack([(keys >> 42) - 1, ((keys >> 21) & mask) - 1, (keys & mask) - 1], 1)


def _neighbours(coords: Tensor, keys: Tensor) -> Tensor:
    if len(keys) == 0:
        return coords.new_zeros(0, 27)
    query = _encode((coords[:, None, :] + _OFF27[None]).reshape(-1, 3))
    return _lookup(keys, query, len(keys)).reshape(-1, 27)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` [M, K] of ``x`` [M', C] padded with a zero row at ``M'``, as [M, K * C]."""
    padded = torch.cat([x, x.new_zeros(1, x.shape[1])], 0)
    return padded.index_select(0, index.reshape(-1)).reshape(index.shape[0], -1)  # backward: index_add_


class SparseConv(nn.Module):
    """Submanifold 3x3x3 convolution (``index`` = ``nbr``) or 2x2x2 stride-2 convolution (``index`` =
    ``down``) + batch norm + ReLU on voxel features [M, cin] -> [M_out, cout]."""

    def __init__(self, cin: int, cout: int, taps: int) -> None:
        super().__init__()
        self.linear = nn.Linear(taps * cin, cout, bias=False)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        return torch.relu(self.norm(self.linear(_gather(x, index))))


class Residual(nn.Module):
    """Two submanifold convolutions with a skip connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = SparseConv(c, c, 27), nn.Linear(27 * c, c, bias=False)
        self.norm = nn.BatchNorm1d(c)

    def forward(self, x: Tensor, nbr: Tensor) -> Tensor:
        return torch.relu(x + self.norm(self.b(_gather(self.a(x, nbr), nbr))))


class SparseUNet(nn.Module):
    """``levels``-level U-Net with widths ``width * (1, 2, 3, ...)``: ``(features, nbr/down/up tables)
    -> level-0 voxel features [M0, width]``."""

    def __init__(self, cin: int, width: int, levels: int) -> None:
        super().__init__()
        ws = [width * (i + 1) for i in range(levels)]
        self.levels = levels
        self.stem = SparseConv(cin, ws[0], 27)
        self.enc = nn.ModuleList([Residual(w) for w in ws])
        self.down = nn.ModuleList([SparseConv(ws[i - 1], ws[i], 8) for i in range(1, levels)])
        self.up = nn.ModuleList([nn.Linear(ws[i], 8 * ws[i - 1], bias=False) for i in range(1, levels)])
        self.up_norm = nn.ModuleList([nn.BatchNorm1d(ws[i - 1]) for i in range(1, levels)])
        self.dec = nn.ModuleList([SparseConv(2 * ws[i - 1], ws[i - 1], 27) for i in range(1, levels)])

    def forward(self, features: Tensor, tables: tuple[Tensor, ...]) -> Tensor:
        nbr = [tables[0]] + [tables[3 * i - 2] for i in range(1, self.levels)]
        x = self.enc[0](self.stem(features, nbr[0]), nbr[0])
        skips = [x]
        for i in range(1, self.levels):
            x = self.enc[i](self.down[i - 1](x, tables[3 * i - 1]), nbr[i])
            skips.append(x)
        for i in range(self.levels - 1, 0, -1):
            up = self.up[i - 1](x).reshape(-1, self.up[i - 1].out_features // 8)[tables[3 * i]]
            up = torch.relu(self.up_norm[i - 1](up))
            x = self.dec[i - 1](torch.cat([up, skips[i - 1]], 1), nbr[i - 1])
        return x
