"""ONNX Runtime variants: the fp32 ONNX graph tf2onnx makes of unetq's SavedModel export (the
path Keras' own `model.export(format="onnx")` takes) or of a user's .tflite file, and ONNX
Runtime's static int8 of that graph or of a user's ONNX model (QDQ, per-channel weights, the
same calibration images as the other int8 variants)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from unetq.convert import Converted, ConvertInputs
from unetq.errors import ModelError, first_line

OPSET = 17  # what ONNX Runtime 1.2x and OpenVINO read; tf2onnx's default is older


def onnx_fp32(inputs: ConvertInputs) -> Converted:
    return Converted({".onnx": _fp32_graph(inputs)})


def onnx_int8(inputs: ConvertInputs) -> Converted:
    """Static int8: activations uint8 (MinMax ranges over the calibration images), weights int8
    per output channel, as QuantizeLinear / DequantizeLinear pairs ONNX Runtime fuses."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = inputs.require_calibration()
    with tempfile.TemporaryDirectory(prefix="unetq-onnx-") as tmp:
        fp32, ready, int8 = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(_fp32_graph(inputs))
        try:
            with _quiet():
                quant_pre_process(str(fp32), str(ready), skip_symbolic_shape=True)
                quantize_static(
                    str(ready), str(int8), calibration_reader(images), quant_format=QuantFormat.QDQ,
                    per_channel=True,
                )  # fmt: skip
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot quantize the model: {first_line(exc)}") from None
        return Converted({".onnx": int8.read_bytes()}, {"onnx_quantization": "static QDQ U8S8"})


def calibration_reader(images, input_name: str = "image"):
    """ONNX Runtime's CalibrationDataReader over float32 images [N, H, W, 3], one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Images(CalibrationDataReader):
        def __init__(self):
            self.images = iter(images)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {input_name: image[None]}

    return Images()


def _fp32_graph(inputs: ConvertInputs) -> bytes:
    """The fp32 ONNX graph of the source, its input named 'image'."""
    if inputs.origin == "onnx":  # a user's model, already in unetq's conventions
        return Path(inputs.source).read_bytes()
    if inputs.origin == "tflite":
        return _onnx_of_tflite(Path(inputs.source))
    return _onnx_of_export(inputs.source)


def _onnx_of_tflite(path: Path) -> bytes:
    """A .tflite file as an ONNX graph (tf2onnx's TFLite frontend), its input renamed 'image'."""
    import tf2onnx

    try:
        with _quiet():
            proto, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
    except Exception as exc:
        raise ModelError(f"tf2onnx cannot convert {path.name}: {first_line(exc)}") from None
    old = proto.graph.input[0].name
    for node in proto.graph.node:
        node.input[:] = ["image" if name == old else name for name in node.input]
    proto.graph.input[0].name = "image"
    return proto.SerializeToString()


def _onnx_of_export(saved_model_dir: Path) -> bytes:
    """The export's serving signature as an ONNX graph with the input named 'image'."""
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(str(saved_model_dir))  # kept: the signature uses its variables
    serve = loaded.signatures["serve"]
    spec = serve.structured_input_signature[1]["image"]
    signature = [tf.TensorSpec(spec.shape, tf.float32, name="image")]
    try:
        with _quiet():
            proto, _ = tf2onnx.convert.from_function(
                tf.function(lambda image: serve(image=image)), signature, opset=OPSET
            )
    except Exception as exc:
        raise ModelError(f"tf2onnx cannot convert the export: {first_line(exc)}") from None
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet():
    """tf2onnx and the quantizer log every step to stdout / stderr; a progress bar runs."""
    import logging

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
