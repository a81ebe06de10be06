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
    return cache_dir() / "arrays" / f"{index.format}-{split}-{size}px-{digest.hexdigest()[:20]}.npz"


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
