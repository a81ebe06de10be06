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
from unetq.runfolder import RunFolder, read_csv, read_json, run_of_artifact
from unetq.runtimes import Setting, load_segmenter, usable_cores

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
    """The runtime of a model file, by its suffix: .keras/.h5 keras, .xml openvino, .onnx
    onnxruntime, else litert."""
    return {".keras": "keras", ".h5": "keras", ".xml": "openvino", ".onnx": "onnxruntime"}.get(
        model.suffix, "litert"
    )


def run_tile_overlap(model: Path) -> int | None:
    """The tile overlap of the tile-mode study `model` belongs to; None otherwise."""
    run = run_of_artifact(model)
    if run is None:
        return None
    return tile_overlap(run.load_config().data)


@dataclass(frozen=True)
class Chosen:
    """What `unetq predict --run` segments with: the run's recommended variant and setting."""

    artifact: Path
    runtime: str
    threads: int
    background_class: int
    tile_overlap: int | None
    why: str  # one line for the user
    setting: Setting | None = None  # images per call (None: the runtime's own default)


def recommended(run_dir: Path, threads: int | None = None) -> Chosen:
    """The variant `unetq recommend --objective throughput` picks for the run's best model (the
    default budgets; keras itself where nothing compressed is faster within them), with the
    setting that gave it, at `threads` (default: every usable core), or at the largest thread
    count the run measured below it (else its largest); the latency recommendation where the
    run has no throughput at that count. With the run's background class and tile overlap."""
    from unetq.recommend import Budgets, recommend

    run = RunFolder(run_dir)
    threads = _measured_threads(run, threads or usable_cores(), throughput=True)
    try:
        [rec] = recommend(run_dir, Budgets(threads=threads, objective="throughput"))
    except UnetqError:  # not measured for throughput (an older run, or turned off)
        threads = _measured_threads(run, threads)
        [rec] = recommend(run_dir, Budgets(threads=threads))
    pick = rec.chosen or rec.keras
    setting = Setting.parse(pick.setting) if pick.setting else None
    how = f" at {pick.setting}" if pick.setting else ""
    background = int(read_json(run.dataset).get("background_class", 0))
    why = (
        f"{rec.model_id} {pick.variant} on {pick.runtime}{how}, recommended for "
        f"{rec.budgets.objective} at {threads} thread(s)"
    )
    overlap = tile_overlap(run.load_config().data)
    return Chosen(pick.artifact, pick.runtime, threads, background, overlap, why, setting)


def _measured_threads(run: RunFolder, wanted: int, throughput: bool = False) -> int:
    """`wanted`, or the largest thread count the run's bench measured (for throughput) below
    it, else its largest (a run benchmarked on another machine)."""
    average = read_csv(run.average_csv)
    if "threads" not in average:
        return wanted  # recommend says what is missing
    if throughput:
        if "throughput_images_per_s" not in average:
            return wanted
        average = average.dropna(subset=["throughput_images_per_s"])
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
    setting: Setting | None = None,
    overlays: bool = True,
) -> PredictResult:
    """Write <stem>_mask.png (class ids) and <stem>_overlay.png (unless `overlays` is False) for
    every readable image.

    Each image is resized to the model's input and its class map back to the image's size, or,
    with `tile_overlap` (tile mode), segmented at its own size by overlapping tiles. The model
    runs on `threads` cores (default: all) while the next images are decoded and the finished
    ones written by other threads (PIL and numpy release the GIL while they work). `setting`:
    images (resize mode) or tiles (tile mode) per model call, or openvino's asynchronous
    requests."""
    if not model.exists():
        raise UnetqError(f"model file not found: {model}")
    files = list_images(source)
    threads = threads or usable_cores()
    runtime = runtime or default_runtime(model)
    segmenter = load_segmenter(runtime, model, threads, tile_overlap, setting)
    # images go to the model together, `batch` of them (tile mode: their tiles, so that only
    # the last call of `batch` images of tiles is a partial batch)
    together = segmenter.batch
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
        chunk: list[tuple[Path, np.ndarray]] = []
        try:
            read = _read_ahead(reader, files, max(READ_AHEAD, 2 * together))
            for n, (path, image) in enumerate(read, start=1):
                skipped = True
                if path.stem in stems:  # its outputs would overwrite the other image's
                    result.skipped.append((str(path), f"same name as {stems[path.stem].name}"))
                elif isinstance(image, Exception):  # unreadable or not an image: skip it
                    result.skipped.append((str(path), first_line(image) or "unreadable"))
                else:
                    stems[path.stem] = path
                    chunk.append((path, image))
                    skipped = False
                if progress and skipped:
                    progress.advance(task)
                if chunk and (len(chunk) == together or n == len(files)):
                    masks = _timed_segment(segmenter, [im for _, im in chunk], tile_overlap, result)
                    for (done, image), mask in zip(chunk, masks, strict=True):
                        background = background_class if overlays else None
                        job = writer.submit(_write, out_dir, done, image, mask, background)
                        written.append(job)
                        result.written.append(str(done))
                    if progress:
                        progress.advance(task, len(chunk))
                    chunk = []
                _check_done(written)
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


