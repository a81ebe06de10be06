"""A built-in synthetic folder dataset: circles (class 1) and rectangles (class 2) on noise.

Used when no real data is at hand (no network), so a study runs anywhere; results on it are
marked synthetic. Masks are exact: each pixel's class is the shape painted last over it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from unetq.errors import DataError

MARKER = ".unetq-synthetic.json"
CLASS_NAMES = ["background", "circle", "rectangle"]
FORMAT_VERSION = 1


def write_synthetic(root: Path, count: int, size: int, seed: int) -> Path:
    """Write `count` image/mask pairs of size x size into root/images and root/masks.

    Deterministic for (count, size, seed). The folder appears complete or not at all: it is
    written beside `root` and renamed; an existing complete copy with the same parameters is
    reused as is.
    """
    root = Path(root)
    params = {"version": FORMAT_VERSION, "count": count, "size": size, "seed": seed}
    marker = root / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == params:
                return root
        except (OSError, ValueError):
            pass
        shutil.rmtree(root)  # our own folder with other parameters
    elif root.exists() and any(root.iterdir()):
        raise DataError(f"folder exists and is not a synthetic dataset written by unetq: {root}")
    if count < 1 or size < 16:
        raise DataError(f"synthetic dataset needs count >= 1 and size >= 16: {root}")

    tmp = root.parent / f".{root.name}.writing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    try:
        rng = np.random.default_rng(seed)
        digits = max(4, len(str(count - 1)))
        for i in range(count):
            image, mask = synthetic_pair(rng, size)
            name = f"synth_{i:0{digits}d}.png"
            Image.fromarray(image).save(tmp / "images" / name)
            Image.fromarray(mask).save(tmp / "masks" / name)
        (tmp / MARKER).write_text(json.dumps(params))
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def synthetic_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image uint8 [S, S, 3] and its exact class mask uint8 [S, S]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = _background(rng, size, yy, xx)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        colour = rng.uniform(0, 255, size=3)
        if rng.random() < 0.5:
            r = rng.uniform(0.08, 0.22) * size
            cy, cx = rng.uniform(r, size - r, size=2)
            region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            class_id = 1
        else:
            h, w = rng.uniform(0.12, 0.4, size=2) * size
            y0, x0 = rng.uniform(0, size - h), rng.uniform(0, size - w)
            region = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
            class_id = 2
        shade = 1.0 + 0.15 * np.sin(xx / rng.uniform(3, 9))[..., None]
        image = np.where(region[..., None], colour * shade, image)
        mask[region] = class_id
    image = image + rng.normal(0, 12, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray):
    """A textured background: a base colour, a few random stripes and waves."""
    base = rng.uniform(40, 215, size=3)
    texture = np.zeros((size, size), dtype=np.float32)
    for _ in range(3):
        fy, fx = rng.uniform(-0.4, 0.4, size=2)
        texture += np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * np.pi))
    return base + 20.0 * texture[..., None] * rng.uniform(0.3, 1.0, size=3)
