"""The blendshapes as glTF morph targets (service.engine.morph): read back from the GLB's bytes with plain
json and numpy, they hold the names, the default weights, and deltas that move the base onto the mesh."""

import json
import struct

import numpy as np
import pytest

from service.engine.export import export_glb
from service.engine.fuse import Mesh
from service.engine.morph import ZERO_BELOW_M, MorphTargets, TargetSet
from service_fixtures import encode, noise_image, tiny_client

COMPONENTS = {5126: "<f4", 5123: "<u2", 5125: "<u4"}
SIZES = {"VEC3": 3, "VEC2": 2, "SCALAR": 1}


def read_glb(glb: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<III", glb)
    assert (magic, version, length) == (0x46546C67, 2, len(glb))
    json_length, _ = struct.unpack_from("<II", glb, 12)
    tree = json.loads(glb[20:20 + json_length])
    bin_length, _ = struct.unpack_from("<II", glb, 20 + json_length)
    return tree, glb[28 + json_length:28 + json_length + bin_length]


def accessor_array(tree: dict, binary: bytes, index: int) -> np.ndarray:
    """An accessor's values, its sparse substitution applied (no byteStride: the service writes none)."""
    accessor = tree["accessors"][index]
    width = SIZES[accessor["type"]]

    def view(number: int, dtype: str, count: int) -> np.ndarray:
        v = tree["bufferViews"][number]
        return np.frombuffer(binary, dtype, count, v.get("byteOffset", 0))

    dtype = COMPONENTS[accessor["componentType"]]
    if "bufferView" in accessor:
        out = view(accessor["bufferView"], dtype, accessor["count"] * width).reshape(-1, width).astype(np.float64)
    else:
        out = np.zeros((accessor["count"], width))
    if "sparse" in accessor:
        sparse = accessor["sparse"]
        rows = view(sparse["indices"]["bufferView"], COMPONENTS[sparse["indices"]["componentType"]], sparse["count"])
        assert np.all(np.diff(rows) > 0)  # strictly increasing, as the spec asks
        out[rows] = view(sparse["values"]["bufferView"], dtype, sparse["count"] * width).reshape(-1, width)
    return out


def morphs(glb: bytes) -> list[dict]:
    """Per mesh: base positions, targets (K, V, 3), weights, names, and the accessors' kinds."""
    tree, binary = read_glb(glb)
    out = []
    for mesh in tree["meshes"]:
        (primitive,) = mesh["primitives"]
        targets = primitive.get("targets", [])
        out.append({
            "name": mesh.get("name"), "base": accessor_array(tree, binary, primitive["attributes"]["POSITION"]),
            "targets": np.array([accessor_array(tree, binary, t["POSITION"]) for t in targets]),
            "weights": np.array(mesh.get("weights", [])), "names": mesh.get("extras", {}).get("targetNames"),
            "sparse": ["sparse" in tree["accessors"][t["POSITION"]] for t in targets],
        })
    return out


def test_targets_round_trip_through_the_glb():
    rng = np.random.default_rng(0)
    v = 50
    vertices = rng.normal(0, 0.05, (v, 3)).astype(np.float32)
    deltas = np.zeros((3, v, 3), np.float32)
    deltas[0, :4] = rng.normal(0, 0.01, (4, 3))  # few vertices: sparse
    deltas[1] = rng.normal(0, 0.01, (v, 3))  # every vertex: dense
    deltas[1, 7] = ZERO_BELOW_M / 10  # under the threshold: written as 0
    # deltas[2] moves nothing
    targets = TargetSet.from_deltas(deltas, ["jawOpen", "mouthSmile_L", "eyeBlink_L"])
    weights = np.array([0.5, 0.25, 0.0], np.float32)
    triangles = np.array([[0, 1, 2], [2, 3, 4]], np.int32)
    mesh = Mesh(vertices=vertices, triangles=triangles, uv=rng.random((v, 2)).astype(np.float32),
                texture=np.zeros((8, 8, 3), np.uint8), name="face_0", morph=MorphTargets(targets, weights))
    (got,) = morphs(export_glb([mesh], {"note": 1}))
    assert got["names"] == ["jawOpen", "mouthSmile_L", "eyeBlink_L"]
    assert got["weights"] == pytest.approx(weights)
    assert got["sparse"] == [True, False, False]
    expected = deltas.copy()
    expected[1, 7] = 0
    np.testing.assert_allclose(got["targets"], expected, atol=1e-7)
    # The default weights show the mesh; other weights move it by exactly their deltas.
    shown = got["base"] + np.tensordot(got["weights"], got["targets"], axes=1)
    np.testing.assert_allclose(shown, vertices, atol=1e-6)
    np.testing.assert_allclose(got["base"] + got["targets"][0], vertices + 0.5 * expected[0] - 0.25 * expected[1],
                               atol=1e-6)
    # Without morph targets, the GLB is as before: no targets, POSITION is the mesh itself.
    (plain,) = morphs(export_glb([Mesh(vertices, triangles, mesh.uv, mesh.texture, "face_0")], {}))
    assert len(plain["targets"]) == 0 and plain["names"] is None
    np.testing.assert_allclose(plain["base"], vertices, atol=1e-7)


@pytest.fixture(scope="module")
def client(tmp_path_factory, kit):
    with tiny_client(tmp_path_factory, kit, "morph_jobs", default_texture_size=32) as test_client:
        yield test_client


def reconstruct(client, **options) -> bytes:
    response = client.post("/v1/reconstruct", files={"image": ("face", encode(noise_image(), "PNG"))},
                           data={"box": "40,30,160,150", **options})
    assert response.status_code == 200, response.text
    return response.content


def face_and_eyes(glb: bytes) -> tuple[dict, dict]:
    """The face's mesh (ICT's topology) and its eyeballs', which no expression moves (ICT's do not)."""
    by_name = {m["name"]: m for m in morphs(glb)}
    assert set(by_name) == {"face_0", "face_0_eyes"}
    return by_name["face_0"], by_name["face_0_eyes"]


@pytest.mark.parametrize("mesh", ["full", "identity", "expression"])
def test_the_service_glb_carries_the_53_blendshapes(client, mesh):
    plain, _ = face_and_eyes(reconstruct(client, format="glb", mesh=mesh))
    animated, eyes = face_and_eyes(reconstruct(client, format="glb", mesh=mesh, morph_targets="true"))
    assert eyes["names"] is None and len(eyes["targets"]) == 0
    figures = client.post("/v1/reconstruct", files={"image": ("face", encode(noise_image(), "PNG"))},
                          data={"box": "40,30,160,150", "format": "json"}).json()["faces"][0]["blendshapes"]
    assert len(animated["targets"]) == 53 and animated["names"] == list(figures)
    assert animated["targets"].shape[1] == len(plain["base"])
    expected = np.zeros(53) if mesh == "identity" else np.array(list(figures.values()))
    np.testing.assert_allclose(animated["weights"], expected, atol=1e-5)
    # At its default weights, the animatable mesh is the mesh the plain GLB holds.
    shown = animated["base"] + np.tensordot(animated["weights"], animated["targets"], axes=1)
    np.testing.assert_allclose(shown, plain["base"], atol=1e-6)
    # And a weight moves it: jawOpen at 1 opens the jaw by centimetres.
    jaw = animated["names"].index("jawOpen")
    assert np.linalg.norm(animated["targets"][jaw], axis=1).max() > 0.005


def test_the_targets_are_ict_s_expressions_on_ict_s_topology(client, tiny_topology):
    """The face mesh is ICT's face region (its own vertices, UV-seam splits included) and each target is
    ICT's expression delta at those vertices, in metres."""
    animated, _ = face_and_eyes(reconstruct(client, format="glb", morph_targets="true"))
    head = tiny_topology.ict.fit.head
    assert len(animated["base"]) == len(head.face.ids) == 7104
    columns = np.searchsorted(head.basis_vertices, head.face.ids)
    expected = head.expression[:, columns] * 0.01
    expected[np.linalg.norm(expected, axis=2) < ZERO_BELOW_M] = 0
    np.testing.assert_allclose(animated["targets"], expected, atol=1e-7)
    assert animated["names"] == head.expression_names


def test_region_head_carries_the_targets_on_ict_s_head(client, tiny_topology, kit):
    """region=head: the 53 targets on ICT's head mesh (face, ears, neck, back of the head, sockets,
    teeth, gums and tongue); the expressions move the jaw's skin, the mouth socket and the lower teeth
    beyond the face region too."""
    plain, _ = face_and_eyes(reconstruct(client, format="glb", region="head"))
    animated, eyes = face_and_eyes(reconstruct(client, format="glb", region="head", morph_targets="true"))
    head = tiny_topology.ict.fit.head
    assert len(animated["base"]) == len(head.head.ids) and len(animated["targets"]) == 53
    assert animated["names"] == head.expression_names and eyes["names"] is None
    shown = animated["base"] + np.tensordot(animated["weights"], animated["targets"], axes=1)
    np.testing.assert_allclose(shown, plain["base"], atol=1e-6)
    outside = ~np.isin(head.head.ids, head.face.ids)
    jaw = animated["names"].index("jawOpen")
    assert np.linalg.norm(animated["targets"][jaw][outside], axis=1).max() > 0.005
    # jawOpen in the GLB opens the lower teeth (half ICT's teeth vertices, by up to 4 cm) and not the upper.
    teeth = np.isin(head.head.ids, np.arange(*kit.parts["teeth"]))
    moved = np.linalg.norm(animated["targets"][jaw][teeth], axis=1)
    assert (moved > 1e-3).mean() == pytest.approx(0.5, abs=0.03) and moved.max() > 0.03
    assert (moved[moved <= 1e-3] == 0).all()


def test_morph_targets_are_opt_in_and_glb_only(client):
    assert face_and_eyes(reconstruct(client, format="glb"))[0]["names"] is None
    body = json.loads(reconstruct(client, format="json", morph_targets="true"))
    assert body["faces"][0]["blendshapes"]
    response = client.post("/v1/reconstruct", files={"image": ("face", encode(noise_image(), "PNG"))},
                           data={"box": "40,30,160,150", "morph_targets": "perhaps"})
    assert response.status_code == 422
