"""onnxgraph: a user's ONNX model brought into unetq's conventions, checked against the original
model run by hand on the pixels it expects. Small models built with onnx.helper; no TensorFlow."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from unetq.conventions import INPUT_NORMS
from unetq.errors import ModelError
from unetq.onnxgraph import adopted, load_onnx, read_signature, save_onnx
from unetq.records import ModelInfo

SIZE = 16
NORMS = ("imagenet", "caffe", "unit")


def info_for(
    norm="imagenet", layout="NCHW", channels=3, output="probabilities", threshold=None, hw=None
):
    return ModelInfo(
        source="user.onnx",
        source_sha256="",
        input_hw=hw or (SIZE, SIZE),
        size_fixed_by_unetq=False,
        num_classes=max(channels, 2),
        input_norm=INPUT_NORMS[norm],
        norm_from="test",
        output=output,
        output_channels=channels,
        threshold=threshold if threshold is not None else (0.5 if channels == 1 else None),
        format="onnx",
        layout=layout,
    )


def _weights(rng, shape, name):
    return numpy_helper.from_array((rng.normal(size=shape) * 0.3).astype(np.float32), name)


def _model(nodes, inputs, outputs, initializers, opset=17, ir=8):
    if ir < 4:  # IR 3 lists every initializer among the inputs
        inputs = inputs + [
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers
        ]
    graph = helper.make_graph(nodes, "user", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model)
    return model


def nchw_model(classes=3, head="Softmax", dims=None, out_dims=(), opset=17, ir=8, seed=0):
    """Conv 3->4 3x3 + Relu + Conv 4->classes 1x1 + head (Softmax on axis 1, Sigmoid, None).
    out_dims () means [N, classes, H, W] from the input's dims."""
    rng = np.random.default_rng(seed)
    dims = dims or [1, 3, SIZE, SIZE]
    if out_dims == ():
        out_dims = [dims[0], classes, dims[2], dims[3]]
    inits = [
        _weights(rng, (4, 3, 3, 3), "w1"),
        _weights(rng, (4,), "b1"),
        _weights(rng, (classes, 4, 1, 1), "w2"),
        _weights(rng, (classes,), "b2"),
    ]
    last = "output" if head is None else "logits"
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], [last]),
    ]
    if head is not None:
        attrs = {"axis": 1} if head == "Softmax" else {}
        nodes.append(helper.make_node(head, ["logits"], ["output"], **attrs))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims)]
    return _model(nodes, inputs, outputs, inits, opset, ir)


def nhwc_model(classes=3, softmax=False, names=("x", "y"), seed=1):
    """Transpose in, Conv 3->classes 3x3, (Softmax on channels,) Transpose out."""
    rng = np.random.default_rng(seed)
    first, last = names
    inits = [_weights(rng, (classes, 3, 3, 3), "w"), _weights(rng, (classes,), "b")]
    nodes = [
        helper.make_node("Transpose", [first], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["c"], ["s"], axis=1))
    nodes.append(
        helper.make_node("Transpose", ["s" if softmax else "c"], [last], perm=[0, 2, 3, 1])
    )
    inputs = [helper.make_tensor_value_info(first, TensorProto.FLOAT, [1, SIZE, SIZE, 3])]
    outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, SIZE, SIZE, classes])]
    return _model(nodes, inputs, outputs, inits)


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()) == 1
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def images(seed=2, n=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)


def by_hand(model, x, info):
    """The original model on the pixels it expects, its output back in NHWC."""
    norm = info.input_norm
    pixels = x.astype(np.float64) * 255.0
    if norm.bgr:
        pixels = pixels[..., ::-1]
    pixels = (pixels - np.array(norm.mean)) / np.array(norm.std)
    if info.layout == "NCHW":
        pixels = pixels.transpose(0, 3, 1, 2)
    out = run(model, pixels.astype(np.float32))
    return out.transpose(0, 2, 3, 1) if info.layout == "NCHW" else out


def assert_close(got, want):
    """Equal to 1e-5 of the scores' scale (1 for probabilities): caffe's pixels reach 150,
    whose float32 rounding (1e-5) comes through as such in logits of 50."""
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


# --- adopted: the same scores as the original on the pixels it expects -------------------------


@pytest.mark.parametrize("norm", NORMS)
def test_nchw_softmax_model_gives_the_originals_scores_in_nhwc(norm):
    model, info = nchw_model(), info_for(norm)
    before = model.SerializeToString()
    new = adopted(model, info)
    assert model.SerializeToString() == before  # the argument is left as it was
    x = images()
    scores = run(new, x)
    assert scores.shape == (1, SIZE, SIZE, 3)
    assert_close(scores, by_hand(model, x, info))


@pytest.mark.parametrize("norm", NORMS)
def test_nhwc_model_gives_the_originals_scores(norm):
    model, info = nhwc_model(classes=4), info_for(norm, layout="NHWC", channels=4)
    x = images(seed=3)
    assert_close(run(adopted(model, info), x), by_hand(model, x, info))


