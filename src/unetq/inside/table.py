"""The per-layer table (`layers.csv`): each layer of a model in each variant, with what it costs,
what it could cost on this machine (its bound), what it took and what quantization did to it.

A layer's bound is the longer of its multiply-adds at the peak rate this machine reached for its
precision on its runtime, and the bytes it reads and writes at the measured memory bandwidth
(`bench.peaks`). The model's limit is the sum over its layers: no schedule of these layers on
this machine can be faster, whatever the kernels.
"""

from __future__ import annotations

import math
import re
from typing import Any

from unetq.inside.layers import BF16, DYNAMIC_INT8, FP32, INT8, INT16X8, Layer, Precision
from unetq.inside.openvino import REORDER, Profile

COLUMNS = [
    "model_id",
    "variant",
    "runtime",
    "threads",
    "index",
    "layer",
    "kind",
    "block",
    "output_shape",
    "params",
    "macs",
    "bytes",
    "precision",
    "kernel",
    "time_ms",
    "call_ms",
    "bound_ms",
    "bound",
    "x_bound",
    "error",
]
# The precision a variant's layers run in, where the runtime does not say (LiteRT, keras).
VARIANT_PRECISION = {
    "keras": FP32,
    "tflite-fp32": FP32,
    "tflite-fp16": FP32,  # XNNPACK unpacks fp16 weights to fp32 when it loads the model
    "tflite-dynamic-int8": DYNAMIC_INT8,
    "tflite-int8": INT8,
    "tflite-int8-mixed": INT8,  # most layers; the kept float ones are named in its layers table
    "tflite-int16x8": INT16X8,
    "openvino-fp32": FP32,
    "openvino-int8": INT8,
    "openvino-int8-guarded": INT8,
    "onnxruntime-fp32": FP32,
    "onnxruntime-int8": INT8,
}
# The runtime whose measured peaks hold for a variant's runtime: TensorFlow runs oneDNN, as
# OpenVINO's CPU plugin does; ONNX Runtime's MLAS kernels are held to the same peaks (its own
# are not measured).
PEAKS_OF = {
    "keras": "openvino",
    "litert": "litert",
    "openvino": "openvino",
    "onnxruntime": "openvino",
}
BY_NAME = {"f32": FP32, "bf16": BF16, "int8": INT8}


def kernel_precision(kernel: str, default: Precision) -> Precision:
    """The precision an OpenVINO kernel name says it ran in (`brgconv_avx512_I8`, `jit_avx512_bf16`,
    `unknown_f32`)."""
    name = kernel.lower()
    if name.endswith(("_i8", "_u8")):
        return INT8
    if name.endswith("_bf16"):
        return BF16
    if name.endswith("_f32"):
        return FP32
    return default


def bound(
    layer: Layer, precision: Precision, peak_gmacs: float | None, bandwidth_gbs: float | None
) -> tuple[float, str]:
    """(ms, 'compute' or 'memory'): the longer of the layer's multiply-adds at the peak and its
    bytes at the bandwidth; nan when the needed figure was not measured."""
    compute = layer.macs / (peak_gmacs * 1e6) if peak_gmacs else math.nan
    if not layer.macs:
        compute = 0.0
    moved = layer.bytes(precision)
    memory = moved / (bandwidth_gbs * 1e6) if bandwidth_gbs else (0.0 if not moved else math.nan)
    if math.isnan(compute) or math.isnan(memory):
        return math.nan, ""
    return (compute, "compute") if compute >= memory else (memory, "memory")


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def variant_rows(
    ident: dict[str, Any],
    layers: list[Layer],
    peaks: dict[str, Any],
    profile: Profile | None = None,
    errors: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Rows of one variant at one thread count; `ident` holds model_id, variant, runtime and
    threads. OpenVINO's profile gives each layer its time, kernels and precision (a layer it
    fused away took 0 ms); other runtimes leave the time empty."""
    from unetq.bench.peaks import bandwidth_gbs, peak_gmacs

    default = VARIANT_PRECISION.get(ident["variant"], FP32)
    bandwidth = bandwidth_gbs(peaks, ident["threads"])
    runtime = PEAKS_OF.get(ident["runtime"], ident["runtime"])
    nodes = _nodes_by_layer(profile)
    rows = []
    for layer in layers:
        if layer.kind == "input":
            continue
        ran = nodes.get(layer.name, [])
        kernels = sorted({n.kernel for n in ran})
        precision = default
        if ran:
            main = max(ran, key=lambda n: n.ms)
            precision = kernel_precision(main.kernel, default)
        peak = peak_gmacs(peaks, runtime, precision.compute, ident["threads"])
        bound_ms, bound_kind = bound(layer, precision, peak, bandwidth)
        time_ms = sum(n.ms for n in ran) if profile is not None else math.nan
        rows.append(
            {
                **ident,
                "index": layer.index,
                "layer": _user_name(layer.name),
                "kind": layer.kind,
                "block": layer.block,
                "output_shape": shape_text(layer.output_shape),
                "params": layer.params,
                "macs": layer.macs,
                "bytes": layer.bytes(precision),
                "precision": precision.compute,
                "kernel": "+".join(kernels) if kernels else ("fused" if profile else ""),
                "time_ms": time_ms,
                "call_ms": profile.call_ms if profile is not None else math.nan,
                "bound_ms": bound_ms,
                "bound": bound_kind,
                "x_bound": time_ms / bound_ms if bound_ms and time_ms == time_ms else math.nan,
                "error": (errors or {}).get(layer.name, math.nan),
            }
        )
    rows += _reorder_rows(ident, nodes.get(REORDER, []), profile)
    return rows


def _nodes_by_layer(profile: Profile | None) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in profile.nodes if profile is not None else []:
        out.setdefault(node.layer, []).append(node)
    return out


def _reorder_rows(ident: dict[str, Any], nodes: list, profile: Profile | None) -> list[dict]:
    """The plugin's own nodes (layout reorders, precision conversions): one row, no bound."""
    if not nodes:
        return []
    return [
        {
            **ident,
            "index": -1,
            "layer": REORDER,
            "kind": "runtime",
            "block": "runtime",
            "output_shape": "",
            "params": 0,
            "macs": 0,
            "bytes": 0,
            "precision": "",
            "kernel": "+".join(sorted({n.kernel for n in nodes})),
            "time_ms": sum(n.ms for n in nodes),
            "call_ms": profile.call_ms,
            "bound_ms": math.nan,
            "bound": "",
            "x_bound": math.nan,
            "error": math.nan,
        }
    ]


