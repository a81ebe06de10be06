"""The TFLite converter's variants of an exported SavedModel, and what went wrong when one fails."""

from __future__ import annotations

import re
from pathlib import Path

from unetq.convert import Converted, ConvertInputs
from unetq.errors import ModelError, first_line
from unetq.runtimes import non_builtin_ops, open_interpreter


def _tf():
    import tensorflow as tf

    return tf


def _converter(inputs: ConvertInputs):
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(inputs.source))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never SELECT_TF_OPS
    return conv


def _representative(inputs: ConvertInputs):
    images = inputs.require_calibration()

    def generate():
        for i in range(len(images)):
            yield [images[i : i + 1]]

    return generate


def tflite_fp32(inputs: ConvertInputs) -> Converted:
    return Converted({".tflite": _converter(inputs).convert()})


def tflite_dynamic_int8(inputs: ConvertInputs) -> Converted:
    conv = _converter(inputs)
    conv.optimizations = [_tf().lite.Optimize.DEFAULT]
    return Converted({".tflite": conv.convert()})


def tflite_fp16(inputs: ConvertInputs) -> Converted:
    tf = _tf()
    conv = _converter(inputs)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return Converted({".tflite": conv.convert()})


def tflite_int8(inputs: ConvertInputs) -> Converted:
    tf = _tf()
    conv = _converter(inputs)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(inputs)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if inputs.int8_io == "uint8":
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return Converted({".tflite": conv.convert()})


def tflite_int16x8(inputs: ConvertInputs) -> Converted:
    tf = _tf()
    conv = _converter(inputs)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(inputs)
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    return Converted({".tflite": conv.convert()})


def check_builtin_only(content: bytes, what: str) -> None:
    """Raise ModelError unless `content` loads and allocates in LiteRT with builtin ops only."""
    interp = open_interpreter(content=content)
    ops = non_builtin_ops(interp)
    if ops:
        raise ModelError(f"{what} needs ops that LiteRT's builtin kernels lack: {', '.join(ops)}")


def conversion_error(exc: BaseException, variant: str, model, model_path: Path) -> ModelError:
    """A one-line ModelError for a failed conversion, naming unsupported TF ops and layers."""
    ops: list[str] = []
    layers: list[str] = []
    names = {layer.name for layer in getattr(model, "layers", [])}
    for err in getattr(exc, "errors", None) or []:
        op = getattr(getattr(err, "operator", None), "name", "")
        if op:
            ops.append(op.removeprefix("tf."))
        for call in getattr(getattr(err, "location", None), "call", []):
            layer = _layer_of(call.name, names)
            if layer:
                layers.append(layer)
                break
    if not ops:
        ops = re.findall(r"'tf\.(\w+)' op is neither", str(exc))
    ops, layers = sorted(set(ops)), sorted(set(layers))
    if ops:
        where = f" in layer {', '.join(layers)}" if layers else ""
        return ModelError(
            f"{model_path}: {variant} needs TensorFlow op(s) {', '.join(ops)}{where} that are "
            f"not TFLite builtins (LiteRT has no Flex delegate); replace that layer"
        )
    return ModelError(f"{model_path}: {variant} conversion failed: {first_line(exc)}")


def _layer_of(location: str, layer_names: set[str]) -> str | None:
    """'functional_1/my_layer_1/Erf@__inference_..' -> 'my_layer' if the model has that layer."""
    for part in location.split("@")[0].split("/"):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in layer_names:
                return candidate
    return None