def test_adopted_model_has_unetq_names_shapes_opset_and_ir_version():
    model = nchw_model(opset=15, ir=8)
    new = adopted(model, info_for("caffe"))
    graph = new.graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["scores"]
    assert _declared(graph.input[0]) == [1, SIZE, SIZE, 3]
    assert _declared(graph.output[0]) == [1, SIZE, SIZE, 3]
    assert (new.ir_version, new.opset_import[0].version) == (8, 15)
    original = {n.name for n in model.graph.node} | {t.name for t in model.graph.initializer}
    added = {n.name for n in graph.node} | {t.name for t in graph.initializer}
    assert all(name.startswith("unetq_") for name in added - original)
    ops = [n.op_type for n in graph.node]
    assert ops[:4] == ["Gather", "Mul", "Add", "Transpose"]  # caffe: BGR, scale, shift, NCHW
    assert ops[-1] == "Transpose"


def test_unit_norm_and_nhwc_add_no_nodes():
    model = nhwc_model()
    new = adopted(model, info_for("unit", layout="NHWC"))
    assert [n.op_type for n in new.graph.node] == [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("names", [("image", "scores"), ("scores", "image")])
def test_user_names_that_are_unetqs_do_not_clash(names):
    model, info = nhwc_model(names=names), info_for("imagenet", layout="NHWC")
    new = adopted(model, info)
    assert [i.name for i in new.graph.input] == ["image"]
    assert [o.name for o in new.graph.output] == ["scores"]
    x = images(seed=4)
    assert_close(run(new, x), by_hand(model, x, info))


@pytest.mark.parametrize(("opset", "ir"), [(7, 3), (11, 6), (13, 7)])
def test_older_opsets_and_ir_versions_are_kept(opset, ir):
    model, info = nchw_model(opset=opset, ir=ir), info_for("imagenet")
    new = adopted(model, info)
    assert (new.ir_version, new.opset_import[0].version) == (ir, opset)
    x = images(seed=5)
    assert_close(run(new, x), by_hand(model, x, info))


def test_dynamic_batch_and_size_are_fixed_from_input_hw():
    model = nchw_model(dims=["N", 3, "H", "W"])
    sig = read_signature(model, "dyn.onnx")
    assert (sig.height, sig.width, sig.channels) == (None, None, 3)
    info = info_for("tf", hw=(SIZE, SIZE))
    new = adopted(model, info)
    assert _declared(new.graph.input[0]) == [1, SIZE, SIZE, 3]
    assert _declared(new.graph.output[0]) == [1, SIZE, SIZE, 3]
    x = images(seed=6)
    assert_close(run(new, x), by_hand(model, x, info))


def _declared(value_info):
    return [
        d.dim_value if d.HasField("dim_value") else None
        for d in value_info.type.tensor_type.shape.dim
    ]


# --- a one-channel head: two classes whose argmax is the threshold ------------------------------


def _p_and_scores(head, threshold, output):
    model = nchw_model(classes=1, head=head, seed=11)
    info = info_for("imagenet", channels=1, output=output, threshold=threshold)
    x = images(seed=8)
    return by_hand(model, x, info)[..., 0], run(adopted(model, info), x)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_sigmoid_head_argmax_is_p_above_the_threshold(threshold):
    p, scores = _p_and_scores("Sigmoid", threshold, "probabilities")
    assert scores.shape == (1, SIZE, SIZE, 2)
    foreground = p > threshold
    assert 0 < foreground.mean() < 1  # both classes occur: the test can fail
    np.testing.assert_array_equal(scores.argmax(-1), foreground)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_logit_head_argmax_is_its_sigmoid_above_the_threshold(threshold):
    z, scores = _p_and_scores(None, threshold, "logits")
    foreground = 1.0 / (1.0 + np.exp(-z.astype(np.float64))) > threshold
    assert 0 < foreground.mean() < 1
    np.testing.assert_array_equal(scores.argmax(-1), foreground)


def test_sigmoid_head_at_one_half_gives_the_two_class_probabilities():
    p, scores = _p_and_scores("Sigmoid", 0.5, "probabilities")
    np.testing.assert_allclose(scores, np.stack([1 - p, p], axis=-1), atol=1e-6)


# --- read_signature ------------------------------------------------------------------------------


def test_signature_of_an_nchw_softmax_model():
    sig = read_signature(nchw_model(), "m.onnx")
    assert (sig.input_name, sig.output_name) == ("input", "output")
    assert (sig.layout, sig.height, sig.width) == ("NCHW", SIZE, SIZE)
    assert (sig.channels, sig.output) == (3, "probabilities")


def test_signature_of_heads():
    assert read_signature(nchw_model(classes=1, head="Sigmoid"), "m").output == "probabilities"
    assert read_signature(nchw_model(classes=5, head=None), "m").output == "logits"
    assert read_signature(nchw_model(classes=5, head=None), "m").channels == 5


def test_signature_of_nhwc_models_looks_through_the_last_transpose():
    plain = read_signature(nhwc_model(classes=4), "m.onnx")
    assert (plain.layout, plain.channels, plain.output) == ("NHWC", 4, "logits")
    soft = read_signature(nhwc_model(classes=4, softmax=True), "m.onnx")
    assert (soft.layout, soft.channels, soft.output) == ("NHWC", 4, "probabilities")


def test_signature_infers_channels_the_output_does_not_declare():
    model = nchw_model(classes=6, dims=["N", 3, "H", "W"], out_dims=["N", "C", "H", "W"])
    assert read_signature(model, "m.onnx").channels == 6


# --- errors: one line, naming the file -----------------------------------------------------------


def _error(call, *args) -> str:
    with pytest.raises(ModelError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _one_op_model(inputs, out_dims, op="Relu", **attrs):
    """`op` on the first input (Add of all inputs when there are two)."""
    names = [i.name for i in inputs]
    node = helper.make_node("Add" if len(names) == 2 else op, names, ["out"], **attrs)
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_dims)]
    return _model([node], inputs, outputs, [])


