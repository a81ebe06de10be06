"""Decode every pair of a dataset to prove it is usable, and gather what `data check` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unetq.config import DataConfig, FormatOrAuto, SplitProcedure, not_one_of
from unetq.data.cache import (
    decode_pair,
    load_cached,
    parallel_map,
    resize_pair,
    save_cached,
    split_cache_path,
)
from unetq.data.index import SPLITS, DatasetIndex, Pair, SplitArrays
from unetq.data.source import detect_format, open_dataset
from unetq.errors import ConfigError, DataError

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass
class CheckReport:
    pairs: int
    decoded: int = 0
    class_pixels: list[int] = field(default_factory=list)
    min_size: tuple[int, int] | None = None  # (width, height) of the smallest image
    max_size: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)  # one line each
    cache_files: dict[str, Path] = field(default_factory=dict)  # split -> cached arrays

    @property
    def class_shares(self) -> list[float]:
        total = sum(self.class_pixels)
        return [c / total if total else 0.0 for c in self.class_pixels]

    @property
    def ok(self) -> bool:
        return not self.problems and self.decoded == self.pairs


def check_dataset(
    index: DatasetIndex, size: int | None = None, progress: Progress | None = None
) -> CheckReport:
    """Decode every image and mask at full resolution; collect problems instead of stopping.

    With `size`, the resized splits are also written to the array cache (when the whole
    dataset is readable), so training later decodes nothing.
    """
    report = CheckReport(pairs=len(index.pairs), class_pixels=[0] * index.num_classes)
    resized: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def work(pair: Pair):
        try:
            image, mask = decode_pair(index, pair)
        except DataError as exc:
            return pair, None, str(exc)
        counts = np.bincount(mask.ravel(), minlength=index.num_classes)
        small = resize_pair(image, mask, size) if size else None
        return pair, (image.shape[1], image.shape[0], counts, small), None

    areas: list[tuple[int, int, int]] = []
    for pair, info, problem in parallel_map(work, index.pairs, progress, "decode all pairs"):
        if problem is not None:
            report.problems.append(problem)
            continue
        width, height, counts, small = info
        report.decoded += 1
        areas.append((width * height, width, height))
        for c, n in enumerate(counts):
            report.class_pixels[c] += int(n)
        if small is not None:
            resized[pair.name] = small
    if areas:
        report.min_size = min(areas)[1:]
        report.max_size = max(areas)[1:]
    if size and report.ok:
        for split in SPLITS:
            report.cache_files[split] = _cache_split(index, split, size, resized)
    return report


def _cache_split(index: DatasetIndex, split: str, size: int, resized: dict) -> Path:
    names = list(index.splits.get(split, []))
    path = split_cache_path(index, split, names, size)
    if load_cached(path, names, size) is None:
        images = np.zeros((len(names), size, size, 3), dtype=np.uint8)
        masks = np.zeros((len(names), size, size), dtype=np.uint8)
        for i, name in enumerate(names):
            images[i], masks[i] = resized[name]
        save_cached(path, SplitArrays(names=names, images=images, masks=masks))
    return path


def skipped_by_reason(index: DatasetIndex, examples: int = 3) -> list[tuple[str, int, list[str]]]:
    """(reason, count, a few file names) for the skipped files, most frequent first."""
    groups: dict[str, list[str]] = {}
    for path, reason in index.skipped:
        groups.setdefault(reason, []).append(Path(path).name)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [(reason, len(names), names[:examples]) for reason, names in ordered]


def check_folder(
    data_dir: Path | None,
    fmt: str = "auto",
    size: int = 160,
    split: str = "seed",
    progress: Progress | None = None,
) -> tuple[DatasetIndex, CheckReport, DataConfig]:
    """`unetq data check`: index the dataset (layout detected for 'auto'), decode every pair,
    cache the splits at `size` px (0: don't). DataError when any pair is unusable."""
    if reason := not_one_of(fmt, FormatOrAuto):
        raise ConfigError(f"--format {reason}")
    if reason := not_one_of(split, SplitProcedure):
        raise ConfigError(f"--split {reason}")
    if size and not 16 <= size <= 1024:
        raise ConfigError(f"--size {size} must be 0 or between 16 and 1024")
    if fmt == "auto":
        fmt = detect_format(data_dir) if data_dir is not None and data_dir.is_dir() else "pets"
    cfg = DataConfig(format=fmt, data_dir=data_dir, split=split, image_size=size or 160)
    index = open_dataset(cfg, progress=progress)
    report = check_dataset(index, size or None, progress=progress)
    return index, report, cfg


def problems_error(report: CheckReport) -> DataError | None:
    if not report.problems:
        return None
    return DataError(
        f"{len(report.problems)} of {report.pairs} pairs unusable (first: {report.problems[0]})"
    )
