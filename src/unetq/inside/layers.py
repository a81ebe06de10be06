"""A Keras model layer by layer: kind, block, output shape, parameters, multiply-adds and the
bytes a layer reads and writes at a given precision. Static: nothing is run.

Blocks follow the U-Net's resolution: encoder stages (the resolution falls), the bottleneck (the
lowest resolution), decoder stages (it rises again) and the head (the layers after the last
weighted layer). This holds for any encoder-decoder, not only unetq's builders.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# Keras class -> the kind a user reads in the table
KINDS = {
    "Conv2D": "convolution",
    "SeparableConv2D": "separable convolution",
    "DepthwiseConv2D": "depthwise convolution",
    "Conv2DTranspose": "transposed convolution",
    "Dense": "dense",
    "MaxPooling2D": "pooling",
    "AveragePooling2D": "pooling",
    "GlobalAveragePooling2D": "pooling",
    "UpSampling2D": "upsampling",
    "NearestUpsampling": "upsampling",  # unetq's export of nearest UpSampling2D
    "Resizing": "upsampling",
    "Add": "add",
    "Concatenate": "concatenate",
    "Multiply": "multiply",
    "Activation": "activation",
    "ReLU": "activation",
    "LeakyReLU": "activation",
    "Softmax": "softmax",
    "BatchNormalization": "normalization",
    "LayerNormalization": "normalization",
    "Rescaling": "preprocessing",
    "Normalization": "preprocessing",
    "InputLayer": "input",
    "Dropout": "dropout",
}
# Layers every runtime fuses into the weighted layer before them (bias, batch norm, activation):
# they move no bytes of their own when the model runs.
FUSED_KINDS = frozenset({"normalization", "activation", "dropout", "preprocessing", "input"})
WEIGHTED_KINDS = frozenset(
    {
        "convolution",
        "separable convolution",
        "depthwise convolution",
        "transposed convolution",
        "dense",
    }
)


@dataclass(frozen=True)
class Precision:
    """Bytes per stored weight and per activation element, and the arithmetic the multiply-adds
    run in (the peak they are held against: 'f32', 'bf16', 'int8')."""

    weight_bytes: int
    activation_bytes: int
    compute: str


FP32 = Precision(4, 4, "f32")
BF16 = Precision(2, 2, "bf16")
INT8 = Precision(1, 1, "int8")
# int8 weights, float activations quantized on the fly (XNNPACK's dynamic-range kernels)
DYNAMIC_INT8 = Precision(1, 4, "int8")
INT16X8 = Precision(1, 2, "int16")


@dataclass(frozen=True)
class Layer:
    """One layer of a Keras model, in the model's topological order."""

    index: int
    name: str
    kind: str
    block: str
    output_shape: tuple[int, ...]  # one image: [H, W, C] (batch dimension dropped)
    params: int
    weights: int  # weights a runtime keeps (batch norm folded away: 0)
    macs: int
    input_elements: int  # activation elements read (all inputs)
    output_elements: int
    # how a runtime's graph shows the layer: (op type, weight shape...) per op it becomes
    signatures: tuple[tuple, ...] = ()

    def bytes(self, precision: Precision) -> int:
        """Bytes read and written when the layer runs at `precision`: its weights, its inputs
        and its output; 0 for layers the runtimes fuse into the one before."""
        if self.kind in FUSED_KINDS:
            return 0
        moved = self.input_elements + self.output_elements
        return self.weights * precision.weight_bytes + moved * precision.activation_bytes


def kind_of(layer: Any) -> str:
    name = type(layer).__name__
    kind = KINDS.get(name, name.lower())
    if kind == "activation" and _activation_name(layer) == "softmax":
        return "softmax"
    return kind


def _activation_name(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation or ""))


def _elements(shape: Any) -> int:
    out = 1
    for dim in tuple(shape)[1:]:
        out *= int(dim)
    return out


def _shapes(tensors: Any) -> list[tuple]:
    if not isinstance(tensors, list | tuple):
        tensors = [tensors]
    return [tuple(t.shape) for t in tensors]


