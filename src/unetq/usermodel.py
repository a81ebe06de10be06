"""A user's own trained model, brought into unetq's conventions for `unetq benchmark`.

unetq feeds every variant float32 RGB images in [0, 1] of a fixed size and takes per-pixel class
scores [N, H, W, C>=2] back. A model that expects other pixels (e.g. [-1, 1] for a MobileNet
encoder, ImageNet mean / std, BGR minus the mean for caffe-style weights) gets a layer in front
that maps [0, 1] onto them; a one-channel (binary) head gets a two-channel one behind whose
argmax is its threshold; a model whose input size is not fixed gets a fixed one. The result is
saved as the run's model.keras, so calibration, evaluation, benchmarking and `unetq predict`
treat it as any unetq model. The graph is rebuilt flat (not nested), so the export's rewrites
reach the user's layers.

An ONNX model (NCHW or NHWC) gets the same edits as ONNX nodes (unetq.onnxgraph) and is saved
as model.onnx; a .tflite file is taken as it is (model.tflite) and must already take [0, 1] RGB
and give class scores. Either is then every variant's source and reference (unetq.compress).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from unetq.conventions import INPUT_NORMS, Conventions, input_norm_from_flags
from unetq.errors import ConfigError, ModelError
from unetq.fileio import atomic_save, write_bytes, write_json
from unetq.records import InputNorm, ModelInfo
from unetq.runfolder import file_digest, model_id_of, read_json
from unetq.runtimes import load_keras_model, segmentation_shape

DEFAULT_NORM = "default (unetq's convention; --input-norm to change)"
TFLITE_NORM = "unetq's convention (a .tflite file runs as it is)"


def model_id_for(path: Path) -> str:
    """`models/<id>/model.keras` (.onnx, .tflite) -> id; any other file -> its stem; made safe
    for a folder."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", model_id_of(path)) or "model"


def inspect_model(path: Path, said: Conventions | None = None, size: int | None = None):
    """(the model to adopt, its ModelInfo; an ONNX model comes already edited, a .tflite as
    None): checks that it maps RGB images to per-pixel classes
    (or one binary channel), fixes its input size (its own, else `size`) and finds the pixels
    it expects. A Keras model, an ONNX model (NCHW or NHWC) or a .tflite file."""
    path = Path(path)
    said = said or Conventions()
    if path.is_dir():
        raise ModelError(
            f"{path} is a folder (a SavedModel?); unetq reads Keras 3 models (.keras, .h5), "
            "ONNX models and .tflite files: save yours with model.save('name.keras')"
        )
    norm, norm_from = input_norm_from_flags(said)  # usage errors before the model loads
    if path.suffix == ".onnx":
        return _inspect_onnx(path, said, norm, norm_from, size)
    if path.suffix == ".tflite":
        return _inspect_tflite(path, said, norm, size)
    model = load_keras_model(path)
    h, w, channels = segmentation_shape(model, path, min_channels=1)
    if norm is None:
        norm, norm_from = _norm_from_model(model)
    output = said.output or _output_kind(model)
    head = (channels, output, said.threshold)
    return model, _model_info(path, (h, w), size, norm, norm_from, head, "keras", "NHWC")


def _inspect_onnx(path: Path, said: Conventions, norm, norm_from: str, size: int | None):
    from unetq import onnxgraph

    model = onnxgraph.load_onnx(path)
    sig = onnxgraph.read_signature(model, path)
    if norm is None:
        norm, norm_from = INPUT_NORMS["unit"], DEFAULT_NORM
    head = (sig.channels, said.output or sig.output, said.threshold)
    info = _model_info(
        path, (sig.height, sig.width), size, norm, norm_from, head, "onnx", sig.layout
    )
    return onnxgraph.adopted(model, info), info  # edited now: its errors before anything is written


def _inspect_tflite(path: Path, said: Conventions, norm, size: int | None):
    """A .tflite file runs as it is: it must already take unetq's pixels and give classes."""
    from unetq.runtimes import load_predictor

    if norm is not None and norm != INPUT_NORMS["unit"]:
        raise ConfigError(
            f"{path.name}: a .tflite file runs as it is, on RGB pixels in [0, 1]; a model that "
            "expects other pixels needs its normalisation inside it"
        )
    if said.threshold is not None:
        raise ConfigError(f"{path.name}: --threshold is for one-channel heads; a .tflite file "
                          "must give class scores [N, H, W, C>=2]")  # fmt: skip
    predictor = load_predictor("litert", path)  # checks [1, H, W, 3] -> [1, H, W, C>=2]
    head = (predictor.num_classes, said.output or "probabilities", None)
    h, w = predictor.input_hw
    info = _model_info(path, (h, w), None, INPUT_NORMS["unit"], TFLITE_NORM, head, "tflite", "NHWC")
    return None, info


