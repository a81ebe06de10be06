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


IR = {"suffix": ".xml", "parts": (".bin",), "runtime": "openvino"}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "keras", "no compression", "keras", suffix=".keras", description="float32 Keras model"
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
            description="ONNX graph of the fp32 export (tf2onnx, as Keras' ONNX export)",
        ),
        Variant(
            "onnxruntime-int8",
            "",
            "onnxruntime",
            suffix=".onnx",
            convert=onnxruntime.onnx_int8,
            calibrated=True,
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


def validate_variants(names: list[str] | str) -> list[str]:
    """Variant names in order of mention, deduplicated; 'all' expands to every variant."""
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
