"""Compress: a Keras model -> one artifact per variant -> CompressRecord.

Every variant is exported with a static input shape [1, H, W, 3] (unetq.export) and converted by
its entry in the registry (unetq.variants). Artifacts are written atomically with a sidecar
`<artifact>.json` (source digest, settings, conversion time, verification), so a rerun skips
finished variants and redoes stale ones (retrained model, other settings, newer export).

Conversion path: Keras ExportArchive -> SavedModel (temporary) -> TFLiteConverter.from_saved_model,
TensorFlow's Keras 3 route. `from_concrete_functions(..., model)` with a Keras 3 model keeps the
weights as resource variables (VAR_HANDLE/READ_VARIABLE ops), which breaks int8 calibration.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import math
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from unetq.config import CompressConfig, DataConfig
from unetq.convert import ConvertInputs, Validation
from unetq.convert.tflite import check_builtin_only, conversion_error
from unetq.data import load_inputs, open_dataset
from unetq.errors import ConfigError, ModelError, UnetqError
from unetq.export import export_saved_model
from unetq.fileio import record_dict, write_bytes, write_csv, write_json
from unetq.models import to_input
from unetq.records import CompressRecord
from unetq.runfolder import (
    COMPRESSED_CSV,
    MODEL_FILE,
    artifact_path,
    artifact_size,
    file_digest,
    read_json,
    run_of_artifact,
    sidecar_path,
    variant_report,
)
from unetq.runtimes import (
    import_tensorflow,
    load_keras_model,
    load_predictor,
    native_stderr_quiet,
    segmentation_shape,
    usable_cores,
)
from unetq.variants import VARIANTS, Variant, quantization_name, validate_variants

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

# Changes when the exported graph changes, so artifacts of an older export are converted again.
# 2: nearest UpSampling2D exported as concatenation + reshape; 3: 1x1 convolutions before
# nearest upsampling (unetq.export.lower_for_export).
EXPORT_VERSION = 3
RANDOM_IMAGES_WARNING = (
    "no dataset given: calibrating and verifying on random images; int8 calibration on random "
    "data is not representative (pass --data-dir)"
)


def compression_images(train: np.ndarray, val: np.ndarray, cfg: CompressConfig):
    """(calibration, verification) uint8 images: the one rule of `unetq study` and `compress`.

    The first `calibration_images` training images calibrate int8 (the split's order is
    already a seeded shuffle); the first `verify_images` validation images check every variant
    against Keras (training images when there is no validation split).
    """
    verify = val[: cfg.verify_images] if len(val) else train[: cfg.verify_images]
    return train[: cfg.calibration_images], verify


def guard_validation(val, cfg: CompressConfig, num_classes: int, background_class: int):
    """The labelled images guarded variants hold their accuracy on: the first `guard_images`
    of the validation split (None when it is empty)."""
    if val is None or not len(val.images):
        return None
    n = cfg.guard_images
    return Validation(to_input(val.images[:n]), val.masks[:n], num_classes, background_class)


def compress_model(
    model_path: Path,
    variants: list[str],
    out_dir: Path,
    calibration: np.ndarray | None,
    verify: np.ndarray,
    cfg: CompressConfig,
    progress: Progress | None = None,
    model_id: str | None = None,
    validation: Validation | None = None,
) -> list[CompressRecord]:
    """Convert `model_path` into `variants` under `out_dir` and check each against Keras.

    calibration: uint8 [N, H, W, 3] (needed by int8 variants); verify: uint8 [K, H, W, 3];
    validation: labelled images for the guarded variants (guard_validation).
    convert_seconds is the converter's own time; the one-off SavedModel export is not in it.
    agreement / max_abs_diff compare each variant's runtime with Keras on the K verification
    images (the keras row is the reference: 1.0 / 0.0); max_abs_diff is in the model's output
    units (probabilities for a softmax head). A variant that cannot be made (a layer a converter
    cannot handle, no validation images for a guard) gets a record with its one-line `error`,
    and the other variants go on.
    """
    names = validate_variants(variants)
    model_path, out_dir = Path(model_path), Path(out_dir)
    model = _load_model(model_path)
    h, w, _ = segmentation_shape(model, model_path)
    hw = _image_hw(verify, "verification", (h, w), model_path)
    if any(VARIANTS[n].calibrated for n in names):
        if calibration is None or not len(calibration):
            raise UnetqError("int8/int16x8 variants need calibration images; none were given")
        _image_hw(calibration, "calibration", hw, model_path)
    model_id = model_id or default_model_id(model_path)
    job = _Job(model, model_path, hw, calibration, verify, cfg, validation)
    records: list[CompressRecord] = []
    task = progress.add_task(f"compress {model_id}", total=len(names)) if progress else None
    try:
        for name in names:
            if progress is not None:
                progress.update(task, description=f"compress {model_id}: {name}")
            try:
                records.append(job.record(model_id, VARIANTS[name], out_dir))
            except UnetqError as exc:
                records.append(failed_record(model_id, name, str(exc)))
            if progress is not None:
                progress.advance(task)
        made = [r for r in records if not r.error]
        fp32 = next((r.size_bytes for r in made if r.variant == "tflite-fp32"), None)
        if fp32 is None and made:
            with contextlib.suppress(UnetqError):  # then the ratios stay empty
                fp32 = job.fp32_size(out_dir)
        for rec in made if fp32 else []:
            rec.size_ratio_to_fp32 = rec.size_bytes / fp32
    finally:
        job.close()
        if progress is not None:
            progress.remove_task(task)
    return records


def compress_models(
    model_paths: list[Path],
    variants: list[str],
    calibration: np.ndarray | None,
    verify: np.ndarray,
    cfg: CompressConfig,
    progress: Progress | None = None,
    workers: int | None = None,
    validation: Validation | None = None,
) -> list[CompressRecord]:
    """compress_model for several models (each into its own folder), `workers` at a time.

    The TFLite converter runs on one core, so converting two models at once in separate
    processes nearly halves the step on a 2-core machine. Records come back in input order.
    """
    model_paths = [Path(p) for p in model_paths]
    workers = max(1, min(workers or usable_cores(), len(model_paths)))
    if workers == 1:
        records: list[CompressRecord] = []
        for path in model_paths:
            records += compress_model(
                path, variants, path.parent, calibration, verify, cfg, progress, None, validation
            )
        return records
    task = progress.add_task("compress", total=len(model_paths)) if progress else None
    context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    results: dict[Path, list[CompressRecord]] = {}
    pool = context.Pool(workers, initializer=_worker_start)
    try:
        pending = {
            path: pool.apply_async(
                compress_model,
                (path, variants, path.parent, calibration, verify, cfg, None, None, validation),
            )
            for path in model_paths
        }
        while pending:
            done = [path for path, job in pending.items() if job.ready()]
            if not done:
                time.sleep(0.05)
            for path in done:
                results[path] = pending.pop(path).get()
                if progress is not None:
                    progress.update(task, description=f"compress {path.parent.name}")
                    progress.advance(task)
        pool.close()
    finally:
        pool.terminate()  # Ctrl-C or a failed model: running conversions stop now
        pool.join()
    if progress is not None:
        progress.remove_task(task)
    return [rec for path in model_paths for rec in results[path]]


def unconverted_models(model_paths: list[Path], variants: list[str]) -> list[Path]:
    """The models with a variant not yet converted from their current content (a cheap look at
    the sidecars; compress_model still checks every setting)."""
    converted = [VARIANTS[n] for n in validate_variants(variants) if VARIANTS[n].convert]

    def converted_from(path: Path, variant: Variant) -> str | None:
        return read_json(sidecar_path(artifact_path(path.parent, variant.name))).get(
            "source_sha256"
        )

    todo = []
    for path in map(Path, model_paths):
        digest = file_digest(path)
        if any(converted_from(path, v) != digest for v in converted):
            todo.append(path)
    return todo


def failed_record(model_id: str, variant: str, error: str) -> CompressRecord:
    """The record of a variant that could not be made: its reason, no artifact."""
    return CompressRecord(
        model_id=model_id,
        variant=variant,
        path="",
        size_bytes=0,
        size_ratio_to_fp32=math.nan,
        convert_seconds=math.nan,
        agreement=math.nan,
        max_abs_diff=math.nan,
        verify_images=0,
        error=error,
    )


def _worker_start() -> None:
    """A conversion worker: Ctrl-C is the parent's to handle (it terminates the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_tensorflow()


