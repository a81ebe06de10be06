"""Generic folder datasets: images/<stem>.* paired with masks/<stem>.* (any Pillow format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from unetq.config import DataConfig
from unetq.data.cache import cache_dir, file_signature, parallel_map
from unetq.data.images import image_size, mask_value_set, pair_by_stem, read_mask_raw
from unetq.data.index import DatasetIndex, Pair, limit_splits, seed_split
from unetq.errors import DataError
from unetq.fileio import write_json

if TYPE_CHECKING:
    from rich.progress import Progress

SCAN_VERSION = 1
# Masks whose values are neither binary (0/255, 0/1) nor small class ids need an explicit
# data.mask_values mapping (a grey-level mask would otherwise become 256 classes).
MAX_AUTO_CLASSES = 32


def is_folder_layout(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


def scan_folder(
    root: Path,
    cfg: DataConfig,
    *,
    fmt: str = "folder",
    progress: Progress | None = None,
) -> DatasetIndex:
    """Index a folder dataset; decodes every mask once (cached) to learn its values."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DataError(f"not a folder dataset (images/ + masks/; no {sub}/): {root}")
    pairs, images, skipped, unmatched = pair_by_stem(root / "images", root / "masks", root)
    names = [p.name for p in pairs]

    values = scan_mask_values(pairs, progress)
    mapping, binary = _mapping(values, pairs, cfg, root)
    num_classes = max(mapping.values()) + 1
    background = 0 if cfg.background_class is None else cfg.background_class
    if not 0 <= background < num_classes:
        raise DataError(
            f"background_class {background} is not among the {num_classes} classes: {root}"
        )
    class_names = ["foreground"] * 2 if binary else [f"class{i}" for i in range(num_classes)]
    class_names[background] = "background"

    note = f"folder dataset at {root}"
    if cfg.split == "official":
        note += " (no split lists: split by seed)"
    by_file = seed_split([images[n].name for n in names], cfg.split_seed)
    splits = {k: [Path(f).stem for f in v] for k, v in by_file.items()}
    splits = limit_splits(splits, cfg.limit, cfg.split_seed)
    return DatasetIndex(
        root=root,
        format=fmt,
        pairs=pairs,
        skipped=skipped,
        unmatched=unmatched,
        splits=splits,
        num_classes=num_classes,
        background_class=background,
        class_names=class_names,
        mask_values=mapping,
        synthetic=fmt == "synthetic",
        note=note,
    )


def scan_mask_values(pairs: list[Pair], progress: Progress | None = None) -> dict[str, list[int]]:
    """Distinct raw values of every mask (checking each mask's size against its image).

    The result is cached under cache_dir()/scans, keyed by the files' paths, sizes and mtimes.
    """
    key = file_signature(p for pair in pairs for p in (pair.image, pair.mask))
    path = cache_dir() / "scans" / f"masks-v{SCAN_VERSION}-{key[:24]}.json"
    try:
        cached = json.loads(path.read_text())
        if set(cached) == {p.name for p in pairs}:
            return {k: [int(v) for v in vals] for k, vals in cached.items()}
    except (OSError, ValueError, AttributeError):
        pass

    def work(pair: Pair) -> list[int]:
        raw = read_mask_raw(pair.mask)
        width, height = image_size(pair.image)
        if raw.shape != (height, width):
            raise DataError(
                f"image is {width}x{height} but its mask is {raw.shape[1]}x{raw.shape[0]} "
                f"(image/mask size mismatch): {pair.mask}"
            )
        return mask_value_set(raw)

    values = dict(
        zip((p.name for p in pairs), parallel_map(work, pairs, progress, "scan masks"), strict=True)
    )
    write_json(path, values)
    return values


def _mapping(
    values: dict[str, list[int]], pairs: list[Pair], cfg: DataConfig, root: Path
) -> tuple[dict[int, int], bool]:
    """Raw value -> class id, and whether the masks are binary."""
    seen = sorted({v for vals in values.values() for v in vals})
    if cfg.mask_values:
        mapping = {int(k): int(v) for k, v in cfg.mask_values.items()}
        for pair in pairs:
            bad = [v for v in values[pair.name] if v not in mapping]
            if bad:
                raise DataError(
                    f"mask values {{{', '.join(map(str, bad[:8]))}}} outside data.mask_values "
                    f"{{{', '.join(map(str, sorted(mapping)))}}}: {pair.mask}"
                )
        return mapping, False
    if set(seen) <= {0, 255}:
        return {0: 0, 255: 1}, True
    if set(seen) <= {0, 1}:
        return {0: 0, 1: 1}, True
    if seen[0] >= 0 and seen[-1] < MAX_AUTO_CLASSES:
        return {v: v for v in range(seen[-1] + 1)}, False
    shown = ", ".join(map(str, seen[:8])) + (", ..." if len(seen) > 8 else "")
    raise DataError(
        f"masks hold values {{{shown}}}: neither binary (0/255, 0/1) nor class ids below "
        f"{MAX_AUTO_CLASSES}; set data.mask_values to map them: {root / 'masks'}"
    )
