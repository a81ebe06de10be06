"""The data layer: find, fetch, index, decode once, cache and serve segmentation datasets.

Formats: Oxford-IIIT Pet in its official layout ('pets'), generic images/ + masks/ folders
('folder') and the built-in synthetic dataset ('synthetic'). Arrays are uint8; no TensorFlow.
"""

from __future__ import annotations

from unetq.data.cache import (
    cache_dir,
    load_inputs,
    load_native,
    load_split,
    load_whole,
    read_mask,
)
from unetq.data.check import CheckReport, check_dataset
from unetq.data.fetch import NetworkError, fetch_pets
from unetq.data.images import read_image
from unetq.data.index import ALL_SPLIT, SPLITS, DatasetIndex, Pair, SplitArrays
from unetq.data.source import detect_format, open_dataset, scan_dataset
from unetq.data.synthetic import write_synthetic
from unetq.data.tiles import NativeSplit, grid_tiles, mean_tiles_per_image, random_tiles

__all__ = [
    "ALL_SPLIT",
    "SPLITS",
    "CheckReport",
    "DatasetIndex",
    "NativeSplit",
    "NetworkError",
    "Pair",
    "SplitArrays",
    "cache_dir",
    "check_dataset",
    "detect_format",
    "fetch_pets",
    "grid_tiles",
    "load_inputs",
    "load_native",
    "load_split",
    "load_whole",
    "mean_tiles_per_image",
    "open_dataset",
    "read_image",
    "random_tiles",
    "read_mask",
    "scan_dataset",
    "write_synthetic",
]
