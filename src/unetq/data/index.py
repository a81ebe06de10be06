"""Dataset index records and the split procedures shared by every dataset format."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unetq.errors import DataError

SPLITS = ("train", "val", "test")
# Every pair of the dataset in name order: a foreign dataset evaluated as a whole test set.
ALL_SPLIT = "all"


@dataclass(frozen=True)
class Pair:
    """One image and its mask, matched by file stem (`name`)."""

    name: str
    image: Path
    mask: Path


@dataclass
class DatasetIndex:
    """What a dataset folder holds: pairs, what was left out and why, splits and classes."""

    root: Path
    format: str  # 'pets' | 'folder' | 'synthetic'
    pairs: list[Pair]  # sorted by name
    skipped: list[tuple[str, str]]  # (path, reason): files that are not usable images
    unmatched: list[str]  # paths of images without a mask and masks without an image
    splits: dict[str, list[str]]  # 'train' | 'val' | 'test' -> names
    num_classes: int
    background_class: int
    class_names: list[str]
    mask_values: dict[int, int]  # raw mask value -> class id
    synthetic: bool = False
    note: str = ""  # one line describing the source
    # Official split lists as found on disk (pets: 'trainval', 'test'), names that have a pair.
    lists: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {p.name: p for p in self.pairs}

    def pair(self, name: str) -> Pair:
        if len(self._by_name) != len(self.pairs):  # pairs replaced after construction
            self._by_name = {p.name: p for p in self.pairs}
        try:
            return self._by_name[name]
        except KeyError:
            raise DataError(f"no image/mask pair named '{name}' in {self.root}") from None

    def split_pairs(self, split: str) -> list[Pair]:
        """The pairs of a split in its order; 'all' is every pair in name order."""
        if split == ALL_SPLIT:
            return sorted(self.pairs, key=lambda p: p.name)
        if split not in self.splits:
            raise DataError(
                f"unknown split '{split}' (choose train, val, test or all): {self.root}"
            )
        return [self.pair(n) for n in self.splits[split]]

    def unsplit_names(self) -> list[str]:
        """Pairs that belong to no split (e.g. pets images missing from the official lists)."""
        used = {n for names in self.splits.values() for n in names}
        return [p.name for p in self.pairs if p.name not in used]


@dataclass
class SplitArrays:
    """Decoded and resized split: images uint8 [N, S, S, 3], masks uint8 class ids [N, S, S]."""

    names: list[str]
    images: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def seed_split(file_names: list[str], seed: int) -> dict[str, list[str]]:
    """The study's split: sorted file names, random.Random(seed).shuffle, cut at 80% and 90%.

    Returns file names in the shuffled order (as the study kept them).
    """
    order = sorted(file_names)
    random.Random(seed).shuffle(order)
    n = len(order)
    a, b = int(0.8 * n), int(0.9 * n)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def official_split(trainval: list[str], test: list[str], seed: int) -> dict[str, list[str]]:
    """Official lists; validation = every 10th name of trainval after a seeded shuffle.

    The sorted trainval names are shuffled with random.Random(seed); positions 0, 10, 20, ...
    go to 'val', the rest to 'train' (both in that shuffled order). 'test' is the test list
    in sorted order.
    """
    order = sorted(set(trainval))
    random.Random(seed).shuffle(order)
    val = order[::10]
    train = [name for i, name in enumerate(order) if i % 10]
    return {"train": train, "val": val, "test": sorted(set(test))}


def limit_splits(
    splits: dict[str, list[str]], limit: int | None, seed: int
) -> dict[str, list[str]]:
    """Keep `limit` names in all, shared out in proportion to the split sizes.

    Each split keeps the first k names of its sorted names shuffled with
    random.Random(f"{seed}:{split}"), in the split's own order; a non-empty split keeps at
    least one name. Deterministic for (splits, limit, seed).
    """
    total = sum(len(v) for v in splits.values())
    if limit is None or limit >= total:
        return splits
    quotas = _quotas({k: len(v) for k, v in splits.items()}, limit)
    out: dict[str, list[str]] = {}
    for split, names in splits.items():
        order = sorted(names)
        random.Random(f"{seed}:{split}").shuffle(order)
        keep = set(order[: quotas[split]])
        out[split] = [n for n in names if n in keep]
    return out


def _quotas(sizes: dict[str, int], limit: int) -> dict[str, int]:
    """Largest-remainder apportionment of `limit` over `sizes`, at least 1 per non-empty split."""
    total = sum(sizes.values())
    exact = {k: limit * n / total for k, n in sizes.items()}
    quotas = {k: int(v) for k, v in exact.items()}
    rest = limit - sum(quotas.values())
    for k in sorted(sizes, key=lambda k: exact[k] - quotas[k], reverse=True)[:rest]:
        quotas[k] += 1
    for k, n in sizes.items():
        donor = max(quotas, key=lambda d: quotas[d])
        if n and quotas[k] == 0 and quotas[donor] > 1:
            quotas[donor] -= 1
            quotas[k] = 1
    return quotas
