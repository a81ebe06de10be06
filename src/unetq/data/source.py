"""Where the data comes from: --data-dir, $UNETQ_DATA_DIR, the cache, the download, or synthetic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from unetq.config import DataConfig
from unetq.data import fetch
from unetq.data.cache import cache_dir
from unetq.data.folder import is_folder_layout, scan_folder
from unetq.data.index import DatasetIndex
from unetq.data.pets import is_pets_layout, scan_pets
from unetq.data.synthetic import CLASS_NAMES, write_synthetic
from unetq.errors import DataError

if TYPE_CHECKING:
    from rich.progress import Progress

ENV_DATA_DIR = "UNETQ_DATA_DIR"
SYNTHETIC_SEED = 0


def scan_dataset(
    root: Path, fmt: str, cfg: DataConfig, *, progress: Progress | None = None
) -> DatasetIndex:
    """Index the dataset at `root` in layout `fmt` ('pets', 'folder', 'synthetic' or 'auto')."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt == "pets":
        return scan_pets(root, cfg)
    if fmt == "folder":
        return scan_folder(root, cfg, progress=progress)
    if fmt == "synthetic":
        fixed = cfg.model_copy(update={"mask_values": {0: 0, 1: 1, 2: 2}, "background_class": 0})
        index = scan_folder(root, fixed, fmt="synthetic", progress=progress)
        index.class_names = list(CLASS_NAMES)
        index.note = f"synthetic dataset at {root}"
        return index
    raise DataError(f"unknown dataset format '{fmt}' (choose pets or folder): {root}")


def detect_format(root: Path) -> str:
    """'pets' for the Oxford-IIIT Pet layout, 'folder' for images/ + masks/."""
    if is_pets_layout(root):
        return "pets"
    if is_folder_layout(root):
        return "folder"
    raise DataError(
        f"no dataset layout found (expected images/ + annotations/trimaps/ or images/ + masks/): "
        f"{root}"
    )


def open_dataset(
    cfg: DataConfig, *, progress: Progress | None = None, download: bool = True
) -> DatasetIndex | None:
    """Resolve and index the dataset of `cfg`.

    source 'synthetic': the built-in synthetic dataset. source 'auto': cfg.data_dir, else
    $UNETQ_DATA_DIR, else (pets) the extracted download in the cache, else the download, else,
    when the download is impossible (no network), the synthetic dataset with a note saying so.
    An explicitly given folder that does not exist is an error, never a silent fallback.
    With `download` False, None where only a download would find the data.
    """
    if cfg.source == "synthetic":
        return _synthetic(cfg, "synthetic dataset (data.source = 'synthetic')", progress)
    if cfg.data_dir is not None:
        root = Path(cfg.data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"data folder not found: {root}")
        index = scan_dataset(root, cfg.format, cfg, progress=progress)
        index.note = f"{index.note} (--data-dir)"
        return index
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError(f"{ENV_DATA_DIR} points to a missing folder: {root}")
        index = scan_dataset(root, cfg.format, cfg, progress=progress)
        index.note = f"{index.note} (from {ENV_DATA_DIR})"
        return index
    if cfg.format != "pets":
        raise DataError(
            f"format '{cfg.format}' needs a data folder: set --data-dir or {ENV_DATA_DIR} "
            f"(only Oxford-IIIT Pet is downloaded)"
        )
    cached = fetch.pets_cache_root()
    if fetch.is_complete(cached):
        index = scan_pets(cached, cfg)
        index.note = f"{index.note} (downloaded copy)"
        return index
    if not download:
        return None
    try:
        root = fetch.fetch_pets(progress=progress)
    except fetch.NetworkError as exc:
        reason = str(exc).removeprefix("download failed: ")
        note = f"synthetic dataset (no data found and download unavailable: {reason})"
        return _synthetic(cfg, note, progress)
    index = scan_pets(root, cfg)
    index.note = f"{index.note} (downloaded now)"
    return index


def _synthetic(cfg: DataConfig, note: str, progress: Progress | None) -> DatasetIndex:
    size, count = cfg.image_size, cfg.synthetic_count
    root = cache_dir() / "synthetic" / f"n{count}-s{size}-seed{SYNTHETIC_SEED}"
    write_synthetic(root, count, size, SYNTHETIC_SEED)
    index = scan_dataset(root, "synthetic", cfg, progress=progress)
    index.note = note
    return index
