"""benchmarks/outside_model.py's files from outside unetq: the plain U-Net written node by node
as NCHW ONNX and converted to .tflite gives Keras' scores (random weights, no training)."""

import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from outside_model import (  # noqa: E402
    TOLERANCE,
    onnx_scores,
    onnx_unet,
    plain_unet,
    tflite_model,
    tflite_scores,
)

SIZE = 32


def random_unet(classes: int, head: str, seed: int = 0):
    """The plain U-Net with random kernels and biases (biases too, so their transcription
    counts), seeded."""
    keras.utils.set_random_seed(seed)
    model = plain_unet(SIZE, classes, head, filters=8, depth=3)
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(np.float32)
                       for w in model.get_weights()])  # fmt: skip
    return model


def random_pixels(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize(("classes", "head"), [(1, "sigmoid"), (3, "softmax")])
def test_the_nchw_onnx_transcription_gives_keras_scores(tmp_path, classes, head):
    import onnx

    model = random_unet(classes, head)
    path = tmp_path / "onnx-nchw.onnx"
    onnx.save(onnx_unet(model), path)
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(path).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert (graph.input[0].name, dims) == ("input", ["N", 3, SIZE, SIZE])
    pixels = random_pixels(5)
    scores = onnx_scores(path, pixels)
    assert scores.shape == (5, SIZE, SIZE, classes)
    assert np.abs(scores - model.predict(pixels, verbose=0)).max() < TOLERANCE


def test_the_tflite_conversion_gives_keras_scores(tmp_path):
    pytest.importorskip("ai_edge_litert")
    model = random_unet(3, "softmax")
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite_model(model))
    pixels = np.random.default_rng(2).random((4, SIZE, SIZE, 3), np.float32)  # [0, 1] RGB
    scores = tflite_scores(path, pixels)
    assert scores.shape == (4, SIZE, SIZE, 3)
    assert np.abs(scores - model.predict(pixels, verbose=0)).max() < TOLERANCE
