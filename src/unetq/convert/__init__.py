"""Converters: an exported SavedModel -> the files of one compressed variant.

tflite.py    the TFLite converter's variants (builtin ops only: LiteRT has no Flex delegate)
mixed.py     full int8 with the layers most sensitive to quantization kept in float (TFLite)
openvino.py  OpenVINO IR, NNCF post-training int8 and accuracy-controlled int8

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
from unetq.metrics import mean_fg_iou


@dataclass(frozen=True)
class Validation:
    """Labelled images a guarded variant keeps its accuracy on (the validation split)."""

    images: np.ndarray  # float32 [N, H, W, 3], the model's input scale
    masks: np.ndarray  # uint8 [N, H, W] class maps
    num_classes: int
    background_class: int

    def fg_iou(self, predicted: np.ndarray) -> float:
        """Mean per-image foreground IoU of class maps [N, H, W] against the masks."""
        return mean_fg_iou(self.masks, predicted, self.num_classes, self.background_class)


@dataclass(frozen=True)
class ConvertInputs:
    """What a variant's converter gets: the exported SavedModel and the images it may need."""

    saved_model_dir: Path
    calibration: np.ndarray | None  # float32 [N, H, W, 3], the model's input scale
    int8_io: str = "float32"
    validation: Validation | None = None
    max_iou_drop: float = 0.005  # guarded variants: largest fg IoU drop allowed (a fraction)
    guard_iterations: int = 8  # NNCF accuracy control: at most this many restore steps
    openvino_ranges: str = "minmax"  # NNCF's activation ranges (CompressConfig.openvino_ranges)

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
