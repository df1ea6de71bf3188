"""The model-store file contract: training.export writes it, service.model_store reads it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.model_store import (
    ModelStore,
    ModelStoreError,
    check_topology,
    find_model_store,
    load_model_store,
)
from training.export import write_model_store

S = 64
INPUT = 32


# --- fixtures: a tiny synthetic topology and two real ONNX graphs -------------------------------


def synthetic_topology(size: int = S) -> dict[str, np.ndarray]:
    """A disc-shaped face region, symmetric about the vertical centre line like the ICT layout."""
    rows, cols = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2
    mask = (rows - centre) ** 2 + (cols - centre) ** 2 <= (size / 4) ** 2
    pixels = np.argwhere(mask).astype(np.int32)
    vid = np.full(mask.shape, -1)
    vid[mask] = np.arange(len(pixels))
    quads = np.stack([vid[:-1, :-1], vid[1:, :-1], vid[1:, 1:], vid[:-1, 1:]], -1).reshape(-1, 4)
    full = quads[(quads >= 0).all(1)]
    triangles = np.concatenate([full[:, [0, 1, 3]], full[:, [3, 1, 2]]]).astype(np.int32)
    uv = np.stack([(pixels[:, 1] + 0.5) / size, 1 - (pixels[:, 0] + 0.5) / size], 1).astype(np.float32)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    landmarks = (centre + (size / 8) * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.float32)
    labels = mask.astype(np.uint8)
    labels[mask & (rows < centre)] = 2
    mirror = np.where(mask & mask[:, ::-1], rows * size + (size - 1 - cols), -1).astype(np.int32)
    return {
        "uv_mask": mask,
        "vertex_pixels": pixels,
        "uv_coords": uv,
        "triangles": triangles,
        "landmarks_uv": landmarks,
        "region_labels": labels,
        "region_names": np.array(["outside", "skin", "upper"]),
        "weight_mask": np.where(mask, 3.0, 0.0).astype(np.float32),
        "mirror_map": mirror,
        # An extra key, as the trainer stores its expression basis: must pass through untouched.
        "expression_basis": np.random.default_rng(0).standard_normal((2, len(pixels), 3)).astype(np.float32),
    }


def make_onnx(path: Path, out_name: str, channels: int, add: float) -> Path:
    """image (batch, 3, INPUT, INPUT) float32 -> out_name (batch, channels, S, S) = resized + add."""
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Resize", ["image", "", "scales"], ["resized"], mode="nearest"),
            helper.make_node("Slice", ["resized", "starts", "ends", "axes"], ["sliced"]),
            helper.make_node("Add", ["sliced", "offset"], [out_name]),
        ],
        name=out_name,
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, INPUT, INPUT])],
        outputs=[helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", channels, S, S])],
        initializer=[
            helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, S / INPUT, S / INPUT]),
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [channels]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("offset", TensorProto.FLOAT, [], [add]),
        ],
    )
    # An opset and IR version every onnxruntime >= 1.17 runs.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def onnx_files(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "exported"
    src.mkdir()
    return {
        "geometry": make_onnx(src / "g.onnx", "position_map", 3, 1.0),
        "texture": make_onnx(src / "t.onnx", "albedo_map", 3, 0.5),
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "model_store"


def write(root: Path, onnx_files: dict[str, Path], version: str = "0.1.0", **overrides) -> Path:
    kwargs = dict(
        config={"lr": 1e-4, "epochs": 2, "backbone": "resnet18"},
        input_size=INPUT,
        uv_size=S,
        normalization={"center": [0.0, 1.5, 2.0], "scale": 12.5, "units": "cm"},
        camera={"type": "weak_perspective"},
        onnx_files=onnx_files,
        topology=synthetic_topology(),
        evaluation={"nme_aflw2000": 0.031},
    )
    kwargs.update(overrides)
    return write_model_store(root, "dualface", version, **kwargs)


def edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def replace_topology(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Rewrite topology.npz and its manifest entry, as a careless hand edit would."""
    path = folder / "topology.npz"
    np.savez(path, **arrays)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    edit_manifest(folder, lambda m: m["files"].update({path.name: {"sha256": digest, "bytes": path.stat().st_size}}))


