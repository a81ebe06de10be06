"""The data layer on tiny datasets built here (pets layout with its quirks, folders, synthetic)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import unetq.data.cache as cache_mod
from unetq.cli import app
from unetq.config import DataConfig
from unetq.data import (
    cache_dir,
    load_split,
    open_dataset,
    read_image,
    read_mask,
    scan_dataset,
    write_synthetic,
)
from unetq.data.index import limit_splits, seed_split
from unetq.errors import DataError
from unetq.models import to_input

# Read before the autouse fixture below clears UNETQ_DATA_DIR for the other tests.
REAL_DATA = {var: os.environ.get(var) for var in ("UNETQ_DATA_DIR", "UNETQ_SHARED_DATA")}
PET_NAMES = [f"Abyssinian_{i}" for i in range(1, 11)] + [f"beagle_{i}" for i in range(1, 11)]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("UNETQ_DATA_DIR", raising=False)
    monkeypatch.setenv("UNETQ_OFFLINE", "1")


def _env_dir(var: str, sub: str = "") -> Path:
    value = REAL_DATA[var]
    if not value:
        pytest.skip(f"{var} is not set (real data in ../shared/data)")
    path = Path(value) / sub
    if not path.is_dir():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture
def pets_sample() -> Path:
    return _env_dir("UNETQ_DATA_DIR")


@pytest.fixture
def shared_data() -> Path:
    return _env_dir("UNETQ_SHARED_DATA")


def _rgb(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_pets(root: Path, seed: int = 0) -> dict:
    """A tiny Oxford-IIIT Pet layout with the real archive's quirks; returns what was written."""
    rng = np.random.default_rng(seed)
    images, trimaps = root / "images", root / "annotations" / "trimaps"
    images.mkdir(parents=True)
    trimaps.mkdir(parents=True)
    written = {"trimaps": {}, "quirks": {}}
    for i, name in enumerate(PET_NAMES):
        h, w = (30, 40) if i % 2 else (44, 28)  # landscape and portrait
        trimap = rng.integers(1, 4, size=(h, w), dtype=np.uint8)
        Image.fromarray(trimap).save(trimaps / f"{name}.png")
        written["trimaps"][name] = trimap
        Image.fromarray(_rgb(rng, h, w)).save(images / f"{name}.jpg", "JPEG")
    # Quirks: a PNG (RGBA) and a GIF (palette) named .jpg, a CMYK and a grayscale JPEG.
    rgba = np.dstack([_rgb(rng, 44, 28), np.full((44, 28), 128, np.uint8)])
    Image.fromarray(rgba).save(images / "Abyssinian_5.jpg", "PNG")
    written["quirks"]["Abyssinian_5"] = rgba[..., :3]
    palette = Image.fromarray(_rgb(rng, 44, 28)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.save(images / "Abyssinian_3.jpg", "GIF")
    gif = Image.open(images / "Abyssinian_3.jpg")
    written["quirks"]["Abyssinian_3"] = np.asarray(gif.convert("RGB"))
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(images / "beagle_2.jpg", "JPEG")
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)).save(images / "beagle_4.jpg")
    (images / "Abyssinian_1.mat").write_bytes(b"MATLAB 5.0 MAT-file, not an image")
    Image.fromarray(_rgb(rng, 20, 20)).save(images / "beagle_99.jpg")  # no trimap
    ann = root / "annotations"
    trainval = PET_NAMES[:6] + PET_NAMES[10:16]
    test = PET_NAMES[6:10] + PET_NAMES[16:]
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
    (ann / "trainval.txt").write_text(header + "".join(f"{n} 1 1 1\n" for n in trainval))
    (ann / "test.txt").write_text(header + "".join(f"{n} 1 1 1\n" for n in test))
    written["trainval"], written["test"] = trainval, test
    return written


def make_folder(root: Path, masks: dict[str, np.ndarray], image_fmt="PNG", mask_fmt="PNG"):
    ext = {"PNG": "png", "TIFF": "tif", "GIF": "gif", "JPEG": "jpg"}
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name, mask in masks.items():
        h, w = mask.shape
        image = Image.fromarray(_rgb(rng, h, w))
        image.save(root / "images" / f"{name}.{ext[image_fmt]}", image_fmt)
        Image.fromarray(mask).save(root / "masks" / f"{name}.{ext[mask_fmt]}", mask_fmt)
    return root


def _class_masks(n: int, values=(0, 1, 2), size=(24, 20), seed=2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"img{i:02d}": rng.choice(values, size=size).astype(np.uint8) for i in range(n)}


