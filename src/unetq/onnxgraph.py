"""A user's ONNX segmentation model brought into unetq's conventions by editing its graph.

unetq feeds one float32 RGB image in [0, 1], [1, H, W, 3] (NHWC), named "image", and takes one
float32 [1, H, W, C>=2] of class scores back, named "scores". `adopted` puts nodes in front of
the user's graph that map those pixels onto the ones it expects (per-channel Mul / Add, BGR
order, NCHW layout) and behind it that give NHWC scores of at least two classes (a one-channel
head becomes [2 cut - y, y], as usermodel does for Keras models). onnx is imported where used:
it takes a second to import.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unetq.errors import ModelError, first_line
from unetq.fileio import write_bytes
from unetq.records import InputNorm, ModelInfo

if TYPE_CHECKING:
    import onnx

IMAGE, SCORES = "image", "scores"  # unetq's input and output names
MODEL_INPUT, MODEL_OUTPUT = "unetq_model_input", "unetq_model_output"
RGB_SHAPES = "unetq feeds RGB images [N,3,H,W] or [N,H,W,3]"
PROBABILITY_OPS = ("Softmax", "Sigmoid")
LAYOUT_OPS = ("Transpose", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Cast")
MIN_OPSET = 7  # Mul / Add broadcast as numpy does from opset 7 on
NOMINAL_SIZE = 256  # a symbolic H / W while inferring the output channels only
FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class OnnxSignature:
    """What an ONNX model's single input and output say."""

    input_name: str
    output_name: str
    layout: str  # 'NCHW' or 'NHWC': where the input's 3 channels are
    height: int | None  # None: symbolic (dynamic)
    width: int | None
    channels: int  # of the output; 1 is a binary head
    output: str  # 'probabilities' (a Softmax / Sigmoid head) or 'logits'


def load_onnx(path: Path) -> onnx.ModelProto:
    """The model in `path`, checked by onnx's checker."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf, checker and I/O errors alike: not a usable model
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    return model


def read_signature(model: onnx.ModelProto, path: Path) -> OnnxSignature:
    """The model's input and output, checked to be RGB images -> per-pixel class scores."""
    graph = model.graph
    inputs = _real_inputs(graph)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"{path}: {len(inputs)} inputs ({names}); unetq feeds one image")
    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output)
        raise ModelError(f"{path}: {len(graph.output)} outputs ({names}); unetq reads one")
    image, out = inputs[0], graph.output[0]
    layout, dims = _image_layout(image, path)
    h, w = dims[2:] if layout == "NCHW" else dims[1:3]
    channels = _output_channels(model, image, dims, 1 if layout == "NCHW" else 3, path)
    kind = "probabilities" if _ends_in_probabilities(graph, out.name) else "logits"
    return OnnxSignature(image.name, out.name, layout, h, w, channels, kind)


