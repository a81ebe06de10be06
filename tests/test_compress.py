"""compress.py: every variant round-trips through its runtime; bad inputs fail in one line and
leave no artifact behind; the export's rewrites compute the Keras model's values."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unetq import compress
from unetq.config import CompressConfig
from unetq.convert import Validation
from unetq.errors import ModelError, UnetqError
from unetq.export import ALL_REWRITES, lower_for_export
from unetq.models import build_model, to_input
from unetq.records import CompressRecord
from unetq.runfolder import RunFolder, artifact_path, artifact_size, read_json, sidecar_path
from unetq.runtimes import load_predictor
from unetq.variants import VARIANTS, for_origin, is_original, original_of, validate_variants

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

SIZE = 32
KERAS_VARIANTS = validate_variants("all")  # what a Keras model becomes
TFLITE_VARIANTS = [v for v in KERAS_VARIANTS if VARIANTS[v].suffix == ".tflite"]
OPENVINO_VARIANTS = [v for v in KERAS_VARIANTS if VARIANTS[v].runtime == "openvino"]


def tiny_model(classes: int = 3):
    """A 3-conv fully convolutional net; weights > 1024 values, so dynamic-int8 quantizes them."""
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    out = keras.layers.Conv2D(classes, 3, padding="same", activation="softmax")(x)
    return keras.Model(inp, out)


def images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish images (blocks of colour plus noise), so classes are not pure noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, SIZE // 8, SIZE // 8, 3)).repeat(8, 1).repeat(8, 2)
    noise = rng.integers(-20, 21, (n, SIZE, SIZE, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def save(model, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def no_artifacts(folder: Path) -> bool:
    if not folder.exists():
        return True
    names = [p.name for p in folder.iterdir()]
    return not [n for n in names if n.endswith(".tflite") or ".part." in n]


def one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and text
    for part in parts:
        assert part in text, (part, text)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(1)
    return save(tiny_model(), tmp_path_factory.mktemp("m") / "models" / "tiny-f16" / "model.keras")


def validation(n: int = 6) -> Validation:
    """Labelled images for the guarded variants: classes from the images' own colours."""
    x = images(n, seed=7)
    return Validation(to_input(x), (x[..., 0] // 86).astype(np.uint8), 3, 0)


@pytest.fixture(scope="module")
def compressed(model_path):
    cfg = CompressConfig(calibration_images=8, verify_images=4)
    out = model_path.parent
    records = compress.compress_model(
        model_path,
        ["all"],
        out,
        images(8, seed=1),
        images(4, seed=2),
        cfg,
        validation=validation(),
    )
    return {r.variant: r for r in records}, out


def test_every_variant_round_trips_through_litert(compressed, model_path):
    records, out = compressed
    assert list(records) == KERAS_VARIANTS
    fp32 = records["tflite-fp32"]
    for name in TFLITE_VARIANTS:
        rec = records[name]
        path = artifact_path(out, name)
        assert Path(rec.path) == path and path.is_file()
        assert rec.size_bytes == path.stat().st_size
        assert rec.size_ratio_to_fp32 == pytest.approx(rec.size_bytes / fp32.size_bytes)
        assert rec.convert_seconds > 0 and rec.verify_images == 4
        predictor = load_predictor("litert", path, threads=1)
        assert predictor.input_hw == (SIZE, SIZE) and predictor.num_classes == 3
        maps = predictor.predict(images(2))
        assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.uint8
    assert fp32.agreement >= 0.999 and fp32.max_abs_diff < 1e-4
    assert fp32.size_ratio_to_fp32 == 1.0
    for name in ("tflite-dynamic-int8", "tflite-int8", "tflite-int16x8", "tflite-fp16"):
        assert records[name].size_bytes < fp32.size_bytes, name
        assert records[name].agreement > 0.9, name
    assert {n: records[n].precision for n in TFLITE_VARIANTS} == {
        "tflite-fp32": "fp32",
        "tflite-dynamic-int8": "dynamic-int8",
        "tflite-fp16": "fp16-weights",
        "tflite-int8": "int8",
        "tflite-int8-mixed": "int8",
        "tflite-int16x8": "int16x8",
    }
    assert not [r.error for r in records.values() if r.error]
    ref = records["keras"]
    assert (ref.agreement, ref.max_abs_diff, ref.convert_seconds) == (1.0, 0.0, 0.0)
    assert ref.size_bytes == model_path.stat().st_size and ref.model_id == "tiny-f16"


def test_openvino_variants_are_ir_files_that_match_keras(compressed):
    records, out = compressed
    for name in OPENVINO_VARIANTS:
        rec = records[name]
        xml = artifact_path(out, name)
        assert Path(rec.path) == xml and xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
        assert rec.size_bytes == artifact_size(xml) > xml.stat().st_size
        assert rec.agreement > 0.9, name
        predictor = load_predictor("openvino", xml, threads=1)
        assert predictor.input_hw == (SIZE, SIZE) and predictor.num_classes == 3
        assert predictor.precision == rec.precision
    # the CPU picks the float precision (bf16 where it has it); int8 says so in front
    assert records["openvino-fp32"].precision in ("fp32", "bf16", "fp16")
    assert records["openvino-int8"].precision.startswith("int8+")
    # the guard's outcome is in the sidecar, checked on the validation images: the budget
    # holds at the high end of the drop's interval, which is at least the mean drop
    for variant in ("openvino-int8-guarded", "tflite-int8-mixed"):
        guard = read_json(sidecar_path(artifact_path(out, variant)))["details"]
        assert guard["validation_images"] == 6 and guard["max_iou_drop"] == 0.005
        assert guard["predicted_drop_high"] >= guard["predicted_drop"] - 1e-9
        assert guard["budget_met"] == (guard["predicted_drop_high"] <= 0.005 + 1e-9)


def test_mixed_variant_writes_its_sensitivity_table(compressed):
    _, out = compressed
    table = (out / "tflite-int8-mixed.layers.csv").read_text().splitlines()
    assert table[0] == "rank,layer,op,sensitivity,kept_float,tensor"
    rows = list(csv.DictReader(table))
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    sensitivity = [float(r["sensitivity"]) for r in rows]
    assert sensitivity == sorted(sensitivity, reverse=True) and len(rows) >= 3
    details = read_json(sidecar_path(artifact_path(out, "tflite-int8-mixed")))
    kept = details["details"]["float_layers"]
    assert kept == [r["layer"] for r in rows if r["kept_float"] == "True"]


def test_guarded_variants_need_validation_images(model_path, tmp_path):
    cfg = CompressConfig(calibration_images=8, verify_images=2)
    records = compress.compress_model(
        model_path,
        ["tflite-fp32", "tflite-int8-mixed", "openvino-int8-guarded"],
        tmp_path,
        images(8, seed=1),
        images(2),
        cfg,
    )
    by = {r.variant: r for r in records}
    assert by["tflite-fp32"].error == "" and (tmp_path / "tflite-fp32.tflite").is_file()
    for name in ("tflite-int8-mixed", "openvino-int8-guarded"):
        assert "needs validation images with masks" in by[name].error, by[name].error
        assert "\n" not in by[name].error and by[name].size_bytes == 0
        assert not artifact_path(tmp_path, name).exists()


def test_static_shape_and_builtin_ops_only(compressed):
    from ai_edge_litert.interpreter import Interpreter

    _, out = compressed
    for name in TFLITE_VARIANTS:
        interp = Interpreter(model_path=str(artifact_path(out, name)))
        interp.allocate_tensors()
        assert list(interp.get_input_details()[0]["shape"]) == [1, SIZE, SIZE, 3]
        ops = {op["op_name"] for op in interp._get_ops_details()}
        assert not [o for o in ops if o.startswith("Flex")], (name, ops)
        assert not ops & {"VAR_HANDLE", "READ_VARIABLE"}, (name, ops)  # weights are frozen


def test_rerun_skips_finished_variants_and_redoes_stale_ones(compressed, model_path):
    records, out = compressed
    paths = {n: artifact_path(out, n) for n in KERAS_VARIANTS if n != "keras"}
    before = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    cfg = CompressConfig(calibration_images=8, verify_images=4)
    again = compress.compress_model(
        model_path, ["all"], out, images(8, seed=1), images(4, seed=2), cfg, validation=validation()
    )
    assert {n: p.stat().st_mtime_ns for n, p in paths.items()} == before
    for rec in again:
        assert rec.convert_seconds == records[rec.variant].convert_seconds
        assert rec.agreement == records[rec.variant].agreement
    # a sidecar lost (interrupted between the two writes) -> that variant is converted again
    sidecar_path(paths["tflite-fp16"]).unlink()
    compress.compress_model(model_path, ["tflite-fp16"], out, None, images(4, seed=2), cfg)
    assert paths["tflite-fp16"].stat().st_mtime_ns != before["tflite-fp16"]
    assert sidecar_path(paths["tflite-fp16"]).is_file()


def test_uint8_io_scales_input_and_output(compressed, model_path, tmp_path):
    records, out = compressed
    cfg = CompressConfig(calibration_images=8, verify_images=4, int8_io="uint8")
    (rec,) = compress.compress_model(
        model_path, ["tflite-int8"], tmp_path, images(8, seed=1), images(4, seed=2), cfg
    )
    assert rec.io_dtype == "uint8" and rec.precision == "int8"
    assert rec.size_ratio_to_fp32 == pytest.approx(
        rec.size_bytes / records["tflite-fp32"].size_bytes
    )
    as_uint8 = load_predictor("litert", tmp_path / "tflite-int8.tflite")
    as_float = load_predictor("litert", out / "tflite-int8.tflite")
    scale, zero = as_uint8._in_q
    assert scale == pytest.approx(1 / 255, rel=0.02) and zero == 0
    test = images(4, seed=5)
    p8, pf = as_uint8.predict_proba(test), as_float.predict_proba(test)
    assert p8.dtype == np.float32
    assert np.allclose(p8.sum(-1), 1.0, atol=0.05)  # dequantized, not raw 0..255 codes
    assert np.mean(p8.argmax(-1) == pf.argmax(-1)) >= 0.97
    assert np.abs(p8 - pf).max() < 0.1
    assert rec.agreement >= 0.9


def test_missing_model(tmp_path):
    with pytest.raises(ModelError) as exc:
        compress.compress_model(
            tmp_path / "nope.keras",
            ["all"],
            tmp_path / "out",
            images(2),
            images(1),
            CompressConfig(),
        )
    one_line(exc, "not found", "nope.keras")
    assert no_artifacts(tmp_path / "out")


def test_truncated_model(model_path, tmp_path):
    bad = tmp_path / "cut.keras"
    bad.write_bytes(model_path.read_bytes()[:2000])
    with pytest.raises(ModelError) as exc:
        compress.compress_model(bad, ["all"], tmp_path, images(2), images(1), CompressConfig())
    one_line(exc, str(bad))
    assert no_artifacts(tmp_path)


def test_text_file_named_keras(tmp_path):
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model\n")
    with pytest.raises(ModelError) as exc:
        compress.compress_model(bad, ["tflite-fp32"], tmp_path, None, images(1), CompressConfig())
    one_line(exc, str(bad))
    assert no_artifacts(tmp_path)


def test_classifier_output_is_rejected(tmp_path):
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    path = save(
        keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x)), tmp_path / "cls.keras"
    )
    with pytest.raises(ModelError) as exc:
        compress.compress_model(path, ["all"], tmp_path, images(2), images(1), CompressConfig())
    one_line(exc, str(path), "per-pixel")
    assert no_artifacts(tmp_path)


