"""Decode and resize once; keep the split as uint8 arrays in the cache folder.

A cache file is keyed by the source files (paths, sizes, mtimes), the image size, the mask
mapping and the split's names, so any change to the data gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import platformdirs
from PIL import Image

from unetq.data.images import map_mask, read_image, read_mask_raw
from unetq.data.index import DatasetIndex, Pair, SplitArrays
from unetq.data.tiles import NativeSplit, random_tiles
from unetq.errors import DataError
from unetq.fileio import atomic_path

if TYPE_CHECKING:
    from rich.progress import Progress

CACHE_VERSION = 1


def cache_dir() -> Path:
    """The user cache folder of unetq ($UNETQ_CACHE_DIR overrides it)."""
    override = os.environ.get("UNETQ_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("unetq"))


def file_signature(paths: Iterable[Path]) -> str:
    """A hash of (path, size, mtime) for each file; changes when any file changes."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DataError(f"file disappeared since the scan: {path}") from None
        digest.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_mask(index: DatasetIndex, pair: Pair) -> np.ndarray:
    """The mask of `pair` as uint8 class ids [H, W] at its own resolution."""
    return map_mask(read_mask_raw(pair.mask), index.mask_values, pair.mask)


def decode_pair(index: DatasetIndex, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Image uint8 [H, W, 3] and class mask uint8 [H, W]; sizes must agree."""
    image = read_image(pair.image)
    mask = read_mask(index, pair)
    if image.shape[:2] != mask.shape:
        ih, iw = image.shape[:2]
        mh, mw = mask.shape
        raise DataError(
            f"image is {iw}x{ih} but its mask is {mw}x{mh} (image/mask size mismatch): {pair.mask}"
        )
    return image, mask


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear, mask nearest, both to size x size."""
    img = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    msk = Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(img, dtype=np.uint8), np.asarray(msk, dtype=np.uint8)


def split_cache_path(index: DatasetIndex, split: str, names: list[str], size: int) -> Path:
    pairs = [index.pair(n) for n in names]
    digest = hashlib.sha256()
    payload = {
        "version": CACHE_VERSION,
        "format": index.format,
        "size": size,
        "mask_values": sorted(index.mask_values.items()),
        "names": names,
        "files": file_signature(p for pair in pairs for p in (pair.image, pair.mask)),
    }
    digest.update(json.dumps(payload).encode())
    tag = f"{size}px" if size else "native"
    return cache_dir() / "arrays" / f"{index.format}-{split}-{tag}-{digest.hexdigest()[:20]}.npz"


def load_cached(path: Path, names: list[str], size: int) -> SplitArrays | None:
    """The cached split, or None when absent or unusable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = SplitArrays(
                names=[str(n) for n in data["names"]],
                images=data["images"],
                masks=data["masks"],
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = len(names)
    if (
        arrays.names != names
        or arrays.images.shape != (n, size, size, 3)
        or arrays.masks.shape != (n, size, size)
    ):
        return None
    return arrays


def save_cached(path: Path, arrays: SplitArrays) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(
            fh,
            names=np.asarray(arrays.names, dtype=str),
            images=arrays.images,
            masks=arrays.masks,
        )


def load_split(
    index: DatasetIndex, split: str, size: int, progress: Progress | None = None
) -> SplitArrays:
    """Split `split` decoded and resized to size x size; decoded once, then read from the cache."""
    pairs = index.split_pairs(split)
    names = [p.name for p in pairs]
    path = split_cache_path(index, split, names, size)
    cached = load_cached(path, names, size)
    if cached is not None:
        return cached
    images = np.zeros((len(pairs), size, size, 3), dtype=np.uint8)
    masks = np.zeros((len(pairs), size, size), dtype=np.uint8)

    def work(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        return resize_pair(*decode_pair(index, pair), size)

    label = f"decode {split} ({size} px)"
    for i, (image, mask) in enumerate(parallel_map(work, pairs, progress, label)):
        images[i], masks[i] = image, mask
    arrays = SplitArrays(names=names, images=images, masks=masks)
    save_cached(path, arrays)
    return arrays


# Tile mode: random crops per image that calibration, verification and guards choose from.
INPUT_TILES_PER_IMAGE = 8


def load_inputs(index: DatasetIndex, split: str, data, progress: Progress | None = None):
    """Labelled images the size of the model's input (`data` is a DataConfig): the resized
    split, or in tile mode seeded random tiles, one of every image first, then a second of
    every image, and so on, so the first N tiles come from as many images as possible."""
    if data.mode != "tile":
        return load_split(index, split, data.image_size, progress=progress)
    native = load_native(index, split, progress=progress)
    rng = np.random.default_rng(data.split_seed)
    tiles = random_tiles(native, data.image_size, INPUT_TILES_PER_IMAGE, rng)
    order = np.arange(len(tiles.names)).reshape(-1, INPUT_TILES_PER_IMAGE).T.ravel()
    return SplitArrays(
        names=[tiles.names[i] for i in order], images=tiles.images[order], masks=tiles.masks[order]
    )


def load_whole(index: DatasetIndex, split: str, data, progress: Progress | None = None):
    """The images as they are segmented and scored: resized (SplitArrays), or in tile mode at
    their own size (NativeSplit)."""
    if data.mode != "tile":
        return load_split(index, split, data.image_size, progress=progress)
    return load_native(index, split, progress=progress)


def load_native(index: DatasetIndex, split: str, progress: Progress | None = None) -> NativeSplit:
    """Split `split` at each image's own resolution (tile mode); decoded once, then cached."""
    pairs = index.split_pairs(split)
    names = [p.name for p in pairs]
    path = split_cache_path(index, split, names, 0)
    cached = _load_native_cached(path, names)
    if cached is not None:
        return cached
    label = f"decode {split} (native size)"
    decoded = list(parallel_map(lambda pair: decode_pair(index, pair), pairs, progress, label))
    split_arrays = NativeSplit(
        names=names, images=[d[0] for d in decoded], masks=[d[1] for d in decoded]
    )
    _save_native_cached(path, split_arrays)
    return split_arrays


def _save_native_cached(path: Path, split: NativeSplit) -> None:
    """One flat array each for pixels and mask values, with every image's shape."""
    shapes = np.array([m.shape for m in split.masks], dtype=np.int64).reshape(-1, 2)
    flat = [np.zeros(0, np.uint8)]
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(
            fh,
            names=np.asarray(split.names, dtype=str),
            shapes=shapes,
            images=np.concatenate([i.reshape(-1) for i in split.images] or flat),
            masks=np.concatenate([m.reshape(-1) for m in split.masks] or flat),
        )


def _load_native_cached(path: Path, names: list[str]) -> NativeSplit | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored, shapes = [str(n) for n in data["names"]], data["shapes"]
            images, masks = data["images"], data["masks"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    sizes = shapes[:, 0] * shapes[:, 1] if len(shapes) else np.zeros(0, np.int64)
    if stored != names or len(shapes) != len(names) or masks.size != sizes.sum():
        return None
    if images.size != 3 * sizes.sum():
        return None
    ends = np.cumsum(sizes)
    split = NativeSplit(names=names, images=[], masks=[])
    for (h, w), end, size in zip(shapes, ends, sizes, strict=True):
        split.masks.append(masks[end - size : end].reshape(h, w))
        split.images.append(images[3 * (end - size) : 3 * end].reshape(h, w, 3))
    return split


def parallel_map(
    fn: Callable[[Pair], object],
    items: list[Pair],
    progress: Progress | None = None,
    label: str = "decode",
) -> Iterator:
    """fn over items in order on a few threads (Pillow decodes without the GIL)."""
    task = progress.add_task(label, total=len(items)) if progress is not None else None
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for result in pool.map(fn, items):
            if task is not None:
                progress.advance(task)
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
