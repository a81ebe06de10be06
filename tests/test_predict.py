"""`unetq predict` and `unetq show` on a tiny run: masks at each image size, bad files skipped."""

import numpy as np
import pytest
from PIL import Image

from runhelp import run_cli
from tinyrun import COMPRESSED
from unetq.errors import UnetqError
from unetq.predict import overlay, predict_images


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 33), dtype=np.uint8)).save(folder / "b.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "notes.txt").write_text("hello")
    return folder


@pytest.mark.parametrize("variant", ["model.keras", "tflite-int8.tflite", "tflite-fp32.tflite"])
def test_masks_have_each_images_size_and_bad_files_are_skipped(tiny, images, tmp_path, variant):
    model = tiny.run_dir / "models" / COMPRESSED / variant
    out = tmp_path / "out"
    result = predict_images(model, images, out)
    assert sorted(p.split("/")[-1] for p in result.written) == ["a.png", "b.jpg"]
    assert sorted(p.split("/")[-1] for p, _ in result.skipped) == ["broken.jpg", "notes.txt"]
    assert np.asarray(Image.open(out / "a_mask.png")).shape == (70, 50)
    assert np.asarray(Image.open(out / "b_mask.png")).shape == (20, 33)
    assert np.asarray(Image.open(out / "b_overlay.png")).shape == (20, 33, 3)
    assert np.asarray(Image.open(out / "a_mask.png")).max() < 3
    assert len(result.ms_per_image) == 2 and result.seconds > 0


def test_openvino_runtime_gives_the_litert_classes(tiny, images, tmp_path):
    folder = tiny.run_dir / "models" / COMPRESSED
    predict_images(folder / "tflite-fp32.tflite", images, tmp_path / "lite")
    predict_images(folder / "openvino-fp32.xml", images, tmp_path / "ov")  # runtime from suffix
    a = np.asarray(Image.open(tmp_path / "lite" / "a_mask.png"))
    b = np.asarray(Image.open(tmp_path / "ov" / "a_mask.png"))
    assert (a == b).mean() > 0.95


def test_overlay_leaves_background_untouched():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [0, 2]], np.uint8)
    out = overlay(image, mask, background_class=0)
    assert (out[:, 0] == 100).all()
    assert not (out[0, 1] == 100).all() and not (out[0, 1] == out[1, 1]).all()


def test_missing_model_or_images_fail_cleanly(tiny, tmp_path, images):
    with pytest.raises(UnetqError, match="model file not found"):
        predict_images(tmp_path / "nope.tflite", images, tmp_path / "out")
    model = tiny.run_dir / "models" / COMPRESSED / "tflite-fp32.tflite"
    with pytest.raises(UnetqError, match="no such image"):
        predict_images(model, tmp_path / "missing", tmp_path / "out")


