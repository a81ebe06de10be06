"""Variant registry -> .tflite files -> CompressRecord.

Every variant is exported with a static input shape [1, H, W, 3] and builtin ops only, and must
load in ai-edge-litert (which has no Flex delegate). Artifacts are written atomically with a
sidecar `<variant>.tflite.json` (source digest, settings, conversion time, verification), so a
rerun skips finished variants and redoes stale ones (retrained model, other settings).

Conversion path: Keras ExportArchive -> SavedModel (temporary) -> TFLiteConverter.from_saved_model,
TensorFlow's Keras 3 route. `from_concrete_functions(..., model)` with a Keras 3 model keeps the
weights as resource variables (VAR_HANDLE/READ_VARIABLE ops), which breaks int8 calibration.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unetq.config import CompressConfig, DataConfig
from unetq.errors import ConfigError, ModelError, UnetqError
from unetq.fileio import record_dict, write_bytes, write_csv, write_json
from unetq.records import CompressRecord
from unetq.runtimes import (
    LiteRTPredictor,
    available_cores,
    import_tensorflow,
    load_keras_model,
    native_stderr_quiet,
    non_builtin_ops,
    open_interpreter,
    segmentation_shape,
    to_input,
)

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

COMPRESSED_CSV = "compressed_models_info.csv"
# Changes when the exported graph changes, so artifacts of an older export are converted again.
# 2: nearest UpSampling2D exported as concatenation + reshape (`with_delegable_upsampling`).
EXPORT_VERSION = 2
RANDOM_IMAGES_WARNING = (
    "no dataset given: calibrating and verifying on random images; int8 calibration on random "
    "data is not representative (pass --data-dir)"
)


@dataclass(frozen=True)
class ConvertInputs:
    """What a variant's converter gets: the exported SavedModel and calibration images."""

    saved_model_dir: Path
    calibration: np.ndarray | None  # float32 [N, H, W, 3] in [0, 1]
    int8_io: str = "float32"


@dataclass(frozen=True)
class Variant:
    name: str
    study_name: str  # the original study's name ('no compression', 'default', 'float16') or ''
    runtime: str  # 'keras' or 'litert'
    slow: bool = False  # runs on LiteRT reference kernels (evaluate/bench on fewer images)
    convert: Callable[[ConvertInputs], bytes] | None = None
    calibrated: bool = False  # needs representative (calibration) images
    description: str = ""
    settings: Callable[[CompressConfig], dict[str, Any]] = field(default=lambda cfg: {})


def _tf():
    import tensorflow as tf

    return tf


def _converter(inputs: ConvertInputs):
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(inputs.saved_model_dir))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never SELECT_TF_OPS
    return conv


def _representative(inputs: ConvertInputs):
    images = inputs.calibration
    if images is None or not len(images):
        raise UnetqError("int8/int16x8 conversion needs calibration images")

    def generate():
        for i in range(len(images)):
            yield [images[i : i + 1]]

    return generate


def _convert_fp32(inputs: ConvertInputs) -> bytes:
    return _converter(inputs).convert()


def _convert_dynamic_int8(inputs: ConvertInputs) -> bytes:
    conv = _converter(inputs)
    conv.optimizations = [_tf().lite.Optimize.DEFAULT]
    return conv.convert()


def _convert_fp16(inputs: ConvertInputs) -> bytes:
    tf = _tf()
    conv = _converter(inputs)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return conv.convert()


def _convert_int8(inputs: ConvertInputs) -> bytes:
    tf = _tf()
    conv = _converter(inputs)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(inputs)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if inputs.int8_io == "uint8":
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


def _convert_int16x8(inputs: ConvertInputs) -> bytes:
    tf = _tf()
    conv = _converter(inputs)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(inputs)
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    return conv.convert()


def _calibration_settings(cfg: CompressConfig) -> dict[str, Any]:
    return {"calibration_images": cfg.calibration_images}


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("keras", "no compression", "keras", description="float32 Keras model"),
        Variant("tflite-fp32", "", "litert", convert=_convert_fp32, description="plain"),
        Variant(
            "tflite-dynamic-int8",
            "default",
            "litert",
            convert=_convert_dynamic_int8,
            description="int8 weights, float activations (Optimize.DEFAULT)",
        ),
        Variant(
            "tflite-fp16",
            "float16",
            "litert",
            convert=_convert_fp16,
            description="fp16 weights",
        ),
        Variant(
            "tflite-int8",
            "",
            "litert",
            convert=_convert_int8,
            calibrated=True,
            description="int8 weights and activations, calibrated",
            settings=lambda cfg: {**_calibration_settings(cfg), "int8_io": cfg.int8_io},
        ),
        Variant(
            "tflite-int16x8",
            "",
            "litert",
            slow=True,
            convert=_convert_int16x8,
            calibrated=True,
            description="int16 activations, int8 weights (reference kernels)",
            settings=_calibration_settings,
        ),
    ]
}