def _read_ahead(reader: ThreadPoolExecutor, files: list[Path], ahead: int = READ_AHEAD):
    """(path, image or the exception reading it raised), in order, decoded `ahead` images
    ahead of the caller."""

    def read(path: Path):
        try:
            return read_image(path)
        except Exception as exc:
            return exc

    pending = [(path, reader.submit(read, path)) for path in files[:ahead]]
    for i in range(len(files)):
        path, future = pending.pop(0)
        if i + ahead < len(files):
            pending.append((files[i + ahead], reader.submit(read, files[i + ahead])))
        yield path, future.result()


def _timed_segment(segmenter, images: list[np.ndarray], tile_overlap, result: PredictResult):
    """Class maps of `images` (one model call per batch); ms per image into `result`."""
    start = time.perf_counter_ns()
    if tile_overlap is not None:
        masks = segmenter.predict(images)
    else:
        masks = _resized_predictions(segmenter, images)
    ms = (time.perf_counter_ns() - start) / 1e6 / len(images)
    result.ms_per_image += [ms] * len(images)
    return masks


def _write(out_dir: Path, path: Path, image: np.ndarray, mask: np.ndarray, background: int | None):
    """The mask PNG, and the overlay PNG unless `background` is None."""
    _save_png(out_dir / f"{path.stem}_mask.png", mask)
    if background is not None:
        _save_png(out_dir / f"{path.stem}_overlay.png", overlay(image, mask, background))


def _check_done(written: list[Future]) -> None:
    """Raise a finished write's error now; drop finished writes from the list, and wait for
    the oldest while more than WRITE_BEHIND are pending (each holds an image in memory)."""
    while written and (written[0].done() or len(written) > WRITE_BEHIND):
        written.pop(0).result()


def _resized_predictions(predictor, images: list[np.ndarray]) -> list[np.ndarray]:
    """The class map of each image resized to the model's input, resized back to its size."""
    height, width = predictor.input_hw
    resized = np.stack(
        [np.asarray(Image.fromarray(im).resize((width, height), Image.BILINEAR)) for im in images]
    )
    classes = predictor.predict(resized)
    return [
        np.asarray(Image.fromarray(c).resize((im.shape[1], im.shape[0]), Image.NEAREST))
        for c, im in zip(classes, images, strict=True)
    ]


def overlay(image: np.ndarray, mask: np.ndarray, background_class: int) -> np.ndarray:
    """Blend a colour per foreground class over the image; background stays as it is."""
    out = image.astype(np.float32)
    for cls in np.unique(mask):
        if cls == background_class:
            continue
        sel = mask == cls
        out[sel] = 0.5 * out[sel] + 0.5 * OVERLAY_COLORS[int(cls) % len(OVERLAY_COLORS)]
    return out.astype(np.uint8)


# zlib level 1: overlays are written 3x faster than at PNG's default 6, about a fifth larger
# (measured: docs/MEASURED.md); the writing would otherwise take more of the cores than the model
PNG_LEVEL = 1


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=PNG_LEVEL)
