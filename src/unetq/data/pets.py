"""Oxford-IIIT Pet in its official layout: images/, annotations/trimaps/, annotations/*.txt."""

from __future__ import annotations

from pathlib import Path

from unetq.config import DataConfig
from unetq.data.images import pair_by_stem
from unetq.data.index import DatasetIndex, limit_splits, official_split, seed_split
from unetq.errors import DataError

# Trimap 1/2/3 -> class 0 pet / 1 background / 2 border (label - 1, as the study did).
TRIMAP_VALUES = {1: 0, 2: 1, 3: 2}
CLASS_NAMES = ["pet", "background", "border"]
BACKGROUND_CLASS = 1


def is_pets_layout(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "annotations" / "trimaps").is_dir()


def read_list(path: Path) -> list[str]:
    """Names of an official list file: first token of each line, '#' comment lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read split list ({exc.strerror}): {path}") from None
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def scan_pets(root: Path, cfg: DataConfig) -> DatasetIndex:
    """Index an Oxford-IIIT Pet folder without decoding any image."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    for sub in ("images", "annotations/trimaps"):
        if not (root / sub).is_dir():
            hint = "; images/ + masks/ is a folder dataset: use format 'folder'"
            hint = hint if (root / "masks").is_dir() else ""
            raise DataError(f"not an Oxford-IIIT Pet layout (missing {sub}/{hint}): {root}")
    pairs, images, skipped, unmatched = pair_by_stem(
        root / "images", root / "annotations" / "trimaps", root, "trimaps"
    )
    names = [p.name for p in pairs]
    paired = set(names)

    lists = {}
    for list_name in ("trainval", "test"):
        list_path = root / "annotations" / f"{list_name}.txt"
        if list_path.is_file():
            lists[list_name] = [n for n in read_list(list_path) if n in paired]

    if cfg.split == "official":
        missing = [f"{k}.txt" for k in ("trainval", "test") if k not in lists]
        if missing:
            raise DataError(
                f"split 'official' needs {' and '.join(missing)}: {root / 'annotations'}"
            )
        splits = official_split(lists["trainval"], lists["test"], cfg.split_seed)
    else:
        # The study shuffled the sorted file names of every image in images/ (unmatched ones
        # too); names without a trimap are dropped after the cut so the split stays the same.
        by_file = seed_split([p.name for p in images.values()], cfg.split_seed)
        stems = {k: [Path(f).stem for f in v] for k, v in by_file.items()}
        splits = {k: [n for n in v if n in paired] for k, v in stems.items()}
    splits = limit_splits(splits, cfg.limit, cfg.split_seed)

    background = BACKGROUND_CLASS if cfg.background_class is None else cfg.background_class
    if not 0 <= background < len(CLASS_NAMES):
        raise DataError(f"background_class {background} is not one of the 3 pet classes: {root}")
    return DatasetIndex(
        root=root,
        format="pets",
        pairs=pairs,
        skipped=skipped,
        unmatched=unmatched,
        splits=splits,
        num_classes=len(CLASS_NAMES),
        background_class=background,
        class_names=list(CLASS_NAMES),
        mask_values=dict(TRIMAP_VALUES),
        synthetic=False,
        note=f"Oxford-IIIT Pet at {root}",
        lists=lists,
    )