# --- round trip ---------------------------------------------------------------------------------


def test_write_then_load_round_trips(root, onnx_files):
    folder = write(root, onnx_files)
    assert folder == root / "dualface" / "0.1.0"
    assert sorted(p.name for p in folder.iterdir()) == ["geometry.onnx", "manifest.json", "texture.onnx", "topology.npz"]
    assert (root / "manifest.schema.json").is_file()  # copied so the store reads on its own
    assert not [p for p in (root / "dualface").iterdir() if p.name.startswith(".")]  # no temp left

    store = load_model_store(folder)
    assert isinstance(store, ModelStore)
    assert (store.name, store.version, store.uv_size, store.input_size) == ("dualface", "0.1.0", S, INPUT)
    expected = synthetic_topology()
    assert store.topology.keys() == expected.keys()
    for key, array in expected.items():
        assert store.topology[key].dtype == array.dtype, key
        np.testing.assert_array_equal(store.topology[key], array, err_msg=key)
        assert not store.topology[key].flags.writeable

    m = store.manifest
    assert m["schema_version"] == 1
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", m["git_commit"])
    assert m["topology"] == {"file": "topology.npz", "vertices": len(expected["vertex_pixels"]),
                             "triangles": len(expected["triangles"])}
    assert m["normalization"]["scale"] == 12.5 and m["evaluation"] == {"nme_aflw2000": 0.031}
    for part, source in onnx_files.items():
        assert store.onnx_path(part).read_bytes() == source.read_bytes()
        assert m["files"][f"{part}.onnx"]["bytes"] == source.stat().st_size


def test_onnx_signatures_match_the_graphs(root, onnx_files):
    store = load_model_store(write(root, onnx_files))
    assert store.parts == ("geometry", "texture")
    assert store.onnx_inputs("geometry") == [{"name": "image", "shape": ["batch", 3, INPUT, INPUT], "dtype": "float32"}]
    assert store.onnx_input("geometry", "image") == store.onnx_inputs("geometry")[0]
    with pytest.raises(KeyError, match="geometry has no input 'p_t'"):
        store.onnx_input("geometry", "p_t")
    assert store.onnx_outputs("geometry") == [{"name": "position_map", "shape": ["batch", 3, S, S], "dtype": "float32"}]
    assert store.onnx_outputs("texture")[0]["name"] == "albedo_map"
    with pytest.raises(KeyError, match="no ONNX part 'normals'"):
        store.onnx_path("normals")


def test_stored_onnx_runs_in_onnxruntime(root, onnx_files):
    store = load_model_store(write(root, onnx_files))
    session = ort.InferenceSession(str(store.onnx_path("geometry")), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(1).random((2, 3, INPUT, INPUT), dtype=np.float32)
    (out,) = session.run(None, {"image": image})
    assert out.shape == (2, 3, S, S)
    np.testing.assert_allclose(out[:, :, ::2, ::2], image + 1.0)
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in store.onnx_inputs("geometry")]


def test_numpy_scalars_in_inputs_are_accepted(root, onnx_files):
    folder = write(root, onnx_files, normalization={"center": np.zeros(3), "scale": np.float32(2.0), "units": "cm"},
                   evaluation={"nme": np.float32(0.25)})
    assert load_model_store(folder).manifest["normalization"]["center"] == [0.0, 0.0, 0.0]


# --- tampering ----------------------------------------------------------------------------------