@pytest.mark.slow  # four CLI processes, each loading TensorFlow: over 30 s on 2 cores
def test_cli_predict_and_show(tiny, images, tmp_path):
    env = {"UNETQ_CACHE_DIR": str(tiny.cache_dir), "PATH": "/usr/bin:/bin"}
    model = tiny.run_dir / "models" / COMPRESSED / "tflite-int8.tflite"
    proc = run_cli(["predict", "--model", model, "--images", images, "--out", tmp_path / "o"], env)
    assert "skipped" in proc.stdout and "2 images segmented" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png",
    ]  # fmt: skip
    masks_only = ["--out", tmp_path / "m", "--no-overlays", "--batch", "2"]
    run_cli(["predict", "--model", model, "--images", images, *masks_only], env)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["a_mask.png", "b_mask.png"]
    for name in ("a_mask.png", "b_mask.png"):
        same = np.asarray(Image.open(tmp_path / "m" / name))
        assert (same == np.asarray(Image.open(tmp_path / "o" / name))).all()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    proc = run_cli(
        ["predict", "--model", model, "--images", bad, "--out", tmp_path / "o2"], env, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no readable images")
    assert "Traceback" not in proc.stderr

    panel = tmp_path / "panel.png"
    run_cli(["show", "--run", tiny.run_dir, "--model", COMPRESSED, "--out", panel], env)
    assert Image.open(panel).size[0] > 300
    proc = run_cli(
        ["show", "--run", tiny.run_dir, "--image", "nope", "--out", panel], env, check=False
    )
    assert proc.returncode == 2 and "not in the test split" in proc.stderr


def test_images_read_ahead_and_written_behind_match_one_at_a_time(tiny, tmp_path):
    """More images than the read-ahead and write-behind windows, one unreadable in the middle:
    every mask is the segmenter's own answer for that image, and the order of the folder holds."""
    from unetq import predict
    from unetq.runtimes import load_segmenter

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    count = predict.READ_AHEAD + predict.WRITE_BEHIND + 3
    for i in range(count):
        size = (30 + 3 * i, 40 + i, 3)
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "05b.jpg").write_bytes(b"not an image")
    model = tiny.run_dir / "models" / COMPRESSED / "tflite-fp32.tflite"
    result = predict_images(model, folder, tmp_path / "out", threads=2)
    assert [p.split("/")[-1] for p in result.written] == [f"{i:02d}.png" for i in range(count)]
    assert [p.split("/")[-1] for p, _ in result.skipped] == ["05b.jpg"]
    assert result.threads == 2 and result.images_per_s > 0
    segmenter = load_segmenter("litert", model, 1)
    for i in range(count):
        image = np.asarray(Image.open(folder / f"{i:02d}.png"))
        expected = predict._resized_predictions(segmenter, [image])[0]
        assert (np.asarray(Image.open(tmp_path / "out" / f"{i:02d}_mask.png")) == expected).all()


@pytest.mark.parametrize(
    ("variant", "batch", "tiles"),
    [
        ("tflite-fp32.tflite", "4", None),
        ("tflite-int8.tflite", "3", 8),
        ("openvino-fp32.xml", "5", None),
        ("openvino-fp32.xml", "async", 8),
        ("model.keras", "4", None),
    ],
)
def test_batches_give_the_masks_of_one_image_at_a_time(tiny, tmp_path, variant, batch, tiles):
    """Images (tile mode: tiles) go to the model `batch` at a time, the last batch partial, or
    through openvino's asynchronous requests: the masks are those of one call per image."""
    from unetq.runtimes import Setting

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(7):  # 7 images: batches of 4 / 3 / 5 leave a partial one
        size = (30 + 5 * i, 45 - 2 * i, 3)
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(folder / f"{i}.png")
    model = tiny.run_dir / "models" / COMPRESSED / variant
    one = predict_images(model, folder, tmp_path / "one", tile_overlap=tiles, setting=Setting(1))
    many = predict_images(
        model, folder, tmp_path / "many", tile_overlap=tiles, setting=Setting.parse(batch)
    )
    assert many.written == one.written and len(many.written) == 7
    for i in range(7):
        a = np.asarray(Image.open(tmp_path / "one" / f"{i}_mask.png"))
        b = np.asarray(Image.open(tmp_path / "many" / f"{i}_mask.png"))
        assert (a == b).all(), f"image {i}"


