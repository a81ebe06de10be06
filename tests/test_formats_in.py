"""`unetq benchmark --model` with a model given as an ONNX file (NCHW, written node by node) or a
.tflite file: its own runtime is the reference, the variants its format can become are made
from it, and the ones it cannot become are named."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnx")

from test_benchmark import one_error_line, unetq  # noqa: E402
from unetq.errors import ConfigError, ModelError  # noqa: E402
from unetq.usermodel import inspect_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from outside_model import PIXELS, onnx_unet, plain_unet, tflite_model  # noqa: E402

EPOCHS = 30  # the small U-Net's fg IoU on the shapes: about 0.4 at 20 epochs, 0.5 at 30


def nchw_onnx(path: Path, classes: int, head: str, size: int | None = 32, model=None) -> Path:
    import onnx

    model = model or plain_unet(size, classes, head, filters=4, depth=2)
    onnx.save(onnx_unet(model), path)
    return path


def small_tflite(path: Path, classes: int = 3, size: int = 32, model=None) -> Path:
    model = model or plain_unet(size, classes, "softmax", filters=4, depth=2)
    path.write_bytes(tflite_model(model))
    return path


# --- what the file says about itself ------------------------------------------------------------


def test_an_nchw_onnx_model_is_read_from_its_graph(tmp_path):
    path = nchw_onnx(tmp_path / "seg.onnx", 1, "sigmoid", size=None)
    with pytest.raises(Exception, match="input size is not fixed; pass --size N"):
        inspect_model(path)
    _, info = inspect_model(path, size=48)
    assert (info.format, info.layout, info.input_hw, info.size_fixed_by_unetq) == (
        "onnx",
        "NCHW",
        (48, 48),
        True,
    )
    assert (info.output_channels, info.num_classes, info.output, info.threshold) == (
        1,
        2,
        "probabilities",
        0.5,
    )
    assert info.input_norm.name == "unit" and info.norm_from.startswith("default")


def test_a_tflite_file_runs_as_it_is(tmp_path):
    from unetq.conventions import Conventions

    path = small_tflite(tmp_path / "seg.tflite")
    _, info = inspect_model(path)
    assert (info.format, info.layout, info.input_hw, info.num_classes) == (
        "tflite",
        "NHWC",
        (32, 32),
        3,
    )
    for said, message in [
        (Conventions(input_norm="imagenet"), "runs as it is, on RGB pixels in \\[0, 1\\]"),
        (Conventions(threshold=0.3), "--threshold is for one-channel heads"),
    ]:
        with pytest.raises(ConfigError, match=message):
            inspect_model(path, said)


def test_a_tflite_file_that_expects_other_pixels_is_refused_in_one_line(tmp_path):
    path = small_tflite(tmp_path / "seg.tflite")
    out = tmp_path / "out"
    proc = unetq("benchmark", "--model", path, "--input-norm", "tf", "--out", out)
    assert proc.returncode == 2
    assert "a .tflite file runs as it is" in one_error_line(proc)
    assert not out.exists()


def test_a_tflite_file_of_no_fixed_size_is_refused(tmp_path):
    import tensorflow as tf

    model = plain_unet(None, 3, "softmax", filters=4, depth=2)
    call = tf.function(model).get_concrete_function(tf.TensorSpec([1, None, None, 3], tf.float32))
    path = tmp_path / "any-size.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([call], model).convert())
    with pytest.raises(ModelError, match=r"its input size is not fixed \(\[1, -1, -1, 3\]\)"):
        inspect_model(path, size=64)


def test_an_onnx_model_that_cannot_be_adopted_writes_nothing(tmp_path):
    import onnx

    path = nchw_onnx(tmp_path / "seg.onnx", 3, "softmax")
    graph = onnx.load(path)
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # a batch of two only
    onnx.save(graph, path)
    out = tmp_path / "out"
    proc = unetq("benchmark", "--model", path, "--out", out)
    assert proc.returncode == 2 and "batch" in one_error_line(proc)
    assert not out.exists()


def test_predict_on_an_nchw_file_says_to_bring_it_in_first(tmp_path):
    from PIL import Image

    path = nchw_onnx(tmp_path / "seg.onnx", 3, "softmax")
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    proc = unetq(
        "predict", "--model", path, "--images", tmp_path / "images", "--out", tmp_path / "o"
    )
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "is not [1, H, W, 3]; bring it in with `unetq benchmark --model`" in line


# --- through every variant its format can become --------------------------------------------------


def trained(data: Path, classes: int, head: str, pixels: str, size: int):
    """A small plain U-Net trained a few epochs on the synthetic shapes (outside unetq)."""
    images = np.stack([np.asarray(keras.utils.load_img(p)) for p in sorted(data.glob("images/*"))])
    masks = np.stack([np.asarray(keras.utils.load_img(p, color_mode="grayscale"))
                      for p in sorted(data.glob("masks/*"))])  # fmt: skip
    masks = (masks > 0).astype(np.uint8) if head == "sigmoid" else masks
    keras.utils.set_random_seed(2)
    model = plain_unet(size, classes, head, filters=8, depth=2)
    if head == "sigmoid":
        target, loss = masks.astype(np.float32)[..., None], "binary_crossentropy"
    else:
        target, loss = masks[..., None], "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(PIXELS[pixels](images), target, epochs=EPOCHS, batch_size=8, verbose=0)
    return model


def binary_shapes(root: Path, size: int) -> Path:
    """The synthetic shapes with every shape as foreground (0/255 masks): a binary dataset."""
    from PIL import Image

    from unetq.data.synthetic import write_synthetic

    shapes = write_synthetic(root / "shapes", count=40, size=size, seed=3)
    for sub in ("images", "masks"):
        (root / "binary" / sub).mkdir(parents=True)
    for image in sorted(shapes.glob("images/*")):
        (root / "binary" / "images" / image.name).write_bytes(image.read_bytes())
        mask = np.asarray(Image.open(shapes / "masks" / image.name)) > 0
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "binary" / "masks" / image.name)
    return root / "binary"


def average_by_variant(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "model_performance_average_results.csv").set_index("variant")


@pytest.mark.slow
def test_an_nchw_onnx_model_goes_through_onnx_runtime_and_openvino(tmp_path, cache_env):
    size = 48
    data = binary_shapes(tmp_path, size)
    model = trained(data, 1, "sigmoid", "imagenet", size)
    path = nchw_onnx(tmp_path / "nchw.onnx", 1, "sigmoid", model=model)
    out = tmp_path / "bench"
    asked = "keras,tflite-int8,openvino-fp32,openvino-int8,onnxruntime-fp32,onnxruntime-int8"
    args = ["benchmark", "--model", path, "--data-dir", data, "--input-norm", "imagenet",
            "--variants", asked, "--threads", "1", "--preset", "smoke", "--out", out]  # fmt: skip
    proc = unetq(*args, env=cache_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not made from an ONNX model: tflite-int8" in " ".join(proc.stdout.split())
    info = json.loads((out / "models" / "nchw" / "model.json").read_text())
    assert (info["format"], info["layout"], info["input_norm"]["name"]) == (
        "onnx",
        "NCHW",
        "imagenet",
    )
    average = average_by_variant(out)
    assert set(average.index) == {"onnx", "openvino-fp32", "openvino-int8", "onnxruntime-int8"}
    assert average.loc["onnx", "runtime"] == "onnxruntime"
    assert average.loc["onnx", "fg_iou"] > 0.1  # it learned something to compare
    assert abs(average.loc["onnx", "fg_iou"] - average.loc["openvino-fp32", "fg_iou"]) < 0.005
    assert average.loc["onnx", "speedup_vs_keras"] == pytest.approx(1.0)  # its own reference
    compressed = pd.read_csv(out / "compressed_models_info.csv").set_index("variant")
    assert compressed["error"].isna().all() and set(compressed["model_id"]) == {"nchw"}
    assert compressed.loc["openvino-fp32", "agreement"] > 0.99
    # the run's model.onnx is the user's graph behind unetq's [0, 1] NHWC input
    reference = model.predict(
        PIXELS["imagenet"](np.full((1, size, size, 3), 128, np.uint8)), verbose=0
    )
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "models" / "nchw" / "model.onnx"))
    scores = session.run(None, {"image": np.full((1, size, size, 3), 128 / 255, np.float32)})[0]
    assert np.allclose(scores[..., 1], reference[..., 0], atol=1e-5)
    assert "x onnx 1t" in proc.stdout
    inspected = unetq("inspect", out / "models" / "nchw", env=cache_env)
    assert inspected.returncode == 2
    assert "given as model.onnx; the per-layer view reads Keras" in one_error_line(inspected)
    again = unetq(*args, env=cache_env)  # resumed: nothing is made again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "compress: nothing to redo (3 results up to date)" in again.stdout


@pytest.mark.slow
def test_a_model_that_can_become_no_variant_asked_is_measured_alone(tmp_path, cache_env):
    path = nchw_onnx(tmp_path / "seg.onnx", 3, "softmax")
    out = tmp_path / "bench"
    proc = unetq(
        "benchmark", "--model", path, "--variants", "tflite-int8", "--threads", "1",
        "--preset", "smoke", "--out", out, env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not made from an ONNX model: tflite-int8" in " ".join(proc.stdout.split())
    assert set(average_by_variant(out).index) == {"onnx"}


@pytest.mark.slow
def test_a_tflite_file_goes_through_litert_openvino_and_onnx_runtime(tmp_path, cache_env):
    from unetq.data.synthetic import write_synthetic

    size = 48
    data = write_synthetic(tmp_path / "shapes", count=40, size=size, seed=4)
    model = trained(data, 3, "softmax", "unit", size)  # background, circles, rectangles
    path = small_tflite(tmp_path / "given.tflite", model=model)
    out = tmp_path / "bench"
    proc = unetq(
        "benchmark", "--model", path, "--data-dir", data, "--threads", "1", "--preset", "smoke",
        "--variants", "tflite-fp32,tflite-fp16,openvino-fp32,onnxruntime-fp32", "--out", out,
        "--robustness", env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not made from a .tflite file: tflite-fp16" in " ".join(proc.stdout.split())
    average = average_by_variant(out)
    assert set(average.index) == {"tflite", "openvino-fp32", "onnxruntime-fp32"}
    assert average.loc["tflite", "fg_iou"] > 0.1
    for variant in ("openvino-fp32", "onnxruntime-fp32"):
        assert abs(average.loc["tflite", "fg_iou"] - average.loc[variant, "fg_iou"]) < 0.005
    given = (out / "models" / "given" / "model.tflite").read_bytes()
    assert given == path.read_bytes()  # taken as it is
    robustness = pd.read_csv(out / "robustness.csv")
    assert set(robustness["variant"]) == {"tflite", "openvino-fp32", "onnxruntime-fp32"}
    assert (robustness.loc[robustness["variant"] == "tflite", "agreement"] == 1.0).all()
    html = (out / "report" / "index.html").read_text()
    assert "tflite fg IoU" in html.split("Recommendation")[1]  # the answer names its reference
