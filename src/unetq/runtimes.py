"""Runtime registry: keras, litert, openvino, onnxruntime -> a Predictor with one timed call,
`run`.

Every predictor takes float32 `[1, H, W, 3]` in [0, 1] and returns float32 `[1, H, W, C]`
class probabilities. Heavy libraries (TensorFlow, LiteRT, OpenVINO, ONNX Runtime) are imported
inside the loaders, so a process that only runs LiteRT never pays for TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unetq.errors import ModelError, UnetqError, first_line
from unetq.models import to_input

KERAS_SUFFIXES = (".keras", ".h5")
# OpenVINO spelling -> the name unetq records (BenchRecord.precision)
_OV_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


THREADS_ENV = "UNETQ_THREADS"  # set by a Ray task to the CPUs it was given


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, else os.cpu_count()), at most UNETQ_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = os.environ.get(THREADS_ENV, "")
    return min(cores, int(limit)) if limit.isdigit() and int(limit) > 0 else cores


class Predictor:
    """A loaded model. `run` is the timed call; the other methods are conveniences around it."""

    runtime: str = ""
    artifact: Path
    threads: int = 1
    precision: str = ""
    input_hw: tuple[int, int] = (0, 0)
    num_classes: int = 0
    batch: int = 1  # images per `run_batch` call: the throughput setting (1: one at a time)

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 [1, H, W, 3] in [0, 1] -> float32 [1, H, W, C]: set input, invoke, read output.

        The call that benchmarks time."""
        raise NotImplementedError

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        """float32 [K, H, W, 3] (K <= batch) -> float32 [K, H, W, C]: the call throughput is
        measured on. Runtimes with a batch dimension or asynchronous requests override it."""
        return np.concatenate([self.run(x[i : i + 1]) for i in range(len(x))])

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, H, W, C] class probabilities, `batch` per call."""
        images = self._check_images(images)
        out = np.empty((len(images), *self.input_hw, self.num_classes), np.float32)
        for i in range(0, len(images), self.batch):
            out[i : i + self.batch] = self._call(to_input(images[i : i + self.batch]))
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> uint8 [N, H, W] class maps."""
        images = self._check_images(images)
        maps = np.empty((len(images), *self.input_hw), np.uint8)
        for i in range(0, len(images), self.batch):
            maps[i : i + self.batch] = self._call(to_input(images[i : i + self.batch])).argmax(-1)
        return maps

    def _call(self, x: np.ndarray) -> np.ndarray:
        return self.run(x) if len(x) == 1 and self.batch == 1 else self.run_batch(x)

    def _run_padded(self, x: np.ndarray) -> np.ndarray:
        """`run` on a fixed batch dimension: a partial batch padded with zeros, then dropped."""
        count = len(x)
        if count < self.batch:
            x = np.concatenate([x, np.zeros((self.batch - count, *x.shape[1:]), x.dtype)])
        return self.run(x)[:count]

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


class TiledPredictor:
    """Whole images of any size through a predictor of fixed input T x T (tile mode): the
    overlapping tiles of each image (data.tiles) are segmented and stitched back."""

    def __init__(self, inner: Predictor, overlap: int):
        self.inner = inner
        self.tile = inner.input_hw[0]
        self.overlap = overlap
        if inner.input_hw[0] != inner.input_hw[1]:
            raise ModelError(
                f"{inner.artifact}: tile mode needs a square input, not {inner.input_hw}"
            )
        if not 0 <= overlap < self.tile:
            raise UnetqError(f"tile overlap {overlap} must be smaller than the tile {self.tile}")
        self.runtime = inner.runtime
        self.num_classes = inner.num_classes
        self.input_hw = None  # any size

    @property
    def batch(self) -> int:
        return self.inner.batch

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """uint8 images [H, W, 3] of any sizes -> uint8 class maps [H, W], one per image; the
        tiles of all of them go to the model together (in calls of its batch)."""
        # here, not at the top: the benchmark probe imports this module and must stay lean
        from unetq.data.tiles import segment_images_by_tiles

        return segment_images_by_tiles(images, self.tile, self.overlap, self.inner.predict)


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
    return actual if actual > 0 else usable_cores()


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
        raise ModelError(f"cannot load Keras model {path}: {first_line(exc)}") from None


