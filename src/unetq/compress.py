"""Compress: a Keras model (or a user's ONNX / TFLite model) -> one artifact per variant ->
CompressRecord.

Every variant is exported with a static input shape [1, H, W, 3] (unetq.export) and converted by
its entry in the registry (unetq.variants). Artifacts are written atomically with a sidecar
`<artifact>.json` written last (the unit's record, unetq.work: source digest, settings, file
sizes, conversion time, verification), so a rerun skips finished variants and redoes stale ones
(retrained model, other settings, newer export).

Conversion path: Keras ExportArchive -> SavedModel (temporary) -> TFLiteConverter.from_saved_model,
TensorFlow's Keras 3 route. `from_concrete_functions(..., model)` with a Keras 3 model keeps the
weights as resource variables (VAR_HANDLE/READ_VARIABLE ops), which breaks int8 calibration.
A user's .onnx or .tflite file is its own source: the variants its format can be made into
(Variant.origins) are converted from it, and it is every variant's reference on its runtime.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from unetq.config import CompressConfig, DataConfig
from unetq.convert import ConvertInputs, Validation
from unetq.convert.tflite import check_builtin_only, conversion_error
from unetq.data import load_inputs, load_whole, open_dataset
from unetq.errors import ConfigError, ModelError, UnetqError
from unetq.export import export_saved_model
from unetq.fileio import record_dict, write_bytes, write_csv
from unetq.models import to_input
from unetq.records import CompressRecord
from unetq.runfolder import (
    COMPRESSED_CSV,
    array_digest,
    artifact_path,
    artifact_size,
    file_digest,
    model_id_of,
    model_origin,
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
from unetq.variants import (
    VARIANTS,
    Variant,
    for_origin,
    original_of,
    quantization_name,
    validate_variants,
)
from unetq.work import Failures, Stage, Unit, read_record, run_stage, write_record

if TYPE_CHECKING:
    from rich.progress import Progress

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


def scored_validation(index, data, inputs, progress=None):
    """(the validation split as it is scored, tiles): `inputs` (the input-size images) and
    None, or in tile mode the whole images at their own size and (tile, overlap)."""
    if data.mode != "tile":
        return inputs, None
    return load_whole(index, "val", data, progress=progress), (data.image_size, data.tile_overlap)


def guard_validation(
    val, cfg: CompressConfig, num_classes: int, background_class: int, tiles=None
) -> Validation | None:
    """The labelled images guarded variants hold their accuracy on, as they are scored: the
    first `guard_images` of the validation split (None when it is empty). In tile mode
    (`tiles` = (tile, overlap)) `val` holds whole images at their own size (data.load_whole),
    which the guard cuts into tiles and stitches back."""
    if val is None or not len(val.images):
        return None
    n = cfg.guard_images
    if tiles is None:
        return Validation(to_input(val.images[:n]), val.masks[:n], num_classes, background_class)
    images = [to_input(image) for image in val.images[:n]]
    tile, overlap = tiles
    return Validation(images, list(val.masks[:n]), num_classes, background_class, tile, overlap)


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
    model_path = Path(model_path)
    stage = CompressStage(
        model_path.parent,
        {model_id or default_model_id(model_path): model_path.name},
        validate_variants(variants),
        calibration,
        verify,
        cfg,
        validation,
        out=Path(out_dir),
    )
    return run_stage(stage, progress)


def compress_models(
    model_paths: list[Path],
    variants: list[str],
    calibration: np.ndarray | None,
    verify: np.ndarray,
    cfg: CompressConfig,
    progress: Progress | None = None,
    workers: int | None = None,
    validation: Validation | None = None,
    runner: Any = None,
) -> list[CompressRecord]:
    """compress_model for several models (each into its own folder), `workers` at a time.

    The TFLite converter runs on one core, so converting two models at once in separate
    processes nearly halves the step on a 2-core machine. Records come back in input order.
    `runner` converts the models elsewhere (unetq.cluster).
    """
    model_paths = [Path(p).absolute() for p in model_paths]
    if not model_paths:
        return []
    root = Path(os.path.commonpath([p.parent for p in model_paths]))
    models = {default_model_id(p): p.relative_to(root).as_posix() for p in model_paths}
    stage = CompressStage(
        root, models, validate_variants(variants), calibration, verify, cfg, validation
    )
    stage.workers = max(1, workers or usable_cores())
    return run_stage(stage, progress, runner)


@dataclass
class CompressStage(Stage):
    """Compression as a stage: a unit per (model, variant), a group per model (its variants
    share one export and one Keras reference). A unit's record is the artifact's sidecar."""

    root: Path
    models: dict[str, str]  # model id -> model file, relative to root
    variants: list[str]
    calibration: np.ndarray | None
    verify: np.ndarray
    cfg: CompressConfig
    validation: Validation | None = None
    out: Path | None = None  # the variants' folder (default: each model's own)

    name = "compress"
    distributed = True  # a variant that cannot be made is a failure; a bad model ends it
    worker_start = staticmethod(import_tensorflow)

    def __post_init__(self) -> None:
        self.verify = np.ascontiguousarray(self.verify, np.uint8)
        self.hw = _image_hw(self.verify, "verification", (None, None), self.root)
        if any(VARIANTS[n].calibrated for n in self.variants):
            if self.calibration is None or not len(self.calibration):
                raise UnetqError("int8/int16x8 variants need calibration images; none were given")
            _image_hw(self.calibration, "calibration", self.hw, self.root)

    def model_path(self, model_id: str) -> Path:
        return self.root / self.models[model_id]

    def model_variants(self, model_id: str) -> list[str]:
        """The variants asked for that this model's format can be made into."""
        return for_origin(self.variants, model_origin(self.model_path(model_id)))[0]

    def out_dir(self, model_id: str) -> Path:
        return self.out if self.out is not None else self.model_path(model_id).parent

    def units(self) -> list[Unit]:
        digests = _Digests(self.calibration, self.verify, self.validation)
        units = []
        for model_id in self.models:
            path = self.model_path(model_id)
            if not path.is_file():
                raise ModelError(f"model file not found: {path}")
            source = file_digest(path)
            for name in self.model_variants(model_id):
                variant = VARIANTS[name]
                if variant.original:  # the model itself: nothing to make
                    continue
                artifact = artifact_path(self.out_dir(model_id), name)
                inputs = {
                    "source_sha256": source,
                    "settings": digests.settings(variant, self.cfg, self.hw),
                    "verify_sha256": digests.verify,
                }
                suffixes = (variant.suffix, *variant.parts)
                parts = tuple(artifact.with_name(f"{name}{suffix}") for suffix in suffixes)
                units.append(
                    Unit((model_id, name), sidecar_path(artifact), inputs, parts, model_id)
                )
        return units

    def run(self, group: list[Unit], progress: Progress | None = None) -> Failures:
        model_id = group[0].group
        path = self.model_path(model_id)
        if model_origin(path) == "keras":
            model = _load_model(path)
            h, w, _ = segmentation_shape(model, path)
        else:  # a user's file, run by its own runtime
            model = load_predictor(VARIANTS[original_of(model_origin(path))].runtime, path)
            h, w = model.input_hw
        _image_hw(self.verify, "verification", (h, w), path)
        job = _Job(model, path, self.hw, self.calibration, self.verify, self.cfg, self.validation)
        fp32_size = None
        if "tflite-fp32" not in self.model_variants(model_id):
            with contextlib.suppress(UnetqError):  # then the ratios stay empty
                fp32_size = job.fp32_size()
        failures: Failures = {}
        task = progress.add_task(f"compress {model_id}", total=len(group)) if progress else None
        try:
            for unit in group:
                variant = VARIANTS[unit.key[1]]
                if task is not None:
                    progress.update(task, description=f"compress {model_id}: {variant.name}")
                try:
                    job.make(unit, variant, fp32_size)
                except UnetqError as exc:
                    failures[unit.key] = str(exc)
                if task is not None:
                    progress.advance(task)
        finally:
            job.close()
            if task is not None:
                progress.remove_task(task)
        return failures

    def merge(self, units: list[Unit], failures: Failures) -> list[CompressRecord]:
        """One record per model and variant, in the order asked for; size ratios to the
        model's tflite-fp32."""
        by_key = {u.key: u for u in units}
        records = []
        for model_id in self.models:
            ours, fp32_sizes = [], []
            for name in self.model_variants(model_id):
                unit = by_key.get((model_id, name))
                done = read_record(unit) if unit is not None else None
                if unit is None:
                    ours.append(self._original_record(model_id, name))
                elif done is None:
                    reason = failures.get(unit.key, "not converted")
                    ours.append(failed_record(model_id, name, reason))
                else:
                    ours.append(_record(model_id, name, unit.record, done))
                    fp32_sizes.append(done.get("fp32_size_bytes"))
            made = [r for r in ours if not r.error]
            fp32 = next((r.size_bytes for r in made if r.variant == "tflite-fp32"), None)
            fp32 = fp32 or next((size for size in fp32_sizes if size), None)
            for rec in made if fp32 else []:
                rec.size_ratio_to_fp32 = rec.size_bytes / fp32
            records += ours
        return records

    def needs(self, group: list[Unit]) -> list[Path]:
        return [self.model_path(group[0].group).parent]

    def _original_record(self, model_id: str, variant: str) -> CompressRecord:
        path = self.model_path(model_id)
        return CompressRecord(
            model_id=model_id,
            variant=variant,
            path=str(path),
            size_bytes=path.stat().st_size,
            size_ratio_to_fp32=math.nan,
            convert_seconds=0.0,
            agreement=1.0,
            max_abs_diff=0.0,
            verify_images=len(self.verify),
            precision="fp32",
            io_dtype="float32",
        )


