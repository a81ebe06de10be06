"""OpenVINO variants: IR from unetq's fp32 export, NNCF int8, and NNCF accuracy-controlled int8.

The path is the one measured fastest: the fp32 .tflite of unetq's export (with its exact
rewrites), TRANSPOSE_CONV's fused activation split out (OpenVINO's frontend drops it), read by
`ov.convert_model`, Softmax moved to the channels-first axis (exact; see
`softmax_channels_first`), then quantized by NNCF on the same calibration images as
tflite-int8. The IR is saved with fp32 weights; the CPU plugin picks the compute precision
when it loads the model (bf16 on CPUs that have it), and the runtime records it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from unetq.convert import Converted, ConvertInputs
from unetq.convert.tflite import tflite_fp32
from unetq.errors import ModelError
from unetq.runtimes import ov_reason

GUARD_ATTEMPTS = 3  # NNCF accuracy-control runs, each with a lower target, until the budget holds


def openvino_fp32(inputs: ConvertInputs) -> Converted:
    return _ir(_from_export(inputs))


def openvino_int8(inputs: ConvertInputs) -> Converted:
    import nncf

    calibration = inputs.require_calibration()
    dataset = nncf.Dataset(list(calibration), _batch_of_one)
    with _nncf_quiet():
        model = nncf.quantize(
            _from_export(inputs),
            dataset,
            subset_size=len(calibration),
            advanced_parameters=_advanced(inputs),
        )
    return _ir(model)


def openvino_int8_guarded(inputs: ConvertInputs) -> Converted:
    """int8 except where NNCF's accuracy control finds that the validation fg IoU would drop by
    more than the budget: those operations go back to float, greedily, one ranked group at a
    time, for at most `inputs.guard_iterations` steps. NNCF holds the mean drop to its target;
    unetq then asks the pessimistic end of the drop's 95% bootstrap interval over the images to
    hold the budget, and if it does not, runs NNCF again with the target lowered by the
    interval's width (at most GUARD_ATTEMPTS runs). The sidecar says whether the budget held."""
    import nncf

    calibration = inputs.require_calibration()
    validation = inputs.require_validation("openvino-int8-guarded")
    float_model = _from_export(inputs)

    def validate(compiled, items) -> tuple[float, list[float]]:
        # NNCF hands over the dataset's raw items: (image, mask), whole images in tile mode
        per_image = [validation.score(image, mask, _predict(compiled)) for image, mask in items]
        return float(np.nanmean(per_image)), per_image

    float_scores = validation.scores(_predict(_compiled_f32(float_model)))
    budget = target = inputs.max_iou_drop
    restorer = nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=inputs.guard_iterations)
    for attempts in range(1, GUARD_ATTEMPTS + 1):
        with _nncf_quiet():
            model = nncf.quantize_with_accuracy_control(
                float_model.clone(),
                nncf.Dataset(list(calibration), _batch_of_one),
                nncf.Dataset(validation.items()),
                validate,
                max_drop=target,
                drop_type=nncf.DropType.ABSOLUTE,
                subset_size=len(calibration),
                advanced_quantization_parameters=_advanced(inputs),
                advanced_accuracy_restorer_parameters=restorer,
            )
        scores = validation.scores(_predict(_compiled_f32(model)))
        details = validation.verdict(float_scores, scores, budget)
        details.update(attempts=attempts, nncf_max_drop=round(target, 6))
        if details["budget_met"] or target <= 0:
            break
        # NNCF holds the mean: leave room for the interval, and go lower than last time
        width = details["predicted_drop_high"] - details["predicted_drop"]
        overshoot = details["predicted_drop_high"] - budget
        target = max(0.0, min(budget - width, target - overshoot))
    details["float_operations"] = float_operations(model)
    return Converted(_ir(model).files, details)


def _advanced(inputs: ConvertInputs):
    """NNCF's parameters: activation ranges as `inputs.openvino_ranges` says (weights keep
    NNCF's per-channel min / max either way)."""
    import nncf
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    ranges = {
        "minmax": RangeEstimatorParametersSet.MINMAX,
        "mean-minmax": RangeEstimatorParametersSet.MEAN_MINMAX,
    }[inputs.openvino_ranges]
    return nncf.AdvancedQuantizationParameters(activations_range_estimator_params=ranges)


def _compiled_f32(model):
    """`model` compiled in f32, the precision NNCF's accuracy control compares in."""
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _predict(compiled):
    return lambda batch: compiled(batch)[compiled.outputs[0]]


def float_operations(model) -> list[str]:
    """Convolutions the CPU plugin runs in float in a quantized model (those NNCF reverted)."""
    names = []
    for op in _compiled_f32(model).get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if "Convolution" in kind and info["runtimePrecision"].astype(str) == "f32":
            names.append(info["originalLayersNames"].astype(str).split(",")[0])
    return names


def _batch_of_one(image: np.ndarray) -> np.ndarray:
    return image[None]