def _load_model(path: Path):
    """load_keras_model, remembering the last model so inspecting then compressing loads once."""
    path = Path(path)
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size) if stat else None
    if key is None:
        return load_keras_model(path)  # raises the one-line "not found" error
    return _load_cached(key)


@functools.lru_cache(maxsize=1)
def _load_cached(key: tuple[str, int, int]):
    return load_keras_model(Path(key[0]))


def default_model_id(model_path: Path) -> str:
    """models/<model_id>/model.keras -> model_id; any other file -> its stem."""
    model_path = Path(model_path)
    if model_path.name == MODEL_FILE and model_path.parent.name:
        return model_path.parent.name
    return model_path.stem


class _Job:
    """One model's conversion: shared SavedModel export, Keras reference outputs, digests."""

    def __init__(self, model, model_path, hw, calibration, verify, cfg, validation=None):
        self.model, self.model_path, self.hw, self.cfg = model, model_path, hw, cfg
        self.calibration = calibration
        self.verify = np.ascontiguousarray(verify, np.uint8)
        self.validation = validation
        self.source_digest = file_digest(model_path)
        self.verify_digest = _array_digest(self.verify)
        self.calibration_digest = _array_digest(calibration) if calibration is not None else ""
        self.validation_digest = ""
        if validation is not None:
            self.validation_digest = _array_digest(validation.images) + _array_digest(
                np.append(validation.masks.ravel(), validation.background_class)
            )
        self._stack = contextlib.ExitStack()
        self._saved_model: Path | None = None
        self._reference: np.ndarray | None = None

    def close(self) -> None:
        self._stack.close()

    def record(self, model_id: str, variant: Variant, out_dir: Path) -> CompressRecord:
        if variant.convert is None:  # the Keras model itself: the reference
            return CompressRecord(
                model_id=model_id,
                variant=variant.name,
                path=str(self.model_path),
                size_bytes=self.model_path.stat().st_size,
                size_ratio_to_fp32=math.nan,
                convert_seconds=0.0,
                agreement=1.0,
                max_abs_diff=0.0,
                verify_images=len(self.verify),
                precision="fp32",
                io_dtype="float32",
            )
        path = artifact_path(out_dir, variant.name)
        meta = self._existing(path, variant)
        if meta is None:
            meta = self._convert(variant, path)
        verified = meta.get("verify") or {}
        if verified.get("digest") != self.verify_digest:
            verified = self._verify(variant, path)
            meta["verify"] = verified
            write_json(sidecar_path(path), meta)
        return CompressRecord(
            model_id=model_id,
            variant=variant.name,
            path=str(path),
            size_bytes=artifact_size(path),
            size_ratio_to_fp32=math.nan,
            convert_seconds=float(meta.get("convert_seconds", math.nan)),
            agreement=float(verified["agreement"]),
            max_abs_diff=float(verified["max_abs_diff"]),
            verify_images=int(verified["images"]),
            precision=str(verified.get("precision", "")),
            io_dtype=str(verified.get("io_dtype", "")),
        )

    def settings(self, variant: Variant) -> dict[str, Any]:
        settings = dict(variant.settings(self.cfg))
        if variant.calibrated:
            settings["calibration_digest"] = self.calibration_digest
        if variant.guarded:
            settings["validation_digest"] = self.validation_digest
        settings["input_hw"] = list(self.hw)
        settings["export"] = EXPORT_VERSION
        return settings

    def _existing(self, path: Path, variant: Variant) -> dict[str, Any] | None:
        """Sidecar of a finished, current artifact; None if it must be (re)converted."""
        meta = read_json(sidecar_path(path))
        if not meta:  # no sidecar (interrupted before the last write, or foreign): redo
            return None
        files = meta.get("files", {})
        parts = [path.with_name(f"{variant.name}{suffix}") for suffix in files]
        current = (
            meta.get("source_sha256") == self.source_digest
            and meta.get("settings") == self.settings(variant)
            and set(files) == {variant.suffix, *variant.parts}
            and all(p.is_file() and p.stat().st_size == files[p.suffix] for p in parts)
        )
        return meta if current else None

    def _convert(self, variant: Variant, path: Path) -> dict[str, Any]:
        inputs = ConvertInputs(
            self.saved_model(),
            to_input(self.calibration) if variant.calibrated else None,
            self.cfg.int8_io,
            self.validation if variant.guarded else None,
            max_iou_drop=self.cfg.max_iou_drop / 100,
            guard_iterations=self.cfg.guard_iterations,
        )
        start = time.perf_counter()
        try:
            with native_stderr_quiet():  # the converter's per-model calibration notices
                converted = variant.convert(inputs)
        except UnetqError:
            raise
        except Exception as exc:
            raise conversion_error(exc, variant.name, self.model, self.model_path) from None
        seconds = time.perf_counter() - start
        if variant.suffix == ".tflite":
            check_builtin_only(converted.files[".tflite"], f"{variant.name} of {self.model_path}")
        for suffix, content in converted.reports.items():
            write_bytes(variant_report(path.parent, variant.name, suffix), content)
        for suffix, content in sorted(
            converted.files.items(), key=lambda f: f[0] == variant.suffix
        ):
            write_bytes(path.with_name(f"{variant.name}{suffix}"), content)
        meta = {
            "variant": variant.name,
            "source": os.path.relpath(self.model_path, path.parent),  # portable with the folder
            "source_sha256": self.source_digest,
            "settings": self.settings(variant),
            "convert_seconds": round(seconds, 3),
            "files": {suffix: len(content) for suffix, content in converted.files.items()},
            "details": converted.details,
        }
        write_json(sidecar_path(path), meta)  # last: the artifact is finished
        return meta

    def _verify(self, variant: Variant, path: Path) -> dict[str, Any]:
        predictor = load_predictor(variant.runtime, path, threads=usable_cores())
        probs = predictor.predict_proba(self.verify)
        reference = self.reference()
        if probs.shape != reference.shape:
            raise ModelError(f"{path}: output shape {probs.shape[1:]} differs from the Keras model")
        return {
            "digest": self.verify_digest,
            "images": len(self.verify),
            "agreement": float(np.mean(probs.argmax(-1) == reference.argmax(-1))),
            "max_abs_diff": float(np.max(np.abs(probs - reference))),
            "precision": predictor.precision,
            "io_dtype": getattr(predictor, "io_dtype", "float32"),
        }

    def reference(self) -> np.ndarray:
        """Keras outputs on the verification images (computed once)."""
        if self._reference is None:
            tf = import_tensorflow()
            model = self.model
            call = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec([None, *self.hw, 3], tf.float32)],
            )
            parts = [
                call(to_input(self.verify[i : i + 8])).numpy()
                for i in range(0, len(self.verify), 8)
            ]
            self._reference = np.concatenate(parts).astype(np.float32)
        return self._reference

    def saved_model(self) -> Path:
        """Export the model once to a temporary SavedModel with a static [1, H, W, 3] input."""
        if self._saved_model is None:
            folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="unetq-")))
            self._saved_model = export_saved_model(self.model, self.hw, folder / "saved_model")
        return self._saved_model

    def fp32_size(self, out_dir: Path) -> int:
        """Size of the tflite-fp32 artifact (on disk if current, else converted in memory)."""
        path = artifact_path(out_dir, "tflite-fp32")
        variant = VARIANTS["tflite-fp32"]
        if self._existing(path, variant) is not None:
            return path.stat().st_size
        try:
            return len(variant.convert(ConvertInputs(self.saved_model(), None)).files[".tflite"])
        except Exception as exc:
            raise conversion_error(exc, variant.name, self.model, self.model_path) from None


