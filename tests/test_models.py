"""Architecture registry: the study's parameter count, MACs, classic depth, TFLite export."""

from __future__ import annotations

import numpy as np
import pytest

from unetq.errors import ConfigError
from unetq.models import (
    BUILDERS,
    build_model,
    count_macs,
    count_params,
    with_static_batch,
)


def _layers_of(model, name):
    return [layer for layer in model.layers if type(layer).__name__ == name]


def test_xception_f32_matches_the_study():
    model = build_model("xception", 32, True, 3, 160)
    assert count_params(model) == 2_058_979
    assert count_macs(model) == pytest.approx(1.0e9, rel=0.01)
    assert tuple(model.input.shape) == (None, 160, 160, 3)
    assert tuple(model.output.shape) == (None, 160, 160, 3)
    assert len(_layers_of(model, "SeparableConv2D")) == 6
    assert len(_layers_of(model, "Conv2DTranspose")) == 8
    assert len(_layers_of(model, "BatchNormalization")) == 1 + 6 + 8


def test_xception_without_batchnorm_drops_only_the_bn_layers():
    with_bn = build_model("xception", 8, True, 3, 32)
    without = build_model("xception", 8, False, 3, 32)
    assert not _layers_of(without, "BatchNormalization")
    bn_params = sum(layer.count_params() for layer in _layers_of(with_bn, "BatchNormalization"))
    assert count_params(without) == count_params(with_bn) - bn_params
    assert count_macs(without) == count_macs(with_bn)


def test_no_strided_pointwise_conv_and_its_replacement_is_exact():
    # TF 2.21's oneDNN backward pass of a 1x1 stride-2 Conv2D corrupts the heap, so the
    # residual is MaxPooling2D(1, strides=2) + 1x1 conv: the same function and weights.
    import keras

    model = build_model("xception", 4, True, 3, 32)
    strided = [
        layer.name
        for layer in _layers_of(model, "Conv2D")
        if tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) != (1, 1)
    ]
    assert strided == []
    assert len(_layers_of(model, "MaxPooling2D")) == 6
    for size in (9, 16):
        x = np.random.default_rng(size).random((2, size, size, 5), dtype=np.float32)
        reference = keras.layers.Conv2D(7, 1, strides=2, padding="same")
        expected = reference(x)
        pointwise = keras.layers.Conv2D(7, 1, padding="same")
        pointwise.build(x.shape)
        pointwise.set_weights(reference.get_weights())
        subsample = keras.layers.MaxPooling2D(1, strides=2, padding="same")
        np.testing.assert_allclose(pointwise(subsample(x)), expected, rtol=1e-6, atol=1e-6)


def test_bn_momentum_reaches_every_bn_layer():
    model = build_model("classic", 4, True, 2, 32, bn_momentum=0.9, depth=2)
    assert {layer.momentum for layer in _layers_of(model, "BatchNormalization")} == {0.9}


def test_output_is_a_softmax_over_classes():
    model = build_model("xception", 4, True, 5, 32)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 32, 32, 5)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)


def test_macs_of_single_layers_by_hand():
    import keras

    def macs(layer, shape):
        inp = keras.Input(shape)
        return count_macs(keras.Model(inp, layer(inp)))

    # 10x10 output, 4 filters, 3x3 kernel over 3 input channels
    assert macs(keras.layers.Conv2D(4, 3, padding="same"), (10, 10, 3)) == 10 * 10 * 4 * 3 * 3 * 3
    # stride 2: 5x5 outputs
    assert macs(keras.layers.Conv2D(4, 3, strides=2, padding="same"), (10, 10, 3)) == 5 * 5 * 108
    # separable: depthwise 3x3 per input channel + pointwise 4 -> 8
    sep = keras.layers.SeparableConv2D(8, 3, padding="same")
    assert macs(sep, (10, 10, 4)) == 10 * 10 * 4 * 9 + 10 * 10 * 4 * 8
    # transposed: each of the 5x5 input pixels scatters a 3x3x6 patch from 4 channels
    assert macs(keras.layers.Conv2DTranspose(6, 3, strides=2), (5, 5, 4)) == 5 * 5 * 4 * 9 * 6
    assert macs(keras.layers.Dense(7), (3,)) == 3 * 7
    assert macs(keras.layers.MaxPooling2D(2), (4, 4, 3)) == 0


def test_classic_depth_option():
    for depth in (2, 3, 4):
        model = build_model("classic", 4, True, 2, 32, depth=depth)
        assert len(_layers_of(model, "MaxPooling2D")) == depth
        assert len(_layers_of(model, "Conv2DTranspose")) == depth
        widest = max(layer.filters for layer in _layers_of(model, "Conv2D"))
        assert widest == 4 * 2**depth
        assert tuple(model.output.shape) == (None, 32, 32, 2)
    assert count_params(build_model("classic", 64, False, 2, 64)) == 31_031_810  # the paper's U-Net


def test_classic_resize_upsampling():
    model = build_model("classic", 4, False, 3, 32, depth=2, upsample="resize")
    assert not _layers_of(model, "Conv2DTranspose")
    assert len(_layers_of(model, "UpSampling2D")) == 2
    assert tuple(model.output.shape) == (None, 32, 32, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "resnet"}, "unknown architecture 'resnet' (choose from classic, xception)"),
        ({"input_size": 40}, "xception needs an image size divisible by 16, got 40"),
        ({"arch": "classic", "input_size": 40, "depth": 4}, "divisible by 16"),
        ({"arch": "xception", "depth": 3}, "does not take option"),
        ({"num_classes": 1}, "at least 2 classes"),
    ],
)
def test_bad_arguments_are_one_line_config_errors(kwargs, message):
    args = {"arch": "xception", "filters": 4, "batchnorm": True, "num_classes": 3}
    args["input_size"] = 32
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        build_model(**args)
    assert "\n" not in str(info.value)


def test_static_batch_copy_keeps_the_weights():
    model = build_model("xception", 4, True, 3, 32)
    static = with_static_batch(model)
    assert tuple(static.input.shape) == (1, 32, 32, 3)
    x = np.random.default_rng(1).random((1, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(static.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "arch",
    # the xception export is converted in every slow study; classic stays in the fast tier
    [pytest.param(a, marks=pytest.mark.slow) if a == "xception" else a for a in sorted(BUILDERS)],
)
def test_tflite_export_with_builtin_ops_only(arch):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    size = 32
    model = build_model(arch, 8, True, 3, size)
    converter = tf.lite.TFLiteConverter.from_keras_model(with_static_batch(model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops allowed
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert list(inp["shape"]) == [1, size, size, 3]
    x = np.random.default_rng(2).random((1, size, size, 3), dtype=np.float32)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    lite = interpreter.get_tensor(out["index"])
    keras_out = model.predict(x, verbose=0)
    assert (lite.argmax(-1) == keras_out.argmax(-1)).mean() >= 0.999
    np.testing.assert_allclose(lite, keras_out, atol=1e-4)


def test_cli_models_prints_params_and_gmacs(capsys):
    from unetq import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["models", "--arch", "xception", "--filters", "32"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "2,058,979 parameters" in out
    assert "1.00 GMAC per image" in out


def test_cli_models_unknown_arch_is_one_line(capsys):
    from unetq import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["models", "--arch", "unet3d"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown architecture 'unet3d' (choose from classic, xception)"
