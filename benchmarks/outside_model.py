"""Models built outside unetq, through `unetq benchmark`, as a user brings them:

- `mobilenet`: a U-Net on a keras.applications MobileNetV2 encoder (no pretrained weights),
  Conv2DTranspose upsampling, a logits head, trained on resized images;
- `binary`: a small plain U-Net with one sigmoid channel (the form tutorials write for nuclei or
  cells), trained on random crops at native resolution and scored by tiles (`--tile-overlap`).

Either takes its pixels as `--pixels` says: tf ([-1, 1], MobileNet's own), imagenet (RGB mean /
std, keras.applications' "torch" mode) or caffe (BGR minus the mean); the same name goes to
`unetq benchmark --input-norm`.

    python benchmarks/outside_model.py --kind mobilenet --pixels imagenet \
        --data-dir ../shared/data/oxford-iiit-pet-sample [--size 128] [--epochs 10]
    python benchmarks/outside_model.py --kind binary --pixels unit --format folder \
        --data-dir ../shared/data/dsb2018-nuclei --epochs 12 --out runs/binary

Trains on the dataset's training split (unetq's split and array cache), saves OUT/<kind>.keras
and runs `unetq benchmark --model ...` on it: every variant, or one line per variant that cannot
be made.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

IMAGENET_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
IMAGENET_STD = np.array([58.395, 57.12, 57.375], np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
PIXELS = {
    "unit": lambda images: images.astype(np.float32) / 255.0,
    "tf": lambda images: images.astype(np.float32) / 127.5 - 1.0,
    "imagenet": lambda images: (images.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD,
    "caffe": lambda images: images[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR,
}


def imagenet_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 RGB -> what a model trained with ImageNet mean / std takes."""
    return PIXELS["imagenet"](images)


def mobilenet_unet(size: int, classes: int = 3, alpha: float = 0.35):
    """The U-Net: MobileNetV2 features at 1/2, 1/4 and 1/8 joined by stride-2 transposed
    convolutions, a 1x1 logits head."""
    import keras

    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, weights=None, alpha=alpha
    )
    for layer in base.layers:  # Keras' 0.999 leaves inference statistics behind in few steps
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    skips = [base.get_layer(n).output for n in ("block_1_expand_relu", "block_3_expand_relu")]
    x = base.get_layer("block_6_expand_relu").output  # 1/8
    for skip, width in zip(reversed(skips), (32, 16), strict=True):
        x = keras.layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Concatenate()([x, skip])
    x = keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(base.input, keras.layers.Conv2D(classes, 1, name="logits")(x))


def binary_unet(size: int | None, filters: int = 16, depth: int = 3):
    """A plain U-Net: two 3x3 convolutions per level, max pooling down, transposed convolutions
    up, skips joined by concatenation, one sigmoid channel out."""
    import keras

    image = keras.Input((size, size, 3))
    x, skips = image, []
    for level in range(depth):
        x = _double_conv(x, filters * 2**level)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
    x = _double_conv(x, filters * 2**depth)
    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(filters * 2**level, 2, strides=2)(x)
        x = _double_conv(keras.layers.Concatenate()([x, skips[level]]), filters * 2**level)
    return keras.Model(image, keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x))


def _double_conv(x, width: int):
    import keras

    for _ in range(2):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    return x


def random_crops(images, masks, size: int, per_image: int, rng: np.random.Generator):
    """`per_image` random size x size crops of every native-size image and its mask."""
    crops, crop_masks = [], []
    for image, mask in zip(images, masks, strict=True):
        h, w = mask.shape
        for _ in range(per_image):
            y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            crops.append(image[y : y + size, x : x + size])
            crop_masks.append(mask[y : y + size, x : x + size])
    return np.stack(crops), np.stack(crop_masks)


def train(model, args):
    """Fit on the training split: resized images (mobilenet) or native crops (binary)."""
    import keras

    from unetq.config import DataConfig
    from unetq.data import load_split, open_dataset
    from unetq.data.cache import load_native

    config = DataConfig(data_dir=args.data_dir, format=args.format, image_size=args.size)
    index = open_dataset(config)
    pixels = PIXELS[args.pixels]
    if args.kind == "binary":
        native = load_native(index, "train")
        rng = np.random.default_rng(0)
        model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
        for epoch in range(args.epochs):  # new crops every epoch
            images, masks = random_crops(native.images, native.masks, args.size, 2, rng)
            print(f"epoch {epoch + 1}/{args.epochs}", flush=True)
            model.fit(pixels(images), (masks == 1)[..., None].astype(np.float32),
                      epochs=1, batch_size=8, verbose=2)  # fmt: skip
    else:
        arrays = load_split(index, "train", args.size)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(pixels(arrays.images), arrays.masks, epochs=args.epochs, batch_size=8, verbose=2)
    return index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="mobilenet", choices=["mobilenet", "binary"])
    p.add_argument("--pixels", default="tf", choices=sorted(PIXELS))
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--format", default="pets", choices=["pets", "folder"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tile-overlap", type=int, default=32, help="binary: tiles' overlap")
    p.add_argument("--out", type=Path, default=None, help="default runs/<kind>-<pixels>")
    args = p.parse_args()
    import keras

    out = args.out or Path("runs") / f"{args.kind}-{args.pixels}"
    keras.utils.set_random_seed(0)
    model = mobilenet_unet(args.size) if args.kind == "mobilenet" else binary_unet(args.size)
    index = train(model, args)
    if args.kind == "mobilenet" and model.output.shape[-1] != index.num_classes:
        sys.exit(f"the dataset has {index.num_classes} classes; this script builds 3")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.kind}.keras"
    model.save(path)
    unetq = Path(sys.executable).parent / "unetq"
    command = [
        str(unetq), "benchmark", "--model", str(path), "--data-dir", str(args.data_dir),
        "--format", args.format, "--input-norm", args.pixels, "--out", str(out / "bench"),
    ]  # fmt: skip
    if args.kind == "binary":
        command += ["--tile-overlap", str(args.tile_overlap)]
    print(" ".join(command), flush=True)
    sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
