"""Runtime registry: keras, litert, openvino -> a Predictor with one timed call, `run`.

Every predictor takes float32 `[1, H, W, 3]` in [0, 1] and returns float32 `[1, H, W, C]`
class probabilities. Heavy libraries (TensorFlow, LiteRT, OpenVINO) are imported inside the
loaders, so a process that only runs LiteRT never pays for TensorFlow.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unetq.errors import ModelError, UnetqError

KERAS_SUFFIXES = (".keras", ".h5")
# OpenVINO spelling -> the name unetq records (BenchRecord.precision)
_OV_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Predictor:
    """A loaded model. `run` is the timed call; the other methods are conveniences around it."""

    runtime: str = ""
    artifact: Path
    threads: int = 1
    precision: str = ""
    input_hw: tuple[int, int] = (0, 0)
    num_classes: int = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 [1, H, W, 3] in [0, 1] -> float32 [1, H, W, C]: set input, invoke, read output.

        The call that benchmarks time."""
        raise NotImplementedError

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, H, W, C] class probabilities, one image per call."""
        images = self._check_images(images)
        out = np.empty((len(images), *self.input_hw, self.num_classes), np.float32)
        for i in range(len(images)):
            out[i] = self.run(to_input(images[i : i + 1]))[0]
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, H, W] class maps."""
        images = self._check_images(images)
        maps = np.empty((len(images), *self.input_hw), np.uint8)
        for i in range(len(images)):
            maps[i] = self.run(to_input(images[i : i + 1]))[0].argmax(-1)
        return maps

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != (*self.input_hw, 3):
            h, w = self.input_hw
            raise UnetqError(
                f"images of shape {images.shape} do not fit {self.artifact} "
                f"(expects [N, {h}, {w}, 3])"
            )
        return images

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(artifact={str(self.artifact)!r}, threads={self.threads}, "
            f"precision={self.precision!r}, input_hw={self.input_hw}, classes={self.num_classes})"
        )


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1], the model input convention."""
    return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _require_file(artifact: Path) -> Path:
    artifact = Path(artifact)
    if not artifact.is_file():
        raise ModelError(f"model file not found: {artifact}")
    return artifact


# ----------------------------------------------------------------------------- keras


@contextlib.contextmanager
def native_stderr_quiet():
    """Keep what C++ code writes to stderr (file descriptor 2) off the terminal in the block.

    For TensorFlow's start-up notices and the TFLite converter's calibration lines, which
    TF_CPP_MIN_LOG_LEVEL does not silence. Python exceptions still propagate with their messages.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow with its C++ start-up notices (the oneDNN banner) kept off stderr.

    TF_CPP_MIN_LOG_LEVEL does not silence them in TF 2.21: they are logged before absl's
    logging starts. Python-level import errors still raise.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_stderr_quiet():
        import tensorflow as tf
    return tf


def set_tf_threads(threads: int) -> int:
    """Ask TensorFlow for `threads` intra- and inter-op threads; return the count in effect.

    TensorFlow reads these once, when its runtime context starts (the first op, variable or
    model load); a process can set them only before that. If TF is already running with other
    values, the request is ignored and the value actually in effect is returned (0 in TF means
    "one per available core").
    """
    import tensorflow as tf

    # One inter-op thread: a U-Net's ops run one after another, and a second pool only competes
    # with the intra-op threads for the cores (measured: training 20.5 -> 13.7 s per epoch).
    for setter, value in (
        (tf.config.threading.set_intra_op_parallelism_threads, threads),
        (tf.config.threading.set_inter_op_parallelism_threads, 1),
    ):
        with contextlib.suppress(RuntimeError):  # context already running with other values
            setter(value)
    actual = tf.config.threading.get_intra_op_parallelism_threads()
    return actual if actual > 0 else available_cores()


def load_keras_model(path: Path):
    """Load a Keras model file (no compile) or raise a one-line ModelError."""
    path = _require_file(path)
    if path.suffix not in KERAS_SUFFIXES:
        raise ModelError(f"not a Keras model file (expected .keras or .h5): {path}")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"not a Keras model file (not a zip archive, or truncated): {path}")
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # zip/JSON/HDF5/deserialisation errors all mean "unreadable"
        raise ModelError(f"cannot load Keras model {path}: {_first_line(exc)}") from None