def validate_variants(names: list[str] | str) -> list[str]:
    """Variant names in registry order of mention, deduplicated; 'all' expands to every variant."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in str(raw).split(",")):
            if not name:
                continue
            if name == "all":
                expanded = list(VARIANTS)
            elif name in VARIANTS:
                expanded = [name]
            else:
                choices = ", ".join(["all", *VARIANTS])
                raise UnetqError(f"unknown variant '{name}' (choose from {choices})")
            out.extend(v for v in expanded if v not in out)
    if not out:
        raise UnetqError(f"no variants given (choose from all, {', '.join(VARIANTS)})")
    return out


def artifact_path(model_dir: Path, variant: str | Variant) -> Path:
    name = variant.name if isinstance(variant, Variant) else variant
    if name not in VARIANTS:
        raise UnetqError(f"unknown variant '{name}' (choose from {', '.join(VARIANTS)})")
    if name == "keras":
        return Path(model_dir) / "model.keras"
    return Path(model_dir) / f"{name}.tflite"


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".json")


# ----------------------------------------------------------------------------- compress


def compress_model(
    model_path: Path,
    variants: list[str],
    out_dir: Path,
    calibration: np.ndarray | None,
    verify: np.ndarray,
    cfg: CompressConfig,
    progress: Progress | None = None,
    model_id: str | None = None,
) -> list[CompressRecord]:
    """Convert `model_path` into `variants` under `out_dir` and check each against Keras.

    calibration: uint8 [N, H, W, 3] (needed by int8/int16x8); verify: uint8 [K, H, W, 3].
    convert_seconds is the converter's own time; the one-off SavedModel export is not in it.
    agreement / max_abs_diff compare LiteRT with Keras on the K verification images (the keras
    row is the reference: 1.0 / 0.0); max_abs_diff is in the model's output units
    (probabilities for a softmax head).
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
    job = _Job(model, model_path, hw, calibration, verify, cfg)
    records: list[CompressRecord] = []
    task = progress.add_task(f"compress {model_id}", total=len(names)) if progress else None
    try:
        for name in names:
            if progress is not None:
                progress.update(task, description=f"compress {model_id}: {name}")
            records.append(job.record(model_id, VARIANTS[name], out_dir))
            if progress is not None:
                progress.advance(task)
        fp32 = next((r.size_bytes for r in records if r.variant == "tflite-fp32"), None)
        fp32 = fp32 or job.fp32_size(out_dir)
        for rec in records:
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
) -> list[CompressRecord]:
    """compress_model for several models (each into its own folder), `workers` at a time.

    The TFLite converter runs on one core, so converting two models at once in separate
    processes nearly halves the step on a 2-core machine. Records come back in input order.
    """
    model_paths = [Path(p) for p in model_paths]
    workers = max(1, min(workers or available_cores(), len(model_paths)))
    if workers == 1:
        records: list[CompressRecord] = []
        for path in model_paths:
            records += compress_model(
                path, variants, path.parent, calibration, verify, cfg, progress
            )
        return records
    import multiprocessing

    task = progress.add_task("compress", total=len(model_paths)) if progress else None
    context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    results: dict[Path, list[CompressRecord]] = {}
    pool = context.Pool(workers, initializer=_worker_start)
    try:
        pending = {
            path: pool.apply_async(
                compress_model, (path, variants, path.parent, calibration, verify, cfg)
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


def _worker_start() -> None:
    """A conversion worker: Ctrl-C is the parent's to handle (it terminates the pool)."""
    import signal

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
    if model_path.name == "model.keras" and model_path.parent.name:
        return model_path.parent.name
    return model_path.stem


class _Job:
    """One model's conversion: shared SavedModel export, Keras reference outputs, digests."""

    def __init__(self, model, model_path, hw, calibration, verify, cfg: CompressConfig):
        self.model, self.model_path, self.hw, self.cfg = model, model_path, hw, cfg
        self.calibration = calibration
        self.verify = np.ascontiguousarray(verify, np.uint8)
        self.source_digest = _file_digest(model_path)
        self.verify_digest = _array_digest(self.verify)
        self.calibration_digest = _array_digest(calibration) if calibration is not None else ""
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
            verified = self._verify(path)
            meta["verify"] = verified
            write_json(sidecar_path(path), meta)
        return CompressRecord(
            model_id=model_id,
            variant=variant.name,
            path=str(path),
            size_bytes=path.stat().st_size,
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
        settings["input_hw"] = list(self.hw)
        settings["export"] = EXPORT_VERSION
        return settings

    def _existing(self, path: Path, variant: Variant) -> dict[str, Any] | None:
        """Sidecar of a finished, current artifact; None if it must be (re)converted."""
        if not path.is_file():
            return None
        meta = _read_json(sidecar_path(path))
        if meta is None:  # no sidecar (interrupted between the two writes, or foreign): redo
            return None
        current = (
            meta.get("source_sha256") == self.source_digest
            and meta.get("settings") == self.settings(variant)
            and meta.get("size_bytes") == path.stat().st_size
        )
        return meta if current else None

    def _convert(self, variant: Variant, path: Path) -> dict[str, Any]:
        calibration = self._calibration_input(variant)
        inputs = ConvertInputs(self.saved_model(), calibration, self.cfg.int8_io)
        start = time.perf_counter()
        try:
            with native_stderr_quiet():  # the converter's per-model calibration notices
                content = variant.convert(inputs)
        except UnetqError:
            raise
        except Exception as exc:
            raise conversion_error(exc, variant.name, self.model, self.model_path) from None
        seconds = time.perf_counter() - start
        check_builtin_only(content, f"{variant.name} of {self.model_path}")
        write_bytes(path, content)
        meta = {
            "variant": variant.name,
            "source": str(self.model_path),
            "source_sha256": self.source_digest,
            "settings": self.settings(variant),
            "convert_seconds": round(seconds, 3),
            "size_bytes": len(content),
        }
        write_json(sidecar_path(path), meta)
        return meta

    def _calibration_input(self, variant: Variant) -> np.ndarray | None:
        if not variant.calibrated:
            return None
        return to_input(self.calibration)

    def _verify(self, path: Path) -> dict[str, Any]:
        predictor = LiteRTPredictor(path, threads=available_cores())
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
            "io_dtype": predictor.io_dtype,
        }

    def reference(self) -> np.ndarray:
        """Keras outputs on the verification images (computed once)."""
        if self._reference is None:
            tf = _tf()
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
        meta = self._existing(path, variant)
        if meta is not None and path.is_file():
            return path.stat().st_size
        try:
            return len(variant.convert(ConvertInputs(self.saved_model(), None)))
        except Exception as exc:
            raise conversion_error(exc, variant.name, self.model, self.model_path) from None


def export_saved_model(
    model, hw: tuple[int, int], folder: Path, delegable_upsampling: bool = True
) -> Path:
    import keras

    tf = _tf()
    if delegable_upsampling:
        model = with_delegable_upsampling(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        functools.partial(model.__call__, training=False),
        input_signature=[tf.TensorSpec([1, *hw, 3], tf.float32, name="image")],
    )
    try:
        archive.write_out(str(folder), verbose=False)
    except Exception as exc:
        raise ModelError(f"cannot export the model for conversion: {_first_line(exc)}") from None
    return folder


def _nearest_upsampling_layer():
    """A Keras layer computing UpSampling2D(nearest) by concatenation and reshape.

    TensorFlow lowers Keras' UpSampling2D to RESHAPE + TILE, and XNNPACK has no TILE: LiteRT then
    splits the graph into a dozen delegate partitions with TILE between them on its own kernels.
    Concatenating k copies along the last axis and reshaping repeats every pixel k times along a
    row; doing the same one axis up repeats every row. Both ops run inside XNNPACK, for float
    and int8, and the result is the same values, not an approximation.
    """
    import keras

    class NearestUpsampling(keras.layers.Layer):
        def __init__(self, size: tuple[int, int], **kwargs):
            super().__init__(**kwargs)
            self.size = size

        def call(self, x):
            ops = keras.ops
            _, h, w, c = x.shape
            fh, fw = self.size
            x = ops.reshape(ops.concatenate([x] * fw, axis=-1), (-1, h, w * fw, c))
            return ops.reshape(ops.concatenate([x] * fh, axis=2), (-1, h * fh, w * fw, c))

        def compute_output_shape(self, shape):
            b, h, w, c = shape
            return (b, h and h * self.size[0], w and w * self.size[1], c)

    return NearestUpsampling


def with_delegable_upsampling(model):
    """`model` with every channels-last nearest UpSampling2D computed by delegable ops.

    Only for export: the trained Keras model is unchanged. A model without such layers, or one
    Keras cannot clone, is returned as it is (and converts with TILE, as before).
    """
    import keras

    def replaceable(layer) -> bool:
        return (
            isinstance(layer, keras.layers.UpSampling2D)
            and layer.interpolation == "nearest"
            and layer.data_format == "channels_last"
            and all(isinstance(f, int) and f >= 1 for f in layer.size)
        )

    if not any(replaceable(layer) for layer in model.layers):
        return model
    nearest = _nearest_upsampling_layer()

    def clone(layer):
        if replaceable(layer):
            return nearest(tuple(layer.size), name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    try:
        lowered = keras.models.clone_model(model, clone_function=clone)
        lowered.set_weights(model.get_weights())
    except Exception:  # e.g. a subclassed model or a custom layer without get_config
        return model
    return lowered


def check_builtin_only(content: bytes, what: str) -> None:
    """Raise ModelError unless `content` loads and allocates in LiteRT with builtin ops only."""
    interp = open_interpreter(content=content)
    ops = non_builtin_ops(interp)
    if ops:
        raise ModelError(f"{what} needs ops that LiteRT's builtin kernels lack: {', '.join(ops)}")


def conversion_error(exc: BaseException, variant: str, model, model_path: Path) -> ModelError:
    """A one-line ModelError for a failed conversion, naming unsupported TF ops and layers."""
    ops: list[str] = []
    layers: list[str] = []
    names = {layer.name for layer in getattr(model, "layers", [])}
    for err in getattr(exc, "errors", None) or []:
        op = getattr(getattr(err, "operator", None), "name", "")
        if op:
            ops.append(op.removeprefix("tf."))
        for call in getattr(getattr(err, "location", None), "call", []):
            layer = _layer_of(call.name, names)
            if layer:
                layers.append(layer)
                break
    if not ops:
        ops = re.findall(r"'tf\.(\w+)' op is neither", str(exc))
    ops, layers = sorted(set(ops)), sorted(set(layers))
    if ops:
        where = f" in layer {', '.join(layers)}" if layers else ""
        return ModelError(
            f"{model_path}: {variant} needs TensorFlow op(s) {', '.join(ops)}{where} that are "
            f"not TFLite builtins (LiteRT has no Flex delegate); replace that layer"
        )
    return ModelError(f"{model_path}: {variant} conversion failed: {_first_line(exc)}")


def _layer_of(location: str, layer_names: set[str]) -> str | None:
    """'functional_1/my_layer_1/Erf@__inference_..' -> 'my_layer' if the model has that layer."""
    for part in location.split("@")[0].split("/"):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in layer_names:
                return candidate
    return None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


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


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _array_digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- CLI helpers


def compress_config(
    variants: str, calibration_images: int, verify_images: int, int8_io: str
) -> CompressConfig:
    from pydantic import ValidationError

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


def compression_images(
    hw: tuple[int, int],
    calibration_images: int,
    verify_images: int,
    data: DataConfig | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(calibration, verification, warning): from the dataset's train/val splits if given,
    else seeded uniform noise (and a warning: int8 calibrated on noise is not representative)."""
    h, w = hw
    if data is None:
        # separate streams: the verification images do not depend on the calibration count
        cal_rng, ver_rng = (np.random.default_rng([seed, i]) for i in (1, 2))
        cal = cal_rng.integers(0, 256, (calibration_images, h, w, 3), dtype=np.uint8)
        ver = ver_rng.integers(0, 256, (verify_images, h, w, 3), dtype=np.uint8)
        return cal, ver, RANDOM_IMAGES_WARNING
    if h != w:
        raise UnetqError(f"dataset images are square; the model takes {h}x{w} (use no --data-dir)")
    from unetq.data import load_split, open_dataset

    index = open_dataset(data.model_copy(update={"image_size": h}), progress=progress)
    train = load_split(index, "train", h, progress=progress)
    val = load_split(index, "val", h, progress=progress)
    if not len(train.images):
        raise UnetqError(f"dataset {index.root} has no training images for calibration")
    pick = np.sort(np.random.default_rng(seed).permutation(len(train.images))[:calibration_images])
    ver = val.images[:verify_images] if len(val.images) else train.images[:verify_images]
    note = None
    if getattr(index, "synthetic", False):
        note = f"calibrating and verifying on synthetic images: {getattr(index, 'note', '')}"
    return train.images[pick], ver, note


def data_config(data_dir: Path | None, fmt: str) -> DataConfig:
    from pydantic import ValidationError

    try:
        return DataConfig(data_dir=data_dir, format=fmt)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"invalid data option '{err['loc'][0]}': {err['msg']}") from None


def compress_rows(records: list[CompressRecord]) -> list[dict[str, Any]]:
    """CSV rows: the study's Model and Quantization columns, then the record's fields."""
    rows = []
    for rec in records:
        variant = VARIANTS.get(rec.variant)
        quant = (variant.study_name or variant.name) if variant else rec.variant
        rows.append({"Model": rec.model_id, "Quantization": quant, **record_dict(rec)})
    return rows


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
    cal, ver, note = compression_images(
        (h, w),
        cfg.calibration_images if needs_calibration else 1,
        cfg.verify_images,
        data,
        progress=progress,
    )
    if note == RANDOM_IMAGES_WARNING and not needs_calibration:
        note = "no dataset given: verifying on random images (pass --data-dir for real ones)"
    if note and warn is not None:
        warn(note)
    records = compress_model(
        model_path, names, out_dir, cal if needs_calibration else None, ver, cfg, progress
    )
    return records, write_compress_csv(out_dir / COMPRESSED_CSV, records)