def test_a_write_that_fails_ends_predict_with_that_error(tiny, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_mask.png").mkdir()  # the mask cannot be written over a folder
    model = tiny.run_dir / "models" / COMPRESSED / "tflite-fp32.tflite"
    with pytest.raises(OSError, match="b_mask"):
        predict_images(model, images, out)


def test_a_second_image_of_the_same_name_is_skipped_not_mixed_into_the_first(tiny, tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(folder / "a.bmp")
    model = tiny.run_dir / "models" / COMPRESSED / "tflite-fp32.tflite"
    result = predict_images(model, folder, tmp_path / "out")
    assert [p.split("/")[-1] for p in result.written] == ["a.bmp"]
    assert result.skipped == [(str(folder / "a.png"), "same name as a.bmp")]
    assert np.asarray(Image.open(tmp_path / "out" / "a_overlay.png")).shape == (30, 30, 3)


def test_a_run_folder_predicts_with_its_recommended_variant(tiny, images, tmp_path, monkeypatch):
    """`--run`: the variant `unetq recommend` picks at every usable core (here tflite-fp32, the
    fastest within the accuracy budget), the run's background class and resize mode."""
    import pandas as pd

    from tinyrun import copy_run
    from unetq.predict import recommended
    from unetq.runfolder import RunFolder
    from unetq.runtimes import Setting

    monkeypatch.setenv("UNETQ_THREADS", "1")
    run = RunFolder(copy_run(tiny, tmp_path / "run"))
    rows = [  # variant, runtime, ms, fg IoU: tflite-int8 is faster but loses 2 points
        ("keras", "keras", 9.0, 0.50),
        ("tflite-fp32", "litert", 4.0, 0.50),
        ("tflite-int8", "litert", 2.0, 0.48),
    ]
    frame = pd.DataFrame(
        {
            "model_id": COMPRESSED,
            "variant": v,
            "runtime": r,
            "threads": 1,
            "precision": "x",
            "latency_ms_median": ms,
            "size_bytes": 1000,
            "model_memory_mb": 1.0,
            "fg_iou": iou,
            "n_images": 4,
        }
        for v, r, ms, iou in rows
    )
    frame.to_csv(run.average_csv, index=False)
    chosen = recommended(run.root)
    assert chosen.artifact == run.root / "models" / COMPRESSED / "tflite-fp32.tflite"
    assert (chosen.runtime, chosen.threads, chosen.tile_overlap) == ("litert", 1, None)
    # benchmarked at 1 thread only: 4 cores here (or asked for) take the 1-thread choice
    monkeypatch.setenv("UNETQ_THREADS", "4")
    assert recommended(run.root).threads == 1 and recommended(run.root, 3).threads == 1
    assert chosen.background_class == 0 and "tflite-fp32" in chosen.why
    assert chosen.setting is None and "latency" in chosen.why  # no throughput measured
    result = predict_images(chosen.artifact, images, tmp_path / "out", chosen.runtime)
    assert len(result.written) == 2

    # with throughput measured: the variant with most images per second within the budget,
    # at the setting that gave it (tflite-int8's 900 images/s lose 2 points)
    throughput = {"keras": (100.0, "batch 8"), "tflite-fp32": (300.0, "batch 4"),
                  "tflite-int8": (900.0, "batch 8")}  # fmt: skip
    frame["threads"] = 2
    frame["throughput_images_per_s"] = [throughput[v][0] for v in frame["variant"]]
    frame["throughput_setting"] = [throughput[v][1] for v in frame["variant"]]
    frame.to_csv(run.average_csv, index=False)
    monkeypatch.setenv("UNETQ_THREADS", "2")
    chosen = recommended(run.root)
    assert chosen.artifact.name == "tflite-fp32.tflite" and chosen.threads == 2
    assert chosen.setting == Setting(4) and "throughput" in chosen.why
    result = predict_images(
        chosen.artifact, images, tmp_path / "out4", chosen.runtime, setting=chosen.setting
    )
    assert len(result.written) == 2


def test_ctrl_c_stops_predict_and_leaves_only_whole_files(tiny, tmp_path):
    """A Ctrl-C after the third image: it propagates, queued work is dropped, and every file in
    the output folder is a complete PNG (written atomically), none half-written."""
    from unetq import predict

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(predict.READ_AHEAD + 6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")

    class Interrupting:
        done = 0

        def add_task(self, *args, **kwargs):
            return 0

        def advance(self, task, advance=1):
            self.done += advance
            if self.done == 3:
                raise KeyboardInterrupt

    model = tiny.run_dir / "models" / COMPRESSED / "tflite-fp32.tflite"
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_images(model, folder, out, progress=Interrupting())
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 2 * 3 and all(name.endswith(".png") for name in files)
    for path in out.iterdir():
        Image.open(path).load()  # a complete image