def _image_hw(images, what: str, hw: tuple[int | None, int | None], model_path: Path):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        got = f"{images.dtype} {images.shape}"
        raise UnetqError(f"{what} images must be uint8 [N, H, W, 3], got {got}")
    size = (images.shape[1], images.shape[2])
    if any(m is not None and m != s for m, s in zip(hw, size, strict=True)):
        raise UnetqError(
            f"{what} images are {size[0]}x{size[1]} but {model_path} takes {hw[0]}x{hw[1]}"
        )
    return (int(size[0]), int(size[1]))


def _array_digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def compress_config(
    variants: str, calibration_images: int, verify_images: int, int8_io: str
) -> CompressConfig:
    try:
        return CompressConfig(
            variants=validate_variants(variants),
            calibration_images=calibration_images,
            verify_images=verify_images,
            int8_io=int8_io,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"invalid compress option '{where}': {err['msg']}") from None


def model_input_hw(model_path: Path) -> tuple[int | None, int | None]:
    model = _load_model(Path(model_path))
    h, w, _ = segmentation_shape(model, Path(model_path))
    return h, w


def random_images(hw: tuple[int, int], cfg: CompressConfig, seed: int = 0):
    """Seeded uniform noise for (calibration, verification) when no dataset is given."""
    # separate streams: the verification images do not depend on the calibration count
    cal_rng, ver_rng = (np.random.default_rng([seed, i]) for i in (1, 2))
    cal = cal_rng.integers(0, 256, (cfg.calibration_images, *hw, 3), dtype=np.uint8)
    ver = ver_rng.integers(0, 256, (cfg.verify_images, *hw, 3), dtype=np.uint8)
    return cal, ver


