"""`unetq predict`: segment a user's own images with any variant; masks at each image's size."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from unetq.config import tile_overlap
from unetq.data import read_image
from unetq.errors import UnetqError, first_line
from unetq.fileio import atomic_path
from unetq.models import to_input
from unetq.runfolder import RunFolder, read_csv, read_json, run_of_artifact
from unetq.runtimes import load_segmenter, usable_cores

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
OVERLAY_COLORS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
    dtype=np.uint8,
)


@dataclass
class PredictResult:
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    ms_per_image: list[float] = field(default_factory=list)  # resize or tiles, and model calls
    seconds: float = 0.0  # wall time from the first image read to the last file written
    threads: int = 1

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.ms_per_image) if self.ms_per_image else None

    @property
    def images_per_s(self) -> float | None:
        return len(self.written) / self.seconds if self.written and self.seconds > 0 else None


def default_runtime(model: Path) -> str:
    """The runtime of a model file, by its suffix: .keras/.h5 keras, .xml openvino, else litert."""
    return {".keras": "keras", ".h5": "keras", ".xml": "openvino"}.get(model.suffix, "litert")


def run_tile_overlap(model: Path) -> int | None:
    """The tile overlap of the tile-mode study `model` belongs to; None otherwise."""
    run = run_of_artifact(model)
    if run is None:
        return None
    return tile_overlap(run.load_config().data)


@dataclass(frozen=True)
class Chosen:
    """What `unetq predict --run` segments with: the run's recommended variant."""

    artifact: Path
    runtime: str
    threads: int
    background_class: int
    tile_overlap: int | None
    why: str  # one line for the user


def recommended(run_dir: Path, threads: int | None = None) -> Chosen:
    """The variant `unetq recommend` picks for the run's best model (the default budgets; keras
    itself where nothing compressed is faster within them) at `threads` (default: every usable
    core), or at the largest thread count the run measured below it (else its largest), with
    the run's background class and tile overlap."""
    from unetq.recommend import Budgets, recommend

    run = RunFolder(run_dir)
    threads = _measured_threads(run, threads or usable_cores())
    [rec] = recommend(run_dir, Budgets(threads=threads))
    pick = rec.chosen or rec.keras
    background = int(read_json(run.dataset).get("background_class", 0))
    why = f"{rec.model_id} {pick.variant} on {pick.runtime}, recommended at {threads} thread(s)"
    overlap = tile_overlap(run.load_config().data)
    return Chosen(pick.artifact, pick.runtime, threads, background, overlap, why)


def _measured_threads(run: RunFolder, wanted: int) -> int:
    """`wanted`, or the largest thread count the run's bench measured below it, else its
    largest (a run benchmarked on another machine)."""
    average = read_csv(run.average_csv)
    if "threads" not in average:
        return wanted  # recommend says what is missing
    measured = sorted({int(t) for t in average["threads"].dropna()})
    if not measured or wanted in measured:
        return wanted
    return max([t for t in measured if t <= wanted], default=measured[-1])


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
    threads: int | None = None,
    background_class: int = 0,
    progress=None,
    tile_overlap: int | None = None,
) -> PredictResult:
    """Write <stem>_mask.png (class ids) and <stem>_overlay.png for every readable image.

    Each image is resized to the model's input and its class map back to the image's size, or,
    with `tile_overlap` (tile mode), segmented at its own size by overlapping tiles. The model
    runs on `threads` cores (default: all) while the next images are decoded and the finished
    ones written by other threads (PIL and numpy release the GIL while they work)."""
    if not model.exists():
        raise UnetqError(f"model file not found: {model}")
    files = list_images(source)
    threads = threads or usable_cores()
    segmenter = load_segmenter(runtime or default_runtime(model), model, threads, tile_overlap)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = PredictResult(threads=threads)
    task = progress.add_task("predict", total=len(files)) if progress else None
    start = time.perf_counter()
    stems: dict[str, Path] = {}
    with (
        ThreadPoolExecutor(1, "unetq-read") as reader,
        ThreadPoolExecutor(2, "unetq-write") as writer,
    ):
        written: list[Future] = []
        try:
            for path, image in _read_ahead(reader, files):
                if path.stem in stems:  # its outputs would overwrite the other image's
                    result.skipped.append((str(path), f"same name as {stems[path.stem].name}"))
                elif isinstance(image, Exception):  # unreadable or not an image: skip it
                    result.skipped.append((str(path), first_line(image) or "unreadable"))
                else:
                    stems[path.stem] = path
                    mask = _timed_segment(segmenter, image, tile_overlap is not None, result)
                    job = writer.submit(_write, out_dir, path, image, mask, background_class)
                    written.append(job)
                    result.written.append(str(path))
                _check_done(written)
                if progress:
                    progress.advance(task)
            for future in written:
                future.result()  # a failed write (a full disk) ends the command here
        except BaseException:  # Ctrl-C or a failed write: drop the queued work, stop now
            for pool in (reader, writer):
                pool.shutdown(wait=False, cancel_futures=True)
            raise
    result.seconds = time.perf_counter() - start
    return result


READ_AHEAD = 4  # images decoded ahead of the model
WRITE_BEHIND = 8  # images whose masks and overlays may still be being written


def _read_ahead(reader: ThreadPoolExecutor, files: list[Path]):
    """(path, image or the exception reading it raised), in order, decoded ahead of the caller."""

    def read(path: Path):
        try:
            return read_image(path)
        except Exception as exc:
            return exc

    pending = [(path, reader.submit(read, path)) for path in files[:READ_AHEAD]]
    for i in range(len(files)):
        path, future = pending.pop(0)
        if i + READ_AHEAD < len(files):
            ahead = files[i + READ_AHEAD]
            pending.append((ahead, reader.submit(read, ahead)))
        yield path, future.result()


def _timed_segment(segmenter, image: np.ndarray, tiled: bool, result: PredictResult):
    start = time.perf_counter_ns()
    mask = segmenter.predict([image])[0] if tiled else _resized_prediction(segmenter, image)
    result.ms_per_image.append((time.perf_counter_ns() - start) / 1e6)
    return mask


def _write(out_dir: Path, path: Path, image: np.ndarray, mask: np.ndarray, background: int):
    _save_png(out_dir / f"{path.stem}_mask.png", mask)
    _save_png(out_dir / f"{path.stem}_overlay.png", overlay(image, mask, background))


def _check_done(written: list[Future]) -> None:
    """Raise a finished write's error now; drop finished writes from the list, and wait for
    the oldest while more than WRITE_BEHIND are pending (each holds an image in memory)."""
    while written and (written[0].done() or len(written) > WRITE_BEHIND):
        written.pop(0).result()


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
