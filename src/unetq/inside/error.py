"""Where quantization loses accuracy: each weighted layer's output in an int8 variant against the
same layer's output in the float variant of the same runtime, on the same images.

The error is relative: RMS(int8 - float) / RMS(float) over every element of the layer's output
on every image (0.01 = 1%). It is the error the layer's consumers see, the layer's own plus what
it inherited, so it grows along the network; where it jumps, a layer lost accuracy. Its output is
taken after what the runtimes fuse into it (bias, batch norm, activation, the int8 output's
requantization). Only weighted layers are compared: the two runtimes name other ops too
differently for a fair match, and pooling, adds and upsampling add little error of their own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from unetq.inside.layers import WEIGHTED_KINDS, Layer


def relative_rms(quantized: np.ndarray, reference: np.ndarray) -> float:
    """RMS(quantized - reference) / RMS(reference); nan for an all-zero reference."""
    q = np.asarray(quantized, np.float64)
    r = np.asarray(reference, np.float64)
    scale = np.sqrt(np.mean(r * r))
    return float(np.sqrt(np.mean((q - r) ** 2)) / scale) if scale > 0 else float("nan")


def _weighted(layers: list[Layer]) -> dict[str, int]:
    return {layer.name: layer.index for layer in layers if layer.kind in WEIGHTED_KINDS}


# --- OpenVINO ------------------------------------------------------------------------------------


def openvino_errors(
    float_xml: Path, int8_xml: Path, layers: list[Layer], images: np.ndarray
) -> dict[str, float]:
    """Relative error of each weighted layer's output, int8 IR against float IR, both run in f32
    where they compute in float (so the error is the quantization's alone)."""
    outputs = [_openvino_outputs(xml, layers, images) for xml in (float_xml, int8_xml)]
    reference, quantized = outputs
    return {
        name: relative_rms(quantized[name], reference[name])
        for name in reference
        if name in quantized and quantized[name].shape == reference[name].shape
    }


def _openvino_outputs(xml: Path, layers: list[Layer], images: np.ndarray) -> dict[str, np.ndarray]:
    """Each weighted layer's last op's output on `images` (stacked)."""
    import openvino as ov

    from unetq.inside.openvino import map_ops

    core = ov.Core()
    model = core.read_model(str(xml))
    label = map_ops(model, layers)
    weighted = _weighted(layers)
    last: dict[str, Any] = {}
    for op in model.get_ordered_ops():
        name = label.get(op.get_friendly_name())
        if name in weighted and op.get_type_name() != "Result":
            last[name] = op
    for name, op in last.items():  # a tensor name of our own finds the output again
        op.output(0).get_tensor().add_names({f"unetq:{name}"})
    model.add_outputs([op.output(0) for op in last.values()])
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 0}
    compiled = core.compile_model(model, "CPU", config)
    ports = {}
    for port in compiled.outputs:
        for tensor in port.get_names():
            if tensor.startswith("unetq:"):
                ports[tensor.removeprefix("unetq:")] = port
    for name, op in last.items():  # the op of the model's own output keeps that output's names
        if name not in ports and any(
            t.get_node().get_type_name() == "Result" for t in op.output(0).get_target_inputs()
        ):
            ports[name] = compiled.outputs[0]
    request = compiled.create_infer_request()
    stacked: dict[str, list[np.ndarray]] = {n: [] for n in ports}
    for image in images:
        request.infer({0: np.ascontiguousarray(image[None], np.float32)})
        for name, port in ports.items():
            stacked[name].append(request.get_tensor(port).data.copy())
    return {n: np.concatenate(v) for n, v in stacked.items()}


# --- LiteRT --------------------------------------------------------------------------------------


def litert_errors(
    float_tflite: Path, int8_tflite: Path, layers: list[Layer], images: np.ndarray
) -> dict[str, float]:
    """Relative error of each weighted layer's output, int8 .tflite against the float one (both
    on LiteRT's reference kernels, which keep every intermediate tensor)."""
    reference = _litert_outputs(float_tflite, layers, images)
    quantized = _litert_outputs(int8_tflite, layers, images)
    return {
        name: relative_rms(quantized[name], reference[name])
        for name in reference
        if name in quantized and quantized[name].shape == reference[name].shape
    }


def tensor_layer(tensor_name: str, weighted: dict[str, int], indices: dict[str, int]) -> str | None:
    """The Keras layer a .tflite tensor is the output of: a fused op's name lists every layer it
    computes (`model_1/activation_17_1/Relu;model_1/separable_conv2d_6_1/...`); the weighted one
    among them names it, else the latest."""
    mentioned = set()
    for scope in re.split(r"[;/]", tensor_name):
        for candidate in (scope, re.sub(r"_\d+$", "", scope)):
            if candidate in indices:
                mentioned.add(candidate)
    main = [m for m in mentioned if m in weighted]
    pool = main or list(mentioned)
    return max(pool, key=indices.get) if pool else None


def _litert_outputs(tflite: Path, layers: list[Layer], images: np.ndarray) -> dict[str, np.ndarray]:
    from unetq.runtimes import open_interpreter

    interp = open_interpreter(Path(tflite), threads=1, preserve_all_tensors=True)
    details = {t["index"]: t for t in interp.get_tensor_details()}
    weighted = _weighted(layers)
    indices = {layer.name: layer.index for layer in layers}
    last: dict[str, int] = {}
    for op in interp._get_ops_details():
        for index in op["outputs"]:
            name = tensor_layer(details[index]["name"], weighted, indices)
            if name in weighted:
                last[name] = index
    inp = interp.get_input_details()[0]
    stacked: dict[str, list[np.ndarray]] = {n: [] for n in last}
    for image in images:
        interp.set_tensor(inp["index"], _litert_input(image, inp))
        interp.invoke()
        for name, index in last.items():
            stacked[name].append(_dequantized(interp.get_tensor(index), details[index]))
    return {n: np.stack(v) for n, v in stacked.items()}


def _litert_input(image: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    x = np.asarray(image, np.float32)[None]
    if dtype.kind in "iu":
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantized(values: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind in "iu":
        scale, zero = detail["quantization"]
        return (values.astype(np.float32) - zero) * scale
    return values.astype(np.float32)