def _input(name, dims, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, dims)


def test_two_inputs_are_refused():
    model = _one_op_model([_input("a", [1, 3, 8, 8]), _input("b", [1, 3, 8, 8])], [1, 3, 8, 8])
    message = _error(read_signature, model, "two.onnx")
    assert "two.onnx" in message and "2 inputs" in message


def test_one_channel_input_is_refused():
    model = _one_op_model([_input("a", [1, 1, 8, 8])], [1, 1, 8, 8])
    message = _error(read_signature, model, "gray.onnx")
    assert "gray.onnx" in message and "[N,3,H,W] or [N,H,W,3]" in message


def test_five_d_input_is_refused():
    model = _one_op_model([_input("a", [1, 3, 4, 8, 8])], [1, 3, 4, 8, 8])
    message = _error(read_signature, model, "vol.onnx")
    assert "vol.onnx" in message and "5-D" in message


def test_int_input_is_refused():
    model = _one_op_model([_input("a", [1, 3, 8, 8], TensorProto.INT64)], [1, 3, 8, 8])
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    message = _error(read_signature, model, "int.onnx")
    assert "int.onnx" in message and "int64" in message


def test_output_that_is_not_4d_is_refused():
    rng = np.random.default_rng(0)
    node = helper.make_node("Flatten", ["a"], ["out"])
    model = _model(
        [node], [_input("a", [1, 3, 8, 8])], [_input("out", [1, 192])], [_weights(rng, (1,), "u")]
    )
    assert "2-D" in _error(read_signature, model, "flat.onnx")


def test_missing_random_and_empty_files_are_refused(tmp_path):
    assert "no such file" in _error(load_onnx, tmp_path / "missing.onnx")
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "noise.onnx" in _error(load_onnx, noise)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "empty.onnx" in _error(load_onnx, empty)
    assert "not a file" in _error(load_onnx, tmp_path)


def test_adopting_with_an_info_that_does_not_fit_is_refused():
    model = nchw_model()
    assert "not 32x32" in _error(adopted, model, info_for(hw=(32, 32)))
    assert "not NHWC" in _error(adopted, model, info_for(layout="NHWC"))
    assert "not 1" in _error(adopted, model, info_for(channels=1))


def test_scores_at_another_resolution_are_refused():
    model = _one_op_model(
        [_input("a", [1, 3, SIZE, SIZE])],
        [1, 3, 8, 8],
        "MaxPool",
        kernel_shape=[2, 2],
        strides=[2, 2],
    )
    message = _error(adopted, model, info_for())
    assert "user.onnx" in message and "[1,8,8,3], not [1,16,16,3]" in message


def test_subgraphs_that_read_the_input_are_renamed_too():
    """An If whose branches read the model's input by its outer name."""
    dims = [1, 3, SIZE, SIZE]

    def branch(op):
        out = helper.make_tensor_value_info(f"{op}_out", TensorProto.FLOAT, dims)
        return helper.make_graph([helper.make_node(op, ["input"], [f"{op}_out"])], op, [], [out])

    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node(
        "If", ["cond"], ["output"], then_branch=branch("Sigmoid"), else_branch=branch("Relu")
    )
    model = _model([node], [_input("input", dims)], [_input("output", dims)], [cond])
    info = info_for("tf")
    x = images(seed=11)
    assert_close(run(adopted(model, info), x), by_hand(model, x, info))


# --- files: saved atomically, loaded back, read by OpenVINO --------------------------------------


def test_saved_file_loads_back_and_openvino_gives_onnxruntimes_scores(tmp_path):
    import openvino as ov

    model = nchw_model(classes=1, head="Sigmoid", dims=["N", 3, "H", "W"], seed=9)
    info = info_for("caffe", channels=1, threshold=0.3)
    path = tmp_path / "adopted.onnx"
    save_onnx(adopted(model, info), path)
    assert [p.name for p in tmp_path.iterdir()] == ["adopted.onnx"]  # no temporary left behind
    new = load_onnx(path)
    x = images(seed=10)
    expected = run(new, x)
    compiled = ov.Core().compile_model(
        ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled([x])[compiled.output(0)]
    assert got.shape == (1, SIZE, SIZE, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