def segmentation_shape(model, path: Path) -> tuple[int | None, int | None, int]:
    """Check that `model` maps [N, H, W, 3] images to per-pixel classes; return (H, W, C)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"{path}: expected one input and one output, got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs"
        )
    ishape = tuple(model.inputs[0].shape)
    oshape = tuple(model.outputs[0].shape)
    if len(ishape) != 4 or ishape[-1] != 3:
        raise ModelError(f"{path}: input shape {ishape} is not RGB images [N, H, W, 3]")
    pairs = zip(ishape[1:3], oshape[1:3], strict=False)  # ranks are checked just below
    spatial_ok = all(o is None or i is None or o == i for i, o in pairs)
    if len(oshape) != 4 or not spatial_ok or oshape[-1] is None or oshape[-1] < 2:
        raise ModelError(
            f"{path}: output shape {oshape} is not per-pixel classes [N, H, W, C>=2] "
            f"for input {ishape}"
        )
    return ishape[1], ishape[2], int(oshape[-1])


class KerasPredictor(Predictor):
    """The float32 Keras model run by TensorFlow through a traced `tf.function`.

    `run` calls a `tf.function` with the fixed signature [1, H, W, 3] (a graph call like the
    study's SavedModel signature); eager `model(x)` is several times slower per image.
    Threads: see `set_tf_threads` -- TensorFlow takes them once per process, so `threads`
    records the count actually in effect, which may differ from the one asked for.
    """

    runtime = "keras"

    def __init__(
        self,
        artifact: Path,
        threads: int = 1,
        precision: str | None = None,
        input_hw: tuple[int, int] | None = None,
    ):
        if precision not in (None, "fp32"):
            raise UnetqError(f"runtime keras runs fp32 only, not precision '{precision}'")
        self.artifact = _require_file(Path(artifact))
        self.threads = set_tf_threads(threads)  # before TF creates anything
        import tensorflow as tf

        self.model = load_keras_model(self.artifact)
        h, w, self.num_classes = segmentation_shape(self.model, self.artifact)
        if h is None or w is None:
            if input_hw is None:
                raise ModelError(f"{self.artifact}: input size is not fixed; pass input_hw")
            h, w = input_hw
        self.input_hw = (int(h), int(w))
        self.precision = "fp32"
        model = self.model
        self._one = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([1, *self.input_hw, 3], tf.float32)],
        )
        self._batch = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, *self.input_hw, 3], tf.float32)],
        )
        self._tf = tf

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._one(self._tf.constant(x, self._tf.float32)).numpy()

    def predict_proba(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        images = self._check_images(images)
        parts = [
            self._batch(to_input(images[i : i + batch_size])).numpy()
            for i in range(0, len(images), batch_size)
        ]
        if not parts:
            return np.empty((0, *self.input_hw, self.num_classes), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def predict(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        return self.predict_proba(images, batch_size).argmax(-1).astype(np.uint8)


# ----------------------------------------------------------------------------- litert


def open_interpreter(artifact: Path | None = None, content: bytes | None = None, threads: int = 1):
    """Create and allocate an ai-edge-litert Interpreter; ModelError if it cannot run.

    Models needing TF "Flex" (Select TF) or custom ops fail here: LiteRT wheels have no Flex
    delegate. The message names the offending ops.
    """
    from ai_edge_litert.interpreter import Interpreter

    where = str(artifact) if artifact is not None else "converted model"
    try:
        with native_stderr_quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            if content is not None:
                interp = Interpreter(model_content=content, num_threads=threads)
            else:
                interp = Interpreter(model_path=str(artifact), num_threads=threads)
    except Exception as exc:
        raise ModelError(f"cannot load TFLite model {where}: {_first_line(exc)}") from None
    try:
        with native_stderr_quiet():
            interp.allocate_tensors()
    except Exception as exc:
        ops = non_builtin_ops(interp)
        if ops:
            raise ModelError(
                f"{where} needs ops that LiteRT's builtin kernels lack: {', '.join(ops)}"
            ) from None
        raise ModelError(f"cannot run TFLite model {where}: {_first_line(exc)}") from None
    return interp


def _ops(interp) -> list[dict]:
    try:
        return list(interp._get_ops_details())
    except Exception:  # private API; absence only costs detail in messages
        return []


def non_builtin_ops(interp) -> list[str]:
    """Names of Flex/custom ops in a LiteRT interpreter's graph, sorted."""
    builtin = _builtin_op_names()
    names = {op["op_name"] for op in _ops(interp)}
    return sorted(n for n in names if n.startswith("Flex") or (builtin and n not in builtin))


def _builtin_op_names() -> set[str]:
    try:
        from ai_edge_litert import schema_py_generated as schema

        return {k for k in vars(schema.BuiltinOperator) if k.isupper()} | {"DELEGATE"}
    except Exception:
        return set()


def tflite_precision(interp) -> str:
    """The variant kind, read from tensor types: fp32, fp16-weights, dynamic-int8, int8, int16x8."""
    tensors = interp.get_tensor_details()
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in tensors}
    compute = [op for op in _ops(interp) if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")]
    activations = {np.dtype(dtypes[i]) for op in compute for i in op["outputs"] if i in dtypes}
    every = set(dtypes.values())
    if np.dtype(np.int16) in activations:
        return "int16x8"
    if activations & {np.dtype(np.int8), np.dtype(np.uint8)}:
        return "int8"
    if np.dtype(np.float16) in every:
        return "fp16-weights"
    if np.dtype(np.int8) in every:
        return "dynamic-int8"
    return "fp32"


class LiteRTPredictor(Predictor):
    """A .tflite model in ai-edge-litert (XNNPACK is its default delegate)."""

    runtime = "litert"

    def __init__(self, artifact: Path, threads: int = 1, precision: str | None = None, **_):
        self.artifact = _require_file(Path(artifact))
        self.threads = int(threads)
        self.interp = open_interpreter(self.artifact, threads=self.threads)
        inputs, outputs = self.interp.get_input_details(), self.interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.artifact}: expected one input and one output tensor")
        inp, out = inputs[0], outputs[0]
        ishape, oshape = tuple(inp["shape"]), tuple(out["shape"])
        if len(ishape) != 4 or ishape[0] != 1 or ishape[3] != 3:
            raise ModelError(f"{self.artifact}: input shape {ishape} is not [1, H, W, 3]")
        if len(oshape) != 4 or oshape[1:3] != ishape[1:3] or oshape[3] < 2:
            raise ModelError(f"{self.artifact}: output shape {oshape} is not [1, H, W, C>=2]")
        self.input_hw = (int(ishape[1]), int(ishape[2]))
        self.num_classes = int(oshape[3])
        self.precision = precision or tflite_precision(self.interp)
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype, self._out_dtype = np.dtype(inp["dtype"]), np.dtype(out["dtype"])
        self._in_q, self._out_q = inp["quantization"], out["quantization"]
        self.io_dtype = self._in_dtype.name
        if self._in_dtype.kind in "iu":
            info = np.iinfo(self._in_dtype)
            self._in_range = (info.min, info.max)

    def run(self, x: np.ndarray) -> np.ndarray:
        if self._in_dtype.kind in "iu":  # integer IO: real = scale * (q - zero_point)
            scale, zero = self._in_q
            q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero
            x = np.clip(q, *self._in_range).astype(self._in_dtype)
        else:
            x = np.ascontiguousarray(x, dtype=self._in_dtype)
        self.interp.set_tensor(self._in_index, x)
        self.interp.invoke()
        y = self.interp.get_tensor(self._out_index)
        if self._out_dtype.kind in "iu":
            scale, zero = self._out_q
            return (y.astype(np.float32) - np.float32(zero)) * np.float32(scale)
        return y.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- openvino


