"""An int8 (QDQ) graph computed in float32 (service.engine.float_graph): the dequantized weights against
onnxruntime's own DequantizeLinear, and a small quantized network against the float network that has
exactly those weights."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

from service.engine.float_graph import dequantize_array, dequantize_graph, is_quantized

QDQ = {"QuantizeLinear", "DequantizeLinear"}


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def ort_dequantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """onnxruntime's DequantizeLinear on these arrays: the reference."""
    inits = [numpy_helper.from_array(a, n) for a, n in ((values, "q"), (scale, "s"), (zero_point, "z"))]
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis)
    graph = helper.make_graph([node], "dq", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    return run(model, {})[0]


@pytest.mark.parametrize("dtype, shape, axis", [(np.int8, (6, 3, 3, 3), 0), (np.uint8, (4, 5), 1), (np.int32, (7,), 0),
                                                (np.int8, (2, 3, 4), 1)])
def test_dequantize_array_matches_onnxruntime(dtype, shape, axis):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    values = rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)
    channels = shape[axis]
    scale = rng.uniform(0.001, 0.1, channels).astype(np.float32)
    zero_point = rng.integers(max(info.min, -20), min(info.max, 20), channels).astype(dtype)
    want = ort_dequantize(values, scale, zero_point, axis)
    np.testing.assert_array_equal(dequantize_array(values, scale, zero_point, axis), want)
    # per tensor: scalars
    want = ort_dequantize(values, scale[:1].reshape(()), zero_point[:1].reshape(()), axis)
    np.testing.assert_array_equal(dequantize_array(values, scale[:1].reshape(()), zero_point[:1].reshape(()), axis), want)


def small_network(seed: int = 0) -> onnx.ModelProto:
    """image (N, 3, 8, 8) -> Conv 3x3 (+bias) -> Relu -> Conv 1x1 -> Flatten -> Gemm: (N, 5)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.05, (5, 4 * 8 * 8)).astype(np.float32), "w3"),
             numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "b3")]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["out"], transB=1, name="gemm")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class Reader(CalibrationDataReader):
    def __init__(self, batches):
        self._it = iter(batches)

    def get_next(self):
        return next(self._it, None)


def quantized(model: onnx.ModelProto, tmp_path, quant_format=QuantFormat.QDQ) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    src, out = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, str(src))
    quantize_static(str(src), str(out), Reader([{"image": rng.random((2, 3, 8, 8), dtype=np.float32)} for _ in range(4)]),
                    quant_format=quant_format, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm"])
    return onnx.load(str(out))


def test_a_qdq_network_runs_as_the_float_network_with_its_int8_weights(tmp_path):
    source = small_network()
    int8 = quantized(source, tmp_path)
    assert is_quantized(int8) and not is_quantized(source)
    floated = dequantize_graph(int8)
    onnx.checker.check_model(floated)
    assert not {n.op_type for n in floated.graph.node} & QDQ
    assert is_quantized(int8)  # the input is left as it was

    # The reference: the float network with each weight replaced by what onnxruntime's DequantizeLinear
    # computes from the stored int8 values (the bias too: int32 at the input scale x the weight scale).
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    rounded = onnx.ModelProto()
    rounded.CopyFrom(source)
    replaced = 0
    for node in int8.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            original = node.output[0].removesuffix("_DequantizeLinear_Output")
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            value = ort_dequantize(inits[node.input[0]], inits[node.input[1]], inits[node.input[2]], axis)
            for init in rounded.graph.initializer:
                if init.name == original:
                    init.CopyFrom(numpy_helper.from_array(value.reshape(numpy_helper.to_array(init).shape), original))
                    replaced += 1
    assert replaced == 5  # three weights, two biases

    image = np.random.default_rng(2).random((3, 3, 8, 8), dtype=np.float32)
    (want,), (got,), (got_int8,), (got_source,) = (run(m, {"image": image}) for m in (rounded, floated, int8, source))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # and the activations are no longer rounded: the int8 graph differs from both, though not by much
    assert np.abs(got_int8 - want).max() > 1e-4
    assert np.abs(got_int8 - got).mean() < 0.05 * np.abs(got).mean()
    assert np.abs(got_source - got).mean() < 0.02 * np.abs(got).mean()


def test_a_graph_without_qdq_nodes_comes_back_unchanged():
    source = small_network()
    assert dequantize_graph(source) == source


def test_a_qoperator_graph_is_refused(tmp_path):
    int8 = quantized(small_network(), tmp_path, QuantFormat.QOperator)
    assert "QLinearConv" in {n.op_type for n in int8.graph.node}
    with pytest.raises(ValueError, match="not a QDQ graph"):
        dequantize_graph(int8)
