"""OpenVINO, layer by layer: each op of an IR mapped back to the Keras layer it computes, and the
time, kernel and precision of every node the CPU plugin ran (its performance counters).

The IR is converted from unetq's .tflite export, which keeps few names, so ops are matched to
layers by what they are: tensor names that still name a layer (upsampling, adds, the head), then
weighted ops by their weight shapes and pooling by kernel and stride, in graph order; every
other op (bias, folded batch norm, ReLU, FakeQuantize, layout transposes) belongs to the layer
whose output it works on.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetq.inside.layers import Layer

SKIPPED = ("Constant", "Parameter", "Result")
MOVES_DATA = ("Concat", "Reshape", "Transpose")
REORDER = "(reorder)"  # layout conversions the plugin inserts between nodes


@dataclass
class NodeTime:
    """One node the CPU plugin ran, per call."""

    node: str
    node_type: str
    kernel: str
    precision: str
    layer: str  # Keras layer name, or REORDER
    ms: float


@dataclass
class Profile:
    """A profiling session: every node's median time, and the median call without counters."""

    threads: int
    calls: int
    call_ms: float  # median call, performance counters off
    nodes: list[NodeTime] = field(default_factory=list)

    def layer_ms(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for node in self.nodes:
            out[node.layer] = out.get(node.layer, 0.0) + node.ms
        return out


# --- IR ops -> Keras layers ---------------------------------------------------------------------


def op_signature(op: Any) -> tuple | None:
    """An IR op as layers.signatures spells it (None for ops matched otherwise)."""
    kind = op.get_type_name()
    if kind in ("Convolution", "GroupConvolution", "ConvolutionBackpropData"):
        shape = op.input(1).get_partial_shape()
        return (kind, *(d.get_length() for d in shape)) if shape.is_static else None
    if kind in ("MaxPool", "AvgPool"):
        attrs = op.get_attributes()
        return (kind, *attrs["kernel"], *attrs["strides"])
    if kind == "Add":
        feeds = [op.input_value(i).get_node().get_type_name() for i in range(2)]
        return ("Add",) if "Constant" not in feeds else None
    if kind in ("Concat", "Softmax", "MatMul"):
        return (kind,)
    return None


def _named_layer(op: Any, layer_names: set[str]) -> str | None:
    """The Keras layer an op's tensor names name (`model_1/up_sampling2d_8_concat_1/concat`)."""
    for output in op.outputs():
        for tensor in output.get_names():
            for scope in re.split(r"[;/]", tensor):
                for candidate in (scope, re.sub(r"_\d+$", "", scope)):
                    if candidate in layer_names:
                        return candidate
    return None


def map_ops(model: Any, layers: list[Layer]) -> dict[str, str]:
    """IR friendly name -> name of the Keras layer it computes, for every op but constants."""
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in SKIPPED]
    names = {layer.name for layer in layers}
    label: dict[str, str] = {}
    claimed: set[tuple[str, str]] = set()  # (op type, layer) taken by a tensor name
    for op in ops:
        name = _named_layer(op, names)
        if name is not None:
            label[op.get_friendly_name()] = name
            claimed.add((op.get_type_name(), name))
    _absorb_into_named(ops, label)
    queues: dict[tuple, list[str]] = {}
    for layer in layers:
        for sig in layer.signatures:
            if (sig[0], layer.name) not in claimed:
                queues.setdefault(sig, []).append(layer.name)
    for op in ops:
        sig = op_signature(op)
        if op.get_friendly_name() not in label and sig in queues and queues[sig]:
            label[op.get_friendly_name()] = queues[sig].pop(0)
    _propagate(ops, label)
    return label


def _consumers(op: Any) -> list[Any]:
    return [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]


def _producers(op: Any) -> list[Any]:
    return [op.input_value(i).get_node() for i in range(op.get_input_size())]


def _absorb_into_named(ops: list[Any], label: dict[str, str]) -> None:
    """Data movement feeding only ops of one named layer belongs to it (the first concatenation
    of an exported nearest upsampling carries no name)."""
    for op in reversed(ops):
        if op.get_friendly_name() in label or op.get_type_name() not in MOVES_DATA:
            continue
        owners = {label.get(c.get_friendly_name()) for c in _consumers(op)}
        if len(owners) == 1 and None not in owners:
            label[op.get_friendly_name()] = owners.pop()