# --- Oxford-IIIT Pet -------------------------------------------------------------------------


def test_pets_scan_reports_pairs_skipped_and_unmatched(tmp_path):
    make_pets(tmp_path)
    index = scan_dataset(tmp_path, "pets", DataConfig())
    assert [p.name for p in index.pairs] == sorted(PET_NAMES)
    mat = str(tmp_path / "images" / "Abyssinian_1.mat")
    assert index.skipped == [(mat, "not an image file (.mat)")]
    assert index.unmatched == [str(tmp_path / "images" / "beagle_99.jpg")]
    assert (index.num_classes, index.background_class) == (3, 1)
    assert index.class_names == ["pet", "background", "border"]
    assert index.pair("beagle_3").mask == tmp_path / "annotations" / "trimaps" / "beagle_3.png"
    with pytest.raises(DataError, match="no image/mask pair named 'cat'"):
        index.pair("cat")


def test_pets_images_decode_by_content_to_rgb(tmp_path):
    written = make_pets(tmp_path)
    images = tmp_path / "images"
    for name, expected in written["quirks"].items():
        np.testing.assert_array_equal(read_image(images / f"{name}.jpg"), expected)
    cmyk = read_image(images / "beagle_2.jpg")
    assert cmyk.shape == (30, 40, 3) and cmyk.dtype == np.uint8
    assert np.abs(cmyk.astype(int) - [255, 0, 0]).max() < 8  # C=0 M=Y=255 K=0 is red
    grey = read_image(images / "beagle_4.jpg")
    assert grey.shape == (30, 40, 3)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def test_trimaps_map_to_pet_background_border(tmp_path):
    written = make_pets(tmp_path)
    index = scan_dataset(tmp_path, "pets", DataConfig())
    for name in ("Abyssinian_2", "beagle_7"):
        mask = read_mask(index, index.pair(name))
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, written["trimaps"][name] - 1)


def test_seed_split_reproduces_the_study(tmp_path):
    make_pets(tmp_path)
    index = scan_dataset(tmp_path, "pets", DataConfig(split="seed", split_seed=42))
    files = sorted(p.name for p in (tmp_path / "images").glob("*.jpg"))  # all .jpg, as the study
    random.Random(42).shuffle(files)
    n = len(files)
    cut = {"train": files[: int(0.8 * n)], "val": files[int(0.8 * n) : int(0.9 * n)]}
    cut["test"] = files[int(0.9 * n) :]
    for split, names in cut.items():
        expected = [Path(f).stem for f in names if Path(f).stem != "beagle_99"]
        assert index.splits[split] == expected
    sizes = {k: len(v) for k, v in seed_split([f"x{i}.jpg" for i in range(7390)], 42).items()}
    assert sizes == {"train": 5912, "val": 739, "test": 739}


def test_official_split_uses_the_lists(tmp_path):
    written = make_pets(tmp_path)
    index = scan_dataset(tmp_path, "pets", DataConfig(split="official", split_seed=7))
    assert index.lists == {"trainval": written["trainval"], "test": written["test"]}
    order = sorted(written["trainval"])
    random.Random(7).shuffle(order)
    assert index.splits["val"] == order[::10]
    assert index.splits["train"] == [n for i, n in enumerate(order) if i % 10]
    assert index.splits["test"] == sorted(written["test"])


def test_official_split_without_lists_is_an_error(tmp_path):
    make_pets(tmp_path)
    (tmp_path / "annotations" / "test.txt").unlink()
    with pytest.raises(DataError, match=r"split 'official' needs test\.txt"):
        scan_dataset(tmp_path, "pets", DataConfig(split="official"))


def test_limit_keeps_splits_proportional_and_deterministic(tmp_path):
    make_pets(tmp_path)
    full = scan_dataset(tmp_path, "pets", DataConfig())
    small = scan_dataset(tmp_path, "pets", DataConfig(limit=6))
    again = scan_dataset(tmp_path, "pets", DataConfig(limit=6))
    assert small.splits == again.splits
    sizes = {k: len(v) for k, v in small.splits.items()}
    assert sum(sizes.values()) == 6 and min(sizes.values()) >= 1
    assert sizes["train"] >= sizes["val"]
    for split, names in small.splits.items():
        assert set(names) <= set(full.splits[split])
    big = {"train": [f"t{i}" for i in range(800)], "val": [f"v{i}" for i in range(100)]}
    big["test"] = [f"s{i}" for i in range(100)]
    limited = limit_splits(big, 100, 42)
    assert {k: len(v) for k, v in limited.items()} == {"train": 80, "val": 10, "test": 10}