def test_modified_onnx_byte(root, onnx_files):
    folder = write(root, onnx_files)
    data = bytearray((folder / "texture.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "texture.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match=r"^texture\.onnx: sha256 mismatch \(manifest [0-9a-f]{8}…, file [0-9a-f]{8}…\)"):
        load_model_store(folder)


def test_truncated_file(root, onnx_files):
    folder = write(root, onnx_files)
    path = folder / "topology.npz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelStoreError, match=r"^topology\.npz: size mismatch"):
        load_model_store(folder)


def test_removed_file(root, onnx_files):
    folder = write(root, onnx_files)
    (folder / "geometry.onnx").unlink()
    with pytest.raises(ModelStoreError, match=r"geometry\.onnx: listed in manifest\.json but missing"):
        load_model_store(folder)


def test_unlisted_file(root, onnx_files):
    folder = write(root, onnx_files)
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(ModelStoreError, match=r"notes\.txt: not listed in manifest\.json"):
        load_model_store(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("created"), r"'created' is a required property"),
        (lambda m: m["normalization"].update(scale=0), r"/normalization/scale: 0 is less than or equal"),
        (lambda m: m["files"].update({"../x": m["files"]["topology.npz"]}), r"at /files: '\.\./x' does not match"),
        (lambda m: m.update(schema_version=2), r"/schema_version: 1 was expected"),
        (lambda m: m["model"].update(version="0.2.0"), r"version '0\.2\.0' does not match its folder dualface/0\.1\.0"),
        (lambda m: m["topology"].update(vertices=5), r"topology\.npz: uv_mask has \d+ valid pixels but the manifest says 5"),
    ],
    ids=["missing-field", "bad-scale", "path-in-files", "future-schema", "wrong-version", "wrong-vertex-count"],
)
def test_bad_manifest(root, onnx_files, edit, message):
    folder = write(root, onnx_files)
    edit_manifest(folder, edit)
    with pytest.raises(ModelStoreError, match=message) as info:
        load_model_store(folder)
    assert "manifest.json" in str(info.value) or "topology.npz" in str(info.value)


def test_manifest_not_json(root, onnx_files):
    folder = write(root, onnx_files)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(ModelStoreError, match=r"manifest\.json: not valid JSON"):
        load_model_store(folder)