class OpenVINOPredictor(Predictor):
    """OpenVINO's CPU plugin on a .tflite file (normally tflite-fp32), one InferRequest.

    `precision` is an INFERENCE_PRECISION_HINT ('f32'/'fp32' or 'bf16'); without it the plugin
    chooses (bf16 on CPUs with native bf16). The precision recorded is the one the compiled
    model reports, as 'fp32', 'bf16' or 'fp16'.
    """

    runtime = "openvino"

    def __init__(self, artifact: Path, threads: int = 1, precision: str | None = None, **_):
        self.artifact = _require_file(Path(artifact))
        if self.artifact.suffix != ".tflite":
            raise ModelError(f"openvino runs .tflite files (use tflite-fp32): {self.artifact}")
        hint = _ov_hint(precision)
        import openvino as ov

        core = ov.Core()
        with tempfile.TemporaryDirectory(prefix="unetq-ov-") as tmp:
            source = self.artifact
            fixed = _openvino_safe_tflite(self.artifact)
            self.unfused_activations = fixed is not None
            if fixed is not None:
                source = Path(tmp) / self.artifact.name
                source.write_bytes(fixed)
            self._compile(ov, core, source, threads, hint)

    def _compile(self, ov, core, source: Path, threads: int, hint: str | None) -> None:
        try:
            model = core.read_model(str(source))
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot read {self.artifact}: {_ov_reason(exc)}") from None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(f"{self.artifact}: expected one input and one output")
        ipart, opart = model.inputs[0].get_partial_shape(), model.outputs[0].get_partial_shape()
        if not (ipart.is_static and opart.is_static):
            raise ModelError(f"{self.artifact}: openvino needs a static [1, H, W, 3] input shape")
        ishape, oshape = tuple(ipart.to_shape()), tuple(opart.to_shape())
        if model.inputs[0].get_element_type() != ov.Type.f32 or len(ishape) != 4:
            raise ModelError(
                f"{self.artifact}: openvino needs a float32 [1, H, W, 3] input (use tflite-fp32)"
            )
        config: dict[str, object] = {
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
        }
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            reason = _ov_reason(exc)
            raise ModelError(f"OpenVINO cannot compile {self.artifact}: {reason}") from None
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = _OV_PRECISIONS.get(chosen, chosen)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.input_hw = (int(ishape[1]), int(ishape[2]))
        self.num_classes = int(oshape[-1])
        self.request = self.compiled.create_infer_request()
        self._ov = ov

    def run(self, x: np.ndarray) -> np.ndarray:
        self.request.set_input_tensor(self._ov.Tensor(np.ascontiguousarray(x, np.float32)))
        self.request.infer()
        return self.request.get_output_tensor().data.astype(np.float32, copy=True)


