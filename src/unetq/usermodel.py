"""A user's own trained model, brought into unetq's conventions for `unetq benchmark`.

unetq feeds every variant float32 images in [0, 1] of a fixed size. A model that expects another
pixel range (e.g. [-1, 1] for a MobileNet encoder, [0, 255] for one with its own Rescaling
layer) gets a Rescaling layer in front that maps [0, 1] onto that range, and a model whose
input size is not fixed gets a fixed one; the result is saved as the run's model.keras, so
calibration, evaluation and benchmarking feed every variant the same scaled input. The graph is
rebuilt flat (not nested), so the export's rewrites reach the user's layers.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from unetq.errors import ConfigError, ModelError
from unetq.fileio import atomic_save, write_json
from unetq.records import ModelInfo
from unetq.runfolder import MODEL_FILE, file_digest, read_json
from unetq.runtimes import load_keras_model, segmentation_shape

INPUT_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}
RANGE_LAYERS = ("Rescaling", "Normalization")  # layers that take raw 0..255 pixels


def model_id_for(path: Path) -> str:
    """`models/<id>/model.keras` -> id; any other file -> its stem; made safe for a folder."""
    path = Path(path)
    name = path.parent.name if path.name == MODEL_FILE and path.parent.name else path.stem
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "model"


def inspect_model(path: Path, input_range: str | None = None, size: int | None = None):
    """(the loaded model, its ModelInfo): checks that it maps RGB images to per-pixel classes,
    fixes its input size (its own, else `size`) and finds the pixel range it expects."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(
            f"{path} is a folder (a SavedModel?); unetq reads Keras 3 models: save yours with "
            "model.save('name.keras')"
        )
    model = load_keras_model(path)
    h, w, classes = segmentation_shape(model, path)
    fixed = h is None or w is None
    if fixed:
        if size is None:
            raise ModelError(f"{path}: its input size is not fixed; pass --size N")
        h = h or size
        w = w or size
    if h != w:
        raise ModelError(f"{path}: input {h}x{w} is not square; unetq's datasets are square")
    lo_hi, source = _input_range(model, input_range)
    info = ModelInfo(
        source=str(path.resolve()),
        source_sha256=file_digest(path),
        input_hw=(int(h), int(w)),
        size_fixed_by_unetq=fixed,
        num_classes=classes,
        input_range=lo_hi,
        range_from=source,
        output=_output_kind(model),
    )
    return model, info


def _input_range(model, requested: str | None) -> tuple[tuple[float, float], str]:
    if requested is not None:
        if requested not in INPUT_RANGES:
            choices = ", ".join(INPUT_RANGES)
            raise ConfigError(f"--input-range '{requested}' is not one of {choices}")
        return INPUT_RANGES[requested], "--input-range"
    first = _first_layer(model)
    if first is not None and type(first).__name__ in RANGE_LAYERS:
        return INPUT_RANGES["0,255"], f"its {type(first).__name__} layer '{first.name}'"
    return INPUT_RANGES["0,1"], "default (unetq's convention; --input-range to change)"


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
    """Save the model as unetq runs it: [0, 1] input of info.input_hw, scaled to its range."""
    import keras

    h, w = info.input_hw
    image = keras.Input((h, w, 3), name="image")
    x = image
    lo, hi = info.input_range
    if (lo, hi) != (0.0, 1.0):
        x = keras.layers.Rescaling(scale=hi - lo, offset=lo, name="unetq_input_range")(image)
    adopted = keras.Model(image, _call_flat(model, x), name=model.name)
    atomic_save(model_file, adopted.save)
    write_json(info_file, _to_json(info))


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
    if not data:
        return None
    known = {f.name for f in dataclasses.fields(ModelInfo)}
    data = {k: v for k, v in data.items() if k in known}
    data["input_hw"] = tuple(data.get("input_hw", ()))
    data["input_range"] = tuple(data.get("input_range", ()))
    try:
        return ModelInfo(**data)
    except TypeError:
        return None