def _model_info(path: Path, hw, size, norm, norm_from, head, fmt: str, layout: str) -> ModelInfo:
    """The ModelInfo of a checked model: its input size fixed (its own, else `size`), square;
    `head` = (output channels, output kind, the threshold the user gave)."""
    h, w = hw
    channels, output, threshold = head
    fixed = h is None or w is None
    if fixed:
        if size is None:
            raise ModelError(f"{path}: its input size is not fixed; pass --size N")
        h = h or size
        w = w or size
    if h != w:
        raise ModelError(f"{path}: input {h}x{w} is not square; unetq's datasets are square")
    if threshold is not None and channels != 1:
        raise ConfigError(
            f"--threshold is for a one-channel (binary) head; {path.name} has {channels} "
            "output channels and takes the most likely class"
        )
    return ModelInfo(
        source=str(path.resolve()),
        source_sha256=file_digest(path),
        input_hw=(int(h), int(w)),
        size_fixed_by_unetq=fixed,
        num_classes=max(channels, 2),
        input_norm=norm,
        norm_from=norm_from,
        output=output,
        output_channels=channels,
        threshold=(0.5 if threshold is None else threshold) if channels == 1 else None,
        format=fmt,
        layout=layout,
    )


def _norm_from_model(model) -> tuple[InputNorm, str]:
    """A Rescaling or Normalization layer first takes raw pixels: 0..255 for a Rescaling, and for
    a Normalization whatever its adapted mean says (0..1 when every mean is at most 1)."""
    first = _first_layer(model)
    kind = type(first).__name__ if first is not None else ""
    if kind == "Rescaling":
        return INPUT_NORMS["raw"], f"its Rescaling layer '{first.name}'"
    if kind == "Normalization":
        import numpy as np

        mean = np.asarray(getattr(first, "mean", 0.0), dtype=float)
        name = "unit" if float(mean.max(initial=0.0)) <= 1.0 else "raw"
        return INPUT_NORMS[name], f"its Normalization layer '{first.name}' (mean {mean.max():.3g})"
    return INPUT_NORMS["unit"], DEFAULT_NORM


def _first_layer(model):
    """The first layer after the input: where a model keeps its own pixel scaling."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    return layers[0] if layers else None


def _output_kind(model) -> str:
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if type(last).__name__ == "Softmax" or activation in ("softmax", "sigmoid"):
        return "probabilities"
    return "logits"


def adopt(model, info: ModelInfo, model_file: Path, info_file: Path) -> None:
    """Save the model as unetq runs it: [0, 1] RGB input of info.input_hw mapped onto the
    pixels it expects, per-pixel scores of at least two classes out (NHWC). An ONNX model is
    edited as an ONNX graph; a .tflite file is copied as it is."""
    if info.format == "onnx":
        from unetq import onnxgraph

        onnxgraph.save_onnx(model, model_file)  # inspect_model adopted it
    elif info.format == "tflite":
        write_bytes(model_file, Path(info.source).read_bytes())
    else:
        _adopt_keras(model, info, model_file)
    write_json(info_file, _to_json(info))


def _adopt_keras(model, info: ModelInfo, model_file: Path) -> None:
    import keras

    h, w = info.input_hw
    image = keras.Input((h, w, 3), name="image")
    scores = _call_flat(model, _normalise(image, info.input_norm))
    if info.output_channels == 1:
        scores = _two_classes(scores, info)
    adopted = keras.Model(image, scores, name=model.name)
    atomic_save(model_file, adopted.save)


def _normalise(image, norm: InputNorm):
    """[0, 1] RGB -> the model's pixels: a Rescaling (per channel where the channels differ),
    or, for BGR, a fixed 1x1 convolution that also swaps the channels."""
    import keras
    import numpy as np

    mean, std = np.asarray(norm.mean), np.asarray(norm.std)
    scale, offset = 255.0 / std, -mean / std  # x in [0, 1] is pixel / 255
    if norm.bgr:
        swap = np.zeros((1, 1, 3, 3), np.float32)
        for c in range(3):
            swap[0, 0, 2 - c, c] = scale[c]  # output channel c reads input channel 2 - c
        conv = keras.layers.Conv2D(3, 1, name="unetq_input_norm", trainable=False)
        out = conv(image)
        conv.set_weights([swap, offset.astype(np.float32)])
        return out
    if np.allclose(scale, 1.0) and np.allclose(offset, 0.0):
        return image
    if np.ptp(scale) == 0 and np.ptp(offset) == 0:
        scale, offset = float(scale[0]), float(offset[0])
    return keras.layers.Rescaling(scale=scale, offset=offset, name="unetq_input_norm")(image)


def _two_classes(y, info: ModelInfo):
    """One channel y -> [2 cut - y, y]: the argmax is class 1 exactly where y > cut, and for a
    sigmoid at the default cut 0.5 the pair is (1 - p, p), the two class probabilities."""
    import keras

    t = info.threshold
    cut = t if info.output == "probabilities" else math.log(t / (1.0 - t))
    other = keras.layers.Rescaling(scale=-1.0, offset=2.0 * cut, name="unetq_background")(y)
    return keras.layers.Concatenate(name="unetq_binary_classes")([other, y])


def _call_flat(model, x):
    """The model applied to `x` layer by layer (a flat graph the export can rewrite); a model
    that is not a plain functional graph is called as one layer."""
    graph = getattr(model, "_functional", model)
    try:
        out = graph._run_through_graph([x], operation_fn=lambda layer: layer)
    except Exception:  # subclassed or unusual models: nested, rewrites do not reach inside
        return model(x)
    return out[0] if isinstance(out, list | tuple) else out


def _to_json(info: ModelInfo) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(info)))


def adopted_info(info_file: Path) -> ModelInfo | None:
    """The ModelInfo a run folder holds for a model, or None."""
    data = read_json(info_file)
    return ModelInfo.from_json(data) if data else None