def dataset_images(hw: tuple[int, int], cfg: CompressConfig, data: DataConfig, progress=None):
    """(calibration, verification, validation, note) from a dataset's splits, by
    `compression_images` and `guard_validation`."""
    h, w = hw
    if h != w:
        raise UnetqError(f"dataset images are square; the model takes {h}x{w} (use no --data-dir)")
    data = data.model_copy(update={"image_size": h})
    index = open_dataset(data, progress=progress)
    train = load_inputs(index, "train", data, progress=progress)
    val = load_inputs(index, "val", data, progress=progress)
    if not len(train.images):
        raise UnetqError(f"dataset {index.root} has no training images for calibration")
    cal, ver = compression_images(train.images, val.images, cfg)
    validation = guard_validation(val, cfg, index.num_classes, index.background_class)
    note = None
    if index.synthetic:
        note = f"calibrating and verifying on synthetic images: {index.note}"
    return cal, ver, validation, note


def data_config(data_dir: Path | None, fmt: str, model: Path | None = None) -> DataConfig:
    """--data-dir and --format; for a model of a run folder, over that run's data settings
    (image mode, tiles, split seed), so the study's calibration rule picks the same images."""
    run = run_of_artifact(model) if model is not None else None
    settings = run.load_config().data.model_dump() if run is not None else {}
    settings.update(data_dir=data_dir, format=fmt, source="auto")
    try:
        return DataConfig(**settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"invalid data option '{err['loc'][0]}': {err['msg']}") from None


