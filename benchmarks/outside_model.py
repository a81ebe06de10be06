"""Models built outside unetq, through `unetq benchmark`, as a user brings them:

- `mobilenet`: a U-Net on a keras.applications MobileNetV2 encoder (no pretrained weights),
  Conv2DTranspose upsampling, a logits head, trained on resized images;
- `binary`: a small plain U-Net with one sigmoid channel (the form tutorials write for nuclei or
  cells), trained on random crops at native resolution and scored by tiles (`--tile-overlap`);
- `onnx`: the plain U-Net with a `--head` of one sigmoid channel (binary data, crops and tiles
  as `binary`) or a softmax over the dataset's classes (resized images), its trained weights
  written node by node with onnx.helper into an NCHW graph (input "input" [N, 3, H, W], opset
  17) and checked against Keras on ONNX Runtime: OUT/onnx-nchw.onnx;
- `tflite`: a .tflite file as a user already has one: the plain U-Net with a softmax over the
  dataset's classes on [0, 1] RGB pixels, converted by TFLiteConverter (fp32, batch 1, NHWC)
  and checked against Keras on LiteRT: OUT/model.tflite. unetq takes a .tflite as it is: NHWC
  float [1, H, W, 3] in [0, 1] in, two or more class scores out.

mobilenet, binary and onnx take pixels as `--pixels` says: tf ([-1, 1], MobileNet's own),
imagenet (RGB mean / std, keras.applications' "torch" mode), caffe (BGR minus the mean) or unit
([0, 1]); the same name goes to `unetq benchmark --input-norm`. tflite takes unit only.

    python benchmarks/outside_model.py --kind mobilenet --pixels imagenet \
        --data-dir ../shared/data/oxford-iiit-pet-sample [--size 128] [--epochs 10]
    python benchmarks/outside_model.py --kind binary --pixels unit --format folder \
        --data-dir ../shared/data/dsb2018-nuclei --epochs 12 --out runs/binary
    python benchmarks/outside_model.py --kind onnx --head sigmoid --pixels imagenet \
        --format folder --data-dir ../shared/data/dsb2018-nuclei --epochs 12 [--no-benchmark]
    python benchmarks/outside_model.py --kind tflite \
        --data-dir ../shared/data/oxford-iiit-pet-sample --epochs 10 --out runs/tflite

Trains on the dataset's training split (unetq's split and array cache), saves OUT/<kind>.keras
(or the .onnx / .tflite file above, after its check) and runs `unetq benchmark --model ...` on
it: every variant, or one line per variant that cannot be made; `--no-benchmark` stops after
the file is saved and checked.
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
TOLERANCE = 1e-4  # max abs difference between an exported file's scores and Keras'
CHECK_IMAGES = 8
ONNX_OPSET = 17
ONNX_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "softmax": "Softmax", "linear": None}


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


def plain_unet(size: int | None, classes: int, head: str, filters: int = 16, depth: int = 3):
    """A plain U-Net: two 3x3 'same' convolutions + ReLU per level, 2x2 max pooling down, 2x2
    stride-2 transposed convolutions up, skips joined by concatenation, a 1x1 convolution with
    `head` (sigmoid or softmax) over `classes` channels. No BatchNorm: every layer has an exact
    ONNX counterpart."""
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
    return keras.Model(image, keras.layers.Conv2D(classes, 1, activation=head, name="mask")(x))


def binary_unet(size: int | None, filters: int = 16, depth: int = 3):
    """The plain U-Net with one sigmoid channel out."""
    return plain_unet(size, 1, "sigmoid", filters, depth)


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


# ONNX: the plain U-Net transcribed layer by layer, NHWC Keras -> NCHW ONNX.


def onnx_unet(model):
    """The Keras plain U-Net as an NCHW ONNX model (opset 17), built node by node: input
    "input" [N, 3, H, W] with a symbolic batch "N", output "output" [N, C, H, W]."""
    import keras
    from onnx import TensorProto, helper

    names = {id(model.inputs[0]): "input"}
    nodes, weights = [], []
    for layer in model.layers[1:]:
        inputs = [names[id(t)] for t in keras.tree.flatten(layer.input)]
        output = "output" if layer is model.layers[-1] else layer.name
        layer_nodes, layer_weights = _onnx_layer(layer, inputs, output)
        nodes += layer_nodes
        weights += layer_weights
        names[id(layer.output)] = output
    graph = helper.make_graph(
        nodes, "plain_unet_nchw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, _nchw(model.input.shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, _nchw(model.output.shape))],
        initializer=weights,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def _nchw(shape) -> list:
    """A Keras NHWC shape as ONNX NCHW dims, symbolic where Keras has None."""
    _, height, width, channels = shape
    return ["N", channels, height or "H", width or "W"]


def _onnx_layer(layer, inputs: list[str], output: str):
    """(nodes, initializers) for one Keras layer; ValueError for a layer with no exact form."""
    from onnx import helper

    kind = type(layer).__name__
    if kind == "MaxPooling2D" and layer.padding == "valid":
        pool = {"kernel_shape": list(layer.pool_size), "strides": list(layer.strides)}
        return [helper.make_node("MaxPool", inputs, [output], **pool)], []
    if kind == "Concatenate" and layer.axis in (-1, 3):
        return [helper.make_node("Concat", inputs, [output], axis=1)], []
    if kind in ("Conv2D", "Conv2DTranspose"):
        return _onnx_conv(layer, inputs, output)
    raise ValueError(f"{layer.name}: no exact ONNX form for this {kind}")


def _onnx_conv(layer, inputs: list[str], output: str):
    """Conv (Keras HWIO -> OIHW) or ConvTranspose (Keras (kh, kw, out, in) -> (in, out, kh,
    kw)): the same transpose either way; then the layer's activation."""
    from onnx import helper, numpy_helper

    transposed = type(layer).__name__ == "Conv2DTranspose"
    kernel, bias = layer.get_weights()
    kh, kw = layer.kernel_size
    pads = [kh // 2, kw // 2] * 2 if layer.padding == "same" else [0] * 4
    same_ok = not transposed and kh % 2 and kw % 2 and layer.strides == (1, 1)
    activation = layer.activation.__name__
    if (layer.padding == "same" and not same_ok) or layer.dilation_rate != (1, 1):
        raise ValueError(f"{layer.name}: no exact ONNX form for this padding / dilation")
    if activation not in ONNX_ACTIVATIONS:
        raise ValueError(f"{layer.name}: no ONNX form for activation {activation}")
    weights = [
        numpy_helper.from_array(kernel.transpose(3, 2, 0, 1).copy(), f"{layer.name}.weight"),
        numpy_helper.from_array(bias, f"{layer.name}.bias"),
    ]
    op, act = ("ConvTranspose" if transposed else "Conv"), ONNX_ACTIVATIONS[activation]
    conv_out = f"{layer.name}.linear" if act else output
    conv = helper.make_node(
        op, [*inputs, f"{layer.name}.weight", f"{layer.name}.bias"], [conv_out],
        kernel_shape=[kh, kw], strides=list(layer.strides), pads=pads,
    )  # fmt: skip
    if not act:
        return [conv], weights
    axis = {"axis": 1} if act == "Softmax" else {}
    return [conv, helper.make_node(act, [conv_out], [output], **axis)], weights


def onnx_scores(path: Path, pixels: np.ndarray) -> np.ndarray:
    """The ONNX model's scores on NHWC pixels, on ONNX Runtime (CPU), back in NHWC."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": pixels.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)


# TFLite: the Keras model converted as it is, fp32, batch 1.


def tflite_model(model) -> bytes:
    """The model as a plain fp32 .tflite (no optimisation) at its input size, batch 1."""
    import keras
    import tensorflow as tf

    one = keras.models.clone_model(model, input_tensors=keras.Input(model.input.shape[1:], 1))
    one.set_weights(model.get_weights())
    return tf.lite.TFLiteConverter.from_keras_model(one).convert()


def tflite_scores(path: Path, pixels: np.ndarray) -> np.ndarray:
    """The .tflite file's scores on NHWC pixels, one image at a time, on LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (image,), (scores,) = interpreter.get_input_details(), interpreter.get_output_details()
    out = []
    for one in pixels:
        interpreter.set_tensor(image["index"], one[None])
        interpreter.invoke()
        out.append(interpreter.get_tensor(scores["index"])[0])
    return np.stack(out)


def agreement(label: str, scores: np.ndarray, model, pixels: np.ndarray) -> float:
    """Max abs difference between `scores` and Keras' on the same pixels, printed; raises
    when it is TOLERANCE or more."""
    difference = float(np.abs(scores - model.predict(pixels, verbose=0)).max())
    print(f"{label} vs Keras on {len(pixels)} images: max abs difference {difference:.3g}")
    if not difference < TOLERANCE:
        raise RuntimeError(f"{label} differs from Keras by {difference:.3g} >= {TOLERANCE}")
    return difference


# Training and the command line.


def head(args) -> str:
    """What the model's last layer gives: logits, sigmoid or softmax."""
    return {"mobilenet": "logits", "binary": "sigmoid", "tflite": "softmax"}.get(
        args.kind, args.head
    )


def build(args, classes: int):
    if args.kind == "mobilenet":
        return mobilenet_unet(args.size, classes)
    if head(args) == "sigmoid":
        return binary_unet(args.size)
    return plain_unet(args.size, classes, "softmax")


def train(model, index, args) -> None:
    """Fit on the training split: native crops (one sigmoid channel) or resized images."""
    import keras

    from unetq.data import load_split
    from unetq.data.cache import load_native

    pixels = PIXELS[args.pixels]
    if head(args) == "sigmoid":
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
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=head(args) == "logits")
        model.compile("adam", loss)
        model.fit(pixels(arrays.images), arrays.masks, epochs=args.epochs, batch_size=8, verbose=2)