@contextlib.contextmanager
def _nncf_quiet():
    """NNCF logs through its own logger and draws rich progress bars on stdout even when it is
    not a terminal; neither belongs in unetq's output."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _from_export(inputs: ConvertInputs):
    """The fp32 OpenVINO model of unetq's export (see the module docstring), or of a user's
    ONNX or TFLite file as OpenVINO's frontend for it reads it."""
    import openvino as ov

    if inputs.origin == "onnx":
        try:
            model = ov.convert_model(str(inputs.source))
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot convert the ONNX model: {ov_reason(exc)}") from None
        return softmax_channels_first(model)
    if inputs.origin == "tflite":
        content = Path(inputs.source).read_bytes()
    else:
        content = tflite_fp32(inputs).files[".tflite"]
    content = openvino_safe_tflite(content)
    with tempfile.TemporaryDirectory(prefix="unetq-ov-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(content)
        try:
            model = ov.convert_model(str(path))
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot convert the export: {ov_reason(exc)}") from None
    return softmax_channels_first(model)


def softmax_channels_first(model):
    """Every Softmax over the last axis of an NHWC tensor computed over the channel axis of its
    NCHW transpose, then transposed back: the same values, and OpenVINO's CPU plugin runs it
    about 10x faster (its channels-last Softmax over 3 classes took a fifth of the int8 U-Net's
    time). The two transposes fold into the neighbouring layouts."""
    import openvino.opset13 as ops

    for op in model.get_ordered_ops():
        if op.get_type_name() != "Softmax":
            continue
        shape = op.get_output_partial_shape(0)
        if not shape.rank.is_static or shape.rank.get_length() != 4:
            continue
        if int(op.get_attributes().get("axis", 1)) not in (-1, 3):
            continue
        nchw = ops.transpose(op.input_value(0), ops.constant(np.array([0, 3, 1, 2])))
        nhwc = ops.transpose(ops.softmax(nchw, 1), ops.constant(np.array([0, 2, 3, 1])))
        nhwc.output(0).get_tensor().set_names(op.output(0).get_tensor().get_names())
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(nhwc.output(0))
    model.validate_nodes_and_infer_types()
    return model


def _ir(model) -> Converted:
    """The model as IR files: `.xml` (graph) and `.bin` (fp32 / int8 weights)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="unetq-ov-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return Converted({".xml": xml.read_bytes(), ".bin": xml.with_suffix(".bin").read_bytes()})


def openvino_safe_tflite(content: bytes) -> bytes:
    """The .tflite rewritten for OpenVINO's frontend where it needs it, else as it is."""
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        return content  # not a TFLite flatbuffer: let OpenVINO report it
    if not _has_fused_transpose_conv(content):
        return content
    return unfuse_transpose_conv_activations(content) or content


def _has_fused_transpose_conv(content: bytes) -> bool:
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(content, 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        builtin = [max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) for c in codes]
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            for i in range(graph.OperatorsLength()):
                op = graph.Operators(i)
                if builtin[op.OpcodeIndex()] != schema.BuiltinOperator.TRANSPOSE_CONV:
                    continue
                table, options = op.BuiltinOptions(), schema.TransposeConvOptions()
                if table is None:
                    continue
                options.Init(table.Bytes, table.Pos)
                if options.FusedActivationFunction():
                    return True
    except Exception:  # malformed: OpenVINO will say so when it reads the file
        return False
    return False


def unfuse_transpose_conv_activations(content: bytes) -> bytes | None:
    """Move TRANSPOSE_CONV's fused activation into its own op; None if there is none to move.

    OpenVINO 2026.4's TFLite frontend drops the fused activation of TRANSPOSE_CONV (its
    conv and add translators honour it; transpose_conv.cpp never reads it). The TFLite
    converter fuses Conv2DTranspose -> BatchNorm -> ReLU into one TRANSPOSE_CONV with
    RELU, so the U-Net's decoder ran without its ReLUs: probabilities off by up to 0.4 and
    a quarter of the pixels classified differently. Rewriting the graph as
    TRANSPOSE_CONV(NONE) -> RELU computes what LiteRT computes.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    ops_by_activation = {
        schema.ActivationFunctionType.RELU: schema.BuiltinOperator.RELU,
        schema.ActivationFunctionType.RELU_N1_TO_1: schema.BuiltinOperator.RELU_N1_TO_1,
        schema.ActivationFunctionType.RELU6: schema.BuiltinOperator.RELU6,
        schema.ActivationFunctionType.TANH: schema.BuiltinOperator.TANH,
    }
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    codes = model.operatorCodes

    def code_of(op) -> int:
        code = codes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    def opcode_index(builtin: int) -> int:
        for i, code in enumerate(codes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
                return i
        new = schema.OperatorCodeT()
        new.builtinCode = new.deprecatedBuiltinCode = builtin
        new.version = 1
        codes.append(new)
        return len(codes) - 1

    changed = False
    for graph in model.subgraphs:
        patched = []
        for op in graph.operators:
            patched.append(op)
            options = op.builtinOptions
            act = getattr(options, "fusedActivationFunction", 0)
            if code_of(op) != schema.BuiltinOperator.TRANSPOSE_CONV or not act:
                continue
            if act not in ops_by_activation:
                raise ModelError(f"TRANSPOSE_CONV with fused activation {act} is not supported")
            outputs = [int(i) for i in op.outputs]
            pre = copy.copy(graph.tensors[outputs[0]])
            name = pre.name.decode() if isinstance(pre.name, bytes) else (pre.name or "")
            pre.name = f"{name}/before_activation"
            pre.buffer = 0  # buffer 0 is the empty sentinel: an activation, not a constant
            graph.tensors.append(pre)
            op.outputs = [len(graph.tensors) - 1, *outputs[1:]]
            options.fusedActivationFunction = schema.ActivationFunctionType.NONE
            activation = schema.OperatorT()
            activation.opcodeIndex = opcode_index(ops_by_activation[act])
            activation.inputs, activation.outputs = [op.outputs[0]], [outputs[0]]
            patched.append(activation)
            changed = True
        graph.operators = patched
    if not changed:
        return None
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
