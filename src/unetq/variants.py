"""The compression variants: one registry, TensorFlow-free at import (converters load it lazily).

Adding a variant is one entry here: its name, the runtime that runs it, its artifact files and
the converter that makes them (unetq.convert). Order matters: it is the order of every table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unetq.config import CompressConfig
from unetq.convert import Converted, ConvertInputs, mixed, onnxruntime, openvino, tflite
from unetq.errors import UnetqError


@dataclass(frozen=True)
class Variant:
    name: str
    study_name: str  # the original study's name ('no compression', 'default', 'float16') or ''
    runtime: str  # the runtime that runs it: 'keras', 'litert', 'openvino' or 'onnxruntime'
    suffix: str = ".tflite"  # artifact file: <name><suffix> (keras: model.keras)
    parts: tuple[str, ...] = ()  # more files of the artifact: <name><part>, e.g. OpenVINO's .bin
    slow: bool = False  # runs on LiteRT reference kernels (evaluate/bench on fewer images)
    convert: Callable[[ConvertInputs], Converted] | None = None
    calibrated: bool = False  # needs representative (calibration) images
    guarded: bool = False  # keeps its validation accuracy within compress.max_iou_drop
    # the formats of a user's model it is made from; an original is that model itself, the
    # reference every other variant of it is compared with
    origins: tuple[str, ...] = ("keras",)
    original: bool = False
    same_as: str = ""  # an original: the variant it stands for (onnx is onnxruntime-fp32)
    description: str = ""
    settings: Callable[[CompressConfig], dict[str, Any]] = field(default=lambda cfg: {})

    @property
    def quantization(self) -> str:
        """The original study's 'Quantization' column: its name where it had one, else ours."""
        return self.study_name or self.name


def _calibration_settings(cfg: CompressConfig) -> dict[str, Any]:
    return {"calibration_images": cfg.calibration_images}


def _guard_settings(cfg: CompressConfig) -> dict[str, Any]:
    return {
        **_calibration_settings(cfg),
        "max_iou_drop": cfg.max_iou_drop,
        "guard_images": cfg.guard_images,
        "guard_iterations": cfg.guard_iterations,
    }


def _nncf_settings(cfg: CompressConfig) -> dict[str, Any]:
    return {**_calibration_settings(cfg), "openvino_ranges": cfg.openvino_ranges}


def _nncf_guard_settings(cfg: CompressConfig) -> dict[str, Any]:
    return {**_guard_settings(cfg), "openvino_ranges": cfg.openvino_ranges}