def model_layers(model: Any) -> list[Layer]:
    """Every layer of a functional Keras model with a static input size, in order, with the
    shapes it has in this model's graph (a layer the export moved runs on other shapes)."""
    from unetq.models import layer_macs

    nodes = _nodes(model)
    rows = []
    for index, layer in enumerate(model.layers):
        kind = kind_of(layer)
        inputs, outputs = nodes.get(id(layer), ([], _shapes(layer.output)))
        params = int(layer.count_params())
        weights = params if kind in WEIGHTED_KINDS or kind not in FUSED_KINDS else 0
        macs = layer_macs(layer, inputs[0], outputs[0]) if inputs else 0
        rows.append(
            Layer(
                index=index,
                name=layer.name,
                kind=kind,
                block="",
                output_shape=tuple(int(d) for d in outputs[0][1:]),
                params=params,
                weights=weights,
                macs=int(macs),
                input_elements=sum(_elements(s) for s in inputs),
                output_elements=sum(_elements(s) for s in outputs),
                signatures=signatures(layer, inputs),
            )
        )
    return assign_blocks(rows)


def _nodes(model: Any) -> dict[int, tuple[list[tuple], list[tuple]]]:
    """id(layer) -> (input shapes, output shapes) of its call in this model's graph."""
    found = {}
    for nodes in getattr(model, "_nodes_by_depth", {}).values():
        for node in nodes:
            shapes = (
                [tuple(t.shape) for t in node.input_tensors],
                [tuple(t.shape) for t in node.output_tensors],
            )
            found.setdefault(id(node.operation), shapes)
    return found


def signatures(layer: Any, inputs: list[tuple]) -> tuple[tuple, ...]:
    """The ops a layer becomes in an OpenVINO graph (NCHW weights), as (op type, *shape), in
    the order they run; pooling with (kernel, strides); others by op type alone."""
    name = type(layer).__name__
    cin = int(inputs[0][-1]) if inputs else 0
    kh, kw = getattr(layer, "kernel_size", (1, 1))
    out: list[tuple] = []
    if name == "Conv2D":
        out.append(("Convolution", layer.filters, cin // (layer.groups or 1), kh, kw))
    elif name in ("SeparableConv2D", "DepthwiseConv2D"):
        m = layer.depth_multiplier
        out.append(("GroupConvolution", cin, m, 1, kh, kw))
        if name == "SeparableConv2D":
            out.append(("Convolution", layer.filters, cin * m, 1, 1))
    elif name == "Conv2DTranspose":
        out.append(("ConvolutionBackpropData", cin, layer.filters, kh, kw))
    elif name == "Dense":
        out.append(("MatMul",))
    elif name in ("MaxPooling2D", "AveragePooling2D"):
        op = "MaxPool" if name == "MaxPooling2D" else "AvgPool"
        out.append((op, *layer.pool_size, *layer.strides))
    elif name == "Add":
        out.append(("Add",))
    elif name == "Concatenate":
        out.append(("Concat",))
    if kind_of(layer) == "softmax" or _activation_name(layer) == "softmax":
        out.append(("Softmax",))
    return tuple(out)


def assign_blocks(rows: list[Layer]) -> list[Layer]:
    """Name each layer's block from the resolution of its output (see the module's doc); the
    head starts at the last weighted layer."""
    spatial = [r.output_shape[0] if len(r.output_shape) == 3 else 0 for r in rows]
    if not any(spatial):
        return rows
    lowest = min(s for s in spatial if s)
    head = max((i for i, r in enumerate(rows) if r.kind in WEIGHTED_KINDS), default=len(rows))
    named, previous, rising = [], None, False
    for i, (row, size) in enumerate(zip(rows, spatial, strict=True)):
        size = size or previous or lowest
        rising = rising or (previous is not None and size > previous)
        previous = size
        if i >= head:
            block = "head"
        elif size == lowest:
            block = f"bottleneck {size}px"
        else:
            block = f"{'decoder' if rising else 'encoder'} {size}px"
        named.append(replace(row, block=block))
    return named


def blocks(rows: list[Layer]) -> list[tuple[str, tuple[int, ...]]]:
    """(block, output shape of its last layer) in order: the U-Net as a user draws it."""
    out: dict[str, tuple[int, ...]] = {}
    for row in rows:
        if row.kind != "input":
            out[row.block] = row.output_shape
    return list(out.items())
