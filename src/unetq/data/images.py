"""Decoding images and masks by content (not by extension), and listing image files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from unetq.errors import DataError

# Files with these extensions are taken as images without opening them; any other file is
# probed by content and skipped (with a reason) when Pillow does not recognise it.
IMAGE_EXTS = frozenset(
    [".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"]
    + [".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".tga"]
)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def list_images(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Image files of `folder` by stem (sorted), and skipped files as (path, reason).

    Hidden files (a leading '.', e.g. the '._*' AppleDouble files of the official pets
    annotations archive) are metadata, not data: they are ignored without being counted.
    """
    images: dict[str, Path] = {}
    skipped: list[tuple[str, str]] = []
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list folder ({exc.strerror}): {folder}") from None
    for path in entries:
        reason = _skip_reason(path)
        if reason is None and path.stem in images:
            reason = f"another image is also named '{path.stem}'"
        if reason is None:
            images[path.stem] = path
        else:
            skipped.append((str(path), reason))
    return images, skipped


def _skip_reason(path: Path) -> str | None:
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in IMAGE_EXTS or _is_image(path):
        return None
    return f"not an image file ({path.suffix or 'no extension'})"


def _is_image(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return bool(im.format)
    except _DECODE_ERRORS:
        return False


def _decode(path: Path, what: str, convert):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Palette images with transparency"
            with Image.open(path) as im:
                im.load()
                return convert(im)
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except DataError:
        raise
    except _DECODE_ERRORS as exc:
        reason = (
            str(exc).replace(f"'{path}'", "").replace(str(path), "").strip() or type(exc).__name__
        )
        reason = reason.splitlines()[0]
        raise DataError(f"unreadable {what} ({reason}): {path}") from None


def read_image(path: Path | str) -> np.ndarray:
    """Decode any Pillow-readable image as uint8 RGB [H, W, 3].

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images become 3-channel RGB.
    """
    return _decode(Path(path), "image", _to_rgb)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or grey.max(initial=0) > 255:
            grey = grey / 257.0
        elif im.mode == "F" and grey.max(initial=0) <= 1.0:
            grey = grey * 255.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def read_mask_raw(path: Path | str) -> np.ndarray:
    """Decode a mask as its raw integer values [H, W] (no class mapping).

    Grey palettes (e.g. GIF) give their grey levels; colour palettes give palette indices
    (class-index masks such as PASCAL VOC); RGB masks must be grey (R == G == B).
    """
    path = Path(path)
    return _decode(path, "mask", lambda im: _mask_values(im, path))


def _mask_values(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode == "P":
        index = np.asarray(im)
        palette = np.asarray(im.getpalette() or [], dtype=np.int32).reshape(-1, 3)
        used = np.flatnonzero(np.bincount(index.ravel(), minlength=1))
        if (
            len(palette) > used.max()
            and np.all(palette[used, 0] == palette[used, 1])
            and np.all(palette[used, 1] == palette[used, 2])
        ):
            return palette[:, 0].astype(np.uint8)[index]
        return index.astype(np.uint8)
    if im.mode == "1":
        return np.asarray(im, dtype=np.uint8)
    if im.mode in ("L", "I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(im)
        return values if values.dtype == np.uint8 else values.astype(np.int64)
    if im.mode == "F":
        values = np.asarray(im)
        if not np.all(values == np.round(values)) or values.min(initial=0) < 0:
            raise DataError(f"mask has non-integer values (float image): {path}")
        return values.astype(np.int64)
    if im.mode in ("LA", "La"):
        return np.asarray(im)[..., 0].copy()
    rgb = np.asarray(im.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        raise DataError(
            f"colour mask ({im.mode}) is not supported; save class ids or grey levels: {path}"
        )
    return rgb[..., 0].copy()


def mask_value_set(raw: np.ndarray) -> list[int]:
    """Distinct values of a raw mask, ascending."""
    if raw.size == 0:
        return []
    if raw.min() < 0:
        return [int(v) for v in np.unique(raw)]
    return [int(v) for v in np.flatnonzero(np.bincount(raw.ravel()))]


def map_mask(raw: np.ndarray, mapping: dict[int, int], path: Path | str) -> np.ndarray:
    """Raw mask values -> uint8 class ids; a value outside the mapping is a DataError."""
    values = mask_value_set(raw)
    bad = [v for v in values if v not in mapping]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        known = ", ".join(str(k) for k in sorted(mapping))
        raise DataError(f"mask values {{{shown}}} outside the mapping {{{known}}}: {path}")
    lut = np.zeros(max(values, default=0) + 1, dtype=np.uint8)
    for raw_value, class_id in mapping.items():
        if 0 <= raw_value < len(lut):
            lut[raw_value] = class_id
    return lut[raw]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except _DECODE_ERRORS:
        raise DataError(f"unreadable image (not an image file): {path}") from None


def pair_by_stem(
    image_dir: Path, mask_dir: Path, root: Path, mask_word: str = "masks"
) -> tuple[list, dict[str, Path], list[tuple[str, str]], list[str]]:
    """Pairs matched by file stem, every image by stem, skipped files, files without partner."""
    from unetq.data.index import Pair

    images, skipped = list_images(image_dir)
    masks, skipped_masks = list_images(mask_dir)
    skipped += skipped_masks
    if not images:
        raise DataError(f"no images in {image_dir}")
    names = sorted(set(images) & set(masks))
    unmatched = [str(images[n]) for n in images if n not in masks]
    unmatched += [str(masks[n]) for n in masks if n not in images]
    if not names:
        raise DataError(
            f"no image/mask pairs: {len(images)} images and {len(masks)} {mask_word} share no "
            f"name: {root}"
        )
    return [Pair(n, images[n], masks[n]) for n in names], images, skipped, unmatched
