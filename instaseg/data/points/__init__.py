"""Point-cloud data: the scene schema, readers/writers (PLY, NPZ, S3DIS), synthetic indoor scenes,
augmentation, and statistics/checks. See :mod:`instaseg.data.points.base` for the sample schema."""

from instaseg.data.points.base import PointDataset, PointScene, scene_to_sample

__all__ = ["PointDataset", "PointScene", "scene_to_sample"]