def check_images(index, args) -> np.ndarray:
    """CHECK_IMAGES validation images at the model's input size, in its pixels: native crops
    (one sigmoid channel) or resized images."""
    from unetq.data import load_split
    from unetq.data.cache import load_native

    if head(args) == "sigmoid":
        native = load_native(index, "val")
        rng = np.random.default_rng(1)
        images, _ = random_crops(native.images, native.masks, args.size, 1, rng)
    else:
        images = load_split(index, "val", args.size).images
    return PIXELS[args.pixels](images[:CHECK_IMAGES])


def save(model, index, args, out: Path) -> Path:
    """The model as the user brings it: .keras, or .onnx / .tflite checked against Keras."""
    out.mkdir(parents=True, exist_ok=True)
    if args.kind == "onnx":
        import onnx

        path = out / "onnx-nchw.onnx"
        onnx.save(onnx_unet(model), path)
        onnx.checker.check_model(str(path), full_check=True)
        pixels = check_images(index, args)
        agreement("ONNX Runtime (NCHW)", onnx_scores(path, pixels), model, pixels)
    elif args.kind == "tflite":
        path = out / "model.tflite"
        path.write_bytes(tflite_model(model))
        pixels = check_images(index, args)
        agreement("LiteRT", tflite_scores(path, pixels), model, pixels)
    else:
        path = out / f"{args.kind}.keras"
        model.save(path)
    print(f"saved {path}", flush=True)
    return path