def _propagate(ops: list[Any], label: dict[str, str]) -> None:
    """Unmatched ops take their producer's layer (bias, ReLU, FakeQuantize follow a layer's
    output); ops fed by constants only (weight dequantization) or by the input take their
    consumer's."""
    for op in ops:
        if op.get_friendly_name() in label:
            continue
        fed = [label.get(p.get_friendly_name()) for p in _producers(op)]
        found = next((f for f in fed if f is not None), None)
        if found is not None:
            label[op.get_friendly_name()] = found
    for op in reversed(ops):
        if op.get_friendly_name() in label:
            continue
        used = [label.get(c.get_friendly_name()) for c in _consumers(op)]
        found = next((u for u in used if u is not None), None)
        if found is not None:
            label[op.get_friendly_name()] = found


# --- runtime nodes -> layers ------------------------------------------------------------------


def node_layers(compiled: Any, model: Any, label: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Runtime node name -> (Keras layer, precision it ran in), from the runtime model's
    `originalLayersNames` (the IR ops a node fuses: a weighted op names the layer); nodes the
    plugin added (layout reorders) are REORDER."""
    weighted = {
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
    }
    out: dict[str, tuple[str, str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        originals = [n for n in _rt(info, "originalLayersNames").split(",") if n in label]
        main = [label[n] for n in originals if n in weighted]
        layer = (main or [label[n] for n in originals] or [None])[0]
        if layer is None:  # a node the plugin made: a reorder, or its producer's layer
            fed = [out.get(p.get_friendly_name(), (None,))[0] for p in _producers(op)]
            found = next((f for f in fed if f not in (None, REORDER)), REORDER)
            layer = REORDER if _rt(info, "layerType") == "Reorder" else found
        out[op.get_friendly_name()] = (layer, _rt(info, "runtimePrecision"))
    return out


def _rt(info: Any, key: str) -> str:
    return info[key].astype(str) if key in info else ""


# --- the profiling session ---------------------------------------------------------------------


def profile(
    xml: Path,
    layers: list[Layer],
    threads: int,
    calls: int = 50,
    warmup: int = 10,
    rounds: int = 5,
) -> Profile:
    """Time every node of an IR for `calls` calls (performance counters on), and the whole call
    with counters off: in `rounds` rounds, each a block of plain calls then a block of counted
    ones, so a slow spell of the machine that outlasts a round touches both alike (and neither
    model's data evicts the other's from the caches call by call)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    part = model.inputs[0].get_partial_shape()
    if part[0].is_dynamic:
        model.reshape([1, *(d.get_length() for d in list(part)[1:])])
    config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY"}
    counted = core.compile_model(model, "CPU", {**config, "PERF_COUNT": True})
    plain = core.compile_model(model, "CPU", config)
    nodes = node_layers(counted, model, map_ops(model, layers))
    x = ov.Tensor(np.random.default_rng(0).random(tuple(model.inputs[0].get_shape()), np.float32))
    requests = {"plain": plain.create_infer_request(), "counted": counted.create_infer_request()}
    for request in requests.values():
        request.set_input_tensor(x)
        for _ in range(warmup):
            request.infer()
    timed: list[float] = []
    per_node: dict[str, list[float]] = {}
    kinds: dict[str, tuple[str, str]] = {}
    per_round = max(3, calls // rounds)
    for _ in range(rounds):
        for _ in range(per_round):
            timed.append(_timed_call(requests["plain"]))
        for _ in range(per_round):
            requests["counted"].infer()
            for info in requests["counted"].get_profiling_info():
                if str(info.status).endswith("EXECUTED"):
                    ms = info.real_time.total_seconds() * 1e3
                    per_node.setdefault(info.node_name, []).append(ms)
                    kinds[info.node_name] = (info.node_type, info.exec_type)
    total = per_round * rounds
    result = Profile(int(threads), total, statistics.median(timed))
    for node, times in per_node.items():
        layer, precision = nodes.get(node, (REORDER, ""))
        node_type, kernel = kinds[node]
        ms = statistics.median(times + [0.0] * (total - len(times)))
        result.nodes.append(NodeTime(node, node_type, kernel, precision, layer, ms))
    return result


def _timed_call(request: Any) -> float:
    start = time.perf_counter_ns()
    request.infer()
    return (time.perf_counter_ns() - start) / 1e6