def compress_rows(records: list[CompressRecord]) -> list[dict[str, Any]]:
    """CSV rows: the study's Model and Quantization columns, then the record's fields."""
    return [
        {"Model": rec.model_id, "Quantization": quantization_name(rec.variant), **record_dict(rec)}
        for rec in records
    ]


def write_compress_csv(path: Path, records: list[CompressRecord]) -> Path:
    """Write rows for `records`, keeping rows of other models already in the file."""
    rows = compress_rows(records)
    ours = {rec.model_id for rec in records}
    if Path(path).is_file():
        with open(path, newline="") as fh:
            kept = [r for r in csv.DictReader(fh) if r.get("model_id") not in ours]
        rows = kept + rows
    write_csv(path, rows)
    return Path(path)


def summary_table(records: list[CompressRecord]) -> Table:
    from rich.table import Table

    table = Table(title="compressed variants")
    for col in ("variant", "size MB", "ratio", "seconds", "agreement %", "max diff"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for rec in records:
        if rec.error:
            table.add_row(rec.variant, f"not made: {rec.error}", "", "", "", "")
            continue
        table.add_row(
            rec.variant,
            f"{rec.size_bytes / 1e6:.3f}",
            f"{rec.size_ratio_to_fp32:.3f}",
            "–" if math.isnan(rec.convert_seconds) else f"{rec.convert_seconds:.1f}",
            f"{100 * rec.agreement:.2f}",
            f"{rec.max_abs_diff:.4f}",
        )
    return table


def run_compress(
    model_path: Path,
    variants: list[str] | str,
    out_dir: Path | None,
    cfg: CompressConfig,
    data: DataConfig | None = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[CompressRecord], Path]:
    """`unetq compress`: pick images, convert, verify, write <out>/compressed_models_info.csv."""
    model_path = Path(model_path)
    names = validate_variants(variants)
    out_dir = Path(out_dir) if out_dir is not None else model_path.parent
    h, w = model_input_hw(model_path)
    if h is None or w is None:
        if data is None:
            raise ModelError(
                f"{model_path}: input size is not fixed; pass --data-dir (images are resized to "
                f"the dataset's image size) or save the model with a fixed input size"
            )
        h = w = data.image_size
    needs_calibration = any(VARIANTS[n].calibrated for n in names)
    validation = None
    if data is None:
        cal, ver = random_images((h, w), cfg)
        note = RANDOM_IMAGES_WARNING
        if not needs_calibration:
            note = "no dataset given: verifying on random images (pass --data-dir for real ones)"
    else:
        cal, ver, validation, note = dataset_images((h, w), cfg, data, progress)
    if note and warn is not None:
        warn(note)
    calibration = cal if needs_calibration else None
    records = compress_model(
        model_path, names, out_dir, calibration, ver, cfg, progress, validation=validation
    )
    return records, write_compress_csv(out_dir / COMPRESSED_CSV, records)


def failures_error(records: list[CompressRecord]) -> UnetqError | None:
    """One line for the variants that could not be made, or None."""
    failed = [r for r in records if r.error]
    if not failed:
        return None
    return UnetqError(
        f"{len(failed)} of {len(records)} variants not made: {failed[0].variant}: {failed[0].error}"
    )