# --- folder datasets -------------------------------------------------------------------------


def test_folder_tiff_images_with_gif_class_masks(tmp_path):
    masks = _class_masks(6)
    make_folder(tmp_path, masks, image_fmt="TIFF", mask_fmt="GIF")
    Image.fromarray(_rgb(np.random.default_rng(0), 8, 8)).save(tmp_path / "images" / "lonely.tif")
    (tmp_path / "masks" / "notes.txt").write_text("not a mask")
    index = scan_dataset(tmp_path, "folder", DataConfig())
    assert [p.name for p in index.pairs] == sorted(masks)
    assert index.unmatched == [str(tmp_path / "images" / "lonely.tif")]
    assert index.skipped == [(str(tmp_path / "masks" / "notes.txt"), "not an image file (.txt)")]
    assert (index.num_classes, index.background_class) == (3, 0)
    assert index.mask_values == {0: 0, 1: 1, 2: 2}
    for pair in index.pairs:
        np.testing.assert_array_equal(read_mask(index, pair), masks[pair.name])
        assert read_image(pair.image).shape == (24, 20, 3)
    assert sorted(n for v in index.splits.values() for n in v) == sorted(masks)


@pytest.mark.parametrize("high", [255, 1])
def test_binary_masks_become_classes_0_and_1(tmp_path, high):
    masks = _class_masks(4, values=(0, high))
    make_folder(tmp_path, masks)
    index = scan_dataset(tmp_path, "folder", DataConfig())
    assert index.num_classes == 2 and index.mask_values == {0: 0, high: 1}
    assert index.class_names == ["background", "foreground"]
    pair = index.pairs[0]
    expected = (masks[pair.name] == high).astype(np.uint8)
    np.testing.assert_array_equal(read_mask(index, pair), expected)


def test_explicit_mask_mapping_and_values_outside_it(tmp_path):
    masks = _class_masks(3, values=(0, 128, 255))
    make_folder(tmp_path, masks)
    cfg = DataConfig(mask_values={0: 0, 128: 1, 255: 2}, background_class=2)
    index = scan_dataset(tmp_path, "folder", cfg)
    assert index.num_classes == 3 and index.background_class == 2
    assert index.class_names == ["class0", "class1", "background"]
    pair = index.pairs[1]
    expected = np.select([masks[pair.name] == 128, masks[pair.name] == 255], [1, 2], 0)
    np.testing.assert_array_equal(read_mask(index, pair), expected)
    with pytest.raises(DataError, match=r"mask values \{128\} outside data.mask_values") as err:
        scan_dataset(tmp_path, "folder", DataConfig(mask_values={0: 0, 255: 1}))
    assert str(tmp_path / "masks" / "img00.png") in str(err.value)


def test_grey_level_masks_need_a_mapping(tmp_path):
    make_folder(tmp_path, _class_masks(2, values=(0, 100, 200)))
    with pytest.raises(DataError, match=r"masks hold values \{0, 100, 200\}.*data.mask_values"):
        scan_dataset(tmp_path, "folder", DataConfig())


def test_mask_scan_is_cached(tmp_path, monkeypatch):
    make_folder(tmp_path, _class_masks(3))
    first = scan_dataset(tmp_path, "folder", DataConfig())

    def fail(path):
        raise AssertionError(f"mask decoded again: {path}")

    monkeypatch.setattr("unetq.data.folder.read_mask_raw", fail)
    again = scan_dataset(tmp_path, "folder", DataConfig())
    assert again.mask_values == first.mask_values and again.num_classes == 3


# --- bad input -------------------------------------------------------------------------------


def _no_arrays_written() -> bool:
    folder = cache_dir() / "arrays"
    return not folder.exists() or not any(folder.iterdir())


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=f"data folder not found: {tmp_path / 'nope'}$"):
        scan_dataset(tmp_path / "nope", "folder", DataConfig())
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images in"):
        scan_dataset(tmp_path, "folder", DataConfig())
    with pytest.raises(DataError, match="not an Oxford-IIIT Pet layout .*use format 'folder'"):
        scan_dataset(tmp_path, "pets", DataConfig())


def test_no_pairs(tmp_path):
    make_folder(tmp_path, {"a": np.zeros((8, 8), np.uint8)})
    (tmp_path / "masks" / "a.png").rename(tmp_path / "masks" / "b.png")
    with pytest.raises(DataError, match="no image/mask pairs: 1 images and 1 masks share no name"):
        scan_dataset(tmp_path, "folder", DataConfig())


