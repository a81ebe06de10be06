"""Image corruptions for robustness runs, deterministic for a seed, at severities 1 (mild) to 3+.

Applied to an image at its original resolution, before the model's resizing. Geometric sizes
(blur radius, rectangles) scale with the image so a severity means the same at any resolution.
Pillow's filters and encoders do the work; only noise and occlusion are drawn with numpy.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from unetq.errors import ConfigError

# Parameter per severity 1, 2, 3, 4, 5; severities past the table reuse the last entry.
LEVELS: dict[str, list[float]] = {
    "gaussian_noise": [0.04, 0.08, 0.16, 0.24, 0.32],  # sigma as a share of 255
    "gaussian_blur": [0.5, 1.0, 2.0, 3.0, 4.0],  # radius in pixels per 160 px of image
    "brightness": [0.7, 0.5, 0.3, 0.2, 0.1],  # ImageEnhance.Brightness factor
    "contrast": [0.6, 0.4, 0.2, 0.1, 0.05],  # ImageEnhance.Contrast factor
    "jpeg": [30, 15, 5, 3, 1],  # JPEG quality
    "downscale": [2, 4, 8, 12, 16],  # shrink factor before scaling back up
    "occlusion": [0.10, 0.20, 0.35, 0.5, 0.6],  # share of the image covered by rectangles
}


def _level(condition: str, severity: int) -> float:
    table = LEVELS[condition]
    return table[min(severity, len(table)) - 1]


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def gaussian_noise(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    x = np.asarray(image, dtype=np.float32)
    x = x + rng.normal(0.0, level * 255.0, size=x.shape)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def gaussian_blur(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    radius = level * max(image.size) / 160.0
    return image.filter(ImageFilter.GaussianBlur(radius))


def brightness(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(level)


def contrast(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(level)


def jpeg(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(level))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def downscale(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    small = image.resize((max(1, round(w / level)), max(1, round(h / level))), Image.BILINEAR)
    return small.resize((w, h), Image.BILINEAR)


def occlusion(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Grey rectangles at random places until `level` of the area is covered (overlaps allowed)."""
    x = np.asarray(image).copy()
    h, w = x.shape[:2]
    target = level * h * w
    covered = np.zeros((h, w), bool)
    for _ in range(64):
        if covered.sum() >= target:
            break
        rh = int(rng.uniform(0.1, 0.35) * h) + 1
        rw = int(rng.uniform(0.1, 0.35) * w) + 1
        top, left = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        covered[top : top + rh, left : left + rw] = True
    x[covered] = 128
    return Image.fromarray(x)


CONDITIONS: dict[str, Callable[[Image.Image, float, np.random.Generator], Image.Image]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "brightness": brightness,
    "contrast": contrast,
    "jpeg": jpeg,
    "downscale": downscale,
    "occlusion": occlusion,
}


def check_conditions(names: list[str], severities: list[int]) -> None:
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise ConfigError(
            f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(CONDITIONS)}"
        )
    if any(s < 1 for s in severities):
        raise ConfigError("robustness severities start at 1 (0 is the clean image)")


def apply_condition(
    image: np.ndarray, condition: str, severity: int, seed: int = 0, key: str = ""
) -> np.ndarray:
    """Corrupt one uint8 RGB image; equal (seed, key, condition, severity) give equal pixels."""
    check_conditions([condition], [severity])
    rng = _rng(seed, f"{key}/{condition}/{severity}")
    out = CONDITIONS[condition](Image.fromarray(image), _level(condition, severity), rng)
    return np.asarray(out.convert("RGB"), dtype=np.uint8)