def test_unknown_variant(model_path, tmp_path):
    with pytest.raises(UnetqError) as exc:
        compress.compress_model(
            model_path, ["tflite-fp32", "tflite-int3"], tmp_path, None, images(1), CompressConfig()
        )
    one_line(exc, "tflite-int3", "tflite-int8", "all")
    assert no_artifacts(tmp_path)


def test_int8_without_calibration_images(model_path, tmp_path):
    with pytest.raises(UnetqError) as exc:
        compress.compress_model(
            model_path, ["tflite-int8"], tmp_path, None, images(1), CompressConfig()
        )
    one_line(exc, "calibration")
    assert no_artifacts(tmp_path)


def test_images_of_the_wrong_size(model_path, tmp_path):
    small = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(UnetqError) as exc:
        compress.compress_model(
            model_path, ["tflite-fp32"], tmp_path, None, small, CompressConfig()
        )
    one_line(exc, "16x16", "32x32")
    assert no_artifacts(tmp_path)


@keras.saving.register_keras_serializable(package="unetq_test")
class ErfLayer(keras.layers.Layer):
    """tf.math.erf has no TFLite builtin kernel (only a Flex one)."""

    def call(self, x):
        return tf.math.erf(x)


def test_non_builtin_op_is_named_with_its_layer(tmp_path):
    inp = keras.Input((SIZE, SIZE, 3))
    x = ErfLayer(name="erf_block")(keras.layers.Conv2D(4, 3, padding="same")(inp))
    out = keras.layers.Conv2D(3, 1, activation="softmax")(x)
    path = save(keras.Model(inp, out), tmp_path / "odd.keras")
    variants = ["keras", "tflite-fp32", "openvino-fp32"]
    records = compress.compress_model(path, variants, tmp_path, None, images(1), CompressConfig())
    by = {r.variant: r for r in records}
    assert by["keras"].error == ""  # the other variants still finish
    for name in ("tflite-fp32", "openvino-fp32"):  # both go through the TFLite converter
        error = by[name].error
        assert "\n" not in error and "Erf" in error and "erf_block" in error and str(path) in error
    assert no_artifacts(tmp_path)


