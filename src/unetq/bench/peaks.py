"""This machine's peaks, measured through the runtimes themselves: the multiply-add rate of a
compute-bound 3x3 convolution per runtime, precision and thread count, and the memory bandwidth
of a large copy. The limit of a model is built from these, not from the ISA's theoretical peak.

`python -m unetq.bench.peaks --threads 1,2 --scale full` prints the peaks as JSON; run it in a
fresh child process (`measure_in_child`) so no other library's thread pools are alive.
TensorFlow (for the .tflite files) is imported before OpenVINO, as oneDNN must load first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from unetq.bench.probe import load_average
from unetq.errors import UnetqError, first_line
from unetq.runtimes import import_tensorflow, native_stderr_quiet, open_interpreter, ov_reason

PRECISIONS = ("f32", "bf16", "int8")
RUNTIME_PRECISIONS = {"openvino": ("f32", "bf16", "int8"), "litert": ("f32", "int8")}
MIB = 1 << 20


@dataclass(frozen=True)
class Scale:
    """What is timed: a 3x3 "same" convolution of `channels` -> `channels` on hw x hw, and a
    copy of `copy_mib` MiB."""

    channels: int
    hw: int
    seconds: float  # timed calls last about this long
    min_calls: int
    warmup: int
    copy_mib: int
    copies: int

    @property
    def macs(self) -> int:
        return self.channels * self.channels * self.hw * self.hw * 9

    @property
    def shape(self) -> str:
        c, hw = self.channels, self.hw
        return f"conv 3x3 {c}->{c} on {hw}x{hw}, same padding, batch 1"


SCALES = {
    # 16 MiB: the size of a U-Net's largest activations, so a copy as fast as their caches allow
    "full": Scale(channels=256, hw=56, seconds=0.5, min_calls=10, warmup=3, copy_mib=16, copies=9),
    "tiny": Scale(channels=32, hw=8, seconds=0.0, min_calls=5, warmup=2, copy_mib=8, copies=3),
}


class KernelMismatch(Exception):
    """The runtime ran another kernel than the precision asked for: no figure, a reason."""


# ----------------------------------------------------------------------------- timing


def median_call_ms(call: Callable[[], Any], scale: Scale) -> tuple[float, int]:
    """Warm up, then time enough calls for about `scale.seconds`; their median (ms) and count."""
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(scale.warmup):
        t0 = clock()
        call()
    estimate_s = max((clock() - t0) / 1e9, 1e-7)
    calls = min(max(scale.min_calls, math.ceil(scale.seconds / estimate_s)), 10_000)
    samples = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = clock()
        call()
        samples[i] = clock() - t0
    return float(np.median(samples)) / 1e6, calls


def figure(macs: int, ms: float, kernel: str, calls: int) -> dict[str, Any]:
    return {
        "gmacs": round(macs / ms / 1e6, 3),
        "kernel": kernel,
        "ms": round(ms, 6),
        "calls": calls,
    }


def per_thread(threads: list[int], measure: Callable[[int], dict]) -> dict[str, Any]:
    """{"1": figure, "2": figure}, or {"reason": why} when a kernel was not the one asked for."""
    try:
        return {str(n): measure(n) for n in threads}
    except KernelMismatch as exc:
        return {"reason": str(exc)}


# ----------------------------------------------------------------------------- openvino


def ov_conv_model(scale: Scale, int8: bool):
    """The convolution, NCHW. int8 as unetq's NNCF IR has it: a FakeQuantize (levels 256) on the
    input and int8 weights with a per-output-channel scale, so the CPU plugin picks int8 kernels.
    (A levels-256 FakeQuantize over symmetric weights leaves a non-integer zero point and an f32
    kernel.)"""
    import openvino as ov
    import openvino.opset16 as ops  # opset17 holds only the ops new in it

    c, hw = scale.channels, scale.hw
    rng = np.random.default_rng(0)
    x = ops.parameter([1, c, hw, hw], ov.Type.f32, name="x")
    if int8:
        q = rng.integers(-127, 128, (c, c, 3, 3), dtype=np.int8)
        step = rng.uniform(0.001, 0.01, (c, 1, 1, 1)).astype(np.float32)
        weights = ops.multiply(ops.convert(ops.constant(q), ov.Type.f32), ops.constant(step))
        lo, hi = ops.constant(np.float32(0)), ops.constant(np.float32(1))
        x_in = ops.fake_quantize(x, lo, hi, lo, hi, 256)
    else:
        weights = ops.constant(rng.uniform(-0.1, 0.1, (c, c, 3, 3)).astype(np.float32))
        x_in = x
    y = ops.convolution(x_in, weights, [1, 1], [1, 1], [1, 1], [1, 1])
    return ov.Model([y], [x], "peak_conv")


def compile_conv(model, threads: int, hint: str):
    """Compile for the CPU as unetq's OpenVINOPredictor does; UnetqError if the plugin refuses."""
    import openvino as ov

    config = {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": hint,
        "PERF_COUNT": True,  # the convolution's own time, as the per-layer table reads it
    }
    try:
        return ov.Core().compile_model(model, "CPU", config)
    except Exception as exc:
        raise UnetqError(
            f"OpenVINO cannot compile the peak convolution ({hint}, {threads} threads): "
            f"{ov_reason(exc)}"
        ) from None


