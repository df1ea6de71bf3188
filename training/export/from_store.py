"""A model store -> a checkpoint that training can start from: the exported ONNX weights read back
into the PyTorch streams, so a shipped model can be fine-tuned after its training run is gone.

The exporter folds each BatchNorm into the convolution before it, so the running statistics are not
in the graph any more. They come back as an identity BatchNorm (mean 0, variance 1 - eps, scale 1)
that carries the folded bias; the network computes exactly what the graph does as long as the
BatchNorm layers stay in inference mode (:func:`freeze_batchnorm`), which is what fine-tuning such a
checkpoint does. Every import is checked against onnxruntime on the exporter's seeded inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

from service.engine.float_graph import dequantize_graph
from service.model_store import load_model_store
from training.models import AlbedoModel, GeometryStream, NetworkConfig, TextureStream

from .half import HALF_SUFFIX, MIN_ELEMENTS, float_initializers
from .onnx import GEOMETRY_INPUTS, TEXTURE_INPUTS, _GeometryGraph, _TextureGraph, example_inputs, parity

PARITY_LIMIT = 1e-4
FOLDED = "folded"  # a checkpoint's "batchnorm" entry when its BatchNorm statistics were folded away


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its stored statistics, in training mode too (scale and
    shift stay trainable). Same parameters and buffers as ``nn.BatchNorm2d``, so checkpoints and the
    exporter treat it as one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def freeze_batchnorm(net: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``net`` by a :class:`FrozenBatchNorm2d` with the same state; returns ``net``."""
    for name, child in list(net.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, FrozenBatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats).to(child.weight.device)
            frozen.load_state_dict(child.state_dict())
            setattr(net, name, frozen)
        else:
            freeze_batchnorm(child)
    return net


def _call_order(graph: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, nn.Module]]:
    """Every module of ``graph.net`` (names relative to it) that a forward pass calls, in the order it finishes."""
    order, hooks = [], []
    for name, module in graph.net.named_modules():
        hooks.append(module.register_forward_hook(lambda m, i, o, name=name: order.append((name, m))))
    try:
        with torch.no_grad():
            graph.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return order


def _scope_path(node_name: str) -> str:
    """The module path in a node's name as the exporter writes it: ``/net/features.9/features.9.0/Conv``
    -> ``features.9.0``, ``/net/srsm.2/style/style.0/Conv`` -> ``srsm.2.style.0`` (a child of a Sequential
    repeats its parent's name; a module whose forward was inlined, such as the encoder, is left out)."""
    parts: list[str] = []
    for scope in node_name.strip("/").split("/")[1:-1]:  # without "net" and the op
        if parts and scope.startswith(parts[-1] + "."):
            parts[-1] = scope
        else:
            parts.append(scope)
    return ".".join(parts)


def _pair_convolutions(nodes: list, convs: list[tuple[int, str, nn.Module]]) -> list[tuple]:
    """Each Conv node with the network's convolution (``(call index, name, module)``) it computes: by the
    module path of the node's name where that pairs them one to one, else in order (quantization
    reorders a graph's nodes; an exporter that names nodes otherwise keeps the call order)."""
    paths = [_scope_path(node.name) for node in nodes]
    matches = [[c for c in convs if path and (c[1] == path or c[1].endswith("." + path))] for path in paths]
    if all(len(m) == 1 for m in matches) and len({m[0][1] for m in matches}) == len(convs):
        return [(node, m[0]) for node, m in zip(nodes, matches)]
    return list(zip(nodes, convs))