def test_garbage_mask_is_named(tmp_path):
    make_folder(tmp_path, _class_masks(3))
    bad = tmp_path / "masks" / "img01.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="unreadable mask") as err:
        scan_dataset(tmp_path, "folder", DataConfig())
    assert str(err.value).endswith(str(bad)) and "\n" not in str(err.value)


def test_folder_size_mismatch_is_named(tmp_path):
    make_folder(tmp_path, _class_masks(3))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "img02.png")
    with pytest.raises(DataError, match=r"image is 20x24 but its mask is 10x10") as err:
        scan_dataset(tmp_path, "folder", DataConfig())
    assert str(err.value).endswith(str(tmp_path / "masks" / "img02.png"))


def test_truncated_image_fails_load_and_writes_nothing(tmp_path):
    make_pets(tmp_path)
    index = scan_dataset(tmp_path, "pets", DataConfig())
    victim = index.pair(index.splits["train"][2]).image
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(DataError, match="unreadable image") as err:
        load_split(index, "train", 16)
    assert str(err.value).endswith(str(victim))
    assert _no_arrays_written()


def test_pets_trimap_value_outside_mapping_and_size_mismatch(tmp_path):
    make_pets(tmp_path)
    index = scan_dataset(tmp_path, "pets", DataConfig())
    name = index.splits["test"][0]
    trimap = index.pair(name).mask
    values = np.asarray(Image.open(trimap)).copy()
    values[0, 0] = 7
    Image.fromarray(values).save(trimap)
    with pytest.raises(DataError, match=r"mask values \{7\} outside the mapping \{1, 2, 3\}"):
        load_split(index, "test", 16)
    Image.fromarray(values[:-2] % 3 + 1).save(trimap)
    with pytest.raises(DataError, match="image/mask size mismatch") as err:
        load_split(index, "test", 16)
    assert str(err.value).endswith(str(trimap))
    assert _no_arrays_written()


# --- decoding once: the array cache ----------------------------------------------------------


