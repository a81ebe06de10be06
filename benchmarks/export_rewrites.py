"""Speed of each exact export rewrite, on LiteRT and OpenVINO, fp32 and int8, in one process.

    python benchmarks/export_rewrites.py runs/q160/models/xception-f32-bn-e12 [--threads 1]

The model is exported once per rewrite set (unetq.export.lower_for_export), each step adding
or swapping one rewrite against the step it names; OpenVINO's Softmax rewrite
(unetq.convert.openvino) is its own step.
Every file is loaded here and the calls take turns, one call each, so a slow spell of the
machine hits all alike; the table gives each one's median and its ratio to the step before.
int8 is calibrated on 16 seeded uniform images: this measures speed, not accuracy (the
rewrites are exact; tests/test_compress.py checks each against the Keras model).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from unetq.convert import ConvertInputs
from unetq.convert.openvino import openvino_safe_tflite, softmax_channels_first
from unetq.convert.tflite import tflite_fp32, tflite_int8
from unetq.export import export_saved_model
from unetq.runtimes import load_keras_model, native_stderr_quiet, segmentation_shape

KEPT = ("delegable-upsampling", "pointwise-before-upsampling")
BASE, UPSAMPLING, POINTWISE = "as Keras lowers it (TILE)", "delegable-upsampling", "+ pointwise"
SOFTMAX = "+ pointwise + softmax-channels-first"  # what unetq exports for OpenVINO
STEPS = [  # (label, rewrites, OpenVINO softmax rewrite, the step it is compared with)
    (BASE, (), False, None),
    (UPSAMPLING, KEPT[:1], False, BASE),
    (POINTWISE, KEPT, False, UPSAMPLING),
    ("+ pointwise + flip-transposed-conv", (*KEPT, "flip-transposed-conv"), False, POINTWISE),
    (SOFTMAX, KEPT, True, POINTWISE),
    # tried on the layers furthest from their bound (unetq inspect; docs/INSIDE.md)
    ("resize-upsampling instead", ("resize-upsampling", KEPT[1]), True, SOFTMAX),
    ("+ pad-head-channels", (*KEPT, "pad-head-channels"), True, SOFTMAX),
]


def litert_call(content: bytes, threads: int, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_quiet():
        interp = Interpreter(model_content=content, num_threads=threads)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def call():
        interp.set_tensor(inp, x)
        interp.invoke()
        return interp.get_tensor(out)

    return call


def openvino_call(fp32: bytes, softmax: bool, calibration, threads: int, x: np.ndarray, tmp):
    import nncf
    import openvino as ov

    path = Path(tmp) / f"m{time.perf_counter_ns()}.tflite"
    path.write_bytes(openvino_safe_tflite(fp32))
    model = ov.convert_model(str(path))
    if softmax:
        model = softmax_channels_first(model)
    calls = {}
    for kind in ("fp32", "int8"):
        if kind == "int8":
            nncf.set_log_level(logging.ERROR)
            with contextlib.redirect_stdout(io.StringIO()):
                dataset = nncf.Dataset(list(calibration), lambda image: image[None])
                model = nncf.quantize(model, dataset, subset_size=len(calibration))
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
        calls[kind] = lambda request=request: request.infer({0: x})
    # a runtime setting: the float parts of the int8 model in f32, not the CPU's bf16 choice
    config = {**config, "INFERENCE_PRECISION_HINT": "f32"}
    request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
    calls["int8, float parts f32"] = lambda request=request: request.infer({0: x})
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="models/<model_id>/ of a run")
    p.add_argument("--calls", type=int, default=200, help="timed calls of each file")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    path = args.model_dir / "model.keras"
    model = load_keras_model(path)
    h, w, _ = segmentation_shape(model, path)
    rng = np.random.default_rng(0)
    calibration = rng.random((16, h, w, 3), dtype=np.float32)
    x = rng.random((1, h, w, 3), dtype=np.float32)
    calls = {}
    with tempfile.TemporaryDirectory(prefix="unetq-rewrites-") as tmp:
        for label, rewrites, softmax, _ in STEPS:
            saved = export_saved_model(model, (h, w), Path(tmp) / f"sm{len(calls)}", rewrites)
            inputs = ConvertInputs(saved, calibration)
            with native_stderr_quiet():
                fp32 = tflite_fp32(inputs).files[".tflite"]
                int8 = tflite_int8(inputs).files[".tflite"]
            if not softmax or label != SOFTMAX:  # the Softmax rewrite is OpenVINO's alone
                calls[(label, "litert fp32")] = litert_call(fp32, args.threads, x)
                calls[(label, "litert int8")] = litert_call(int8, args.threads, x)
            ov_calls = openvino_call(fp32, softmax, calibration, args.threads, x, tmp)
            calls[(label, "openvino fp32 (CPU's choice)")] = ov_calls["fp32"]
            calls[(label, "openvino int8")] = ov_calls["int8"]
            if label == SOFTMAX:
                calls[(label, "openvino int8, float parts f32")] = ov_calls["int8, float parts f32"]
        for call in calls.values():
            for _ in range(10):
                call()
        times = {key: [] for key in calls}
        for _ in range(args.calls):
            for key, call in calls.items():
                start = time.perf_counter_ns()
                call()
                times[key].append((time.perf_counter_ns() - start) / 1e6)
    print(f"{args.model_dir.name}, {h}x{w}, {args.threads} thread(s), {args.calls} calls each")
    print("| export | runtime | median ms | x the step it is compared with |")
    print("| --- | --- | --- | --- |")
    medians = {key: float(np.median(samples)) for key, samples in times.items()}
    base_of = {label: base for label, _, _, base in STEPS}
    for (label, runtime), median in medians.items():
        base = medians.get((base_of[label], runtime))
        if base is None and base_of[label] == SOFTMAX:  # LiteRT has no Softmax step
            base = medians.get((POINTWISE, runtime))
        if runtime.endswith("float parts f32"):  # the setting against the CPU's own choice
            base = medians.get((label, "openvino int8"))
        ratio = f"{median / base:.3f}" if base else "–"
        print(f"| {label} | {runtime} | {median:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