def benchmark_command(path: Path, args, out: Path) -> list[str]:
    unetq = Path(sys.executable).parent / "unetq"
    command = [
        str(unetq), "benchmark", "--model", str(path), "--data-dir", str(args.data_dir),
        "--format", args.format, "--out", str(out / "bench"),
    ]  # fmt: skip
    if args.kind != "tflite":  # a .tflite takes [0, 1] pixels as it is
        command += ["--input-norm", args.pixels]
    if head(args) == "sigmoid":
        command += ["--tile-overlap", str(args.tile_overlap)]
    return command


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="mobilenet", choices=["mobilenet", "binary", "onnx", "tflite"])
    p.add_argument("--pixels", choices=sorted(PIXELS), help="default tf; tflite: unit only")
    p.add_argument("--head", default="sigmoid", choices=["sigmoid", "softmax"], help="onnx only")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--format", default="pets", choices=["pets", "folder"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tile-overlap", type=int, default=32, help="sigmoid heads: tiles' overlap")
    p.add_argument("--out", type=Path, default=None, help="default runs/<kind>[-<head>]-<pixels>")
    p.add_argument("--no-benchmark", action="store_true", help="stop after saving the model")
    args = p.parse_args()
    if args.kind == "tflite" and args.pixels not in (None, "unit"):
        p.error("--kind tflite takes [0, 1] pixels: --pixels unit")
    args.pixels = args.pixels or ("unit" if args.kind == "tflite" else "tf")
    return args


def main() -> None:
    args = parse_args()
    import keras

    from unetq.config import DataConfig
    from unetq.data import open_dataset

    kind = f"onnx-{args.head}" if args.kind == "onnx" else args.kind
    out = args.out or Path("runs") / f"{kind}-{args.pixels}"
    index = open_dataset(
        DataConfig(data_dir=args.data_dir, format=args.format, image_size=args.size)
    )
    keras.utils.set_random_seed(0)
    model = build(args, index.num_classes)
    train(model, index, args)
    path = save(model, index, args, out)
    if args.no_benchmark:
        return
    command = benchmark_command(path, args, out)
    print(" ".join(command), flush=True)
    sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
