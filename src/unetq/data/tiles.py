"""Tile mode: a model of input T x T segments images of any size at their native resolution.

Training draws random T x T crops of the full-resolution images. Prediction cuts a whole image
into overlapping tiles (`tile_boxes`), segments each, and stitches the class maps back
(`stitch`): each pixel is taken from the tile whose centre region owns it, the overlap split
half and half between neighbours, so every pixel gets some context on each side (the U-Net
paper's overlap-tile strategy). Images smaller than a tile are padded by reflection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unetq.data.index import SplitArrays


@dataclass
class NativeSplit:
    """A split at native resolution: one uint8 array per image, each at its own size."""

    names: list[str]
    images: list[np.ndarray]  # [H, W, 3]
    masks: list[np.ndarray]  # [H, W]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along one axis: a stride of tile - overlap, the last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, length - tile, stride), length - tile]


def tile_boxes(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(top, left) of every tile of an image, row by row."""
    return [
        (top, left)
        for top in tile_starts(height, tile, overlap)
        for left in tile_starts(width, tile, overlap)
    ]


def tiles_per_image(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def mean_tiles_per_image(sizes: list[tuple[int, int]], tile: int, overlap: int) -> float:
    """Tiles a whole image takes on average, over images of (height, width) `sizes`."""
    if not sizes:
        return float("nan")
    counts = [tiles_per_image(h, w, tile, overlap) for h, w in sizes]
    return float(np.mean(counts))


def pad_to(array: np.ndarray, tile: int) -> np.ndarray:
    """`array` padded by reflection at the bottom and right to at least tile x tile."""
    pad_h, pad_w = max(0, tile - array.shape[0]), max(0, tile - array.shape[1])
    if not pad_h and not pad_w:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    mode = "reflect" if min(array.shape[:2]) > 1 else "edge"
    return np.pad(array, widths, mode=mode)


def image_tiles(image: np.ndarray, tile: int, overlap: int) -> tuple[np.ndarray, list]:
    """Every tile of one image, [K, T, T, ...], and their (top, left) boxes."""
    padded = pad_to(image, tile)
    boxes = tile_boxes(padded.shape[0], padded.shape[1], tile, overlap)
    tiles = np.stack([padded[t : t + tile, left : left + tile] for t, left in boxes])
    return tiles, boxes


def _owned(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """The [begin, end) each tile owns: the overlap with the next tile is split at its middle."""
    cuts = [(a + tile + b) // 2 for a, b in zip(starts, starts[1:], strict=False)]
    return list(zip([0, *cuts], [*cuts, length], strict=True))


def stitch(tile_maps: np.ndarray, height: int, width: int, tile: int, overlap: int) -> np.ndarray:
    """Per-tile maps [K, T, T, ...] (in `tile_boxes` order) -> one map [height, width, ...]."""
    padded_h, padded_w = max(height, tile), max(width, tile)
    rows = tile_starts(padded_h, tile, overlap)
    cols = tile_starts(padded_w, tile, overlap)
    if len(tile_maps) != len(rows) * len(cols):
        raise ValueError(f"{len(tile_maps)} tiles for a {len(rows)} x {len(cols)} grid")
    out = np.empty((padded_h, padded_w, *tile_maps.shape[3:]), dtype=tile_maps.dtype)
    k = 0
    for top, (y0, y1) in zip(rows, _owned(rows, tile, padded_h), strict=True):
        for left, (x0, x1) in zip(cols, _owned(cols, tile, padded_w), strict=True):
            out[y0:y1, x0:x1] = tile_maps[k, y0 - top : y1 - top, x0 - left : x1 - left]
            k += 1
    return out[:height, :width]


def segment_by_tiles(image: np.ndarray, tile: int, overlap: int, segment_tiles) -> np.ndarray:
    """One image of any size segmented tile by tile: `segment_tiles` maps tiles [K, T, T, 3] to
    class maps [K, T, T]; the maps are stitched back to the image's [H, W]."""
    return segment_images_by_tiles([image], tile, overlap, segment_tiles)[0]


def segment_images_by_tiles(
    images: list[np.ndarray], tile: int, overlap: int, segment_tiles
) -> list[np.ndarray]:
    """Several images by tiles, their tiles in one `segment_tiles` call (so a model taking
    batches fills them across images), each image's maps stitched back to its [H, W]."""
    cut = [image_tiles(image, tile, overlap)[0] for image in images]
    if not cut:
        return []
    maps = segment_tiles(np.concatenate(cut))
    ends = np.cumsum([len(tiles) for tiles in cut])
    return [
        stitch(maps[end - len(tiles) : end], *image.shape[:2], tile, overlap)
        for image, tiles, end in zip(images, cut, ends, strict=True)
    ]


def grid_tiles(
    split: NativeSplit, tile: int, overlap: int, limit: int | None = None
) -> SplitArrays:
    """The prediction tiles of the split's images in order (the first `limit` tiles): a fixed
    set of labelled tiles for validation during training, calibration and guards."""
    names: list[str] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for name, image, mask in zip(split.names, split.images, split.masks, strict=True):
        tiles, boxes = image_tiles(image, tile, overlap)
        mask_tiles, _ = image_tiles(mask, tile, overlap)
        for (top, left), img, msk in zip(boxes, tiles, mask_tiles, strict=True):
            names.append(f"{name}@{top},{left}")
            images.append(img)
            masks.append(msk)
        if limit is not None and len(names) >= limit:
            break
    return _arrays(names[:limit], images[:limit], masks[:limit], tile)


def random_tiles(
    split: NativeSplit, tile: int, per_image: int, rng: np.random.Generator
) -> SplitArrays:
    """`per_image` random tile x tile crops of every image (with their masks)."""
    names, images, masks = [], [], []
    for name, image, mask in zip(split.names, split.images, split.masks, strict=True):
        image, mask = pad_to(image, tile), pad_to(mask, tile)
        height, width = mask.shape
        for _ in range(per_image):
            top = int(rng.integers(0, height - tile + 1))
            left = int(rng.integers(0, width - tile + 1))
            names.append(f"{name}@{top},{left}")
            images.append(image[top : top + tile, left : left + tile])
            masks.append(mask[top : top + tile, left : left + tile])
    return _arrays(names, images, masks, tile)


def _arrays(names, images, masks, tile: int) -> SplitArrays:
    if not names:
        return SplitArrays(
            names=[],
            images=np.zeros((0, tile, tile, 3), np.uint8),
            masks=np.zeros((0, tile, tile), np.uint8),
        )
    return SplitArrays(names=names, images=np.stack(images), masks=np.stack(masks))
