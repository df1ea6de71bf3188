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


def store_weights_in_half(path: Path, keep: frozenset[str] = frozenset()) -> int:
    """Rewrite the ONNX file at ``path`` with its float32 initializers (and constants) of ``MIN_ELEMENTS``
    or more elements in float16, except those named in ``keep``; returns how many were converted."""
    model = onnx.load(str(path))
    graph = model.graph
    constants_as_initializers(graph)
    kept, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or array.size < MIN_ELEMENTS or init.name in keep:
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


def widen_half_weights(model: onnx.ModelProto) -> int:
    """Undo :func:`store_weights_in_half` in place: each float16 initializer back in float32 under the name
    its cast gave it, the cast dropped; returns how many. The graph computes exactly what it did (the
    casts computed these very values), and tools that want float32 weights (quantization) can read it."""
    graph = model.graph
    halves = {init.name: init for init in graph.initializer if init.name.endswith(HALF_SUFFIX)
              and init.data_type == TensorProto.FLOAT16}
    casts = [n for n in graph.node if n.op_type == "Cast" and len(n.input) == 1 and n.input[0] in halves]
    for cast in casts:
        half = halves.pop(cast.input[0])
        half.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32), cast.output[0]))
    dropped = {cast.output[0] for cast in casts}
    nodes = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] in dropped)]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def float_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer as a float32 array under the name the graph's nodes use: a half-precision
    one under its cast's output name."""
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0].endswith(HALF_SUFFIX) and node.input[0] in arrays:
            arrays[node.output[0]] = arrays.pop(node.input[0]).astype(np.float32)
    return arrays