def adopted(model: onnx.ModelProto, info: ModelInfo) -> onnx.ModelProto:
    """A new model that reads unetq's "image" of info.input_hw and gives its "scores"."""
    import onnx
    from onnx import helper

    sig = read_signature(model, Path(info.source))
    _check_fits(model, sig, info)
    (h, w), channels = info.input_hw, 2 if info.output_channels == 1 else sig.channels
    front, front_constants, model_input = _input_nodes(info.input_norm, info.layout)
    back, back_constants = _output_nodes(info)
    new = onnx.ModelProto()
    new.CopyFrom(model)
    graph = new.graph
    renames = {IMAGE: "unetq_user_image", SCORES: "unetq_user_scores"}
    renames |= {sig.input_name: model_input, sig.output_name: MODEL_OUTPUT if back else SCORES}
    _rename(graph, renames)
    nodes = [*front, *graph.node, *back]
    del graph.node[:], graph.input[:], graph.output[:], graph.value_info[:]
    graph.node.extend(nodes)
    graph.initializer.extend([*front_constants, *back_constants])
    graph.input.append(helper.make_tensor_value_info(IMAGE, FLOAT, [1, h, w, 3]))
    graph.output.append(helper.make_tensor_value_info(SCORES, FLOAT, None))
    if new.ir_version < 4:  # IR 3 lists every initializer among the inputs
        graph.input.extend(
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            for t in graph.initializer
        )
    return _checked(new, info.source, [1, h, w, channels])


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Written atomically: a reader never sees half a file."""
    write_bytes(path, model.SerializeToString())


def _real_inputs(graph) -> list:
    """Graph inputs that are fed (not initializers listed as inputs, as IR 3 wants)."""
    constants = {t.name for t in graph.initializer}
    constants |= {t.values.name for t in graph.sparse_initializer}
    return [i for i in graph.input if i.name not in constants]


def _image_layout(image, path: Path) -> tuple[str, list[int | None]]:
    """(layout, dims) of a float32 RGB image input."""
    dims = _dims(image)
    if image.type.tensor_type.elem_type != FLOAT:
        kind = _type_name(image.type.tensor_type.elem_type)
        raise ModelError(f"{path}: input '{image.name}' is {kind}, not float32; {RGB_SHAPES}")
    if dims is None or len(dims) != 4:
        rank = "of unknown rank" if dims is None else f"{len(dims)}-D"
        raise ModelError(f"{path}: input '{image.name}' is {rank}; {RGB_SHAPES}")
    layout = _layout(dims)
    if layout is None:
        raise ModelError(
            f"{path}: input '{image.name}' {_shape(dims)} has no 3 channels; {RGB_SHAPES}"
        )
    return layout, dims


def _output_channels(model, image, dims: list[int | None], axis: int, path: Path) -> int:
    """The channels (on `axis`) of a float32 4-D output, from shape inference if need be."""
    out = model.graph.output[0]
    out_dims = _dims(out)
    if out_dims is None or len(out_dims) != 4 or out_dims[axis] is None:
        out_dims = _dims(_inferred_output(model, image, dims)) or out_dims
    if out_dims is None or len(out_dims) != 4:
        rank = "of unknown rank" if out_dims is None else f"{len(out_dims)}-D"
        raise ModelError(
            f"{path}: output '{out.name}' is {rank}; unetq reads scores [N,C,H,W] or [N,H,W,C]"
        )
    if out_dims[axis] is None:
        raise ModelError(f"{path}: output '{out.name}' {_shape(out_dims)}: channels unknown")
    if out.type.tensor_type.elem_type not in (0, FLOAT):  # 0: not declared
        kind = _type_name(out.type.tensor_type.elem_type)
        raise ModelError(f"{path}: output '{out.name}' is {kind}, not float32")
    return out_dims[axis]


def _dims(value_info) -> list[int | None] | None:
    """The tensor's dims (None for a symbolic one), or None when its rank is unknown."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in tensor.shape.dim
    ]