def _record(model_id: str, variant: str, sidecar: Path, meta: dict[str, Any]) -> CompressRecord:
    """A made variant's record, from its sidecar."""
    artifact = sidecar.with_name(sidecar.name.removesuffix(".json"))
    verified = meta["verify"]
    return CompressRecord(
        model_id=model_id,
        variant=variant,
        path=str(artifact),
        size_bytes=artifact_size(artifact),
        size_ratio_to_fp32=math.nan,
        convert_seconds=float(meta.get("convert_seconds", math.nan)),
        agreement=float(verified["agreement"]),
        max_abs_diff=float(verified["max_abs_diff"]),
        verify_images=int(verified["images"]),
        precision=str(verified.get("precision", "")),
        io_dtype=str(verified.get("io_dtype", "")),
    )


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


default_model_id = model_id_of  # the name compress' callers know


class _Digests:
    """Digests of the images every conversion of a stage shares, and a variant's settings."""

    def __init__(self, calibration, verify, validation):
        self.verify = array_digest(verify)
        self.calibration = array_digest(calibration) if calibration is not None else ""
        self.validation = ""
        if validation is not None:
            parts = [*validation.images, *validation.masks]
            shape = [validation.background_class, validation.tile or 0, validation.overlap]
            self.validation = array_digest([array_digest(p) for p in parts] + shape)

    def settings(self, variant: Variant, cfg: CompressConfig, hw) -> dict[str, Any]:
        settings = dict(variant.settings(cfg))
        if variant.calibrated:
            settings["calibration_digest"] = self.calibration
        if variant.guarded:
            settings["validation_digest"] = self.validation
        settings["input_hw"] = list(hw)
        settings["export"] = EXPORT_VERSION
        return settings


