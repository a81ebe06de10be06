"""Architecture registry: U-Net builders, parameter and multiply-add counts.

Every builder takes float32 images [batch, S, S, 3] in [0, 1] and returns per-pixel softmax
probabilities [batch, S, S, C]. With `batch_size=1` the graph is fully static, which is what the
TFLite converter needs to emit builtin ops only (no Flex).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from unetq.errors import ConfigError


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]: the input convention of every unetq model."""
    return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)


def _keras():
    import keras

    return keras


def _bn(x, batchnorm: bool, momentum: float):
    if not batchnorm:
        return x
    return _keras().layers.BatchNormalization(momentum=momentum)(x)


def _check_size(arch: str, input_size: int, factor: int) -> None:
    if input_size % factor:
        nearest = max(factor, input_size // factor * factor)
        raise ConfigError(
            f"{arch} needs an image size divisible by {factor}, got {input_size} (e.g. {nearest})"
        )


def build_xception(
    filters: int,
    batchnorm: bool,
    num_classes: int,
    input_size: int,
    bn_momentum: float = 0.99,
    batch_size: int | None = None,
) -> Any:
    """The U-Net of the Keras example "Image segmentation with a U-Net-like architecture".

    Entry Conv2D(f, 3, stride 2); down blocks of widths 2f, 4f, 8f (2 SeparableConv2D +
    MaxPool(3, s2), 1x1 strided residual); up blocks of widths 8f, 4f, 2f, f (2 Conv2DTranspose
    + UpSampling2D(2), upsampled 1x1 residual); 3x3 softmax head. f=32, BN, 160 px, 3 classes:
    2,058,979 parameters.
    """
    keras = _keras()
    layers = keras.layers
    _check_size("xception", input_size, 16)
    inputs = keras.Input(shape=(input_size, input_size, 3), batch_size=batch_size, name="image")

    x = layers.Conv2D(filters, 3, strides=2, padding="same")(inputs)
    x = _bn(x, batchnorm, bn_momentum)
    x = layers.Activation("relu")(x)
    previous = x

    for width in (2 * filters, 4 * filters, 8 * filters):
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(width, 3, padding="same")(x)
        x = _bn(x, batchnorm, bn_momentum)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(width, 3, padding="same")(x)
        x = _bn(x, batchnorm, bn_momentum)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.MaxPooling2D(1, strides=2, padding="same")(previous)
        residual = layers.Conv2D(width, 1, padding="same")(residual)
        x = layers.add([x, residual])
        previous = x

    for width in (8 * filters, 4 * filters, 2 * filters, filters):
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(width, 3, padding="same")(x)
        x = _bn(x, batchnorm, bn_momentum)
        x = layers.Activation("relu")(x)
        x = layers.Conv2DTranspose(width, 3, padding="same")(x)
        x = _bn(x, batchnorm, bn_momentum)
        x = layers.UpSampling2D(2)(x)
        residual = layers.UpSampling2D(2)(previous)
        residual = layers.Conv2D(width, 1, padding="same")(residual)
        x = layers.add([x, residual])
        previous = x

    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same", name="probs")(x)
    norm = "bn" if batchnorm else "nobn"
    return keras.Model(inputs, outputs, name=f"xception_f{filters}_{norm}")


def build_classic(
    filters: int,
    batchnorm: bool,
    num_classes: int,
    input_size: int,
    bn_momentum: float = 0.99,
    batch_size: int | None = None,
    depth: int = 4,
    upsample: str = "transpose",
) -> Any:
    """The original U-Net (Ronneberger et al. 2015) with "same" padding.

    Per level two 3x3 Conv2D (+BN) + ReLU; `depth` 2x2 max-poolings down to a bottleneck of width
    f * 2**depth; up by Conv2DTranspose(2, stride 2) (`upsample="transpose"`) or by nearest resize
    + 3x3 conv (`upsample="resize"`), then concatenation with the skip of the same level.
    """
    keras = _keras()
    layers = keras.layers
    if depth < 1:
        raise ConfigError(f"classic U-Net depth must be at least 1, got {depth}")
    if upsample not in ("transpose", "resize"):
        raise ConfigError(f"unknown upsample '{upsample}' (choose from resize, transpose)")
    _check_size("classic", input_size, 2**depth)

    def double_conv(x, width):
        for _ in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=not batchnorm)(x)
            x = _bn(x, batchnorm, bn_momentum)
            x = layers.Activation("relu")(x)
        return x

    inputs = keras.Input(shape=(input_size, input_size, 3), batch_size=batch_size, name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = double_conv(x, filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = double_conv(x, filters * 2**depth)
    for level in reversed(range(depth)):
        width = filters * 2**level
        if upsample == "transpose":
            x = layers.Conv2DTranspose(width, 2, strides=2, padding="same")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="nearest")(x)
            x = layers.Conv2D(width, 3, padding="same")(x)
        x = layers.Concatenate()([skips[level], x])
        x = double_conv(x, width)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="probs")(x)
    norm = "bn" if batchnorm else "nobn"
    return keras.Model(inputs, outputs, name=f"classic_f{filters}_{norm}_d{depth}")


