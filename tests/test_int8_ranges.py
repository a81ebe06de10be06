"""OpenVINO int8's activation ranges: a model built so that NNCF's default ranges (the mean over
calibration images of each image's highest value) clip the pixels it classifies, as on the
nuclei (docs/INSIDE.md): unetq's "minmax" ranges keep them, and the guard holds its budget even
from the clipping ranges."""

from __future__ import annotations

import numpy as np
import pytest

from unetq.convert import ConvertInputs, Validation
from unetq.convert.openvino import openvino_int8, openvino_int8_guarded
from unetq.export import export_saved_model
from unetq.metrics import mean_fg_iou

keras = pytest.importorskip("keras")
ov = pytest.importorskip("openvino")

SIZE = 16
THRESHOLD = 0.6  # foreground: pixels whose mean channel value is above this


def brightness_model():
    """Foreground where a pixel's mean channel value exceeds THRESHOLD: a 1x1 convolution with
    logits 0 (background) and 30 * (mean - THRESHOLD) (foreground), then Softmax."""
    inp = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 1, activation="softmax")
    out = conv(inp)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, :, 1] = 10.0
    conv.set_weights([kernel, np.array([0.0, -30.0 * THRESHOLD], np.float32)])
    return keras.Model(inp, out)


def dark_and_bright(dark: int, bright: int, seed: int) -> np.ndarray:
    """Images in [0, 1]: `dark` ones below 0.3 (most nuclei tiles are dark), `bright` ones
    spread over the whole range."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 0.3, (dark, SIZE, SIZE, 3))
    high = rng.uniform(0, 1, (bright, SIZE // 4, SIZE // 4, 1)).repeat(4, 1).repeat(4, 2)
    high = np.clip(high + rng.uniform(-0.05, 0.05, (bright, SIZE, SIZE, 3)), 0, 1)
    return np.concatenate([low, high]).astype(np.float32)


def truth(images: np.ndarray) -> np.ndarray:
    return (images.mean(-1) > THRESHOLD).astype(np.uint8)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return export_saved_model(
        brightness_model(), (SIZE, SIZE), tmp_path_factory.mktemp("export") / "saved"
    )


def fg_iou(converted, images: np.ndarray) -> float:
    core = ov.Core()
    weights = ov.Tensor(np.frombuffer(converted.files[".bin"], np.uint8).copy())
    model = core.read_model(converted.files[".xml"].decode(), weights)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    predicted = np.stack(
        [compiled(image[None])[compiled.outputs[0]][0].argmax(-1) for image in images]
    ).astype(np.uint8)
    return mean_fg_iou(truth(images), predicted, 2, 0)


CALIBRATION = dark_and_bright(60, 4, seed=0)  # the mean of the images' highest values is ~0.34
TEST = dark_and_bright(0, 12, seed=1)


def test_the_default_nncf_ranges_clip_what_minmax_ranges_keep(saved_model):
    clipped = fg_iou(
        openvino_int8(ConvertInputs(saved_model, CALIBRATION, openvino_ranges="mean-minmax")), TEST
    )
    kept = fg_iou(openvino_int8(ConvertInputs(saved_model, CALIBRATION)), TEST)
    assert clipped < 0.2  # every pixel above ~0.34 became 0.34: no foreground left
    assert kept > 0.9


def test_the_guard_holds_its_budget_from_clipping_ranges(saved_model):
    images = dark_and_bright(0, 8, seed=2)
    validation = Validation(images, truth(images), 2, 0)
    inputs = ConvertInputs(
        saved_model,
        CALIBRATION,
        validation=validation,
        max_iou_drop=0.02,
        openvino_ranges="mean-minmax",
    )
    guarded = openvino_int8_guarded(inputs)
    details = guarded.details
    assert details["budget_met"]
    assert details["validation_fg_iou_float"] - details["validation_fg_iou"] <= 0.02 + 1e-9
    assert details["predicted_drop_high"] <= 0.02 + 1e-9
    assert fg_iou(guarded, TEST) > 0.9
