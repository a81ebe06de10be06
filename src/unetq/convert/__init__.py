"""Converters: an exported SavedModel (or a user's ONNX / TFLite model) -> the files of one
compressed variant.

tflite.py    the TFLite converter's variants (builtin ops only: LiteRT has no Flex delegate)
mixed.py     full int8 with the layers most sensitive to quantization kept in float (TFLite)
openvino.py  OpenVINO IR, NNCF post-training int8 and accuracy-controlled int8
onnxruntime.py  ONNX graph of the export (tf2onnx) and ONNX Runtime's static int8 of it

A converter takes ConvertInputs and returns Converted: the artifact's bytes by file suffix and
details for the artifact's sidecar. TensorFlow, OpenVINO and NNCF are imported inside the
converters, so the variant registry that names them stays light at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetq.errors import UnetqError
from unetq.metrics import bootstrap_ci, image_fg_iou

# A guard's budget must hold at the pessimistic end of the drop's interval, not at its mean.
GUARD_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Validation:
    """Labelled images a guarded variant keeps its accuracy on (the validation split), as they
    are scored: at the model's input size, or in tile mode whole images at their own size, cut
    into `tile`-pixel tiles overlapping by `overlap` and stitched back (unetq.data.tiles)."""

    images: np.ndarray | list[np.ndarray]  # float32 [H, W, 3] each, the model's input scale
    masks: np.ndarray | list[np.ndarray]  # uint8 [H, W] class maps
    num_classes: int
    background_class: int
    tile: int | None = None
    overlap: int = 0

    def items(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(zip(self.images, self.masks, strict=True))

    def segment(self, image: np.ndarray, predict) -> np.ndarray:
        """One image's class map; `predict` maps a batch [1, T, T, 3] to probabilities."""

        def class_maps(batch: np.ndarray) -> np.ndarray:
            maps = [np.asarray(predict(one[None]))[0].argmax(-1) for one in batch]
            return np.stack(maps).astype(np.uint8)

        if self.tile is None:
            return class_maps(image[None])[0]
        from unetq.data.tiles import segment_by_tiles

        return segment_by_tiles(image, self.tile, self.overlap, class_maps)

    def score(self, image: np.ndarray, mask: np.ndarray, predict) -> float:
        """fg IoU of one image as `predict` segments it."""
        predicted = self.segment(image, predict)
        return image_fg_iou(mask, predicted, self.num_classes, self.background_class)

    def scores(self, predict) -> np.ndarray:
        """fg IoU of every image (NaN where neither truth nor prediction has foreground)."""
        return np.array([self.score(image, mask, predict) for image, mask in self.items()])

    def drop(self, float_scores: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
        """The mean fg IoU drop over the images against the float model's, and the high end of
        its 95% bootstrap interval (the pessimistic drop a guard must keep within budget)."""
        diffs = np.asarray(float_scores, float) - np.asarray(scores, float)
        diffs = diffs[np.isfinite(diffs)]
        if not len(diffs):
            return float("nan"), float("nan")
        _, high = bootstrap_ci(diffs, confidence=GUARD_CONFIDENCE)
        mean = float(diffs.mean())
        return mean, float(high) if np.isfinite(high) else mean  # one image: no interval

    def verdict(self, float_scores, scores, budget: float) -> dict[str, Any]:
        """The guard's outcome for a sidecar: both fg IoUs, the drop and its pessimistic end."""
        mean, high = self.drop(float_scores, scores)
        return {
            "validation_images": len(self.images),
            "validation_tiled": self.tile is not None,
            "validation_fg_iou_float": round(float(np.nanmean(float_scores)), 6),
            "validation_fg_iou": round(float(np.nanmean(scores)), 6),
            "predicted_drop": round(mean, 6),
            "predicted_drop_high": round(high, 6),
            "max_iou_drop": budget,
            "budget_met": bool(high <= budget + 1e-9),
        }


@dataclass(frozen=True)
class ConvertInputs:
    """What a variant's converter gets: the model (unetq's SavedModel export of a Keras model,
    or a user's .onnx / .tflite file as unetq runs it) and the images it may need."""

    source: Path
    calibration: np.ndarray | None  # float32 [N, H, W, 3], the model's input scale
    int8_io: str = "float32"
    validation: Validation | None = None
    max_iou_drop: float = 0.005  # guarded variants: largest fg IoU drop allowed (a fraction)
    guard_iterations: int = 8  # NNCF accuracy control: at most this many restore steps
    openvino_ranges: str = "minmax"  # NNCF's activation ranges (CompressConfig.openvino_ranges)

    @property
    def origin(self) -> str:
        """'onnx' or 'tflite' for a user's file, else 'keras' (the SavedModel export)."""
        return {".onnx": "onnx", ".tflite": "tflite"}.get(Path(self.source).suffix, "keras")

    def require_calibration(self) -> np.ndarray:
        if self.calibration is None or not len(self.calibration):
            raise UnetqError("int8 conversion needs calibration images")
        return self.calibration

    def require_validation(self, variant: str) -> Validation:
        if self.validation is None or not len(self.validation.images):
            raise UnetqError(
                f"{variant} needs validation images with masks to guard its accuracy "
                "(give a dataset: --data-dir)"
            )
        return self.validation


@dataclass
class Converted:
    """A converted artifact: its bytes per file suffix (the artifact and its parts, such as
    OpenVINO's .bin), details for its sidecar (e.g. how the guard went), and report files
    written beside it (e.g. a per-layer sensitivity table)."""

    files: dict[str, bytes]
    details: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, bytes] = field(default_factory=dict)