def segmentation_shape(
    model, path: Path, min_channels: int = 2
) -> tuple[int | None, int | None, int]:
    """Check that `model` maps [N, H, W, 3] images to per-pixel classes (or, with
    `min_channels` 1, one binary channel); return (H, W, C)."""
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
    channels = oshape[-1] if len(oshape) == 4 else None
    if channels == 1 and min_channels > 1:
        raise ModelError(
            f"{path}: one output channel (a binary head): bring the model in with `unetq "
            "benchmark --model`, which cuts it at --threshold, then use its run folder"
        )
    if not spatial_ok or channels is None or channels < min_channels:
        raise ModelError(
            f"{path}: output shape {oshape} is not per-pixel classes "
            f"[N, H, W, C>={min_channels}] "
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
        batch: int | None = None,
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
        self.batch = batch or 8  # evaluate and predict: 8 images per graph call unless told

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._one(self._tf.constant(x, self._tf.float32)).numpy()

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        return self._batch(self._tf.constant(x, self._tf.float32)).numpy()


# ----------------------------------------------------------------------------- litert


def open_interpreter(
    artifact: Path | None = None,
    content: bytes | None = None,
    threads: int = 1,
    preserve_all_tensors: bool = False,
):
    """Create and allocate an ai-edge-litert Interpreter; ModelError if it cannot run.

    Models needing TF "Flex" (Select TF) or custom ops fail here: LiteRT wheels have no Flex
    delegate. The message names the offending ops. `preserve_all_tensors` keeps every
    intermediate tensor readable (on the reference kernels, without XNNPACK).
    """
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    where = str(artifact) if artifact is not None else "converted model"
    source = {"model_content": content} if content is not None else {"model_path": str(artifact)}
    try:
        # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."; the debugging notice
        with native_stderr_quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interp = Interpreter(
                **source,
                num_threads=threads,
                experimental_preserve_all_tensors=preserve_all_tensors,
            )
    except Exception as exc:
        raise ModelError(f"cannot load TFLite model {where}: {first_line(exc)}") from None
    try:
        with native_stderr_quiet():
            interp.allocate_tensors()
    except Exception as exc:
        ops = non_builtin_ops(interp)
        if ops:
            raise ModelError(
                f"{where} needs ops that LiteRT's builtin kernels lack: {', '.join(ops)}"
            ) from None
        raise ModelError(f"cannot run TFLite model {where}: {first_line(exc)}") from None
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

    def __init__(
        self, artifact: Path, threads: int = 1, precision: str | None = None, batch: int = 1, **_
    ):
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
        signature = tuple(inp.get("shape_signature", ishape))
        if len(signature) == 4 and min(signature[1:3]) < 1:  # LiteRT shows -1 as 1
            dims = [int(d) for d in signature]
            raise ModelError(
                f"{self.artifact}: its input size is not fixed ({dims}); convert it at the size "
                "it is to run at"
            )
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
        if batch > 1:
            self._resize(batch)

    def _resize(self, batch: int) -> None:
        """A batch dimension of `batch` images per invoke (XNNPACK runs them in one call)."""
        try:
            with native_stderr_quiet():
                self.interp.resize_tensor_input(self._in_index, [batch, *self.input_hw, 3])
                self.interp.allocate_tensors()
        except Exception as exc:
            reason = first_line(exc)
            raise ModelError(f"{self.artifact}: cannot run batches of {batch}: {reason}") from None
        self.batch = batch

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        return self._run_padded(x)

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
    """OpenVINO's CPU plugin on an IR (`.xml` + `.bin`, e.g. openvino-fp32), one InferRequest.

    The batch dimension is fixed to `batch` (1: the call unetq times); height and width must be
    static. `asynchronous`: compiled with the THROUGHPUT hint instead of LATENCY, images go to
    as many asynchronous requests as the plugin finds best (its streams run them side by side),
    and `batch` becomes that request count. `precision` is an INFERENCE_PRECISION_HINT
    ('f32'/'fp32' or 'bf16') for the float parts; without it the plugin chooses (bf16 on CPUs
    with native bf16). The precision recorded is the one the compiled model reports, as 'fp32',
    'bf16' or 'fp16', prefixed by 'int8+' for a quantized model.
    """

    runtime = "openvino"
    queue = None  # asynchronous: the AsyncInferQueue

    def __init__(
        self,
        artifact: Path,
        threads: int = 1,
        precision: str | None = None,
        batch: int = 1,
        asynchronous: bool = False,
        **_,
    ):
        self.artifact = _require_file(Path(artifact))
        if self.artifact.suffix != ".xml":
            raise ModelError(
                f"openvino runs OpenVINO IR (.xml + .bin; make one with unetq compress --variants "
                f"openvino-fp32): {self.artifact}"
            )
        import openvino as ov

        try:
            model = ov.Core().read_model(str(self.artifact))
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot read {self.artifact}: {ov_reason(exc)}") from None
        if asynchronous and batch != 1:
            raise UnetqError("openvino: asynchronous requests take one image each (batch 1)")
        self._compile(ov, model, threads, _ov_hint(precision), batch, asynchronous)

    def _compile(
        self, ov, model, threads: int, hint: str | None, batch: int = 1, asynchronous=False
    ) -> None:
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(f"{self.artifact}: expected one input and one output")
        ipart = model.inputs[0].get_partial_shape()
        if (
            ipart.rank.is_static
            and ipart.rank.get_length() == 4
            and (ipart[0].is_dynamic or batch > 1)
        ):
            rest = (d.get_length() if d.is_static else -1 for d in list(ipart)[1:])
            try:
                model.reshape([batch, *rest])
            except Exception as exc:
                reason = ov_reason(exc)
                raise ModelError(
                    f"{self.artifact}: cannot run batches of {batch}: {reason}"
                ) from None
        ipart, opart = model.inputs[0].get_partial_shape(), model.outputs[0].get_partial_shape()
        if not (ipart.is_static and opart.is_static):
            raise ModelError(f"{self.artifact}: openvino needs a static [1, H, W, 3] input shape")
        ishape, oshape = tuple(ipart.to_shape()), tuple(opart.to_shape())
        if model.inputs[0].get_element_type() != ov.Type.f32 or len(ishape) != 4:
            raise ModelError(f"{self.artifact}: openvino needs a float32 [1, H, W, 3] input")
        config: dict[str, object] = {
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "THROUGHPUT" if asynchronous else "LATENCY",
        }
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        try:
            self.compiled = ov.Core().compile_model(model, "CPU", config)
        except Exception as exc:
            reason = ov_reason(exc)
            raise ModelError(f"OpenVINO cannot compile {self.artifact}: {reason}") from None
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        self.precision = ("int8+" if quantized else "") + _OV_PRECISIONS.get(chosen, chosen)
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.input_hw = (int(ishape[1]), int(ishape[2]))
        self.num_classes = int(oshape[-1])
        self.request = self.compiled.create_infer_request()
        self.batch = int(ishape[0])
        if asynchronous:
            requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.queue = ov.AsyncInferQueue(self.compiled, requests)
            self.batch = requests
        self._ov = ov

    def run(self, x: np.ndarray) -> np.ndarray:
        self.request.set_input_tensor(self._ov.Tensor(np.ascontiguousarray(x, np.float32)))
        self.request.infer()
        return self.request.get_output_tensor().data.astype(np.float32, copy=True)

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        if self.queue is None:
            return self._run_padded(x)
        out = np.empty((len(x), *self.input_hw, self.num_classes), np.float32)

        def done(request, index: int) -> None:
            out[index] = request.get_output_tensor().data[0]

        self.queue.set_callback(done)
        for i in range(len(x)):
            self.queue.start_async(np.ascontiguousarray(x[i : i + 1], np.float32), i)
        self.queue.wait_all()
        return out


def _ov_hint(precision: str | None) -> str | None:
    if precision is None:
        return None
    aliases = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
    if precision not in aliases:
        raise UnetqError(f"unknown openvino precision '{precision}' (choose from f32, bf16)")
    return aliases[precision]


def ov_reason(exc: BaseException) -> str:
    """OpenVINO errors are multi-line C++ traces; keep the most telling line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from", "Check "))]
    return (useful or lines or [type(exc).__name__])[-1][:200]


# ----------------------------------------------------------------------------- onnxruntime

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"}


class OnnxRuntimePredictor(Predictor):
    """An .onnx model in ONNX Runtime's CPU execution provider (MLAS kernels), one session of
    `threads` intra-op threads. unetq's exports have a batch dimension of 1, so `batch` images
    go through one call each."""

    runtime = "onnxruntime"

    def __init__(
        self, artifact: Path, threads: int = 1, precision: str | None = None, batch: int = 1, **_
    ):
        import onnxruntime as ort

        self.artifact = _require_file(Path(artifact))
        self.threads = int(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                str(self.artifact), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            reason = first_line(exc)
            raise ModelError(f"{self.artifact}: ONNX Runtime cannot load it: {reason}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.artifact}: expected one input and one output tensor")
        ishape, oshape = tuple(inputs[0].shape), tuple(outputs[0].shape)
        bring_in = "; bring it in with `unetq benchmark --model`, then use its run folder"
        if len(ishape) != 4 or ishape[3] != 3 or not all(isinstance(d, int) for d in ishape[1:]):
            raise ModelError(f"{self.artifact}: input shape {ishape} is not [1, H, W, 3]{bring_in}")
        if len(oshape) != 4 or tuple(oshape[1:3]) != tuple(ishape[1:3]) or oshape[3] < 2:
            raise ModelError(
                f"{self.artifact}: output shape {oshape} is not [1, H, W, C>=2]{bring_in}"
            )
        self.input_hw = (int(ishape[1]), int(ishape[2]))
        self.num_classes = int(oshape[3])
        self._input = inputs[0].name
        self.precision = precision or onnx_precision(self.artifact)
        self.batch = int(batch)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(None, {self._input: x})[0]


def onnx_precision(artifact: Path) -> str:
    """'int8' for a quantized (QDQ or integer-op) graph, else 'fp32'."""
    import onnx

    graph = onnx.load(str(artifact), load_external_data=False).graph
    return "int8" if any(node.op_type in QDQ_OPS for node in graph.node) else "fp32"


# ----------------------------------------------------------------------------- registry

RUNTIMES: dict[str, Callable[..., Predictor]] = {
    "keras": KerasPredictor,
    "litert": LiteRTPredictor,
    "openvino": OpenVINOPredictor,
    "onnxruntime": OnnxRuntimePredictor,
}


@dataclass(frozen=True)
class Setting:
    """How a predictor is called over many images: `batch` images per call, or (openvino)
    asynchronous requests with the THROUGHPUT hint, as many as the plugin finds best."""

    batch: int = 1
    asynchronous: bool = False

    @classmethod
    def parse(cls, text: str | int) -> Setting:
        """'4' / 'batch 4' -> batch 4; 'async' -> asynchronous requests."""
        words = str(text).strip().lower().removeprefix("batch").strip()
        if words == "async":
            return cls(1, True)
        if not words.isdigit() or int(words) < 1:
            raise UnetqError(f"batch '{text}' is not a number of images >= 1 or 'async'")
        return cls(int(words))

    @property
    def name(self) -> str:
        return "async" if self.asynchronous else f"batch {self.batch}"

    def options(self) -> dict[str, object]:
        """The loader's keyword arguments (none for one image at a time)."""
        if self.asynchronous:
            return {"asynchronous": True}
        return {"batch": self.batch} if self.batch != 1 else {}

    def check(self, runtime: str) -> None:
        if self.asynchronous and runtime != "openvino":
            raise UnetqError(f"asynchronous requests are openvino's; {runtime} takes a batch size")


def load_predictor(
    runtime: str,
    artifact: Path,
    threads: int = 1,
    precision: str | None = None,
    **options,
) -> Predictor:
    """Load `artifact` for `runtime` with `threads` threads. Options: input_hw (keras only,
    for models whose input size is not fixed), batch, asynchronous (see Setting)."""
    if runtime not in RUNTIMES:
        raise UnetqError(f"unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")
    if int(threads) < 1:
        raise UnetqError(f"threads must be >= 1, got {threads}")
    return RUNTIMES[runtime](Path(artifact), threads=int(threads), precision=precision, **options)


def load_segmenter(
    runtime: str,
    artifact: Path,
    threads: int = 1,
    tile_overlap: int | None = None,
    setting: Setting | None = None,
) -> Predictor | TiledPredictor:
    """A predictor of whole images: as loaded (resize mode), or by overlapping tiles when
    `tile_overlap` is given (tile mode); `setting` for many images per call."""
    options = {}
    if setting is not None:
        setting.check(runtime)
        options = setting.options()
    predictor = load_predictor(runtime, artifact, threads=threads, **options)
    return predictor if tile_overlap is None else TiledPredictor(predictor, tile_overlap)
