"""Plain data structures and pure geometry on boxes and masks.

Boxes are ``Tensor[N, 4]`` in absolute pixel ``(x1, y1, x2, y2)`` (XYXY) format unless a function
says otherwise; masks are ``Tensor[N, H, W]`` of dtype bool or uint8.
"""

from instaseg.structures.boxes import (
    box_area,
    box_iou,
    clip_boxes,
    masks_to_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from instaseg.structures.masks import (
    RLE,
    counts_to_rle,
    decode_rles,
    empty_rle,
    encode_masks,
    mask_area,
    mask_iou,
    merge_rles,
    polygons_to_mask,
    polygons_to_rle,
    polygons_to_rles,
    rle_areas,
    rle_boxes,
    rle_decode,
    rle_encode,
    rle_iou,
    to_rle,
    xywh_iou,
    xywh_to_polygon,
)

__all__ = [
    "box_area",
    "box_iou",
    "clip_boxes",
    "masks_to_boxes",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "RLE",
    "counts_to_rle",
    "decode_rles",
    "empty_rle",
    "encode_masks",
    "mask_area",
    "mask_iou",
    "merge_rles",
    "polygons_to_mask",
    "polygons_to_rle",
    "polygons_to_rles",
    "rle_areas",
    "rle_boxes",
    "rle_decode",
    "rle_encode",
    "rle_iou",
    "to_rle",
    "xywh_iou",
    "xywh_to_polygon",
]