def load_onnx_weights(graph: nn.Module, path: Path, names_in: tuple[str, ...], inputs: dict[str, torch.Tensor]) -> float:
    """Read the weights of the exported ``path`` into ``graph.net`` (same config); returns the
    onnxruntime parity after the import, and raises if it is above ``PARITY_LIMIT``.

    Named initializers (``net.<key>``) load by name. Convolutions load by the module path each Conv
    node's name gives (:func:`_pair_convolutions`); a convolution whose BatchNorm the exporter folded
    gets the folded weight, and the BatchNorm becomes the identity plus the folded bias. What is left
    (a weight stored reshaped, as the albedo basis for a MatMul) loads by its unique element count.
    An untrained network can fail that: the exporter keeps one of several parameters with equal
    values (fresh normalisation scales, all ones), and which one is not recorded.
    """
    # An int8 store's weights read back as the float values its DequantizeLinear nodes compute; the
    # parity is then checked against that float graph (what is imported), not the int8 one.
    model = dequantize_graph(onnx.load(str(path)))
    arrays = float_initializers(model)  # weights stored in half precision read back through their casts
    net = graph.net
    state = {k: v.clone() for k, v in net.state_dict().items()}
    loaded = set()
    for name, value in arrays.items():
        if name.startswith("net.") and name[4:] in state:
            state[name[4:]] = torch.from_numpy(value.copy()).reshape(state[name[4:]].shape)
            loaded.add(name[4:])

    # The Conv2d and BatchNorm2d modules in the order they run (a BatchNorm right after its convolution).
    called = _call_order(graph, tuple(inputs[n] for n in names_in))
    order = [(name, m) for name, m in called if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    convs = [(i, name, m) for i, (name, m) in enumerate(order) if isinstance(m, nn.Conv2d)]
    nodes = [node for node in model.graph.node if node.op_type == "Conv"]
    if len(nodes) != len(convs):
        raise ValueError(f"{path}: {len(nodes)} Conv nodes, the network runs {len(convs)} convolutions")
    for node, (i, name, conv) in _pair_convolutions(nodes, convs):
        weight = arrays[node.input[1]]
        if weight.shape != tuple(conv.weight.shape):
            raise ValueError(f"{path}: Conv node {node.name} has weights {weight.shape}, {name} {tuple(conv.weight.shape)}")
        bias = arrays[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
        state[f"{name}.weight"] = torch.from_numpy(weight.copy())
        loaded.add(f"{name}.weight")
        following = order[i + 1] if i + 1 < len(order) else None
        if following is not None and isinstance(following[1], nn.BatchNorm2d) and f"{following[0]}.weight" not in loaded:
            bn_name, bn = following
            state[f"{bn_name}.weight"] = torch.ones(bn.num_features)
            state[f"{bn_name}.bias"] = torch.from_numpy(bias.copy())
            state[f"{bn_name}.running_mean"] = torch.zeros(bn.num_features)
            state[f"{bn_name}.running_var"] = torch.full((bn.num_features,), 1.0 - bn.eps)
            loaded.update(f"{bn_name}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
            if conv.bias is not None:
                state[f"{name}.bias"] = torch.zeros_like(conv.bias)
        elif conv.bias is not None:
            state[f"{name}.bias"] = torch.from_numpy(bias.copy())
        if conv.bias is not None:
            loaded.add(f"{name}.bias")

    unnamed = {k: v for k, v in arrays.items() if not k.startswith("net.")}
    ran = {name for name, _ in called}  # a module the forward pass skips is not in the graph
    for key in [k for k in state if k not in loaded and not k.endswith("num_batches_tracked")
                and k.rsplit(".", 1)[0] in ran]:
        matches = [v for v in unnamed.values() if v.size == state[key].numel() and v.size > 1]
        if len(matches) != 1:  # e.g. an untrained network: the exporter merges parameters of equal values
            raise ValueError(f"{path}: no unique initializer for {key} {tuple(state[key].shape)} "
                             f"({len(matches)} of its size; the exporter keeps one of several equal tensors)")
        state[key] = torch.from_numpy(matches[0].copy()).reshape(state[key].shape)
        loaded.add(key)
    net.load_state_dict(state)
    if any(init.name.endswith(HALF_SUFFIX) for init in model.graph.initializer):
        # The graph's large constants (non-persistent buffers, e.g. ICT's basis) were stored in half
        # precision too (training.export.half); round the network's own the same way for the parity check.
        kept = set(state)
        with torch.no_grad():
            for name, buffer in net.named_buffers():
                if name not in kept and buffer.is_floating_point() and buffer.numel() >= MIN_ELEMENTS:
                    buffer.copy_(buffer.half().float())
    diff = parity(model.SerializeToString(), graph, inputs, names_in)
    if diff > PARITY_LIMIT:
        raise ValueError(f"{path}: the imported network differs from the graph by {diff:.2e} (limit {PARITY_LIMIT})")
    return diff


def checkpoint_from_store(folder: Path) -> dict:
    """A model-store version folder -> a checkpoint dict holding both streams (as a stage-3 file
    does), its config, ``batchnorm = "folded"``, the parity of each import in ``import_parity`` and
    in ``int8_weights`` the streams whose graphs were int8 (their weights come back rounded to int8 steps)."""
    store = load_model_store(Path(folder))
    cfg = NetworkConfig.from_dict(store.manifest["config"])
    inputs = example_inputs(cfg)
    geometry = GeometryStream(cfg.geometry)
    texture = TextureStream(cfg.texture, AlbedoModel.placeholder(cfg.texture.albedo_dim, cfg.texture.uv_size))
    parities = {"geometry": load_onnx_weights(_GeometryGraph(geometry), store.onnx_path("geometry"), GEOMETRY_INPUTS, inputs),
                "texture": load_onnx_weights(_TextureGraph(texture), store.onnx_path("texture"), TEXTURE_INPUTS, inputs)}
    return dict(geometry_model=geometry.state_dict(), texture_model=texture.state_dict(), config=cfg.as_dict(), step=0,
                stage="imported", batchnorm=FOLDED, source=f"{store.name} {store.version}", import_parity=parities,
                # the manifest's quantization record says which graphs are int8 (model_store/README.md)
                int8_weights=list(store.manifest["evaluation"].get("quantization", {}).get("quantized_ops", {})))
