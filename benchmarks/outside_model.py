"""A model built outside unetq, through `unetq benchmark`: a U-Net on a keras.applications
MobileNetV2 encoder (no pretrained weights), Conv2DTranspose upsampling, a logits head, inputs in
[-1, 1] as MobileNet expects.

    python benchmarks/outside_model.py --data-dir ../shared/data/oxford-iiit-pet-sample \\
        [--size 128] [--epochs 6] [--out runs/mobilenet]

Trains it for a few epochs on the dataset's training split (unetq's split and array cache),
saves it as OUT/mobilenet_unet.keras and runs `unetq benchmark --model ... --input-range -1,1`
on it: every variant, or one line per variant that cannot be made.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


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


def train(model, data_dir: Path, fmt: str, size: int, epochs: int):
    import keras

    from unetq.config import DataConfig
    from unetq.data import load_split, open_dataset

    index = open_dataset(DataConfig(data_dir=data_dir, format=fmt, image_size=size))
    arrays = load_split(index, "train", size)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(arrays.images / 127.5 - 1, arrays.masks, epochs=epochs, batch_size=8, verbose=2)
    return index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--format", default="pets", choices=["pets", "folder"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("runs/mobilenet"))
    args = p.parse_args()
    import keras

    keras.utils.set_random_seed(0)
    model = mobilenet_unet(args.size)
    index = train(model, args.data_dir, args.format, args.size, args.epochs)
    if model.output.shape[-1] != index.num_classes:
        sys.exit(f"the dataset has {index.num_classes} classes; this script builds 3")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "mobilenet_unet.keras"
    model.save(path)
    unetq = Path(sys.executable).parent / "unetq"
    command = [
        str(unetq), "benchmark", "--model", str(path), "--data-dir", str(args.data_dir),
        "--format", args.format, "--input-range", "-1,1", "--out", str(args.out / "bench"),
    ]  # fmt: skip
    print(" ".join(command), flush=True)
    sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
