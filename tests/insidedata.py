"""Realistic synthetic inputs of the report's "Inside the model" section: a layers.csv built
from a real model's layer list, shaped as `unetq.inside.table` writes it, and an average CSV.

Four variants: keras and tflite-int8 (LiteRT) without per-layer times, openvino-fp32 and
openvino-int8 timed, at 1 and 2 threads; the int8 variants carry a quantization error per
layer. No row for the input; a timed variant's layout reorders are one last row (index -1,
kind and block "runtime", no bound); layers fused into the one before took 0 ms ("fused").
Times are a seeded multiple of each layer's bound; transposed convolutions run far from
theirs (as OpenVINO's ConvolutionBackpropData does)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from unetq.inside.table import COLUMNS

BEST = "xception-f8-bn-e2"  # the tiny run's model the synthetic average CSV makes best
FG_IOU = {"xception-f4-bn-e2": 0.55, BEST: 0.62}  # keras test fg IoU of the tiny run's models
PEAK_MACS = {"f32": 50e9, "int8": 200e9}  # multiply-adds per second and thread
BANDWIDTH = 20e9  # bytes per second
LAYER_VARIANTS = [  # variant, runtime, precision name, timed
    ("keras", "keras", "f32", False),
    ("tflite-int8", "litert", "int8", False),
    ("openvino-fp32", "openvino", "f32", True),
    ("openvino-int8", "openvino", "int8", True),
]
# the blocks of build_model("xception", 8, True, 3, 32), in order
XCEPTION_BLOCKS = [
    "encoder 16px",
    "encoder 8px",
    "encoder 4px",
    "bottleneck 2px",
    "decoder 4px",
    "decoder 8px",
    "decoder 16px",
    "decoder 32px",
    "head",
]


def model_layer_list(arch: str = "xception", filters: int = 8, size: int = 32) -> list:
    """`unetq.inside.layers.model_layers` of a fresh model (imports TensorFlow)."""
    from unetq.runtimes import import_tensorflow

    import_tensorflow()
    from unetq.inside.layers import model_layers
    from unetq.models import build_model

    return model_layers(build_model(arch, filters, True, 3, size))


def synthetic_layers(model_id: str, layers: list, threads=(1, 2), seed: int = 0) -> pd.DataFrame:
    """One row per variant x threads x layer (the input has none), plus the runtime's reorders
    for each timed variant."""
    from unetq.inside.layers import FP32, INT8

    precisions = {"f32": FP32, "int8": INT8}
    rng = np.random.default_rng(seed)
    frames = []
    for variant, runtime, name, timed in LAYER_VARIANTS:
        for t in threads:
            rows = [
                _row(layer, precisions[name], t, timed, runtime, rng)
                for layer in layers
                if layer.kind != "input"
            ]
            if timed:
                rows.append(_reorder(0.004 / t))
            frame = pd.DataFrame(rows)
            frame["call_ms"] = 1.06 * frame["time_ms"].sum() if timed else 2.5 / t
            if name == "int8":  # errors grow with depth; fused and runtime rows have none
                weighted = frame["macs"] > 0
                depth = frame["index"] / frame["index"].max()
                frame["error"] = np.where(weighted, 0.004 + 0.03 * depth**2, np.nan)
            frame.insert(0, "model_id", model_id)
            frame.insert(1, "variant", variant)
            frame.insert(2, "runtime", runtime)
            frame.insert(3, "threads", t)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS)


def _row(layer, precision, threads: int, timed: bool, runtime: str, rng) -> dict:
    macs, nbytes = layer.macs, layer.bytes(precision)
    compute_ms = 1e3 * macs / (PEAK_MACS[precision.compute] * threads)
    memory_ms = 1e3 * nbytes / BANDWIDTH
    bound_ms = max(compute_ms, memory_ms)
    time_ms = np.nan
    if timed:
        slow = 8.0 if layer.kind == "transposed convolution" else rng.uniform(1.5, 4.0)
        time_ms = bound_ms * slow + (0.002 if bound_ms else 0.0)
    return {
        "index": layer.index,
        "layer": layer.name,
        "kind": layer.kind,
        "block": layer.block,
        "output_shape": "x".join(str(d) for d in layer.output_shape),
        "params": layer.params,
        "macs": macs,
        "bytes": nbytes,
        "precision": precision.compute,
        "kernel": _kernel(layer.kind, precision.compute, bound_ms) if runtime == "openvino" else "",
        "time_ms": time_ms,
        "bound_ms": bound_ms,
        "bound": "compute" if compute_ms >= memory_ms else "memory",
        "x_bound": time_ms / bound_ms if bound_ms else np.nan,
        "error": np.nan,
    }


def _reorder(time_ms: float) -> dict:
    return {
        "index": -1,
        "layer": "(reorder)",
        "kind": "runtime",
        "block": "runtime",
        "output_shape": "",
        "params": 0,
        "macs": 0,
        "bytes": 0,
        "precision": "",
        "kernel": "jit_uni_reorder+ref_any",
        "time_ms": time_ms,
        "bound_ms": np.nan,
        "bound": "",
        "x_bound": np.nan,
        "error": np.nan,
    }


def _kernel(kind: str, compute: str, bound_ms: float) -> str:
    if not bound_ms:
        return "fused"
    suffix = "I8" if compute == "int8" else "FP32"
    kernels = {
        "convolution": f"brgconv_avx512_{suffix}",
        "separable convolution": f"jit_avx512_dw_{suffix}+brgconv_avx512_1x1_{suffix}",
        "transposed convolution": f"jit_avx512_deconv_{suffix}+jit_uni_reorder",
        "pooling": f"jit_avx512_{suffix}",
    }
    return kernels.get(kind, "ref_any")


AVERAGE_VARIANTS = [  # variant, runtime, precision, ms at 1 thread, fg IoU drop, MB
    ("keras", "keras", "float32", 12.0, 0.0, 0.40),
    ("tflite-fp32", "litert", "float32", 3.0, 0.0, 0.12),
    ("tflite-int8", "litert", "int8", 1.6, 0.9, 0.05),
    ("openvino-fp32", "openvino", "float32", 2.2, 0.0, 0.12),
    ("openvino-int8", "openvino", "int8", 1.1, 0.3, 0.05),
]


def synthetic_average(model_ids: dict[str, float], threads=(1, 2), seed: int = 0) -> pd.DataFrame:
    """model_performance_average_results.csv rows: model id -> its keras fg IoU; the later
    models are the larger ones (slower, bigger); a little seeded noise on every measurement."""
    rng = np.random.default_rng(seed)
    rows = []
    for m, (model_id, fg_iou) in enumerate(model_ids.items()):
        for variant, runtime, precision, ms, drop, mb in AVERAGE_VARIANTS:
            iou = fg_iou - drop / 100 + (rng.normal(0, 0.002) if variant != "keras" else 0)
            memory = 30.0 * mb / 0.4 + 5 * m + rng.normal(0, 1)
            for t in threads:
                keras = 12.0 * (1 + 0.3 * m) / (1 + 0.7 * (t - 1))
                median = ms / 12.0 * keras * rng.uniform(0.9, 1.1)
                rows.append(
                    {
                        "model_id": model_id,
                        "variant": variant,
                        "runtime": runtime,
                        "threads": t,
                        "precision": precision,
                        "size_bytes": int(mb * 1e6 * (1 + m)),
                        "n_images": 4,
                        "fg_iou": iou,
                        "fg_dice": iou + 0.1,
                        "miou": iou - 0.05,
                        "agreement": 1.0 - drop / 50,
                        "seed_iou": 0.2,
                        "seed_dice": 0.3,
                        "latency_ms_median": median,
                        "latency_ms_median_ci95_low": 0.97 * median,
                        "latency_ms_median_ci95_high": 1.03 * median,
                        "speedup_vs_keras_paired": keras / median,
                        "speedup_vs_keras_paired_ci95_low": 0.95 * keras / median,
                        "speedup_vs_keras_paired_ci95_high": 1.05 * keras / median,
                        "model_memory_mb": memory,
                        "peak_rss_mb": 400.0,
                    }
                )
    return pd.DataFrame(rows)


def inside_report(tmp_path_factory, with_layers: bool = True):
    """A copy of the tiny run with a synthetic average CSV (and the best model's layers.csv),
    its report built; the RunFolder."""
    from tinyrun import copy_run, tiny_run
    from unetq.report import build_report
    from unetq.runfolder import RunFolder

    run = RunFolder(copy_run(tiny_run(tmp_path_factory), tmp_path_factory.mktemp("r") / "run"))
    synthetic_average(FG_IOU).to_csv(run.average_csv, index=False)
    if with_layers:
        layers = synthetic_layers(BEST, model_layer_list("xception", 8, 32))
        layers.to_csv(run.layers(BEST), index=False)
    build_report(run.root)
    return run