BUILDERS: dict[str, Callable[..., Any]] = {
    "xception": build_xception,
    "classic": build_classic,
}


def build_model(
    arch: str,
    filters: int,
    batchnorm: bool,
    num_classes: int,
    input_size: int,
    bn_momentum: float = 0.99,
    batch_size: int | None = None,
    **options: Any,
) -> Any:
    """Build an uncompiled keras.Model from the registry; `options` go to the builder
    (e.g. `depth`, `upsample` for classic)."""
    if arch not in BUILDERS:
        raise ConfigError(
            f"unknown architecture '{arch}' (choose from {', '.join(sorted(BUILDERS))})"
        )
    if filters < 1:
        raise ConfigError(f"filters must be a positive integer, got {filters}")
    if num_classes < 2:
        raise ConfigError(f"a segmentation model needs at least 2 classes, got {num_classes}")
    try:
        return BUILDERS[arch](
            filters,
            batchnorm,
            num_classes,
            input_size,
            bn_momentum=bn_momentum,
            batch_size=batch_size,
            **options,
        )
    except TypeError as exc:
        if options and "unexpected keyword" in str(exc):
            raise ConfigError(f"architecture '{arch}' does not take option(s) {options}") from None
        raise


def with_static_batch(model: Any, batch_size: int = 1) -> Any:
    """A copy of a functional model whose input has a fixed batch dimension, same weights.

    The TFLite converter needs this to emit builtin ops only. (Converting a Keras 3 model through
    `from_concrete_functions` of a wrapping tf.function loses its variables: NaN outputs.)
    """
    keras = _keras()
    config = model.get_config()
    inputs = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
    if not inputs:
        raise ConfigError(f"model '{model.name}' is not a functional model with an input layer")
    for layer in inputs:
        shape = layer["config"]["batch_shape"]
        layer["config"]["batch_shape"] = (batch_size, *tuple(shape)[1:])
    static = keras.Model.from_config(config)
    static.set_weights(model.get_weights())
    return static


def count_params(model: Any) -> int:
    """Number of weights (trainable and not, e.g. batch-norm moving statistics)."""
    return int(model.count_params())


def _spatial(shape) -> int:
    out = 1
    for dim in shape[1:-1]:
        out *= int(dim)
    return out


def _layer_macs(layer: Any) -> int:
    """Multiply-adds of one layer for one image, from its input/output shapes (biases excluded)."""
    keras = _keras()
    if isinstance(layer, keras.Model):
        return sum(_layer_macs(inner) for inner in layer.layers)
    if isinstance(layer.input, list | tuple):  # adds and concatenations: no multiply-adds
        return 0
    return layer_macs(layer, tuple(layer.input.shape), tuple(layer.output.shape))


def layer_macs(layer: Any, in_shape: tuple, out_shape: tuple) -> int:
    """Multiply-adds for one image of a Conv2D, SeparableConv2D (depthwise + pointwise),
    DepthwiseConv2D, Conv2DTranspose or Dense layer called on `in_shape` -> `out_shape`; 0 for
    every other layer."""
    layers = _keras().layers
    if not isinstance(
        layer,
        layers.Conv2D
        | layers.SeparableConv2D
        | layers.DepthwiseConv2D
        | layers.Conv2DTranspose
        | layers.Dense,
    ):
        return 0
    cin = int(in_shape[-1])
    cout = int(out_shape[-1])
    if isinstance(layer, layers.Dense):
        return _spatial(in_shape[:-1] + (1,)) * cin * cout
    kh, kw = layer.kernel_size
    if isinstance(layer, layers.SeparableConv2D):
        multiplier = layer.depth_multiplier
        depthwise = _spatial(out_shape) * kh * kw * cin * multiplier
        pointwise = _spatial(out_shape) * cin * multiplier * cout
        return depthwise + pointwise
    if isinstance(layer, layers.DepthwiseConv2D):
        return _spatial(out_shape) * kh * kw * cin * layer.depth_multiplier
    if isinstance(layer, layers.Conv2DTranspose):
        # every input pixel scatters a kh x kw x cout patch
        return _spatial(in_shape) * kh * kw * cin * cout
    groups = getattr(layer, "groups", 1) or 1
    return _spatial(out_shape) * kh * kw * (cin // groups) * cout


def count_macs(model: Any) -> int:
    """Multiply-adds per image of Conv2D, SeparableConv2D (depthwise + pointwise), DepthwiseConv2D,
    Conv2DTranspose and Dense layers; other layers (BN, pooling, adds, activations) are ignored."""
    return sum(_layer_macs(layer) for layer in model.layers)
