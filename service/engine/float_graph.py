"""An int8 graph in the QDQ format, computed in float32 instead.

The default store's graphs are quantized for CPU workers (``training.quantize``): each int8 weight
reaches its operator through a ``DequantizeLinear``, and each quantized activation goes through a
``QuantizeLinear`` -> ``DequantizeLinear`` pair. A GPU provider has no measured int8 path for them,
so a GPU worker runs the same store in float: every weight's ``DequantizeLinear`` becomes the float32
initializer it computes, and every activation pair becomes an ``Identity`` (which onnxruntime drops),
so the activations are no longer rounded. The network is then the trained one with its weights
rounded to int8 steps, nothing else. The trainer reads a quantized store's weights back the same way
(``training.export.from_store``).

Needs the ``onnx`` package (the ``gpu`` and ``dev`` extras; a CPU worker never imports this module).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has any QDQ node."""
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def dequantize_array(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1) -> np.ndarray:
    """``DequantizeLinear``'s arithmetic: ``(values - zero_point) * scale`` in float32.

    ``values`` any integer shape; ``scale`` and ``zero_point`` scalars (per tensor) or 1-D of
    ``values.shape[axis]`` (per channel), ``axis`` as the node's attribute (ONNX's default 1).
    """
    def along_axis(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        if a.ndim == 1 and a.size > 1:
            shape = [1] * values.ndim
            shape[axis] = a.size
            return a.reshape(shape)
        return a

    x = values.astype(np.float32) - (0.0 if zero_point is None else along_axis(zero_point))
    scale = along_axis(scale)
    return (x * scale).astype(np.float32)


def dequantize_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with its QDQ nodes taken out, as the module's docstring says; a graph
    without QDQ nodes comes back unchanged. Raises ``ValueError`` for a quantized graph in another
    form (a ``QuantizeLinear`` read by something other than a ``DequantizeLinear``, as QOperator
    graphs have, or a ``DequantizeLinear`` of a graph input)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not is_quantized(out):
        return out
    graph = out.graph
    initializers = {init.name: init for init in graph.initializer}
    producer = {name: node for node in graph.node for name in node.output}
    graph_outputs = {o.name for o in graph.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def constant(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(initializers[name]) if name in initializers else None

    nodes, weights = [], []
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            others = [r.op_type for name in node.output for r in readers.get(name, []) if r.op_type != "DequantizeLinear"]
            if others or graph_outputs.intersection(node.output):
                raise ValueError(f"{node.name}: a QuantizeLinear read by {others or 'the graph output'}, not a QDQ graph")
            continue  # its DequantizeLinear reads its input instead
        if node.op_type != "DequantizeLinear":
            nodes.append(node)
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        source = node.input[0]
        if source in initializers:  # a weight: the float32 values it computes, under its output's name
            zero_point = constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            values = dequantize_array(constant(source), constant(node.input[1]), zero_point, axis)
            weights.append(numpy_helper.from_array(values, node.output[0]))
            continue
        quantize = producer.get(source)
        if quantize is None or quantize.op_type != "QuantizeLinear":
            raise ValueError(f"{node.name}: a DequantizeLinear of {source!r}, which no QuantizeLinear writes")
        nodes.append(helper.make_node("Identity", [quantize.input[0]], [node.output[0]], name=node.name))

    used = {name for node in nodes for name in node.input} | graph_outputs
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + weights)
    # Shapes inferred for the int8 tensors that are gone would otherwise stay behind.
    written = {name for node in nodes for name in node.output}
    info = [v for v in graph.value_info if v.name in written]
    del graph.value_info[:]
    graph.value_info.extend(info)
    return out


def float_graph_bytes(path: Path) -> bytes:
    """The ONNX file at ``path`` dequantized (:func:`dequantize_graph`), serialised for an
    ``onnxruntime.InferenceSession``."""
    return dequantize_graph(onnx.load(str(path))).SerializeToString()