def _user_name(name: str) -> str:
    """The Keras model's own name of a layer the export renamed (nearest upsampling)."""
    return re.sub(r"_(concat|resize)$", "", name)


def limit_ms(rows: list[dict[str, Any]]) -> float:
    """A variant's limit: the sum of its layers' bounds (nan when one is unknown)."""
    bounds = [r["bound_ms"] for r in rows if r["kind"] != "runtime"]
    return float(sum(bounds)) if bounds else math.nan


def where_time_goes(rows: list[dict[str, Any]]) -> str:
    """One line on one variant at one thread count, e.g. "openvino-int8 at 1 thread: 62% in
    transposed convolutions, 18% in the decoder 80px block; 2.1x its limit (its layers take
    0.98 ms of a 1.02 ms call)."; a runtime without per-layer times says so."""
    first = rows[0]
    threads = int(first["threads"])
    head = f"{first['variant']} at {threads} thread{'s' if threads > 1 else ''}"
    limit = limit_ms(rows)
    timed = [r for r in rows if r["time_ms"] == r["time_ms"]]
    total = sum(r["time_ms"] for r in timed)
    if not timed or not total > 0:
        tail = f"; its limit is {limit:.2f} ms" if limit == limit else ""
        return (
            f"{head}: {first['runtime']} gives no per-layer times (its total: unetq bench){tail}."
        )
    kind, kind_ms = _largest(timed, "kind")
    block, block_ms = _largest(timed, "block")
    where = PLURALS["runtime"] if block == "runtime" else f"the {block} block"
    line = (
        f"{head}: {kind_ms / total:.0%} in {PLURALS.get(kind, kind)}, "
        f"{block_ms / total:.0%} in {where}"
    )
    call = first["call_ms"]
    if call == call and limit == limit and limit > 0:
        line += f"; {call / limit:.1f}x its limit"
    if call == call:
        line += f" (its layers take {total:.2f} ms of a {call:.2f} ms call)"
    return line + "."


PLURALS = {
    "convolution": "convolutions",
    "separable convolution": "separable convolutions",
    "depthwise convolution": "depthwise convolutions",
    "transposed convolution": "transposed convolutions",
    "dense": "dense layers",
    "pooling": "pooling",
    "upsampling": "upsampling",
    "add": "additions",
    "concatenate": "concatenations",
    "activation": "activations",
    "runtime": "runtime-only nodes (layout reorders)",
}


def _largest(rows: list[dict[str, Any]], column: str) -> tuple[str, float]:
    sums: dict[str, float] = {}
    for row in rows:
        sums[row[column]] = sums.get(row[column], 0.0) + row["time_ms"]
    return max(sums.items(), key=lambda item: item[1])


def pick_rows(
    rows: list[dict[str, Any]], variant: str | None = None, threads: int | None = None
) -> list[dict[str, Any]]:
    """One variant at one thread count: the given ones, else the smallest thread count and the
    variant with the fastest call among those timed layer by layer (else the first)."""
    from unetq.errors import UnetqError

    if not rows:
        raise UnetqError("the per-layer table is empty")
    counts = sorted({int(r["threads"]) for r in rows})
    count = threads if threads is not None else counts[0]
    if count not in counts:
        raise UnetqError(f"no rows at {count} thread(s); measured: {counts}")
    here = [r for r in rows if int(r["threads"]) == count]
    variants = list(dict.fromkeys(r["variant"] for r in here))
    if variant is None:
        timed = [r for r in here if r["call_ms"] == r["call_ms"]]
        variant = min(timed, key=lambda r: r["call_ms"])["variant"] if timed else variants[0]
    if variant not in variants:
        raise UnetqError(f"variant '{variant}' is not in the table; there: {', '.join(variants)}")
    return [r for r in here if r["variant"] == variant]
