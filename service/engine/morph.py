"""glTF morph targets: the 53 blendshapes added to a GLB's meshes, so that any glTF tool can animate them.

trimesh writes meshes without morph targets, so they are added to its GLB afterwards: the JSON chunk
gets one POSITION target per blendshape on the mesh's primitive, ``weights`` (the default weights)
and ``extras.targetNames`` (the ARKit names, the convention three.js and Blender read), and the BIN
chunk gets the deltas. A target moves only part of the face (an eye blink a few hundred of 11k
vertices), so each is written as a sparse accessor (changed vertices' indices and deltas) where that
is smaller than the dense array.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import cached_property

import numpy as np

GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
ARRAY_BUFFER = 34962
# Deltas below this (metres) are written as exactly 0: a hundredth of a millimetre, far under what a
# render shows, and most of the vertices a target does not move (the GLB's size).
ZERO_BELOW_M = 1e-5


@dataclass(frozen=True, eq=False)
class TargetSet:
    """K targets over V vertices as the GLB stores them, encoded once (they are the model's, the same
    for every face: only the base and the weights differ per face)."""

    deltas: np.ndarray  # (K, V, 3) float32 metres, those under ZERO_BELOW_M set to exactly 0
    names: list[str]  # (K,) ARKit names

    @classmethod
    def from_deltas(cls, deltas: np.ndarray, names: list[str]) -> "TargetSet":
        """``deltas``: (K, V, 3) metres, in the mesh's frame."""
        deltas = np.asarray(deltas, np.float32)
        small = np.linalg.norm(deltas, axis=2, keepdims=True) < ZERO_BELOW_M
        return cls(np.where(small, np.float32(0), deltas), list(names))

    @cached_property
    def encoded(self) -> list[dict]:
        """Per target: ``min``/``max`` (over every vertex, the unmoved ones' zeros included, as the spec
        asks) and either ``indices``+``values`` (sparse: moved vertices only), ``values`` (dense) or
        neither (moves nothing: an accessor without data is all zeros)."""
        count = self.deltas.shape[1]
        index_dtype = "<u2" if count <= 0xFFFF else "<u4"
        out = []
        for delta in self.deltas:
            moved = np.flatnonzero(np.any(delta != 0, axis=1))
            low, high = delta.min(0), delta.max(0)
            if len(moved) < count:
                low, high = np.minimum(low, 0), np.maximum(high, 0)
            block = {"min": low.tolist(), "max": high.tolist()}
            if len(moved) and len(moved) * (12 + np.dtype(index_dtype).itemsize) < count * 12:
                block.update(count=len(moved), indices=moved.astype(index_dtype).tobytes(),
                             values=delta[moved].astype("<f4").tobytes())
            elif len(moved):
                block["values"] = delta.astype("<f4").tobytes()
            out.append(block)
        return out


@dataclass(frozen=True, eq=False)
class MorphTargets:
    """One mesh's targets and the weights it is shown at."""

    targets: TargetSet
    weights: np.ndarray  # (K,) the default weights

    def base(self, shown: np.ndarray) -> np.ndarray:
        """(V, 3) float32: the vertices that, moved by the targets at the default weights, are ``shown``."""
        moved = np.tensordot(self.weights.astype(np.float32), self.targets.deltas, axes=1)
        return (np.asarray(shown, np.float32) - moved).astype(np.float32)


def read_glb(glb: bytes) -> tuple[dict, bytes]:
    """A GLB's JSON document and its BIN chunk (b"" if none)."""
    magic, version, length = struct.unpack_from("<III", glb, 0)
    if magic != GLB_MAGIC or version != 2 or length != len(glb):
        raise ValueError("not a glTF 2.0 binary")
    offset, tree, binary = 12, None, b""
    while offset < length:
        size, kind = struct.unpack_from("<II", glb, offset)
        data = glb[offset + 8:offset + 8 + size]
        if kind == JSON_CHUNK:
            tree = json.loads(data)
        elif kind == BIN_CHUNK:
            binary = data
        offset += 8 + size
    if tree is None:
        raise ValueError("GLB without a JSON chunk")
    return tree, binary


def write_glb(tree: dict, binary: bytes) -> bytes:
    """The GLB of a JSON document and a BIN chunk (``tree["buffers"][0]`` must describe ``binary``)."""
    text = json.dumps(tree, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    if binary:
        chunks += struct.pack("<II", len(binary), BIN_CHUNK) + binary
    return struct.pack("<III", GLB_MAGIC, 2, 12 + len(chunks)) + chunks


def add_morph_targets(glb: bytes, targets: dict[str, MorphTargets]) -> bytes:
    """``glb`` with ``targets[name]`` on the mesh of the node called ``name`` (its one primitive,
    whose POSITION must already be the base: ``MorphTargets.base``)."""
    tree, binary = read_glb(glb)
    out = bytearray(binary)
    out += b"\0" * (-len(out) % 4)
    views, accessors = tree.setdefault("bufferViews", []), tree.setdefault("accessors", [])

    def view(data: bytes, target: int | None = None) -> int:
        out.extend(b"\0" * (-len(out) % 4))
        views.append({"buffer": 0, "byteOffset": len(out), "byteLength": len(data)})
        if target is not None:
            views[-1]["target"] = target
        out.extend(data)
        return len(views) - 1

    nodes = {node.get("name"): node for node in tree.get("nodes", [])}
    for name, morph in targets.items():
        mesh = tree["meshes"][nodes[name]["mesh"]]
        (primitive,) = mesh["primitives"]
        count = accessors[primitive["attributes"]["POSITION"]]["count"]
        if morph.targets.deltas.shape[1] != count:
            raise ValueError(f"{name}: {morph.targets.deltas.shape[1]} target vertices for a mesh of {count}")
        index_type = UNSIGNED_SHORT if count <= 0xFFFF else UNSIGNED_INT
        primitive["targets"] = []
        for block in morph.targets.encoded:
            accessor = {"componentType": FLOAT, "count": count, "type": "VEC3", "min": block["min"], "max": block["max"]}
            if "indices" in block:
                accessor["sparse"] = {"count": block["count"],
                                      "indices": {"bufferView": view(block["indices"]), "componentType": index_type},
                                      "values": {"bufferView": view(block["values"])}}
            elif "values" in block:
                accessor["bufferView"] = view(block["values"], ARRAY_BUFFER)
            accessors.append(accessor)
            primitive["targets"].append({"POSITION": len(accessors) - 1})
        mesh["weights"] = [float(w) for w in morph.weights]
        mesh.setdefault("extras", {})["targetNames"] = list(morph.targets.names)
    out.extend(b"\0" * (-len(out) % 4))
    tree["buffers"] = [{"byteLength": len(out)}]
    return write_glb(tree, bytes(out))
