"""Export: a Keras model -> a SavedModel with a static [1, H, W, 3] input, for the converters.

Exact rewrites live here: the exported graph computes the same values as the Keras model (each
rewrite is tested against it) with ops the CPU runtimes run faster. The trained model itself is
never changed.
"""

from __future__ import annotations

import functools
from pathlib import Path

from unetq.errors import ModelError, first_line

# The exact rewrites the export applies; see `lower_for_export`. Measured with
# benchmarks/export_rewrites.py (docs/INSIDE.md): "flip-transposed-conv", "resize-upsampling"
# and "pad-head-channels" are exact but were not faster on LiteRT or OpenVINO, so they are not
# applied.
EXPORT_REWRITES = ("delegable-upsampling", "pointwise-before-upsampling")
ALL_REWRITES = (*EXPORT_REWRITES, "flip-transposed-conv", "resize-upsampling", "pad-head-channels")
HEAD_CHANNELS = 16  # the output channels a padded head computes (a CPU kernel's block width)


def export_saved_model(
    model, hw: tuple[int, int], folder: Path, rewrites: tuple[str, ...] = EXPORT_REWRITES
) -> Path:
    """Write `model` as a SavedModel with a static [1, H, W, 3] input, after `rewrites`."""
    import keras
    import tensorflow as tf

    model = lower_for_export(model, rewrites)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        functools.partial(model.__call__, training=False),
        input_signature=[tf.TensorSpec([1, *hw, 3], tf.float32, name="image")],
    )
    try:
        archive.write_out(str(folder), verbose=False)
    except Exception as exc:
        raise ModelError(f"cannot export the model for conversion: {first_line(exc)}") from None
    return folder


def _nearest_upsampling_layer():
    """A Keras layer computing UpSampling2D(nearest) by concatenation and reshape.

    TensorFlow lowers Keras' UpSampling2D to RESHAPE + TILE, and XNNPACK has no TILE: LiteRT then
    splits the graph into a dozen delegate partitions with TILE between them on its own kernels.
    Concatenating k copies along the last axis and reshaping repeats every pixel k times along a
    row; doing the same one axis up repeats every row. Both ops run inside XNNPACK, for float
    and int8, and the result is the same values, not an approximation.
    """
    import keras

    class NearestUpsampling(keras.layers.Layer):
        def __init__(self, size: tuple[int, int], **kwargs):
            super().__init__(**kwargs)
            self.size = size

        def call(self, x):
            ops = keras.ops
            _, h, w, c = x.shape
            fh, fw = self.size
            x = ops.reshape(ops.concatenate([x] * fw, axis=-1), (-1, h, w * fw, c))
            return ops.reshape(ops.concatenate([x] * fh, axis=2), (-1, h * fh, w * fw, c))

        def compute_output_shape(self, shape):
            b, h, w, c = shape
            return (b, h and h * self.size[0], w and w * self.size[1], c)

    return NearestUpsampling


def _resize_upsampling_layer():
    """A Keras layer computing UpSampling2D(nearest) as a nearest-neighbour resize (TFLite
    RESIZE_NEAREST_NEIGHBOR, OpenVINO Interpolate): at an integer scale every output pixel reads
    input pixel (i // scale, j // scale), exactly what the repetition computes."""
    import keras

    class ResizeUpsampling(keras.layers.Layer):
        def __init__(self, size: tuple[int, int], **kwargs):
            super().__init__(**kwargs)
            self.size = size

        def call(self, x):
            _, h, w, _ = x.shape
            size = (h * self.size[0], w * self.size[1])
            return keras.ops.image.resize(x, size, interpolation="nearest")

        def compute_output_shape(self, shape):
            b, h, w, c = shape
            return (b, h and h * self.size[0], w and w * self.size[1], c)

    return ResizeUpsampling


def _is_padded_head(layer) -> bool:
    """A softmax Conv2D with fewer output channels than a CPU kernel's block (the classifier
    head): computing HEAD_CHANNELS channels, the extra ones from zero weights, and keeping the
    first before the softmax gives the same probabilities."""
    import keras

    return (
        type(layer) is keras.layers.Conv2D
        and getattr(layer.activation, "__name__", "") == "softmax"
        and layer.filters < HEAD_CHANNELS
        and layer.groups == 1
        and layer.data_format == "channels_last"
    )


def _padded_head(layer):
    import keras
    import numpy as np

    config = {**layer.get_config(), "filters": HEAD_CHANNELS, "activation": None}
    config["name"] = f"{layer.name}_padded"
    conv = keras.layers.Conv2D.from_config(config)
    conv.build(layer.input.shape)
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[..., : layer.filters] = np.asarray(layer.kernel)
    conv.kernel.assign(kernel)
    if layer.use_bias:
        bias = np.zeros(HEAD_CHANNELS, np.float32)
        bias[: layer.filters] = np.asarray(layer.bias)
        conv.bias.assign(bias)
    return lambda x, **kwargs: keras.ops.softmax(conv(x)[..., : layer.filters], axis=-1)


def _is_nearest_upsampling(layer) -> bool:
    import keras

    return (
        isinstance(layer, keras.layers.UpSampling2D)
        and layer.interpolation == "nearest"
        and layer.data_format == "channels_last"
        and all(isinstance(f, int) and f >= 1 for f in layer.size)
    )


