"""A fake variant registry for tests that patch unetq.compress (no TensorFlow needed)."""

from pathlib import Path
from types import SimpleNamespace

VARIANTS = {
    "keras": SimpleNamespace(name="keras", runtime="keras", slow=False, study_name="no"),
    "tflite-fp32": SimpleNamespace(
        name="tflite-fp32", runtime="litert", slow=False, study_name=None
    ),
    "tflite-dynamic-int8": SimpleNamespace(
        name="tflite-dynamic-int8", runtime="litert", slow=False, study_name="default"
    ),
    "tflite-int16x8": SimpleNamespace(
        name="tflite-int16x8", runtime="litert", slow=True, study_name=None
    ),
}


def artifact_path(model_dir, variant):
    return Path(model_dir) / ("model.keras" if variant == "keras" else f"{variant}.tflite")