def _tampered(topology: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    t = {k: v.copy() for k, v in topology.items()}
    if key == "mask_shape":
        t["uv_mask"] = t["uv_mask"][:, :-1]
    elif key == "triangle_range":
        t["triangles"][5, 2] = len(t["vertex_pixels"])
    elif key == "mirror_outside":
        t["mirror_map"][S // 2, S // 2] = 0  # pixel (0, 0) is outside the disc
    elif key == "triangles_int64":
        t["triangles"] = t["triangles"].astype(np.int64)
    elif key == "missing_key":
        del t["weight_mask"]
    elif key == "pixel_outside":
        t["vertex_pixels"][3] = [0, 0]
    elif key == "uv_coords":
        t["uv_coords"] = t["uv_coords"][:, ::-1].copy()
    elif key == "label_range":
        t["region_labels"][S // 2, S // 2] = 7
    elif key == "landmark_outside":
        t["landmarks_uv"][10] = [S, 1]
    elif key == "negative_weight":
        t["weight_mask"][S // 2, S // 2] = -1
    return t


@pytest.mark.parametrize(
    "key, message",
    [
        ("mask_shape", r"uv_mask: shape \(64, 63\), expected \(S=64, S=64\)"),
        ("triangle_range", r"triangles: triangle 5 \[.*\] indexes outside \[0, \d+\)"),
        ("mirror_outside", r"mirror_map: pixel \(row 32, col 32\) maps to flat index 0, which is outside uv_mask"),
        ("triangles_int64", r"triangles: dtype int64, expected int32"),
        ("missing_key", r"missing key\(s\) weight_mask"),
        ("pixel_outside", r"vertex_pixels: vertex 3 at \(row 0, col 0\) is outside uv_mask"),
        ("uv_coords", r"uv_coords: not the pixel centres"),
        ("label_range", r"region_labels: label 7 but only 3 region_names"),
        ("landmark_outside", r"landmarks_uv: values outside the map"),
        ("negative_weight", r"weight_mask: values must be finite and >= 0"),
    ],
)
def test_bad_topology(root, onnx_files, key, message):
    bad = _tampered(synthetic_topology(), key)
    if key == "missing_key":  # the writer refuses this one, so forge the store by hand
        folder = write(root, onnx_files)
        replace_topology(folder, bad)
    else:
        # The writer stores what it is given (the reader is the full check), so a bad topology
        # is caught when the store is loaded, with the sha256 of the bad file itself in order.
        folder = write(root, onnx_files, topology=bad)
    with pytest.raises(ModelStoreError, match=r"^topology\.npz: " + message):
        load_model_store(folder)


def test_check_topology_accepts_the_synthetic_one():
    check_topology(synthetic_topology(), S)
    with pytest.raises(ModelStoreError, match=r"uv_mask: shape \(64, 64\), expected \(S=128, S=128\)"):
        check_topology(synthetic_topology(), 128)


# --- writer behaviour ---------------------------------------------------------------------------


def test_refuses_to_overwrite(root, onnx_files):
    folder = write(root, onnx_files)
    before = (folder / "manifest.json").read_text()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write(root, onnx_files, evaluation={"nme_aflw2000": 0.5})
    assert (folder / "manifest.json").read_text() == before

    write(root, onnx_files, evaluation={"nme_aflw2000": 0.5}, overwrite=True)
    assert load_model_store(folder).manifest["evaluation"] == {"nme_aflw2000": 0.5}
    assert [p.name for p in (root / "dualface").iterdir()] == ["0.1.0"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"uv_size": 100}, r"/uv_size: 100 is not one of"),
        ({"camera": {"type": "fisheye"}}, r"/camera/type"),
        ({"config": {"lr": float("nan")}}, r"not plain JSON"),
        ({"topology": {}}, r"topology: missing key"),
    ],
)
def test_invalid_input_writes_nothing(root, onnx_files, overrides, message):
    with pytest.raises(ValueError, match=message):
        write(root, onnx_files, **overrides)
    # Validation happens before anything is created, so not even the model folder exists.
    assert not root.exists()


def test_failure_midway_leaves_no_folder(root, onnx_files, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        write(root, onnx_files)
    assert list((root / "dualface").iterdir()) == []


def test_rejects_a_file_that_is_not_onnx(root, onnx_files, tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"bogus\.onnx: not a valid ONNX model"):
        write(root, {**onnx_files, "texture": bogus})


# --- finding the store to serve -----------------------------------------------------------------


def test_find_picks_the_highest_version(root, onnx_files):
    for version in ["0.9.1", "0.10.0", "0.2.0"]:
        write(root, onnx_files, version=version)
    (root / "dualface" / ".0.11.0.partial-abc").mkdir()  # an export in progress is not a version
    assert find_model_store(root) == root / "dualface" / "0.10.0"
    assert find_model_store(root, "dualface", "0.9.1") == root / "dualface" / "0.9.1"
    assert load_model_store(find_model_store(root)).version == "0.10.0"


def test_find_needs_a_name_when_several_models(root, onnx_files):
    write(root, onnx_files)
    shutil.copytree(root / "dualface", root / "other")
    with pytest.raises(ModelStoreError, match="expected exactly one model, found dualface, other"):
        find_model_store(root)
    assert find_model_store(root, "other") == root / "other" / "0.1.0"
    with pytest.raises(ModelStoreError, match="no version '9.9'"):
        find_model_store(root, "dualface", "9.9")


def test_schema_path_argument(root, onnx_files, tmp_path):
    folder = write(root, onnx_files)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(root / "dualface", moved / "dualface")
    with pytest.raises(ModelStoreError, match="schema not found"):
        load_model_store(moved / "dualface" / "0.1.0")
    repo_schema = Path(__file__).resolve().parents[1] / "model_store" / "manifest.schema.json"
    assert load_model_store(moved / "dualface" / "0.1.0", schema_path=repo_schema).version == "0.1.0"
    assert not folder.exists()


def test_find_in_an_empty_root_says_how_to_get_a_model(tmp_path):
    with pytest.raises(ModelStoreError, match="holds no model; export one with `python -m training.export`"):
        find_model_store(tmp_path)
