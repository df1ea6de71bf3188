"""Graph weights stored in half precision, computed in single precision.

A model store's size is its weights; git keeps every version ever committed. Each large float32
initializer is stored as float16 and a ``Cast`` back to float32 takes its name, so the graph's nodes
are unchanged. onnxruntime folds those casts into float32 constants when it builds the session
(any graph optimisation level above none), so serving computes in float32 at the same speed: only
the weights' rounding (a relative 2^-11) differs from the exported network, and the export's parity
check measures it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HALF_SUFFIX = "__fp16"
MIN_ELEMENTS = 256  # smaller tensors (biases, norms) stay float32: they weigh nothing


def store_weights_in_half(path: Path) -> int:
    """Rewrite the ONNX file at ``path`` with its float32 initializers (and constants) of ``MIN_ELEMENTS``
    or more elements in float16; returns how many were converted."""
    model = onnx.load(str(path))
    graph = model.graph
    constants_as_initializers(graph)
    kept, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or array.size < MIN_ELEMENTS:
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(array.astype(np.float16), init.name + HALF_SUFFIX))
        casts.append(helper.make_node("Cast", [init.name + HALF_SUFFIX], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}{HALF_SUFFIX}_cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)  # the casts first: the graph stays topologically sorted
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(casts)


def constants_as_initializers(graph: onnx.GraphProto) -> None:
    """Large float32 ``Constant`` nodes (the exporter writes a module's non-persistent buffers as these,
    e.g. ICT's basis in a network with the shape from landmarks) become initializers of the same name,
    so that the conversion to half precision reaches them too."""
    nodes = []
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and value.data_type == TensorProto.FLOAT and np.prod(value.dims) >= MIN_ELEMENTS:
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), node.output[0]))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def float_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer as a float32 array under the name the graph's nodes use: a half-precision
    one under its cast's output name."""
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0].endswith(HALF_SUFFIX) and node.input[0] in arrays:
            arrays[node.output[0]] = arrays.pop(node.input[0]).astype(np.float32)
    return arrays
