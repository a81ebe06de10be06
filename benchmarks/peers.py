"""unetq's recommended variant beside the plain conversions a user would try without unetq.

    python benchmarks/peers.py runs/q160/models/xception-f32-bn-e12 [--threads 1,all]

For the model in a run folder (trained, compressed, evaluated and benchmarked by unetq):
- "LiteRT int8 one-liner": `TFLiteConverter.from_keras_model(model)` with
  `Optimize.DEFAULT` and a representative dataset. When the model's batch dimension is not
  fixed the converter emits TF ops that LiteRT cannot run (Flex Conv2D); the script then fixes
  the batch to 1, the least a user must change, and says so.
- "OpenVINO + NNCF one-liner": `ov.convert_model(model)` on the Keras model, then
  `nncf.quantize(model, nncf.Dataset(images))` with its defaults, compiled by OpenVINO with
  its defaults (a dynamic batch is fixed to 1 for the timed call).
- "OpenVINO one-liner": `ov.convert_model(model)` compiled with its defaults, no NNCF (on a CPU
  with native bf16 the plugin runs it in bf16, which a user gets for free).
- "ONNX Runtime int8 one-liner": Keras' `model.export(path, format="onnx")`, then
  `onnxruntime.quantization.quantize_static` with its defaults.
- unetq's recommended variant at each thread count (`unetq recommend`, 0.5 fg IoU points) and
  unetq's keras, tflite-int8 and openvino-int8 for reference.
The one-liners are calibrated on the same training images as unetq's int8 variants and scored
on the same test images. Every row is timed by unetq's own protocol (a fresh process each,
turns taken in rounds, only the model call). Also printed: the int8 limit of one core for the
model's multiply-adds (bench/machine.py: `int8_limit_ms`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from unetq.bench.machine import int8_limit_ms, machine_info
from unetq.bench.run import resolve_threads
from unetq.bench.session import ProbeJob, bench_images, measure_interleaved
from unetq.compress import compression_images
from unetq.data import load_split, open_dataset
from unetq.errors import UnetqError
from unetq.metrics import mean_fg_iou
from unetq.models import count_macs, to_input, with_static_batch
from unetq.recommend import Budgets, recommend
from unetq.runfolder import RunFolder
from unetq.runtimes import load_keras_model, load_predictor, native_stderr_quiet
from unetq.variants import VARIANTS


def litert_one_liner(model, calibration: np.ndarray, folder: Path) -> tuple[Path, str]:
    import tensorflow as tf

    def representative():
        for image in calibration:
            yield [image[None]]

    def convert(keras_model) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        with native_stderr_quiet():
            return converter.convert()

    note = "from_keras_model as it is"
    try:
        content = convert(model)
    except Exception as exc:  # the converter's own error, reported below
        first = str(exc).strip().splitlines()[0][:120]
        note = f"from_keras_model failed ({first}); batch fixed to 1"
        content = convert(with_static_batch(model, 1))
    path = folder / "plain-int8.tflite"
    path.write_bytes(content)
    return path, note


def openvino_one_liner(model, calibration: np.ndarray, folder: Path) -> tuple[Path, str]:
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), native_stderr_quiet():
        dataset = nncf.Dataset([image[None] for image in calibration])
        quantized = nncf.quantize(ov.convert_model(model), dataset)
    path = folder / "plain-openvino-int8.xml"
    ov.save_model(quantized, str(path))
    return path, "ov.convert_model(keras model) + nncf.quantize defaults"


def openvino_plain(model, folder: Path) -> tuple[Path, str]:
    import openvino as ov

    with native_stderr_quiet():
        converted = ov.convert_model(model)
    path = folder / "plain-openvino.xml"
    ov.save_model(converted, str(path))
    return path, "ov.convert_model(keras model), compiled with the plugin's defaults"


def onnxruntime_one_liner(model, calibration: np.ndarray, folder: Path) -> tuple[Path, str]:
    import onnx
    from onnxruntime.quantization import quantize_static

    from unetq.convert.onnxruntime import calibration_reader

    fp32, int8 = folder / "plain.onnx", folder / "plain-int8.onnx"
    with contextlib.redirect_stdout(io.StringIO()), native_stderr_quiet():
        model.export(str(fp32), format="onnx")
    name = onnx.load(str(fp32)).graph.input[0].name
    quantize_static(str(fp32), str(int8), calibration_reader(calibration, name))
    return int8, "model.export(format='onnx') + quantize_static defaults"


def fg_iou(runtime: str, artifact: Path, test, num_classes: int, background: int) -> float:
    predictor = load_predictor(runtime, artifact, threads=2)
    return mean_fg_iou(test.masks, predictor.predict(test.images), num_classes, background)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, help="models/<model_id>/ of a unetq run")
    p.add_argument("--threads", default="1,all")
    p.add_argument("--repeats", type=int, default=60, help="timed calls per row")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    run = RunFolder(args.model_dir.parent.parent)
    model_id = args.model_dir.name
    cfg = run.load_config()
    index = open_dataset(cfg.data)
    size = cfg.data.image_size
    train, val = load_split(index, "train", size), load_split(index, "val", size)
    test = load_split(index, cfg.evaluate.split, size)
    calibration, _ = compression_images(train.images, val.images, cfg.compress)
    model = load_keras_model(run.model_file(model_id))
    threads = resolve_threads(args.threads)
    rows = {}  # name -> (runtime, artifact, note)
    for t in threads:
        try:
            [rec] = recommend(run.root, Budgets(threads=t), model_id)
        except UnetqError as exc:  # e.g. not benchmarked at this thread count
            print(f"no recommendation at {t} thread(s): {exc}")
            continue
        if rec.chosen is not None:
            name = f"unetq recommended ({rec.chosen.variant})"
            rows[name] = (
                rec.chosen.runtime,
                rec.chosen.artifact,
                f"unetq recommend at {t} thread(s)",
            )
    for variant in ("keras", "tflite-int8", "openvino-int8", "onnxruntime-int8"):
        artifact = run.artifact(model_id, variant)
        runtime = VARIANTS[variant].runtime
        if artifact.exists():
            rows.setdefault(f"unetq {variant}", (runtime, artifact, ""))
    with tempfile.TemporaryDirectory(prefix="unetq-peers-") as tmp:
        float_calibration = to_input(calibration)
        path, note = litert_one_liner(model, float_calibration, Path(tmp))
        rows["plain LiteRT int8 one-liner"] = ("litert", path, note)
        path, note = openvino_one_liner(model, float_calibration, Path(tmp))
        rows["plain OpenVINO + NNCF one-liner"] = ("openvino", path, note)
        path, note = openvino_plain(model, Path(tmp))
        rows["plain OpenVINO one-liner"] = ("openvino", path, note)
        path, note = onnxruntime_one_liner(model, float_calibration, Path(tmp))
        rows["plain ONNX Runtime int8 one-liner"] = ("onnxruntime", path, note)
        accuracy = {
            name: fg_iou(rt, art, test, index.num_classes, index.background_class)
            for name, (rt, art, _) in rows.items()
        }
        jobs = [
            (name, ProbeJob(rt, art, t, args.repeats, 5))
            for t in threads
            for name, (rt, art, _) in rows.items()
        ]
        images = bench_images((size, size), 8, source=test.images)
        results = measure_interleaved([job for _, job in jobs], images, args.rounds)
    info = machine_info()
    macs = count_macs(model)
    limit, how = int8_limit_ms(macs, info)
    print(f"{model_id}: {macs / 1e9:.3f} GMAC per image; {info['cpu_model']}, {how}")
    print(f"int8 limit of one core: {limit:.2f} ms per image (at the OS-reported clock)")
    for name, (_, _, note) in rows.items():
        if note:
            print(f"- {name}: {note}")
    print("\n| what | threads | median ms | test fg IoU | x the best one-liner |")
    print("| --- | --- | --- | --- | --- |")
    for t in threads:
        medians = {}
        for (name, job), result in zip(jobs, results, strict=True):
            if job.threads == t and not isinstance(result, Exception):
                medians[name] = result.latency.median_ms
        peers = [medians[n] for n in medians if n.startswith("plain")]
        best_peer = min(peers) if peers else float("nan")
        for name, ms in sorted(medians.items(), key=lambda item: item[1]):
            ratio = best_peer / ms
            extra = f" ({ms / limit:.2f}x the limit)" if t == 1 and "recommended" in name else ""
            print(f"| {name} | {t} | {ms:.2f}{extra} | {accuracy[name]:.4f} | {ratio:.2f} |")
    for (name, job), result in zip(jobs, results, strict=True):
        if isinstance(result, Exception):
            print(f"- {name} at {job.threads} thread(s) failed: {result}")


if __name__ == "__main__":
    main()