def _openvino_safe_tflite(path: Path) -> bytes | None:
    """The .tflite rewritten for OpenVINO's frontend, or None if it needs no rewrite."""
    content = path.read_bytes()
    from ai_edge_litert import schema_py_generated as schema

    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        return None  # not a TFLite flatbuffer: let OpenVINO report it
    if not _has_fused_transpose_conv(content):
        return None
    return unfuse_transpose_conv_activations(content)


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


def _ov_hint(precision: str | None) -> str | None:
    if precision is None:
        return None
    aliases = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
    if precision not in aliases:
        raise UnetqError(f"unknown openvino precision '{precision}' (choose from f32, bf16)")
    return aliases[precision]


def _ov_reason(exc: BaseException) -> str:
    """OpenVINO errors are multi-line C++ traces; keep the most telling line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check "))]
    return (useful or lines or [type(exc).__name__])[-1][:200]


# ----------------------------------------------------------------------------- registry

RUNTIMES: dict[str, Callable[..., Predictor]] = {
    "keras": KerasPredictor,
    "litert": LiteRTPredictor,
    "openvino": OpenVINOPredictor,
}


def load_predictor(
    runtime: str,
    artifact: Path,
    threads: int = 1,
    precision: str | None = None,
    **options,
) -> Predictor:
    """Load `artifact` for `runtime` with `threads` threads. Options: input_hw (keras only,
    for models whose input size is not fixed)."""
    if runtime not in RUNTIMES:
        raise UnetqError(f"unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")
    if int(threads) < 1:
        raise UnetqError(f"threads must be >= 1, got {threads}")
    return RUNTIMES[runtime](Path(artifact), threads=int(threads), precision=precision, **options)