def _is_pointwise(layer) -> bool:
    """A 1x1 stride-1 Conv2D: it commutes with nearest upsampling (each output pixel depends on
    the same input pixel only)."""
    import keras

    return (
        type(layer) is keras.layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
    )


def _is_flippable(layer) -> bool:
    """A stride-1 'same' Conv2DTranspose with an odd kernel: a Conv2D with the kernel flipped."""
    import keras

    return (
        type(layer) is keras.layers.Conv2DTranspose
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.padding == "same"
        and layer.data_format == "channels_last"
        and layer.output_padding is None
        and all(k % 2 == 1 for k in layer.kernel_size)
    )


def _as_convolution(layer):
    """The Conv2D computing a flippable Conv2DTranspose: kernel flipped in space, in/out swapped."""
    import keras
    import numpy as np

    config = layer.get_config()
    conv = keras.layers.Conv2D(
        config["filters"],
        config["kernel_size"],
        padding="same",
        activation=config["activation"],
        use_bias=config["use_bias"],
        name=f"{layer.name}_as_conv",
    )
    conv.build(layer.input.shape)
    kernel = np.asarray(layer.kernel)  # (kh, kw, out, in)
    conv.kernel.assign(kernel[::-1, ::-1].transpose(0, 1, 3, 2))
    if config["use_bias"]:
        conv.bias.assign(np.asarray(layer.bias))
    return conv


def lower_for_export(model, rewrites: tuple[str, ...] = EXPORT_REWRITES):
    """`model` rebuilt with exact rewrites, for export only (the trained model is unchanged):

    - delegable-upsampling: nearest UpSampling2D as concatenation + reshape (no TILE).
    - pointwise-before-upsampling: a 1x1 Conv2D that reads only a nearest upsampling runs
      before it, on 4x fewer pixels (the decoder's residual branch).
    - flip-transposed-conv: a stride-1 Conv2DTranspose as a Conv2D with the flipped kernel.
    - resize-upsampling: nearest UpSampling2D as a nearest resize (without delegable-upsampling).
    - pad-head-channels: a softmax head of few classes computed on HEAD_CHANNELS channels.

    The rebuilt graph shares the model's layers (and so its weights). A model whose graph cannot
    be rebuilt (subclassed, shared layers) is returned as it is.
    """
    unknown = set(rewrites) - set(ALL_REWRITES)
    if unknown:
        raise ValueError(f"unknown export rewrite(s): {sorted(unknown)}")
    try:
        nodes = [n for depth in model._nodes_by_depth.values() for n in depth]
        return _rebuild(model, nodes, set(rewrites))
    except Exception:  # not a plain functional graph: export it as it is
        return model


def _rebuild(model, nodes, rewrites: set[str]):
    import keras

    calls: dict[int, int] = {}  # id(layer) -> number of nodes that call it in this model
    readers: dict[int, list] = {}  # id(tensor) -> nodes reading it
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            readers.setdefault(id(tensor), []).append(node)
    nearest = _nearest_upsampling_layer()
    upsampled_by: dict[int, object] = {}  # id(1x1 conv) -> the upsampling moved after it
    if "pointwise-before-upsampling" in rewrites:
        for node in nodes:
            layer = node.operation
            if not _is_nearest_upsampling(layer) or calls[id(layer)] != 1:
                continue
            after = readers.get(id(node.output_tensors[0]), [])
            conv = after[0].operation if len(after) == 1 else None
            if _is_pointwise(conv) and calls[id(conv)] == 1:
                upsampled_by[id(conv)] = layer
    moved = {id(layer) for layer in upsampled_by.values()}
    layers = [node.operation for node in nodes]
    applies = (
        moved
        or ("delegable-upsampling" in rewrites and any(map(_is_nearest_upsampling, layers)))
        or ("flip-transposed-conv" in rewrites and any(map(_is_flippable, layers)))
        or ("resize-upsampling" in rewrites and any(map(_is_nearest_upsampling, layers)))
        or ("pad-head-channels" in rewrites and any(map(_is_padded_head, layers)))
    )
    if not applies:
        return model

    def upsampling(layer):
        if "delegable-upsampling" in rewrites:
            return nearest(tuple(layer.size), name=f"{layer.name}_concat")
        if "resize-upsampling" in rewrites:
            return _resize_upsampling_layer()(tuple(layer.size), name=f"{layer.name}_resize")
        return layer

    def operation(layer):
        if id(layer) in moved:
            return lambda x, **kwargs: x  # applied after the 1x1 convolution instead
        if id(layer) in upsampled_by:
            up = upsampling(upsampled_by[id(layer)])
            return lambda x, **kwargs: up(layer(x))
        if _is_nearest_upsampling(layer):
            return upsampling(layer)
        if "flip-transposed-conv" in rewrites and _is_flippable(layer):
            return _as_convolution(layer)
        if "pad-head-channels" in rewrites and _is_padded_head(layer):
            return _padded_head(layer)
        return layer

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in model.inputs]
    outputs = model._run_through_graph(inputs, operation_fn=operation)
    return keras.Model(inputs, outputs, name=model.name)