def test_load_split_resizes_and_reuses_the_cache(tmp_path, monkeypatch):
    written = make_pets(tmp_path)
    index = scan_dataset(tmp_path, "pets", DataConfig())
    arrays = load_split(index, "train", 24)
    assert arrays.names == index.splits["train"]
    assert arrays.images.shape == (len(arrays), 24, 24, 3) and arrays.images.dtype == np.uint8
    assert arrays.masks.shape == (len(arrays), 24, 24) and set(np.unique(arrays.masks)) <= {0, 1, 2}
    i = arrays.names.index("beagle_2") if "beagle_2" in arrays.names else None
    if i is not None:  # the uniform red CMYK image stays uniform red after bilinear resizing
        assert np.abs(arrays.images[i].astype(int) - [255, 0, 0]).max() < 8
    j = arrays.names[0]
    nearest = np.asarray(Image.fromarray(written["trimaps"][j] - 1).resize((24, 24), Image.NEAREST))
    np.testing.assert_array_equal(arrays.masks[0], nearest)
    assert len(list((cache_dir() / "arrays").glob("*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_mod, "read_image", fail)
    monkeypatch.setattr(cache_mod, "read_mask_raw", fail)
    again = load_split(index, "train", 24)
    assert again.names == arrays.names
    np.testing.assert_array_equal(again.images, arrays.images)
    np.testing.assert_array_equal(again.masks, arrays.masks)
    # A changed source file or another size is a different cache entry: it decodes again.
    with pytest.raises(AssertionError, match="decoded again"):
        load_split(index, "train", 32)
    source = index.pair(arrays.names[0]).image
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        load_split(index, "train", 24)


def test_to_input_scales_to_unit_range():
    x = to_input(np.array([[0, 51, 255]], dtype=np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[0.0, 0.2, 1.0]])


# --- synthetic -------------------------------------------------------------------------------


def test_synthetic_is_deterministic_with_exact_masks(tmp_path):
    a = write_synthetic(tmp_path / "a", count=6, size=32, seed=3)
    b = write_synthetic(tmp_path / "b", count=6, size=32, seed=3)
    c = write_synthetic(tmp_path / "c", count=6, size=32, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 12
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert any((a / rel).read_bytes() != (c / rel).read_bytes() for rel in files)
    masks = np.stack([np.asarray(Image.open(p)) for p in sorted((a / "masks").iterdir())])
    assert set(np.unique(masks)) == {0, 1, 2}
    stamp = (a / "images" / "synth_0000.png").stat().st_mtime_ns
    assert write_synthetic(a, count=6, size=32, seed=3) == a  # reused, not rewritten
    assert (a / "images" / "synth_0000.png").stat().st_mtime_ns == stamp


def test_open_dataset_synthetic(tmp_path):
    index = open_dataset(DataConfig(source="synthetic", synthetic_count=10, image_size=32))
    assert index.synthetic and index.format == "synthetic"
    assert (index.num_classes, index.background_class) == (3, 0)
    assert index.class_names == ["background", "circle", "rectangle"]
    assert {k: len(v) for k, v in index.splits.items()} == {"train": 8, "val": 1, "test": 1}
    arrays = load_split(index, "train", 32)
    assert arrays.images.shape == (8, 32, 32, 3)


def test_open_dataset_prefers_data_dir_and_env(tmp_path, monkeypatch):
    make_pets(tmp_path / "pets")
    index = open_dataset(DataConfig(data_dir=tmp_path / "pets"))
    assert not index.synthetic and index.note.endswith("(--data-dir)")
    monkeypatch.setenv("UNETQ_DATA_DIR", str(tmp_path / "pets"))
    index = open_dataset(DataConfig())
    assert index.root == tmp_path / "pets" and "UNETQ_DATA_DIR" in index.note
    monkeypatch.delenv("UNETQ_DATA_DIR")
    offline = open_dataset(DataConfig(synthetic_count=6, image_size=32))  # UNETQ_OFFLINE=1
    assert offline.synthetic and "download unavailable" in offline.note
    with pytest.raises(DataError, match="format 'folder' needs a data folder"):
        open_dataset(DataConfig(format="folder"))


# --- CLI -------------------------------------------------------------------------------------


def test_cli_check_reports_and_caches(tmp_path):
    make_pets(tmp_path)
    result = CliRunner().invoke(app, ["data", "check", "--data-dir", str(tmp_path), "--size", "16"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pairs found: 20" in out and "1 not an image file (.mat): Abyssinian_1.mat" in out
    assert "unmatched files (no partner): 1" in out and "official lists: trainval 12, test 8" in out
    assert "split 'seed' (seed 42): train 16 / val 2 / test 2" in out
    assert "decoded: 20 of 20" in out and "usable" in out
    assert len(list((cache_dir() / "arrays").glob("*.npz"))) == 3


def test_cli_check_bad_data_exits_2_with_one_line(tmp_path):
    make_pets(tmp_path)
    (tmp_path / "images" / "beagle_5.jpg").write_bytes(b"\xff\xd8\xff garbage")
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "unetq.cli", "data", "check", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 20 pairs unusable") and "beagle_5.jpg" in last
    assert "Traceback" not in proc.stderr
    assert _no_arrays_written()


# --- real data (../shared/data) --------------------------------------------------------------


def test_real_pets_sample(pets_sample):
    index = scan_dataset(pets_sample, "pets", DataConfig(split="official"))
    assert len(index.pairs) == 600
    assert len(index.skipped) == 3 and all(r.startswith("not an image") for _, r in index.skipped)
    assert {k: len(v) for k, v in index.lists.items()} == {"trainval": 300, "test": 298}
    assert {k: len(v) for k, v in index.splits.items()} == {"train": 270, "val": 30, "test": 298}
    for name in ("Abyssinian_5", "Abyssinian_34"):  # a PNG (RGBA) and a GIF named .jpg
        assert read_image(index.pair(name).image).shape[2] == 3
        assert set(np.unique(read_mask(index, index.pair(name)))) <= {0, 1, 2}


@pytest.mark.parametrize(("name", "pairs"), [("dsb2018-nuclei", 664), ("isbi2012-membrane", 30)])
def test_real_folder_datasets(shared_data, name, pairs):
    index = scan_dataset(shared_data / name, "folder", DataConfig())
    assert len(index.pairs) == pairs and not index.unmatched and not index.skipped
    assert index.mask_values == {0: 0, 255: 1} and index.num_classes == 2


def test_hidden_files_are_ignored_and_duplicates_skipped(tmp_path):
    make_folder(tmp_path, _class_masks(3))
    (tmp_path / "masks" / "._img00.png").write_bytes(b"AppleDouble metadata")
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(tmp_path / "images" / "img01.jpg")
    index = scan_dataset(tmp_path, "folder", DataConfig())
    # The first file in sorted order wins: img01.jpg; img01.png is skipped with its reason.
    assert len(index.pairs) == 3 and index.pair("img01").image.suffix == ".jpg"
    duplicate = str(tmp_path / "images" / "img01.png")
    assert index.skipped == [(duplicate, "another image is also named 'img01'")]