def ov_kernel(compiled) -> str:
    """The primitive the CPU plugin chose for the convolution (e.g. brgconv_avx512_I8)."""
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            return info["primitiveType"].astype(str)
    return "unknown"


def check_ov_kernel(precision: str, kernel: str, chosen: str) -> None:
    if precision == "bf16" and chosen != "bf16":
        raise KernelMismatch(f"the CPU plugin runs a bf16 request as {chosen} here")
    if precision == "bf16" and "bf16" not in kernel.lower():
        raise KernelMismatch(f"the convolution ran {kernel}, not a bf16 kernel")
    if precision == "int8" and not is_int8_kernel(kernel):
        raise KernelMismatch(f"the convolution ran {kernel}, not an int8 kernel")


def is_int8_kernel(kernel: str) -> bool:
    return any(mark in kernel.lower() for mark in ("i8", "u8", "int8"))


def measure_openvino(scale: Scale, precision: str, threads: int) -> dict[str, Any]:
    import openvino as ov

    model = ov_conv_model(scale, int8=precision == "int8")
    compiled = compile_conv(model, threads, "bf16" if precision == "bf16" else "f32")
    chosen = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    kernel = ov_kernel(compiled)
    check_ov_kernel(precision, kernel, chosen)
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).random((1, scale.channels, scale.hw, scale.hw), np.float32)
    request.set_input_tensor(ov.Tensor(x))
    conv_ms: list[float] = []

    def call() -> None:
        request.infer()
        conv_ms.append(conv_node_ms(request))

    ms, calls = median_call_ms(call, scale)
    # the kernel's own rate: the per-layer times it is held against are node times too (the
    # whole call adds the input's quantization and layout reorders)
    return {**figure(scale.macs, float(np.median(conv_ms[-calls:])), kernel, calls), "call_ms": ms}


def conv_node_ms(request) -> float:
    """The convolution node's time in the last call (performance counters)."""
    times = [
        info.real_time.total_seconds() * 1e3
        for info in request.get_profiling_info()
        if info.node_type == "Convolution" and str(info.status).endswith("EXECUTED")
    ]
    return sum(times)


# ----------------------------------------------------------------------------- litert


def tflite_conv(scale: Scale, int8: bool) -> bytes:
    """The convolution as a .tflite (NHWC, static [1, H, W, C]): fp32, or full-integer int8.

    A tf.function with constant weights: no Keras model, so none of Keras 3's variables that
    break int8 calibration through `from_concrete_functions`."""
    tf = import_tensorflow()
    c, hw = scale.channels, scale.hw
    rng = np.random.default_rng(0)
    weights = tf.constant(rng.uniform(-0.1, 0.1, (3, 3, c, c)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, hw, hw, c], tf.float32)])
    def conv(x):
        return tf.nn.conv2d(x, weights, strides=1, padding="SAME")

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [conv.get_concrete_function()], conv
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.random((1, hw, hw, c), np.float32)] for _ in range(8)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with native_stderr_quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected"
            return converter.convert()
    except Exception as exc:
        raise UnetqError(
            f"cannot convert the peak convolution to TFLite: {first_line(exc)}"
        ) from None


def litert_kernel(interp) -> str:
    """Who ran the convolution and on what type, e.g. 'XNNPACK CONV_2D int8'. LiteRT names no
    micro-kernel; a DELEGATE op means XNNPACK took the graph."""
    try:
        ops = list(interp._get_ops_details())  # private API
    except Exception:
        return "unknown"
    where = "XNNPACK" if any(op["op_name"] == "DELEGATE" for op in ops) else "builtin"
    for op in ops:
        if op["op_name"] == "CONV_2D":
            return f"{where} CONV_2D {np.dtype(op['operand_types'][0]).name}"
    return where


def measure_litert(scale: Scale, content: bytes, precision: str, threads: int) -> dict[str, Any]:
    interp = open_interpreter(content=content, threads=threads)
    kernel = litert_kernel(interp)
    if precision == "int8" and not is_int8_kernel(kernel):
        raise KernelMismatch(f"the convolution ran {kernel}, not an int8 kernel")
    inp = interp.get_input_details()[0]
    rng = np.random.default_rng(1)
    if precision == "int8":
        x = rng.integers(-128, 128, inp["shape"], dtype=np.int8)
    else:
        x = rng.random(tuple(inp["shape"]), np.float32)
    interp.set_tensor(inp["index"], x)
    ms, calls = median_call_ms(interp.invoke, scale)
    return figure(scale.macs, ms, kernel, calls)


# ----------------------------------------------------------------------------- memory