ORIGINS = ("keras", "onnx", "tflite")  # the formats a model is taken in from
IR = {"suffix": ".xml", "parts": (".bin",), "runtime": "openvino", "origins": ORIGINS}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "keras",
            "no compression",
            "keras",
            suffix=".keras",
            original=True,
            description="float32 Keras model",
        ),
        Variant(
            "onnx",
            "",
            "onnxruntime",
            suffix=".onnx",
            origins=("onnx",),
            original=True,
            same_as="onnxruntime-fp32",
            description="the ONNX model as given, on ONNX Runtime",
        ),
        Variant(
            "tflite",
            "",
            "litert",
            origins=("tflite",),
            original=True,
            same_as="tflite-fp32",
            description="the .tflite model as given, on LiteRT",
        ),
        Variant("tflite-fp32", "", "litert", convert=tflite.tflite_fp32, description="plain"),
        Variant(
            "tflite-dynamic-int8",
            "default",
            "litert",
            convert=tflite.tflite_dynamic_int8,
            description="int8 weights, float activations (Optimize.DEFAULT)",
        ),
        Variant(
            "tflite-fp16",
            "float16",
            "litert",
            convert=tflite.tflite_fp16,
            description="fp16 weights",
        ),
        Variant(
            "tflite-int8",
            "",
            "litert",
            convert=tflite.tflite_int8,
            calibrated=True,
            description="int8 weights and activations, calibrated",
            settings=lambda cfg: {**_calibration_settings(cfg), "int8_io": cfg.int8_io},
        ),
        Variant(
            "tflite-int8-mixed",
            "",
            "litert",
            convert=mixed.tflite_int8_mixed,
            calibrated=True,
            guarded=True,
            description="int8, the most sensitive layers in float until the IoU budget holds",
            settings=_guard_settings,
        ),
        Variant(
            "tflite-int16x8",
            "",
            "litert",
            slow=True,
            convert=tflite.tflite_int16x8,
            calibrated=True,
            description="int16 activations, int8 weights (reference kernels)",
            settings=_calibration_settings,
        ),
        Variant(
            "openvino-fp32",
            "",
            **IR,
            convert=openvino.openvino_fp32,
            description="OpenVINO IR of the fp32 export; the CPU picks the precision",
        ),
        Variant(
            "openvino-int8",
            "",
            **IR,
            convert=openvino.openvino_int8,
            calibrated=True,
            description="NNCF post-training int8, same calibration images as tflite-int8",
            settings=_nncf_settings,
        ),
        Variant(
            "openvino-int8-guarded",
            "",
            **IR,
            convert=openvino.openvino_int8_guarded,
            calibrated=True,
            guarded=True,
            description="NNCF int8 with accuracy control: float where the IoU budget needs it",
            settings=_nncf_guard_settings,
        ),
        Variant(
            "onnxruntime-fp32",
            "",
            "onnxruntime",
            suffix=".onnx",
            convert=onnxruntime.onnx_fp32,
            origins=("keras", "tflite"),
            description="ONNX graph of the fp32 export (tf2onnx, as Keras' ONNX export)",
        ),
        Variant(
            "onnxruntime-int8",
            "",
            "onnxruntime",
            suffix=".onnx",
            convert=onnxruntime.onnx_int8,
            calibrated=True,
            origins=ORIGINS,
            description="ONNX Runtime static int8 (QDQ, per-channel), same calibration images",
            settings=_calibration_settings,
        ),
    ]
}


def variant_rank(name: str) -> int:
    """A variant's place in the registry (unknown names last), for sorting table rows."""
    order = list(VARIANTS)
    return order.index(name) if name in order else len(order)


def quantization_name(name: str) -> str:
    """The study's name of a variant ('no compression', 'default', 'float16'), else its name."""
    return VARIANTS[name].quantization if name in VARIANTS else name


def original_of(origin: str) -> str:
    """The variant that is a model of this format as given: keras, onnx or tflite."""
    return next(v.name for v in VARIANTS.values() if v.original and origin in v.origins)


def is_original(variant: str, runtime: str | None = None) -> bool:
    """Whether a row is a model as given (on its own runtime): every other row's reference."""
    known = VARIANTS.get(variant)
    return bool(known and known.original and (runtime is None or runtime == known.runtime))


def original_rows(frame):
    """A boolean mask of a result table's rows that are originals on their own runtime."""
    return frame["variant"].combine(frame["runtime"], is_original).astype(bool)


def for_origin(names: list[str], origin: str) -> tuple[list[str], list[str]]:
    """(the variants a model of format `origin` has, in order; those it cannot be made into).
    Any original asked for stands for this model's own, and so does the variant that model is
    (an ONNX model's onnxruntime-fp32 is the model itself)."""
    own = original_of(origin)
    kept, dropped = [], []
    for name in names:
        if VARIANTS[name].original or name == VARIANTS[own].same_as:
            name = own
        if origin not in VARIANTS[name].origins:
            dropped.append(name)
        elif name not in kept:
            kept.append(name)
    return kept, dropped


def validate_variants(names: list[str] | str) -> list[str]:
    """Variant names in order of mention, deduplicated; 'all' expands to every variant a Keras
    model has (a model of another format keeps those `for_origin` gives)."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in str(raw).split(",")):
            if not name:
                continue
            if name == "all":
                expanded = [v for v in VARIANTS if "keras" in VARIANTS[v].origins]
            elif name in VARIANTS:
                expanded = [name]
            else:
                choices = ", ".join(["all", *VARIANTS])
                raise UnetqError(f"unknown variant '{name}' (choose from {choices})")
            out.extend(v for v in expanded if v not in out)
    if not out:
        raise UnetqError(f"no variants given (choose from all, {', '.join(VARIANTS)})")
    return out
