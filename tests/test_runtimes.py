"""runtimes.py: keras, litert, openvino and onnxruntime predictors agree; errors are one line."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest

from unetq import runtimes
from unetq.config import CompressConfig
from unetq.errors import ModelError, UnetqError
from unetq.runtimes import load_predictor

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

SIZE = 32


def images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, SIZE // 8, SIZE // 8, 3)).repeat(8, 1).repeat(8, 2)
    noise = rng.integers(-20, 21, (n, SIZE, SIZE, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def build_model():
    """The real U-Net when unetq.models is there, else a 3-conv net; both 32 px, 3 classes."""
    try:
        from unetq.models import build_model

        return build_model("xception", 4, True, 3, SIZE, 0.99)
    except Exception:  # models.py absent or changed: the interface under test is the same
        inp = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
        x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        out = keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(x)
        return keras.Model(inp, out)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    from unetq.compress import compress_model

    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("rt")
    model_path = folder / "model.keras"
    build_model().save(model_path)
    cfg = CompressConfig(calibration_images=8, verify_images=2, int8_io="uint8")
    variants = [
        "tflite-fp32",
        "tflite-int8",
        "openvino-fp32",
        "onnxruntime-fp32",
        "onnxruntime-int8",
    ]
    compress_model(model_path, variants, folder, images(8, 1), images(2, 2), cfg)
    return {
        "keras": model_path,
        "fp32": folder / "tflite-fp32.tflite",
        "int8": folder / "tflite-int8.tflite",
        "ir": folder / "openvino-fp32.xml",
        "onnx": folder / "onnxruntime-fp32.onnx",
        "onnx-int8": folder / "onnxruntime-int8.onnx",
    }


def test_runtimes_agree_on_classes(artifacts):
    test = images(3, seed=7)
    k = load_predictor("keras", artifacts["keras"])
    lite = load_predictor("litert", artifacts["fp32"])
    ov = load_predictor("openvino", artifacts["ir"])
    ort = load_predictor("onnxruntime", artifacts["onnx"])
    maps = {p.runtime: p.predict(test) for p in (k, lite, ov, ort)}
    for name, m in maps.items():
        assert m.shape == (3, SIZE, SIZE) and m.dtype == np.uint8, name
    assert np.mean(maps["litert"] == maps["keras"]) >= 0.99
    assert np.mean(maps["openvino"] == maps["keras"]) >= 0.99
    assert np.mean(maps["onnxruntime"] == maps["keras"]) >= 0.99
    for p in (k, lite, ov, ort):
        assert p.input_hw == (SIZE, SIZE) and p.num_classes == 3
        probs = p.predict_proba(test)
        assert probs.dtype == np.float32 and probs.shape == (3, SIZE, SIZE, 3)
        assert np.allclose(probs.sum(-1), 1.0, atol=1e-2)


def test_run_is_the_single_image_call(artifacts):
    x = images(1, seed=4).astype(np.float32) / 255
    k = load_predictor("keras", artifacts["keras"])
    y = k.run(x)
    assert y.shape == (1, SIZE, SIZE, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y, k.model(x, training=False).numpy(), atol=1e-5)
    # the batched convenience path gives what single calls give
    np.testing.assert_allclose(k.predict_proba(images(1, seed=4))[0], y[0], atol=1e-5)
    lite = load_predictor("litert", artifacts["fp32"])
    np.testing.assert_allclose(lite.run(x), y, atol=1e-4)
    ort = load_predictor("onnxruntime", artifacts["onnx"])
    np.testing.assert_allclose(ort.run(x), y, atol=1e-5)


def test_onnxruntime_int8_is_quantized_and_batches_are_single_calls(artifacts):
    fp32 = load_predictor("onnxruntime", artifacts["onnx"], threads=2)
    int8 = load_predictor("onnxruntime", artifacts["onnx-int8"], threads=1, batch=4)
    assert (fp32.precision, fp32.threads, int8.precision, int8.threads) == ("fp32", 2, "int8", 1)
    import onnx

    ops = {n.op_type for n in onnx.load(str(artifacts["onnx-int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ, not dynamic
    x = images(3, seed=5).astype(np.float32) / 255
    batched = int8.run_batch(x)
    one_by_one = np.concatenate([int8.run(x[i : i + 1]) for i in range(3)])
    np.testing.assert_array_equal(batched, one_by_one)
    assert np.mean(batched.argmax(-1) == fp32.run_batch(x).argmax(-1)) >= 0.9


def test_litert_int8_io_is_quantized_and_dequantized(artifacts):
    p = load_predictor("litert", artifacts["int8"], threads=2)
    assert p.precision == "int8" and p.io_dtype == "uint8" and p.threads == 2
    x = images(1, seed=9).astype(np.float32) / 255
    y = p.run(x)
    assert y.dtype == np.float32 and np.allclose(y.sum(-1), 1.0, atol=0.05)
    # by hand: quantize with the input scale/zero-point, invoke, dequantize the output
    interp = p.interp
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    interp.set_tensor(inp["index"], np.clip(np.round(x / s_in) + z_in, 0, 255).astype(np.uint8))
    interp.invoke()
    expected = (interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
    np.testing.assert_allclose(y, expected, atol=1e-6)
    reference = load_predictor("litert", artifacts["fp32"]).run(x)
    assert np.mean(y.argmax(-1) == reference.argmax(-1)) >= 0.9


def test_precision_passed_in_wins(artifacts):
    assert load_predictor("litert", artifacts["fp32"], precision="custom").precision == "custom"
    assert load_predictor("litert", artifacts["fp32"]).precision == "fp32"


def test_openvino_records_precision_and_threads(artifacts):
    auto = load_predictor("openvino", artifacts["ir"], threads=2)
    assert auto.precision in {"fp32", "bf16", "fp16"}
    assert auto.threads == 2
    forced = load_predictor("openvino", artifacts["ir"], threads=1, precision="f32")
    assert forced.precision == "fp32" and forced.threads == 1
    with pytest.raises(UnetqError, match="f32, bf16"):
        load_predictor("openvino", artifacts["ir"], precision="int3")
    for other in (artifacts["keras"], artifacts["fp32"]):
        with pytest.raises(ModelError, match=r"OpenVINO IR \(\.xml \+ \.bin"):
            load_predictor("openvino", other)


def test_keras_threads_record_what_tf_uses(artifacts):
    p = load_predictor("keras", artifacts["keras"], threads=1)
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    assert p.threads == (configured or runtimes.usable_cores())
    assert p.precision == "fp32" and p.runtime == "keras"


def test_litert_threads_stored(artifacts):
    assert load_predictor("litert", artifacts["fp32"], threads=2).threads == 2
    with pytest.raises(UnetqError, match="threads"):
        load_predictor("litert", artifacts["fp32"], threads=0)


def test_unknown_runtime_lists_choices(artifacts):
    with pytest.raises(UnetqError) as exc:
        load_predictor("onnx", artifacts["fp32"])
    text = str(exc.value)
    assert "onnx" in text and "keras, litert, openvino" in text and "\n" not in text


FILES = {"keras": "model.keras", "litert": "x.tflite", "openvino": "x.xml", "onnxruntime": "x.onnx"}


@pytest.mark.parametrize("runtime", list(FILES))
def test_missing_artifact(runtime, tmp_path):
    missing = tmp_path / FILES[runtime]
    with pytest.raises(ModelError, match="not found") as exc:
        load_predictor(runtime, missing)
    assert str(missing) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("runtime", ["litert", "openvino", "onnxruntime"])
def test_corrupt_artifact(runtime, tmp_path):
    bad = tmp_path / FILES[runtime]
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError) as exc:
        load_predictor(runtime, bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_corrupt_keras(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_text("{}")
    with pytest.raises(ModelError) as exc:
        load_predictor("keras", bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_wrong_image_size(artifacts):
    p = load_predictor("litert", artifacts["fp32"])
    with pytest.raises(UnetqError, match="expects"):
        p.predict(np.zeros((1, 16, 16, 3), np.uint8))


def test_flex_model_is_refused_naming_the_op(tmp_path):
    """A .tflite that needs TF Flex ops cannot run in LiteRT: one-line error naming the op."""

    class Erf(keras.layers.Layer):
        def call(self, x):
            return tf.math.erf(x)

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Softmax()(Erf()(inp)))
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            functools.partial(model.__call__, training=False),
            input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)],
        )
        archive.write_out(folder, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(folder)
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        content = conv.convert()
    flex = tmp_path / "flex.tflite"
    flex.write_bytes(content)
    with pytest.raises(ModelError, match="FlexErf") as exc:
        load_predictor("litert", flex)
    assert "\n" not in str(exc.value)
    from unetq.convert.tflite import check_builtin_only

    with pytest.raises(ModelError, match="FlexErf"):
        check_builtin_only(content, "flex model")


def test_openvino_keeps_transpose_conv_activation(tmp_path):
    """The converter fuses Conv2DTranspose+BN+ReLU into TRANSPOSE_CONV(RELU); OpenVINO's TFLite
    frontend drops that ReLU, so the OpenVINO converter rewrites the graph before reading it."""
    from unetq.compress import compress_model
    from unetq.convert.openvino import unfuse_transpose_conv_activations

    keras.utils.set_random_seed(5)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.Conv2DTranspose(8, 3, padding="same")(x)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(x))
    out = keras.layers.Conv2D(3, 1, activation="softmax")(x)
    model_path = tmp_path / "model.keras"
    keras.Model(inp, out).save(model_path)
    variants = ["tflite-fp32", "openvino-fp32"]
    compress_model(model_path, variants, tmp_path, None, images(1), CompressConfig())
    fp32 = tmp_path / "tflite-fp32.tflite"

    content = fp32.read_bytes()
    rewritten = unfuse_transpose_conv_activations(content)
    assert rewritten is not None  # the converter did fuse the ReLU
    assert unfuse_transpose_conv_activations(rewritten) is None  # nothing left to move
    from ai_edge_litert.interpreter import Interpreter

    x = images(2, seed=11).astype(np.float32) / 255
    outputs = []
    for blob in (content, rewritten):
        interp = Interpreter(model_content=blob)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x[:1])
        interp.invoke()
        outputs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)  # same function in LiteRT

    ov = load_predictor("openvino", tmp_path / "openvino-fp32.xml", precision="f32")
    np.testing.assert_allclose(ov.run(x[:1]), outputs[0], atol=1e-5)


def test_module_imports_no_heavy_runtime():
    import subprocess
    import sys

    code = "import sys, unetq.runtimes; print(any(m in sys.modules for m in "
    code += "('tensorflow', 'openvino', 'ai_edge_litert', 'onnxruntime', 'onnx')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_path_argument_types(artifacts):
    p = load_predictor("litert", str(artifacts["fp32"]))
    assert isinstance(p.artifact, Path)
