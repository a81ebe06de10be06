"""tflite-int8-mixed: full int8, with the layers most sensitive to quantization kept in float.

The TFLite quantization debugger runs the float and the quantized model side by side on
calibration images and gives each quantized tensor's error; a layer's sensitivity is
RMSE / scale, its error in units of its quantization step (pure rounding noise is 1/sqrt(12),
about 0.29). Layers are kept in float in order of sensitivity, as few as possible, until the
validation foreground IoU drop is within the budget at the high end of its 95% interval
(unetq.convert.Validation.drop). Chosen over ai-edge-quantizer (which installs cleanly beside
the lock): the debugger is part of TensorFlow, which unetq already needs, and ranks layers by
their own error; the quantizer offers per-tensor control but no per-layer error ranking.

Two properties of TF 2.21's debugger shape the search: `denylisted_nodes` silently ignores
TRANSPOSE_CONV nodes (only `denylisted_ops=["TRANSPOSE_CONV"]` keeps them float, all at once),
and the debug model needs a static batch, which unetq's export has.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np

from unetq.convert import Converted, ConvertInputs
from unetq.convert.tflite import _converter, _representative, tflite_fp32
from unetq.runtimes import native_stderr_quiet, open_interpreter, usable_cores

LAYERS_TABLE = ".layers.csv"  # tflite-int8-mixed.layers.csv beside the model
DEBUG_IMAGES = 16  # calibration images the debugger compares float and int8 on
ROUNDING_NOISE = 1 / np.sqrt(12)
TABLE_COLUMNS = ["rank", "layer", "op", "sensitivity", "kept_float", "tensor"]


def tflite_int8_mixed(inputs: ConvertInputs) -> Converted:
    import tensorflow as tf

    calibration = inputs.require_calibration()
    validation = inputs.require_validation("tflite-int8-mixed")
    converter = _converter(inputs)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(inputs)

    def debug_dataset():
        for image in calibration[:DEBUG_IMAGES]:
            yield [image[None]]

    with native_stderr_quiet():
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=debug_dataset
        )
        debugger.run()
    ranking = sensitivity_ranking(debugger)
    float_scores = validation.scores(_predict(tflite_fp32(inputs).files[".tflite"]))

    def build(k: int) -> bytes:
        nodes = [r["tensor"] for r in ranking[:k] if r["op"] != "TRANSPOSE_CONV"]
        ops = ["TRANSPOSE_CONV"] if any(r["op"] == "TRANSPOSE_CONV" for r in ranking[:k]) else []
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes, denylisted_ops=ops, fully_quantize=False
        )
        with native_stderr_quiet():
            return debugger.get_nondebug_quantized_model()

    tried: dict[int, tuple[np.ndarray, bytes]] = {}

    def drop(k: int) -> float:
        """The pessimistic drop (high end of its interval) with k layers in float."""
        if k not in tried:
            content = build(k)
            tried[k] = (validation.scores(_predict(content)), content)
        return validation.drop(float_scores, tried[k][0])[1]

    kept = fewest_float_layers(drop, len(ranking), inputs.max_iou_drop)
    scores, content = tried[kept]
    deconvs_float = any(r["op"] == "TRANSPOSE_CONV" for r in ranking[:kept])
    for i, row in enumerate(ranking):
        row["kept_float"] = i < kept or (row["op"] == "TRANSPOSE_CONV" and deconvs_float)
    details = {
        **validation.verdict(float_scores, scores, inputs.max_iou_drop),
        "float_layers": [r["layer"] for r in ranking if r["kept_float"]],
        "search": {str(k): round(float(np.nanmean(v[0])), 6) for k, v in sorted(tried.items())},
    }
    return Converted({".tflite": content}, details, reports={LAYERS_TABLE: table_csv(ranking)})


def fewest_float_layers(drop, layers: int, budget: float) -> int:
    """The smallest k whose model (the k most sensitive layers in float) loses at most `budget`:
    k = 0, then doubling, then bisection between the last k that failed and the first that held.
    `drop(k)` is the validation fg IoU lost with k float layers; all layers in float is the
    last resort (it holds up to float rounding)."""
    if drop(0) <= budget:
        return 0
    failed, k = 0, 1
    while k < layers and drop(k) > budget:
        failed, k = k, min(2 * k, layers)
    held = min(k, layers)
    while held - failed > 1:
        middle = (failed + held) // 2
        if drop(middle) <= budget:
            held = middle
        else:
            failed = middle
    drop(held)
    return held


def sensitivity_ranking(debugger) -> list[dict]:
    """Quantized tensors, most sensitive first: layer, op, RMSE / scale, tensor name."""
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    rows = []
    for row in csv.DictReader(buffer):
        scale = float(row["scale"])
        if not scale:
            continue
        name = row["tensor_name"]
        rows.append(
            {
                "layer": keras_layer(name) if "/" in name else f"{row['op_name'].lower()} (output)",
                "op": row["op_name"],
                "sensitivity": round(float(np.sqrt(float(row["mean_squared_error"])) / scale), 4),
                "tensor": row["tensor_name"],
            }
        )
    rows.sort(key=lambda r: -r["sensitivity"])
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        row["kept_float"] = False
    return rows


def keras_layer(tensor_name: str) -> str:
    """The Keras layer a TFLite tensor comes from, read from its fused TF op names: the scope of
    its convolution (else of its first op), without the `_<n>` the export appends
    (`m_1/activation_1/Relu;m_1/conv2d_3_1/convolution` -> `conv2d_3`)."""
    ops = tensor_name.split(";")
    conv = [op for op in ops if re.search(r"conv|depthwise", op.rsplit("/", 1)[-1])]
    parts = (conv or ops)[0].split("/")
    scope = parts[1] if len(parts) > 2 else parts[0]
    return re.sub(r"_\d+$", "", scope)


def table_csv(ranking: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(ranking)
    return out.getvalue().encode()


def _predict(content: bytes):
    """A .tflite model as a function: batch [1, H, W, 3] -> its output."""
    interp = open_interpreter(content=content, threads=usable_cores())
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def predict(batch: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], batch.astype(inp["dtype"]))
        interp.invoke()
        return interp.get_tensor(out["index"])

    return predict
