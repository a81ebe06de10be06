"""Inside the model: per-layer cost (hand-computed), blocks, the OpenVINO profile mapped back to
the Keras layers, the per-layer quantization error, bounds, and `unetq inspect`."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from insidedata import XCEPTION_BLOCKS
from tinyrun import COMPRESSED, SIZE, copy_run
from unetq.runtimes import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402

from unetq.export import lower_for_export  # noqa: E402
from unetq.inside.error import litert_errors, openvino_errors, relative_rms  # noqa: E402
from unetq.inside.layers import FP32, INT8, blocks, model_layers  # noqa: E402
from unetq.inside.openvino import REORDER, map_ops, profile  # noqa: E402
from unetq.inside.table import (  # noqa: E402
    bound,
    limit_ms,
    pick_rows,
    variant_rows,
    where_time_goes,
)
from unetq.models import build_model, count_macs  # noqa: E402

UNETQ = Path(sys.executable).parent / "unetq"
# one thread and a bandwidth/peak easy to check by hand
PEAKS = {
    "openvino": {
        "f32": {"1": {"gmacs": 100.0}},
        "bf16": {"1": {"gmacs": 150.0}},
        "int8": {"1": {"gmacs": 400.0}},
    },
    "litert": {"f32": {"1": {"gmacs": 50.0}}, "int8": {"1": {"gmacs": 200.0}}},
    "bandwidth_gbs": {"1": 10.0},
}


def one_of_each():
    """A small graph with one layer of each kind, on 8x8x3."""
    layers = keras.layers
    x = inp = keras.Input((8, 8, 3), batch_size=1)
    x = layers.Conv2D(4, 3, padding="same", name="conv")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = layers.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2DTranspose(5, 3, padding="same", name="up_conv")(x)
    skip = x
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.UpSampling2D(2, name="upsample")(x)
    x = layers.Add(name="add")([x, skip])
    x = layers.Concatenate(name="concat")([x, skip])
    x = layers.Conv2D(3, 1, activation="softmax", name="head")(x)
    return keras.Model(inp, x)


def test_multiply_adds_and_bytes_of_each_kind_by_hand():
    by = {layer.name: layer for layer in model_layers(one_of_each())}
    # conv 3x3, 3 -> 4 channels on 8x8: 8*8 * 3*3*3 * 4 multiply-adds; 3*3*3*4 + 4 weights
    conv = by["conv"]
    assert (conv.kind, conv.macs, conv.params, conv.output_shape) == (
        "convolution",
        8 * 8 * 27 * 4,
        112,
        (8, 8, 4),
    )
    # f32: weights + input (8*8*3) + output (8*8*4), 4 bytes each; int8: 1 byte each
    assert conv.bytes(FP32) == 4 * (112 + 192 + 256)
    assert conv.bytes(INT8) == 112 + 192 + 256
    # separable: depthwise 8*8*9*4 + pointwise 8*8*4*6
    assert (by["sep"].kind, by["sep"].macs) == ("separable convolution", 2304 + 1536)
    assert (by["dw"].kind, by["dw"].macs) == ("depthwise convolution", 8 * 8 * 9 * 6)
    # transposed: every input pixel scatters a 3x3x5 patch of each of 6 channels
    assert (by["up_conv"].kind, by["up_conv"].macs) == ("transposed convolution", 64 * 9 * 6 * 5)
    # data movement: no multiply-adds, bytes in and out
    assert (by["pool"].kind, by["pool"].macs, by["pool"].bytes(FP32)) == ("pooling", 0, 4 * 400)
    assert (by["upsample"].kind, by["upsample"].bytes(FP32)) == ("upsampling", 4 * (80 + 320))
    assert (by["add"].kind, by["add"].bytes(FP32)) == ("add", 4 * (320 + 320 + 320))
    assert (by["concat"].kind, by["concat"].bytes(INT8)) == ("concatenate", 320 * 2 + 640)
    # batch norm and activation run fused into the convolution before them: no bytes
    assert (by["bn"].kind, by["bn"].bytes(FP32), by["relu"].bytes(FP32)) == ("normalization", 0, 0)
    assert by["head"].kind == "convolution" and ("Softmax",) in by["head"].signatures


def test_bounds_by_hand():
    layer = next(r for r in model_layers(one_of_each()) if r.name == "conv")
    # 6912 MACs at 100 GMAC/s = 0.0000691 ms; 2240 bytes at 10 GB/s = 0.000224 ms: memory
    ms, which = bound(layer, FP32, 100.0, 10.0)
    assert which == "memory" and ms == pytest.approx(2240 / 10e6)
    ms, which = bound(layer, FP32, 0.01, 10.0)  # a slow core: compute
    assert which == "compute" and ms == pytest.approx(6912 / 0.01e6)
    assert math.isnan(bound(layer, FP32, None, 10.0)[0])  # a peak not measured: unknown


def test_the_unet_in_blocks_and_the_export_rewrites_in_the_counts():
    model = build_model("xception", 8, True, 3, 32)
    rows = model_layers(model)
    assert [b for b, _ in blocks(rows)] == XCEPTION_BLOCKS
    assert dict(blocks(rows))["head"] == (32, 32, 3)
    assert sum(r.macs for r in rows) == count_macs(model)
    exported = {r.name: r for r in model_layers(lower_for_export(model))}
    original = {r.name: r for r in rows}
    moved = [n for n in original if n in exported and exported[n].macs != original[n].macs]
    # the decoder's four 1x1 residual convolutions run before their upsampling: 4x fewer
    assert len(moved) == 4
    for name in moved:
        assert exported[name].macs * 4 == original[name].macs


@pytest.fixture
def model_dir(tiny, tmp_path):
    run = copy_run(tiny, tmp_path / "run")
    return run / "models" / COMPRESSED


def test_openvino_nodes_map_to_every_weighted_layer(model_dir):
    import openvino as ov

    model = keras.saving.load_model(model_dir / "model.keras")
    layers = model_layers(lower_for_export(model))
    ir = ov.Core().read_model(str(model_dir / "openvino-fp32.xml"))
    label = map_ops(ir, layers)
    ops = [op for op in ir.get_ordered_ops() if op.get_type_name() not in ("Constant",)]
    unmapped = [op.get_type_name() for op in ops if op.get_friendly_name() not in label]
    assert set(unmapped) <= {"Parameter", "Result"}
    weighted = {r.name for r in layers if r.macs}
    convs = ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
    assert {label[op.get_friendly_name()] for op in ops if op.get_type_name() in convs} == weighted

    timed = profile(model_dir / "openvino-fp32.xml", layers, threads=1, calls=5, warmup=2)
    per_layer = timed.layer_ms()
    assert weighted <= set(per_layer) and all(per_layer[n] > 0 for n in weighted)
    assert sum(per_layer.values()) == pytest.approx(sum(n.ms for n in timed.nodes))
    assert timed.call_ms > 0 and all(n.kernel for n in timed.nodes)

    rows = variant_rows(
        {"model_id": "m", "variant": "openvino-fp32", "runtime": "openvino", "threads": 1},
        layers,
        PEAKS,
        timed,
    )
    keras_rows = [r for r in rows if r["layer"] != REORDER]
    assert len(keras_rows) == len(layers) - 1  # every layer but the input
    assert sum(r["time_ms"] for r in rows) == pytest.approx(sum(per_layer.values()))
    conv = next(r for r in rows if r["kind"] == "convolution")
    assert conv["x_bound"] == pytest.approx(conv["time_ms"] / conv["bound_ms"])
    assert limit_ms(rows) == pytest.approx(sum(r["bound_ms"] for r in keras_rows))
    assert pick_rows(rows)[0]["variant"] == "openvino-fp32"


def test_relative_error_by_hand_and_against_itself(model_dir):
    assert relative_rms(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == 0
    assert relative_rms(np.array([0.0, 0.0]), np.array([3.0, 4.0])) == pytest.approx(1.0)
    assert relative_rms(np.array([3.0, 5.0]), np.array([3.0, 4.0])) == pytest.approx(
        math.sqrt(0.5) / math.sqrt(12.5)
    )
    model = keras.saving.load_model(model_dir / "model.keras")
    layers = model_layers(lower_for_export(model))
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3), np.float32)
    weighted = {r.name for r in layers if r.macs}
    same = litert_errors(
        model_dir / "tflite-fp32.tflite", model_dir / "tflite-fp32.tflite", layers, images
    )
    assert set(same) == weighted and all(v == 0 for v in same.values())
    int8 = litert_errors(
        model_dir / "tflite-fp32.tflite", model_dir / "tflite-int8.tflite", layers, images
    )
    assert set(int8) == weighted and all(0 < v < 1 for v in int8.values())
    xml = model_dir / "openvino-fp32.xml"
    assert all(v == 0 for v in openvino_errors(xml, xml, layers, images).values())


def test_cli_inspect_prints_where_the_time_goes_then_the_table(model_dir, tiny, monkeypatch):
    (model_dir.parents[1] / "machine.json").write_text(__import__("json").dumps({"peaks": PEAKS}))
    env = {**__import__("os").environ, "UNETQ_CACHE_DIR": str(tiny.cache_dir)}
    env.pop("UNETQ_DATA_DIR", None)
    proc = subprocess.run(
        [str(UNETQ), "inspect", str(model_dir), "--threads", "1"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "120"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    first = next(ln for ln in lines if " at 1 thread: " in ln)
    assert first.startswith("openvino-fp32") and "x its limit" in first
    assert all(len(ln) <= 120 for ln in lines if ln.startswith(("┃", "│", "┏")))
    assert (model_dir / "layers.csv").is_file() and "conv2d" in proc.stdout

    # again, in this process: current, so nothing is recomputed; LiteRT has no per-layer times
    from unetq.inside.run import inspect_model_dir
    from unetq.runfolder import read_csv

    monkeypatch.setenv("UNETQ_CACHE_DIR", str(tiny.cache_dir))
    before = (model_dir / "layers.csv").stat().st_mtime_ns
    path, _ = inspect_model_dir(model_dir)
    assert path.stat().st_mtime_ns == before
    litert = pick_rows(read_csv(path).to_dict("records"), "tflite-int8", 1)
    assert "litert gives no per-layer times" in where_time_goes(litert)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["inspect"], "give a model folder RUN/models/ID or --model FILE"),
        (["inspect", "nowhere/models/m"], "is not a model folder of a unetq run"),
        (["inspect", "--model", "missing.keras"], "model file not found: missing.keras"),
    ],
)
def test_cli_inspect_bad_input_is_one_line(args, says, tmp_path):
    proc = subprocess.run(
        [str(UNETQ), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 2 and says in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_variant_or_thread_count_is_named(model_dir):
    rows = [{"threads": 1, "variant": "keras", "call_ms": float("nan")}]
    assert pick_rows(rows)[0]["variant"] == "keras"
    with pytest.raises(Exception, match="no rows at 2 thread"):
        pick_rows(rows, threads=2)
    with pytest.raises(Exception, match="variant 'tflite-int8' is not in the table"):
        pick_rows(rows, variant="tflite-int8")
    shutil.rmtree(model_dir)