def test_cli_names_a_variant_it_could_not_make_in_one_line(model_path, tmp_path):
    proc = run_cli(
        "--model", str(model_path), "--variants", "tflite-fp32,tflite-int8-mixed",
        "--out", "out", "--calibration-images", "4", "--verify-images", "2", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert line.startswith("error: 1 of 2 variants not made: tflite-int8-mixed: ")
    assert "needs validation images with masks" in line and "Traceback" not in proc.stdout
    rows = list(csv.DictReader(RunFolder(tmp_path / "out").compressed_csv.open()))
    assert [(r["variant"], bool(r["error"])) for r in rows] == [
        ("tflite-fp32", False),
        ("tflite-int8-mixed", True),
    ]
    assert (tmp_path / "out" / "tflite-fp32.tflite").is_file()


def test_validate_variants():
    everything = validate_variants(["all"])  # what a Keras model can become
    assert everything == [v for v in VARIANTS if v not in ("onnx", "tflite")]
    assert validate_variants("tflite-int8,keras,tflite-int8") == ["tflite-int8", "keras"]
    with pytest.raises(UnetqError, match="choose from all, keras"):
        validate_variants(["fp8"])
    assert artifact_path(Path("m"), "keras") == Path("m/model.keras")
    assert artifact_path(Path("m"), "onnx") == Path("m/model.onnx")
    assert artifact_path(Path("m"), "tflite") == Path("m/model.tflite")
    assert artifact_path(Path("m"), "tflite-fp16") == Path("m/tflite-fp16.tflite")
    assert VARIANTS["tflite-int16x8"].slow
    assert VARIANTS["tflite-dynamic-int8"].study_name == "default"
    assert VARIANTS["tflite-fp16"].study_name == "float16"
    assert VARIANTS["keras"].study_name == "no compression"


def test_each_format_keeps_the_variants_it_can_be_made_into():
    asked = ["keras", "tflite-fp32", "tflite-int8", "openvino-int8", "onnxruntime-fp32"]
    asked.append("onnxruntime-int8")
    assert for_origin(asked, "keras") == (asked, [])
    # an ONNX model is its own onnxruntime-fp32; the TFLite converter needs a TensorFlow model
    assert for_origin(asked, "onnx") == (
        ["onnx", "openvino-int8", "onnxruntime-int8"],
        ["tflite-fp32", "tflite-int8"],
    )
    # a .tflite file is its own tflite-fp32; ONNX Runtime reads it through tf2onnx
    assert for_origin(asked, "tflite") == (
        ["tflite", "openvino-int8", "onnxruntime-fp32", "onnxruntime-int8"],
        ["tflite-int8"],
    )
    assert [original_of(f) for f in ("keras", "onnx", "tflite")] == ["keras", "onnx", "tflite"]
    assert is_original("onnx", "onnxruntime") and not is_original("onnx", "openvino")
    assert not is_original("onnxruntime-fp32")
    for name in ("model.keras", "model.onnx", "model.tflite"):
        assert compress.default_model_id(Path("run/models/m") / name) == "m"
    assert compress.default_model_id(Path("mine/seg.onnx")) == "seg"


def test_csv_rows_keep_other_models(compressed, tmp_path):
    records, _ = compressed
    path = RunFolder(tmp_path).compressed_csv
    other = CompressRecord("other", "keras", "x", 1, 1.0, 0.0, 1.0, 0.0, 1)
    compress.write_compress_csv(path, [other])
    compress.write_compress_csv(path, list(records.values()))
    rows = list(csv.DictReader(path.open()))
    assert [r["Model"] for r in rows] == ["other"] + ["tiny-f16"] * len(records)
    quant = {r["variant"]: r["Quantization"] for r in rows if r["Model"] == "tiny-f16"}
    assert quant["tflite-dynamic-int8"] == "default" and quant["tflite-int8"] == "tflite-int8"


def test_compression_images_random_or_from_dataset(monkeypatch):
    cfg = CompressConfig(calibration_images=5, verify_images=3)
    cal, ver = compress.random_images((8, 8), cfg)
    again = compress.random_images((8, 8), cfg)
    assert cal.shape == (5, 8, 8, 3) and ver.shape == (3, 8, 8, 3) and cal.dtype == np.uint8
    assert np.array_equal(cal, again[0]) and "not representative" in compress.RANDOM_IMAGES_WARNING

    import types

    train = types.SimpleNamespace(
        images=np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
    )
    val = types.SimpleNamespace(
        images=np.full((4, 8, 8, 3), 200, np.uint8), masks=np.ones((4, 8, 8), np.uint8)
    )
    seen = {}

    def open_dataset(data_cfg, progress=None):
        seen["cfg"] = data_cfg
        return types.SimpleNamespace(
            root=Path("fake"), synthetic=False, note="", num_classes=2, background_class=0
        )

    monkeypatch.setattr("unetq.compress.open_dataset", open_dataset)
    monkeypatch.setattr(
        "unetq.compress.load_inputs",
        lambda index, split, data, progress=None: train if split == "train" else val,
    )
    cal, ver, _, _ = compress.dataset_images((8, 8), cfg, compress.data_config(None, "folder"))
    assert seen["cfg"].image_size == 8
    assert len(cal) == 5 and len(set(cal[:, 0, 0, 0])) == 5  # distinct training images
    assert cal[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]  # the first ones: the study's rule
    assert ver.shape == (3, 8, 8, 3) and (ver == 200).all()
    # the rule itself: first N training images calibrate, first K validation images verify
    cal, ver = compress.compression_images(train.images, val.images, cfg)
    assert np.array_equal(cal, train.images[:5]) and np.array_equal(ver, val.images[:3])
    _, ver = compress.compression_images(train.images, val.images[:0], cfg)
    assert np.array_equal(ver, train.images[:3])  # no validation split: training images


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "unetq.cli", "compress", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_bad_model_path_is_one_line(tmp_path):
    result = run_cli("--model", str(tmp_path / "missing.keras"), "--out", "out", cwd=tmp_path)
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: model file not found: {tmp_path / 'missing.keras'}"]
    assert "Traceback" not in result.stdout + result.stderr
    assert no_artifacts(tmp_path / "out")


def test_cli_writes_variants_csv_and_table(model_path, tmp_path):
    result = run_cli(
        "--model", str(model_path), "--variants", "keras,tflite-fp32,tflite-int8",
        "--out", "out", "--calibration-images", "4", "--verify-images", "2", "--int8-io", "uint8",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "not representative" in result.stdout  # random calibration data is flagged
    assert "tflite-int8" in result.stdout and "agreement" in result.stdout
    rows = list(csv.DictReader(RunFolder(tmp_path / "out").compressed_csv.open()))
    assert [r["variant"] for r in rows] == ["keras", "tflite-fp32", "tflite-int8"]
    assert rows[0]["Quantization"] == "no compression" and rows[2]["io_dtype"] == "uint8"
    assert (tmp_path / "out" / "tflite-int8.tflite").is_file()


@pytest.mark.slow  # a pool of TensorFlow processes; every slow study converts through it
def test_compress_models_converts_in_worker_processes(tmp_path):
    keras.utils.set_random_seed(2)
    paths = [save(tiny_model(), tmp_path / "models" / f"m{i}" / "model.keras") for i in range(2)]
    cfg = CompressConfig(calibration_images=4, verify_images=2)
    variants = ["tflite-fp32", "tflite-int8"]
    records = compress.compress_models(
        paths, variants, images(4, seed=1), images(2, seed=2), cfg, workers=2
    )
    assert [(r.model_id, r.variant) for r in records] == [
        (m, v) for m in ("m0", "m1") for v in variants
    ]
    assert all(r.agreement > 0.9 and r.size_ratio_to_fp32 > 0 for r in records)
    # the same bytes as a conversion in this process
    compress.compress_model(paths[1], ["tflite-fp32"], tmp_path / "serial", None, images(2), cfg)
    pooled = (paths[1].parent / "tflite-fp32.tflite").read_bytes()
    assert pooled == (tmp_path / "serial" / "tflite-fp32.tflite").read_bytes()


def upsampling_model():
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(inp)  # 8x8
    x = keras.layers.UpSampling2D((2, 2))(x)  # 16x16
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)  # 32x32, kept as it is
    out = keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(x)
    return keras.Model(inp, out)


def test_nearest_upsampling_is_lowered_to_the_same_values():
    x = np.random.default_rng(0).random((2, 5, 7, 4), dtype=np.float32)
    inp = keras.Input((5, 7, 4))
    model = keras.Model(inp, keras.layers.UpSampling2D((3, 2))(inp))
    lowered = lower_for_export(model, ("delegable-upsampling",))
    assert lowered is not model
    assert lowered.output.shape == (None, 15, 14, 4)
    np.testing.assert_array_equal(lowered(x), np.repeat(np.repeat(x, 3, axis=1), 2, axis=2))
    plain = tiny_model()
    assert lower_for_export(plain, ("delegable-upsampling",)) is plain  # nothing to lower


def test_exported_upsampling_has_no_tile_and_matches_keras(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(3)
    path = save(upsampling_model(), tmp_path / "models" / "up-f8" / "model.keras")
    cfg = CompressConfig(calibration_images=8, verify_images=4)
    variants = ["tflite-fp32", "tflite-int8"]
    records = compress.compress_model(
        path, variants, path.parent, images(8, seed=1), images(4, seed=2), cfg
    )
    fp32 = next(r for r in records if r.variant == "tflite-fp32")
    assert fp32.max_abs_diff < 1e-5 and fp32.agreement == 1.0
    for name in variants:
        interp = Interpreter(model_path=str(artifact_path(path.parent, name)))
        ops = [op["op_name"] for op in interp._get_ops_details()]
        assert "TILE" not in ops and "CONCATENATION" in ops, (name, ops)
        assert "RESIZE_BILINEAR" in ops, (name, ops)  # bilinear is not touched


def decoder_block(size: int = 8):
    """The xception decoder's shapes in small: stride-1 Conv2DTranspose, nearest upsampling of
    the main path, and a 1x1 Conv2D that reads only the upsampled residual."""
    inp = keras.Input((size, size, 6))
    x = keras.layers.Conv2DTranspose(5, 3, padding="same", activation="relu")(inp)
    x = keras.layers.UpSampling2D(2)(x)
    residual = keras.layers.Conv2D(5, 1, padding="same")(keras.layers.UpSampling2D(2)(inp))
    x = keras.layers.add([x, residual])
    return keras.Model(inp, keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(x))


@pytest.mark.parametrize("rewrites", [(r,) for r in ALL_REWRITES] + [ALL_REWRITES])
def test_every_export_rewrite_computes_the_keras_values(rewrites):
    keras.utils.set_random_seed(4)
    model = decoder_block()
    x = np.random.default_rng(1).random((2, 8, 8, 6), dtype=np.float32)
    lowered = lower_for_export(model, rewrites)
    assert lowered is not model
    np.testing.assert_allclose(lowered(x), model(x), atol=1e-6)
    kinds = [type(layer).__name__ for layer in lowered.layers]
    if "flip-transposed-conv" in rewrites:
        assert "Conv2DTranspose" not in kinds
    if "pointwise-before-upsampling" in rewrites:  # the 1x1 conv reads the 8x8 input now
        assert pointwise_input_sizes(lowered) == [8]


def pointwise_input_sizes(model) -> list[int]:
    """Input heights of the model's 1x1 convolutions, in this model's own graph (layers are
    shared with the model it was lowered from, so `layer.input` would be that one's)."""
    return [
        node.input_tensors[0].shape[1]
        for depth in model._nodes_by_depth.values()
        for node in depth
        if getattr(node.operation, "kernel_size", None) == (1, 1)
    ]


def test_rewrites_of_the_xception_unet_match_keras_and_leave_it_untouched():
    keras.utils.set_random_seed(5)
    model = build_model("xception", 4, True, 3, 32)
    x = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    before = model(x)
    for rewrites in ((), ALL_REWRITES, ALL_REWRITES):  # twice: the layers are shared
        lowered = lower_for_export(model, rewrites)
        np.testing.assert_allclose(lowered(x), before, atol=1e-5)
    # the encoder's residuals run at 8, 4, 2 px; the decoder's before upsampling now: 2, 4, 8, 16
    assert sorted(pointwise_input_sizes(model)) == [2, 4, 4, 8, 8, 16, 32]
    assert sorted(pointwise_input_sizes(lower_for_export(model))) == [2, 2, 4, 4, 8, 8, 16]
    np.testing.assert_array_equal(model(x), before)  # the trained model is unchanged


def test_openvino_softmax_moves_to_the_channel_axis():
    ov = pytest.importorskip("openvino")
    import openvino.opset13 as ops

    from unetq.convert.openvino import softmax_channels_first

    x = np.random.default_rng(3).standard_normal((1, 6, 5, 3)).astype(np.float32)
    param = ops.parameter([1, 6, 5, 3], np.float32)
    model = softmax_channels_first(ov.Model([ops.softmax(param, -1)], [param]))
    kinds = [op.get_type_name() for op in model.get_ordered_ops()]
    assert kinds.count("Transpose") == 2
    [softmax] = [op for op in model.get_ordered_ops() if op.get_type_name() == "Softmax"]
    assert int(softmax.get_attributes()["axis"]) == 1
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), atol=1e-6)
