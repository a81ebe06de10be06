"""`unetq predict`: segment a user's own images with any variant; masks at each image's size."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from unetq.config import tile_overlap
from unetq.data import read_image
from unetq.errors import UnetqError
from unetq.fileio import atomic_path
from unetq.models import to_input
from unetq.runfolder import run_of_artifact
from unetq.runtimes import load_segmenter

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
OVERLAY_COLORS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    dtype=np.uint8,
)


@dataclass
class PredictResult:
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    ms_per_image: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.ms_per_image) if self.ms_per_image else None


def default_runtime(model: Path) -> str:
    """The runtime of a model file, by its suffix: .keras/.h5 keras, .xml openvino, else litert."""
    return {".keras": "keras", ".h5": "keras", ".xml": "openvino"}.get(model.suffix, "litert")


def run_tile_overlap(model: Path) -> int | None:
    """The tile overlap of the tile-mode study `model` belongs to; None otherwise."""
    run = run_of_artifact(model)
    if run is None:
        return None
    return tile_overlap(run.load_config().data)


def list_images(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    raise UnetqError(f"no such image file or folder: {source}")


def predict_images(
    model: Path,
    source: Path,
    out_dir: Path,
    runtime: str | None = None,
    threads: int = 1,
    background_class: int = 0,
    progress=None,
    tile_overlap: int | None = None,
) -> PredictResult:
    """Write <stem>_mask.png (class ids) and <stem>_overlay.png for every readable image.

    Each image is resized to the model's input and its class map back to the image's size, or,
    with `tile_overlap` (tile mode), segmented at its own size by overlapping tiles."""
    if not model.exists():
        raise UnetqError(f"model file not found: {model}")
    files = list_images(source)
    segmenter = load_segmenter(runtime or default_runtime(model), model, threads, tile_overlap)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PredictResult()
    task = progress.add_task("predict", total=len(files)) if progress else None
    for path in files:
        try:
            image = read_image(path)
        except Exception as exc:  # unreadable or not an image: skip it, keep going
            result.skipped.append(
                (str(path), str(exc).splitlines()[0] if str(exc) else "unreadable")
            )
            if progress:
                progress.advance(task)
            continue
        start = time.perf_counter_ns()
        if tile_overlap is not None:
            mask = segmenter.predict([image])[0]
        else:
            mask = _resized_prediction(segmenter, image)
        result.ms_per_image.append((time.perf_counter_ns() - start) / 1e6)
        _save_png(out_dir / f"{path.stem}_mask.png", mask)
        _save_png(out_dir / f"{path.stem}_overlay.png", overlay(image, mask, background_class))
        result.written.append(str(path))
        if progress:
            progress.advance(task)
    return result


def _resized_prediction(predictor, image: np.ndarray) -> np.ndarray:
    """The class map of `image` resized to the model's input, resized back to its own size."""
    height, width = predictor.input_hw
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    classes = np.argmax(predictor.run(to_input(resized[None]))[0], axis=-1).astype(np.uint8)
    return np.asarray(
        Image.fromarray(classes).resize((image.shape[1], image.shape[0]), Image.NEAREST)
    )


def overlay(image: np.ndarray, mask: np.ndarray, background_class: int) -> np.ndarray:
    """Blend a colour per foreground class over the image; background stays as it is."""
    out = image.astype(np.float32)
    for cls in np.unique(mask):
        if cls == background_class:
            continue
        sel = mask == cls
        out[sel] = 0.5 * out[sel] + 0.5 * OVERLAY_COLORS[int(cls) % len(OVERLAY_COLORS)]
    return out.astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