def _shape(dims: list[int | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def _type_name(elem_type: int) -> str:
    from onnx import helper

    try:
        return str(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return f"element type {elem_type}"


def _layout(dims: list[int | None]) -> str | None:
    """NHWC when the last axis has 3 channels (also [N,3,X,3], where NCHW would mean an image
    3 pixels wide), NCHW when axis 1 has, else None."""
    if dims[3] == 3:
        return "NHWC"
    return "NCHW" if dims[1] == 3 else None


def _inferred_output(model, image, dims: list[int | None]):
    """The output as shape inference sees it, the input's symbolic dims set (batch 1, H and W
    a nominal size), or the declared output when inference fails."""
    import onnx

    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    fixed = [dims[0] or 1, *(d or NOMINAL_SIZE for d in dims[1:])]
    _set_dims(next(i for i in trial.graph.input if i.name == image.name), fixed)
    with contextlib.suppress(Exception):  # inference fails: keep what the graph declares
        trial = onnx.shape_inference.infer_shapes(trial, data_prop=True)
    return trial.graph.output[0]


def _set_dims(value_info, dims: list[int]) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add().dim_value = d


def _ends_in_probabilities(graph, name: str) -> bool:
    """The output comes from a Softmax or Sigmoid, seen through layout ops (a Transpose...)."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in LAYOUT_OPS and node.input:
        node = producers.get(node.input[0])
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in PROBABILITY_OPS


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _check_fits(model, sig: OnnxSignature, info: ModelInfo) -> None:
    """`info` says what the model is: its layout, channels, a size its fixed dims allow."""
    name, (h, w) = info.source, info.input_hw
    if _opset(model) < MIN_OPSET:
        raise ModelError(f"{name}: opset {_opset(model)} is older than {MIN_OPSET}; re-export it")
    if sig.layout != info.layout:
        raise ModelError(f"{name}: its input is {sig.layout}, not {info.layout}")
    if sig.channels != info.output_channels:
        raise ModelError(f"{name}: {sig.channels} output channels, not {info.output_channels}")
    if (sig.height or h, sig.width or w) != (h, w):
        raise ModelError(f"{name}: input is {sig.height}x{sig.width}, not {h}x{w}")
    batch = _dims(next(i for i in model.graph.input if i.name == sig.input_name))[0]
    if batch not in (None, 1):
        raise ModelError(f"{name}: its batch is fixed at {batch}; unetq feeds one image a call")


def _scale_offset(norm: InputNorm) -> tuple[np.ndarray, np.ndarray]:
    """x in [0, 1] is pixel / 255: (pixel - mean) / std = x * 255 / std - mean / std."""
    mean, std = np.asarray(norm.mean, np.float64), np.asarray(norm.std, np.float64)
    return (255.0 / std).astype(np.float32), (-mean / std).astype(np.float32)


def _input_nodes(norm: InputNorm, layout: str) -> tuple[list, list, str]:
    """[0, 1] RGB NHWC "image" -> the model's pixels and layout: (nodes, constants, the name
    of the tensor the model reads). For BGR, model channel c reads image channel 2 - c and is
    then scaled by norm's channel c, as norm gives mean / std in the model's order."""
    scale, offset = _scale_offset(norm)
    nodes, constants, x = [], [], IMAGE
    if norm.bgr:
        constants.append(_constant("unetq_bgr_order", np.array([2, 1, 0], np.int64)))
        x = _add(nodes, "Gather", [x, "unetq_bgr_order"], "unetq_bgr", axis=3)
    if not np.all(scale == 1.0):
        constants.append(_constant("unetq_input_scale", scale))
        x = _add(nodes, "Mul", [x, "unetq_input_scale"], "unetq_scaled")
    if not np.all(offset == 0.0):
        constants.append(_constant("unetq_input_offset", offset))
        x = _add(nodes, "Add", [x, "unetq_input_offset"], "unetq_shifted")
    if layout == "NCHW":
        x = _add(nodes, "Transpose", [x], "unetq_to_nchw", perm=[0, 3, 1, 2])
    if nodes:
        nodes[-1].output[0] = x = MODEL_INPUT
    return nodes, constants, x


def _output_nodes(info: ModelInfo) -> tuple[list, list]:
    """The model's output (MODEL_OUTPUT) -> NHWC "scores" of at least two classes: a binary
    head's y -> [2 cut - y, y], whose argmax is 1 exactly where y > cut, and for a sigmoid at
    cut 0.5 the pair (1 - p, p). No nodes: the model's output is "scores" itself."""
    nodes, constants, x = [], [], MODEL_OUTPUT
    if info.layout == "NCHW":
        x = _add(nodes, "Transpose", [x], "unetq_to_nhwc", perm=[0, 2, 3, 1])
    if info.output_channels == 1:
        t = 0.5 if info.threshold is None else info.threshold
        cut = t if info.output == "probabilities" else math.log(t / (1.0 - t))
        constants.append(_constant("unetq_twice_cut", np.array([2.0 * cut], np.float32)))
        background = _add(nodes, "Sub", ["unetq_twice_cut", x], "unetq_background")
        _add(nodes, "Concat", [background, x], "unetq_binary_classes", axis=3)
    if nodes:
        nodes[-1].output[0] = SCORES
    return nodes, constants


def _add(nodes: list, op: str, inputs: list[str], name: str, **attrs) -> str:
    """Append a node whose output tensor has the node's name; that name."""
    from onnx import helper

    nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
    return name


def _constant(name: str, values: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(values, name)


def _rename(graph, names: dict[str, str]) -> None:
    """Tensor names changed everywhere in `graph` and its subgraphs, all at once."""

    def new(name: str) -> str:
        return names.get(name, name)

    for node in graph.node:
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else []:
                _rename(sub, names)
            for sub in attr.graphs:
                _rename(sub, names)
    for value_info in (*graph.input, *graph.output, *graph.value_info):
        value_info.name = new(value_info.name)
    for tensor in graph.initializer:
        tensor.name = new(tensor.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = new(sparse.values.name)


def _checked(model, name: str, scores: list[int]):
    """The model with inferred shapes, its output checked to be (and declared) `scores`."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        raise ModelError(f"{name}: shape inference failed ({first_line(exc)})") from None
    out = model.graph.output[0]
    got = _dims(out)
    if got is not None and (
        len(got) != 4 or any(g not in (None, s) for g, s in zip(got, scores, strict=True))
    ):
        raise ModelError(
            f"{name}: scores {_shape(got)}, not {_shape(scores)}: unetq wants one per pixel"
        )
    _set_dims(out, scores)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{name}: the adopted graph is invalid ({first_line(exc)})") from None
    return model