def copy_gbs(scale: Scale, threads: int) -> float:
    """GB/s of np.copyto over `copy_mib` MiB, counting read + written bytes, `threads` threads
    copying disjoint chunks at once (copyto releases the GIL); median wall time of the whole."""
    n = scale.copy_mib * MIB
    src = np.ones(n, np.uint8)  # written: untouched pages would all read the one zero page
    dst = np.empty_like(src)
    chunks = list(zip(np.array_split(src, threads), np.array_split(dst, threads), strict=True))
    with ThreadPoolExecutor(threads) as pool:

        def copy_all() -> None:
            for done in [pool.submit(np.copyto, d, s) for s, d in chunks]:
                done.result()

        copy_all()  # faults dst's pages in
        times = []
        for _ in range(scale.copies):
            t0 = time.perf_counter_ns()
            copy_all()
            times.append(time.perf_counter_ns() - t0)
    return round(2 * n / float(np.median(times)), 3)  # bytes per ns = GB/s


# ----------------------------------------------------------------------------- the peaks


def check_request(threads: list[int], scale: str) -> Scale:
    if scale not in SCALES:
        raise UnetqError(f"unknown peak scale '{scale}' (choose from {', '.join(SCALES)})")
    if not threads or any(int(n) < 1 for n in threads):
        raise UnetqError(f"thread counts must be >= 1, got {threads}")
    return SCALES[scale]


def measure_peaks(threads: list[int], scale: str = "full") -> dict[str, Any]:
    """Peak multiply-add rates per runtime, precision and thread count, and memory bandwidth."""
    size = check_request(threads, scale)
    threads = [int(n) for n in threads]
    tflite = {p: tflite_conv(size, int8=p == "int8") for p in RUNTIME_PRECISIONS["litert"]}
    load = load_average()
    openvino = {
        p: per_thread(threads, lambda n, p=p: measure_openvino(size, p, n))
        for p in RUNTIME_PRECISIONS["openvino"]
    }
    litert = {
        p: per_thread(threads, lambda n, p=p: measure_litert(size, tflite[p], p, n))
        for p in RUNTIME_PRECISIONS["litert"]
    }
    return {
        "scale": scale,
        "shape": size.shape,
        "macs": size.macs,
        "copy_mib": size.copy_mib,
        "load_average": load,  # others' work on the machine lowers every figure
        "openvino": openvino,
        "litert": litert,
        "bandwidth_gbs": {str(n): copy_gbs(size, n) for n in threads},
    }


def peak_gmacs(peaks: dict, runtime: str, precision: str, threads: int) -> float | None:
    """The measured G multiply-adds/s of `precision` on `runtime` with `threads`; None if not
    measured (or the runtime did not run a kernel of that precision)."""
    entry = (peaks.get(runtime) or {}).get(precision) or {}
    found = entry.get(str(threads))
    return float(found["gmacs"]) if isinstance(found, dict) and "gmacs" in found else None


def bandwidth_gbs(peaks: dict, threads: int) -> float | None:
    """The measured copy bandwidth (GB/s, read + written) with `threads`; None if not measured."""
    found = (peaks.get("bandwidth_gbs") or {}).get(str(threads))
    return float(found) if found is not None else None


def with_peaks(info: dict, peaks: dict) -> dict:
    """machine.json's content with the measured peaks in it."""
    return {**info, "peaks": peaks}


# ----------------------------------------------------------------------------- child process


def measure_in_child(threads: list[int], scale: str = "full", timeout: float = 900) -> dict:
    """measure_peaks in a fresh `python -m unetq.bench.peaks` process."""
    check_request(threads, scale)
    cmd = [sys.executable, "-m", "unetq.bench.peaks", "--threads", ",".join(map(str, threads))]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run(
            [*cmd, "--scale", scale], capture_output=True, text=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise UnetqError(f"measuring the peaks took longer than {timeout} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        raise UnetqError(f"measuring the peaks failed: {why}"[:300])
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise UnetqError("measuring the peaks printed no JSON") from None


@contextlib.contextmanager
def stdout_to_stderr():
    """Send what libraries print to stdout (file descriptor 1) to stderr, so stdout is the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _thread_list(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of thread counts: {text}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m unetq.bench.peaks", description=__doc__)
    p.add_argument("--threads", type=_thread_list, default=[1], help="e.g. 1,2")
    p.add_argument("--scale", default="full", help="full or tiny (tests)")
    args = p.parse_args(argv)
    try:
        with stdout_to_stderr():
            peaks = measure_peaks(args.threads, args.scale)
    except UnetqError as exc:
        print(f"peaks error: {first_line(exc)}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(json.dumps(peaks, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the parent stops this child itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(main())


def cached_peaks(threads: list[int], scale: str = "full") -> dict:
    """This machine's peaks from the user cache, measured (in a child) and kept there when the
    cache has none for this CPU, its libraries and these thread counts: `unetq inspect --model`
    should not pay 20 s each time."""
    from unetq.bench.machine import machine_info
    from unetq.data.cache import cache_dir
    from unetq.fileio import write_json
    from unetq.runfolder import read_json

    info = machine_info()
    key = json.dumps(
        [info.get(k) for k in ("cpu_model", "isa", "versions", "usable_cores")] + [threads, scale]
    )
    path = cache_dir() / "peaks.json"
    known = read_json(path)
    if key not in known:
        known[key] = measure_in_child(threads, scale)
        write_json(path, known)
    return known[key]
