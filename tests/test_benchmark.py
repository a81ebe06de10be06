"""`unetq benchmark --model`: a user's own model through every variant, as the installed command
runs it; bad models and data end in one line with nothing written."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unetq.conventions import Conventions
from unetq.records import ModelInfo
from unetq.usermodel import adopted_info, inspect_model, model_id_for

keras = pytest.importorskip("keras")

UNETQ = Path(sys.executable).parent / "unetq"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from outside_model import mobilenet_unet  # noqa: E402


def unetq(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(UNETQ), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return line


def segmenter(classes: int = 3, size: int | None = 32, first=None) -> "keras.Model":
    inp = keras.Input((size, size, 3))
    x = first(inp) if first is not None else inp
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    return keras.Model(inp, keras.layers.Conv2D(classes, 1)(x))  # logits


def binary_folder(root: Path, n: int = 12, size: int = 40) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        Image.fromarray(((image[..., 0] > 127) * 255).astype(np.uint8)).save(
            root / "masks" / f"im{i}.png"
        )
    return root


# --- what the model says about itself ----------------------------------------------------------


def test_inspect_finds_size_range_and_output(tmp_path):
    path = tmp_path / "plain.keras"
    segmenter().save(path)
    _, info = inspect_model(path)
    assert isinstance(info, ModelInfo)
    assert (info.input_hw, info.num_classes, info.output) == ((32, 32), 3, "logits")
    assert info.input_norm.name == "unit" and info.norm_from.startswith("default")
    assert (info.output_channels, info.threshold) == (3, None)
    assert not info.size_fixed_by_unetq

    scaled = tmp_path / "scaled.keras"
    segmenter(size=None, first=keras.layers.Rescaling(1 / 127.5, offset=-1)).save(scaled)
    with pytest.raises(Exception, match="not fixed; pass --size"):
        inspect_model(scaled)
    _, info = inspect_model(scaled, size=48)
    assert info.input_hw == (48, 48) and info.size_fixed_by_unetq
    assert info.input_norm.describe() == "pixels in [0, 255]"
    assert "Rescaling layer" in info.norm_from
    _, info = inspect_model(scaled, Conventions(input_range="-1,1"), size=48)  # the flag wins
    assert info.input_norm.describe() == "pixels in [-1, 1]" and info.norm_from == "--input-range"
    assert model_id_for(Path("runs/q/models/xception-f8-bn-e8/model.keras")) == "xception-f8-bn-e8"
    assert model_id_for(Path("my model (v2).keras")) == "my_model__v2_"


def test_adopted_model_maps_unit_pixels_onto_the_models_range(tmp_path):
    from unetq.usermodel import adopt

    keras.utils.set_random_seed(0)
    model = segmenter(size=None)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded, info = inspect_model(path, Conventions(input_norm="tf"), size=32)
    adopt(loaded, info, tmp_path / "run" / "model.keras", tmp_path / "run" / "model.json")
    adopted = keras.saving.load_model(tmp_path / "run" / "model.keras")
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(adopted(x), model(2 * x - 1), atol=1e-5)
    assert tuple(adopted.inputs[0].shape) == (None, 32, 32, 3)
    saved = json.loads((tmp_path / "run" / "model.json").read_text())
    assert saved["input_norm"] == {
        "name": "tf",
        "mean": [127.5] * 3,
        "std": [127.5] * 3,
        "bgr": False,
    }
    assert adopted_info(tmp_path / "run" / "model.json") == info


def model_pixels(x: np.ndarray, mean, std, bgr: bool = False) -> np.ndarray:
    """What a model trained on normalised pixels is fed, written out by hand."""
    pixels = x * 255.0
    if bgr:
        pixels = pixels[..., ::-1]
    return (pixels - np.asarray(mean)) / np.asarray(std)


@pytest.mark.parametrize(
    ("said", "mean", "std", "bgr"),
    [
        (
            Conventions(input_norm="imagenet"),
            (123.675, 116.28, 103.53),
            (58.395, 57.12, 57.375),
            False,
        ),
        (Conventions(input_norm="caffe"), (103.939, 116.779, 123.68), (1, 1, 1), True),
        (Conventions(input_norm="raw"), (0, 0, 0), (1, 1, 1), False),
        (
            Conventions(mean="0.5,0.4,0.3", std="0.2,0.25,0.1"),
            (127.5, 102, 76.5),
            (51, 63.75, 25.5),
            False,
        ),
        (
            Conventions(mean="100,110,120", std="50,60,70", bgr=True),
            (100, 110, 120),
            (50, 60, 70),
            True,
        ),
    ],
)
def test_adopted_model_feeds_the_model_the_pixels_it_was_trained_on(tmp_path, said, mean, std, bgr):
    from unetq.usermodel import adopt

    keras.utils.set_random_seed(0)
    model = segmenter()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded, info = inspect_model(path, said)
    np.testing.assert_allclose(info.input_norm.mean, mean)
    np.testing.assert_allclose(info.input_norm.std, std)
    assert info.input_norm.bgr == bgr
    adopt(loaded, info, tmp_path / "run" / "model.keras", tmp_path / "run" / "model.json")
    adopted = keras.saving.load_model(tmp_path / "run" / "model.keras")
    x = np.random.default_rng(1).random((2, 32, 32, 3), dtype=np.float32)
    expected = model(model_pixels(x, mean, std, bgr).astype(np.float32))
    np.testing.assert_allclose(adopted(x), expected, rtol=1e-4, atol=1e-3)


def binary_segmenter(activation: str | None) -> "keras.Model":
    """Scores symmetric about 0 on [0, 1] images: both classes at any threshold near 0.5."""
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="tanh", use_bias=False)(x)
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation=activation, use_bias=False)(x))


@pytest.mark.parametrize(
    ("activation", "threshold"), [("sigmoid", None), ("sigmoid", 0.3), (None, 0.7)]
)
def test_a_one_channel_head_becomes_two_classes_cut_at_its_threshold(
    tmp_path, activation, threshold
):
    from unetq.usermodel import adopt

    keras.utils.set_random_seed(2)
    model = binary_segmenter(activation)
    path = tmp_path / "binary.keras"
    model.save(path)
    loaded, info = inspect_model(path, Conventions(input_norm="unit", threshold=threshold))
    assert (info.num_classes, info.output_channels) == (2, 1)
    assert info.output == ("probabilities" if activation else "logits")
    assert info.threshold == (threshold or 0.5)
    adopt(loaded, info, tmp_path / "run" / "model.keras", tmp_path / "run" / "model.json")
    adopted = keras.saving.load_model(tmp_path / "run" / "model.keras")
    x = np.random.default_rng(3).random((4, 32, 32, 3), dtype=np.float32)
    y = np.asarray(model(x))[..., 0]
    p = y if activation else 1 / (1 + np.exp(-y))
    scores = np.asarray(adopted(x))
    assert scores.shape == (4, 32, 32, 2)
    foreground = p > info.threshold
    assert 0.01 < foreground.mean() < 0.99  # both classes present: the cut is tested
    np.testing.assert_array_equal(scores.argmax(-1) == 1, foreground)
    if activation and threshold is None:  # a sigmoid at 0.5: the two class probabilities
        np.testing.assert_allclose(scores, np.stack([1 - p, p], -1), atol=1e-6)


def test_a_normalization_layer_says_which_pixels_the_model_takes(tmp_path):
    for mean, name in ((120.0, "raw"), (0.45, "unit")):
        first = keras.layers.Normalization(mean=[mean] * 3, variance=[4.0] * 3)
        path = tmp_path / f"norm{name}.keras"
        segmenter(first=first).save(path)
        _, info = inspect_model(path)
        assert info.input_norm.name == name and "Normalization layer" in info.norm_from


def test_a_model_json_written_before_input_norm_still_reads(tmp_path):
    old = {
        "source": "/x/m.keras", "source_sha256": "ab", "input_hw": [32, 32],
        "size_fixed_by_unetq": False, "num_classes": 3, "input_range": [-1.0, 1.0],
        "range_from": "--input-range", "output": "logits",
    }  # fmt: skip
    (tmp_path / "model.json").write_text(json.dumps(old))
    info = adopted_info(tmp_path / "model.json")
    assert info.input_norm.describe() == "pixels in [-1, 1]"
    assert (info.norm_from, info.output_channels, info.threshold) == ("--input-range", 3, None)


@pytest.mark.parametrize(
    ("said", "message"),
    [
        (Conventions(input_norm="torch"), "--input-norm 'torch' is not one of unit, tf, raw"),
        (
            Conventions(input_norm="tf", input_range="-1,1"),
            "give one of --input-norm and --input-range",
        ),
        (Conventions(mean="0.5,0.5,0.5"), "give --mean and --std together"),
        (Conventions(mean="0.5,0.5", std="1,1,1"), "--mean '0.5,0.5' is not three numbers"),
        (Conventions(mean="0,0,0", std="1,0,1"), "every value must be above 0"),
        (Conventions(bgr=True), "--bgr goes with --mean and --std"),
        (Conventions(threshold=1.0), "--threshold 1 is not between 0 and 1"),
        (Conventions(output="scores"), "--output 'scores' is not one of probabilities, logits"),
    ],
)
def test_flags_that_describe_no_model_are_refused(said, message):
    from unetq.conventions import input_norm_from_flags
    from unetq.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        input_norm_from_flags(said)


def test_a_threshold_for_a_multi_class_head_is_refused(tmp_path):
    from unetq.errors import ConfigError

    path = tmp_path / "three.keras"
    segmenter(classes=3).save(path)
    with pytest.raises(ConfigError, match="--threshold is for a one-channel"):
        inspect_model(path, Conventions(threshold=0.4))


# --- bad input: one line, exit 2, nothing written ------------------------------------------------


def test_a_corrupt_model_ends_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    line = one_error_line(unetq("benchmark", "--model", corrupt, "--out", out))
    assert line.startswith("error: ") and str(corrupt) in line
    assert not out.exists()


@pytest.mark.slow
def test_models_of_other_shapes_end_in_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    dense = tmp_path / "dense.keras"
    inp = keras.Input((10,))
    keras.Model(inp, keras.layers.Dense(3)(inp)).save(dense)
    line = one_error_line(unetq("benchmark", "--model", dense, "--out", out))
    assert "is not RGB images [N, H, W, 3]" in line
    proc = unetq("benchmark", "--model", dense, "--input-norm", "torch", "--out", out)
    assert "--input-norm 'torch' is not one of unit, tf, raw, imagenet, caffe" in one_error_line(
        proc
    )

    classifier = tmp_path / "classifier.keras"
    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x)).save(classifier)
    line = one_error_line(unetq("benchmark", "--model", classifier, "--out", out))
    assert "is not per-pixel classes" in line

    three = tmp_path / "three.keras"
    segmenter(classes=3).save(three)
    data = binary_folder(tmp_path / "binary")
    args = ("benchmark", "--model", three, "--data-dir", data, "--out", out)
    line = one_error_line(unetq(*args))
    assert "has 2 classes" in line and "the model predicts 3" in line
    assert not out.exists()


# --- whole runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_study_model_gives_the_studys_accuracy(smoke_run, cache_env, tmp_path):
    model_id = "xception-f4-bn-e3"
    model = smoke_run / "models" / model_id / "model.keras"
    root = json.loads((smoke_run / "dataset.json").read_text())["root"]
    out = tmp_path / "bench"
    proc = unetq(
        "benchmark", "--model", model, "--data-dir", root, "--format", "folder",
        "--preset", "smoke", "--out", out, env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"model {model_id}: 3 classes (probabilities), input 32x32" in proc.stdout
    study = pd.read_csv(smoke_run / "model_performance_average_results.csv")
    mine = pd.read_csv(out / "model_performance_average_results.csv")
    assert list(mine.columns[:9]) == list(study.columns[:9])  # the study's columns first
    keys = ["variant", "runtime", "threads"]
    study = study[study.model_id == model_id].set_index(keys)
    mine = mine.set_index(keys)
    assert set(mine.index) == set(study.index)
    for col in ("fg_iou", "fg_dice", "miou", "pixel_acc", "agreement"):
        np.testing.assert_allclose(mine[col], study.loc[mine.index, col], atol=1e-6, err_msg=col)
    assert (out / "report" / "index.html").exists()
    rerun = unetq(
        "benchmark", "--model", model, "--data-dir", root, "--format", "folder",
        "--preset", "smoke", "--out", out, env=cache_env,
    )  # fmt: skip
    assert "evaluate: nothing to redo" in rerun.stdout and "bench: nothing to redo" in rerun.stdout


@pytest.mark.slow
def test_a_model_built_outside_unetq_goes_through_the_variants(tmp_path, cache_env):
    from unetq.data.synthetic import write_synthetic

    size = 64
    data = write_synthetic(tmp_path / "shapes", count=48, size=size, seed=3)
    images = np.stack([np.asarray(keras.utils.load_img(p)) for p in sorted(data.glob("images/*"))])
    masks = np.stack([np.asarray(keras.utils.load_img(p, color_mode="grayscale"))[..., None]
                      for p in sorted(data.glob("masks/*"))])  # fmt: skip
    keras.utils.set_random_seed(1)
    model = mobilenet_unet(size)  # benchmarks/outside_model.py
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(images / 127.5 - 1, masks, epochs=12, batch_size=8, verbose=0)
    path = tmp_path / "mobilenet_unet.keras"
    model.save(path)
    out = tmp_path / "bench"
    variants = "keras,tflite-fp32,tflite-int8,openvino-fp32,openvino-int8"
    proc = unetq(
        "benchmark", "--model", path, "--data-dir", data, "--input-range", "-1,1",
        "--variants", variants, "--threads", "1", "--preset", "smoke", "--out", out,
        env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "models" / "mobilenet_unet" / "model.json").read_text())
    assert info["input_norm"]["name"] == "tf" and info["output"] == "logits"
    average = pd.read_csv(out / "model_performance_average_results.csv").set_index("variant")
    assert set(average.index) == set(variants.split(","))
    assert average.loc["keras", "fg_iou"] > 0.1  # it learned something to compare
    assert abs(average.loc["keras", "fg_iou"] - average.loc["tflite-fp32", "fg_iou"]) < 0.005
    assert abs(average.loc["keras", "fg_iou"] - average.loc["openvino-fp32", "fg_iou"]) < 0.01
    compressed = pd.read_csv(out / "compressed_models_info.csv")
    assert compressed["error"].isna().all()


@pytest.mark.slow
def test_without_data_it_measures_speed_and_says_accuracy_needs_data(tmp_path, cache_env):
    path = tmp_path / "seg.keras"
    segmenter().save(path)
    out = tmp_path / "bench"
    proc = unetq(
        "benchmark", "--model", path, "--variants", "keras,tflite-fp32,tflite-int8-mixed",
        "--threads", "1", "--preset", "smoke", "--out", out, env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy needs labelled images" in proc.stdout
    assert "not made without a dataset: tflite-int8-mixed" in proc.stdout
    average = pd.read_csv(out / "model_performance_average_results.csv")
    assert set(average.variant) == {"keras", "tflite-fp32"}
    assert average["latency_ms_median"].notna().all()
    html = (out / "report" / "index.html").read_text()
    assert "accuracy not measured (no dataset)" in html


@pytest.mark.slow
def test_a_binary_sigmoid_model_on_imagenet_pixels_scored_by_tiles(tmp_path, cache_env):
    """An outside binary U-Net (one sigmoid channel, ImageNet mean / std) through the variants
    in tile mode; the fg IoU of `unetq predict --run` masks, computed here from the PNGs, is the
    report's."""
    import shutil

    from mask_iou import mean_fg_iou
    from outside_model import binary_unet, imagenet_pixels

    from unetq.predict import recommended

    data = binary_folder(tmp_path / "binary", n=24, size=40)
    images = np.stack([np.asarray(keras.utils.load_img(p)) for p in sorted(data.glob("images/*"))])
    masks = np.stack([np.asarray(keras.utils.load_img(p, color_mode="grayscale")) > 127
                      for p in sorted(data.glob("masks/*"))])  # fmt: skip
    keras.utils.set_random_seed(4)
    model = binary_unet(32)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    crops = imagenet_pixels(images[:, :32, :32]), masks[:, :32, :32, None].astype(np.float32)
    model.fit(*crops, epochs=25, batch_size=8, verbose=0)
    path = tmp_path / "nuclei_binary.keras"
    model.save(path)
    out = tmp_path / "bench"
    variants = "keras,tflite-fp32,tflite-int8,openvino-fp32,openvino-int8,onnxruntime-fp32"
    proc = unetq(
        "benchmark", "--model", path, "--data-dir", data, "--input-norm", "imagenet",
        "--tile-overlap", "8", "--variants", variants, "--threads", "1", "--preset", "smoke",
        "--out", out, env=cache_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "one sigmoid channel, foreground where p > 0.5" in proc.stdout
    assert "RGB pixels 0..255 minus mean (123.675, 116.28, 103.53)" in proc.stdout
    dataset = json.loads((out / "dataset.json").read_text())
    assert (dataset["mode"], dataset["tile_overlap"], dataset["num_classes"]) == ("tile", 8, 2)
    average = pd.read_csv(out / "model_performance_average_results.csv")
    average = average.drop_duplicates("variant").set_index("variant")
    assert set(average.index) == set(variants.split(","))
    assert average.loc["keras", "fg_iou"] > 0.5  # it learned the red channel
    for fp32 in ("tflite-fp32", "openvino-fp32", "onnxruntime-fp32"):  # noise: pixels near the cut
        assert abs(average.loc["keras", "fg_iou"] - average.loc[fp32, "fg_iou"]) < 0.005

    individual = pd.read_csv(out / "model_performance_individual_results.csv")
    names = sorted(individual.loc[individual.variant == "keras", "image"].astype(str))
    test_images = tmp_path / "test_images"
    test_images.mkdir()
    for name in names:
        shutil.copy(data / "images" / f"{name}.png", test_images)
    predicted = tmp_path / "predicted"
    proc = unetq("predict", "--run", out, "--images", test_images, "--out", predicted,
                 "--no-overlays", env=cache_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    artifact = recommended(out).artifact  # what predict --run segmented with
    variant = "keras" if artifact.name == "model.keras" else artifact.stem
    mine = mean_fg_iou(predicted, data / "masks", names)  # benchmarks/mask_iou.py
    assert abs(mine - average.loc[variant, "fg_iou"]) < 1e-3, (variant, mine)


def test_a_tile_overlap_as_large_as_the_model_input_is_refused_before_writing(tmp_path):
    from unetq.benchmark import run_benchmark
    from unetq.config import build_config
    from unetq.errors import ConfigError

    path = tmp_path / "seg.keras"
    segmenter(size=32).save(path)
    cfg = build_config("smoke", None, None, {"data.mode": "tile", "data.tile_overlap": 8})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"tile_overlap": 32})})
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--tile-overlap 32 must be smaller than the model's 32"):
        run_benchmark(path, cfg, out, binary_folder(tmp_path / "data"))
    assert not out.exists()


@pytest.mark.parametrize(
    ("suffix", "message"),
    [(".onnx", "not a readable ONNX model"), (".tflite", "cannot load TFLite model")],
)
def test_corrupt_onnx_and_tflite_files_end_in_one_line(tmp_path, suffix, message):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not read")
    proc = unetq("benchmark", "--model", path, "--out", tmp_path / "out")
    assert proc.returncode == 2 and message in one_error_line(proc)
    assert not (tmp_path / "out").exists()