class _Job:
    """One model's conversions: shared SavedModel export and Keras reference outputs (for a
    user's ONNX / TFLite file, `model` is its predictor: the file is the source and its outputs
    the reference)."""

    def __init__(self, model, model_path, hw, calibration, verify, cfg, validation=None):
        self.model, self.model_path, self.hw, self.cfg = model, model_path, hw, cfg
        self.calibration = calibration
        self.verify = verify
        self.validation = validation
        self._stack = contextlib.ExitStack()
        self._saved_model: Path | None = None
        self._reference: np.ndarray | None = None

    def close(self) -> None:
        self._stack.close()

    def make(self, unit: Unit, variant: Variant, fp32_size: int | None) -> None:
        """Convert (unless the files on disk came from the same model and settings), verify
        against Keras, and write the sidecar last."""
        path = unit.record.with_name(unit.record.name.removesuffix(".json"))
        meta = self._existing(unit)
        if meta is None:
            meta = self._convert(variant, path)
        meta["verify"] = self._verify(variant, path)
        if fp32_size is not None:
            meta["fp32_size_bytes"] = fp32_size
        write_record(unit, **meta)

    def _existing(self, unit: Unit) -> dict[str, Any] | None:
        """A sidecar whose files were converted from this model with these settings (only the
        verification images changed): its conversion is kept."""
        meta = read_json(unit.record)
        inputs = meta.pop("inputs", {})
        outputs = meta.pop("outputs", {})
        same = all(inputs.get(k) == unit.inputs[k] for k in ("source_sha256", "settings"))
        intact = set(outputs) == {p.name for p in unit.outputs} and all(
            p.is_file() and p.stat().st_size == outputs[p.name] for p in unit.outputs
        )
        return meta if same and intact else None

    def _convert(self, variant: Variant, path: Path) -> dict[str, Any]:
        inputs = ConvertInputs(
            self.saved_model(),
            to_input(self.calibration) if variant.calibrated else None,
            self.cfg.int8_io,
            self.validation if variant.guarded else None,
            max_iou_drop=self.cfg.max_iou_drop / 100,
            guard_iterations=self.cfg.guard_iterations,
            openvino_ranges=self.cfg.openvino_ranges,
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
        return {
            "variant": variant.name,
            "source": os.path.relpath(self.model_path, path.parent),  # portable with the folder
            "convert_seconds": round(seconds, 3),
            "details": converted.details,
        }

    def _verify(self, variant: Variant, path: Path) -> dict[str, Any]:
        predictor = load_predictor(variant.runtime, path, threads=usable_cores())
        probs = predictor.predict_proba(self.verify)
        reference = self.reference()
        if probs.shape != reference.shape:
            raise ModelError(
                f"{path}: output shape {probs.shape[1:]} differs from the original model's"
            )
        return {
            "images": len(self.verify),
            "agreement": float(np.mean(probs.argmax(-1) == reference.argmax(-1))),
            "max_abs_diff": float(np.max(np.abs(probs - reference))),
            "precision": predictor.precision,
            "io_dtype": getattr(predictor, "io_dtype", "float32"),
        }

    @property
    def keras(self) -> bool:
        return model_origin(self.model_path) == "keras"

    def reference(self) -> np.ndarray:
        """The original's outputs on the verification images (computed once)."""
        if self._reference is None and not self.keras:
            self._reference = self.model.predict_proba(self.verify)
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
        """Export the model once to a temporary SavedModel with a static [1, H, W, 3] input
        (a user's ONNX / TFLite file is its own source)."""
        if not self.keras:
            return self.model_path
        if self._saved_model is None:
            folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="unetq-")))
            self._saved_model = export_saved_model(self.model, self.hw, folder / "saved_model")
        return self._saved_model

    def fp32_size(self) -> int:
        """Size of the model as tflite-fp32 (converted in memory; a user's file: its own
        size), for the size ratios."""
        if not self.keras:
            return self.model_path.stat().st_size
        variant = VARIANTS["tflite-fp32"]
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
    scored, tiles = scored_validation(index, data, val, progress)
    validation = guard_validation(scored, cfg, index.num_classes, index.background_class, tiles)
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
