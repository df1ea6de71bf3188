"""Reading and verifying a model store: ``model_store/<model>/<version>/``.

The service trusts nothing in the folder until it has checked it against the contract in
``model_store/README.md``: the manifest against ``manifest.schema.json``, every file against its
sha256 and size, and ``topology.npz`` against the invariants the mesh code relies on. Only numpy
and jsonschema are used here; the service has no onnx or torch.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

SCHEMA_FILE = "manifest.schema.json"
MANIFEST_FILE = "manifest.json"
N_LANDMARKS = 68

# key -> (dtype kind or exact dtype, shape); "S" is uv_size, "V"/"F"/"R" are counts.
_TOPOLOGY_KEYS: dict[str, tuple[str, tuple[str | int, ...]]] = {
    "uv_mask": ("bool", ("S", "S")),
    "vertex_pixels": ("int32", ("V", 2)),
    "uv_coords": ("float32", ("V", 2)),
    "triangles": ("int32", ("F", 3)),
    "landmarks_uv": ("float32", (N_LANDMARKS, 2)),
    "region_labels": ("uint8", ("S", "S")),
    "region_names": ("unicode", ("R",)),
    "weight_mask": ("float32", ("S", "S")),
    "mirror_map": ("int32", ("S", "S")),
}
TOPOLOGY_KEYS = tuple(_TOPOLOGY_KEYS)


class ModelStoreError(Exception):
    """A model store is missing, malformed or does not match its manifest."""


@dataclass(frozen=True, eq=False)
class ModelStore:
    """A verified model store.

    Attributes:
        path: the version folder ``<root>/<model>/<version>``.
        manifest: the parsed ``manifest.json`` (treat as read-only).
        topology: every array of ``topology.npz``, read-only; S = uv_size, V = vertices,
            F = triangles, R = number of regions:
            uv_mask (S, S) bool, vertex_pixels (V, 2) int32, uv_coords (V, 2) float32,
            triangles (F, 3) int32, landmarks_uv (68, 2) float32, region_labels (S, S) uint8,
            region_names (R,) unicode, weight_mask (S, S) float32, mirror_map (S, S) int32,
            plus any extra keys the trainer stored.
    """

    path: Path
    manifest: dict[str, Any]
    topology: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def version(self) -> str:
        return self.manifest["model"]["version"]

    @property
    def uv_size(self) -> int:
        return self.manifest["uv_size"]

    @property
    def input_size(self) -> int:
        return self.manifest["input_size"]

    @property
    def parts(self) -> tuple[str, ...]:
        """Names of the ONNX model parts, e.g. ("geometry", "texture")."""
        return tuple(self.manifest["onnx"])

    def onnx_path(self, part: str) -> Path:
        """Path of the ONNX file of ``part`` ("geometry", "texture", ...)."""
        return self.path / self._part(part)["file"]

    def onnx_inputs(self, part: str) -> list[dict[str, Any]]:
        """The part's graph inputs as recorded: [{"name", "shape", "dtype"}, ...]."""
        return self._part(part)["inputs"]

    def onnx_input(self, part: str, name: str) -> dict[str, Any]:
        """The part's graph input ``name`` as recorded: {"name", "shape", "dtype"}; KeyError if it has none."""
        for spec in self.onnx_inputs(part):
            if spec["name"] == name:
                return spec
        raise KeyError(f"{part} has no input {name!r}")

    def onnx_outputs(self, part: str) -> list[dict[str, Any]]:
        """The part's graph outputs as recorded: [{"name", "shape", "dtype"}, ...]."""
        return self._part(part)["outputs"]

    def _part(self, part: str) -> dict[str, Any]:
        try:
            return self.manifest["onnx"][part]
        except KeyError:
            raise KeyError(f"{self.path}: no ONNX part {part!r}; it has {list(self.parts)}") from None


def load_model_store(path: str | Path, schema_path: str | Path | None = None) -> ModelStore:
    """Load the version folder ``path`` and verify it completely, or raise :class:`ModelStoreError`.

    ``schema_path`` defaults to ``manifest.schema.json`` in the store root, the folder two levels
    above ``path`` (``<root>/<model>/<version>``).
    """
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise ModelStoreError(f"{folder}: not a model-store version folder (no such directory)")
    manifest = _read_manifest(folder)
    schema_path = Path(schema_path) if schema_path is not None else folder.parent.parent / SCHEMA_FILE
    _validate_manifest(manifest, _read_schema(schema_path), folder)

    # The folder names are what find_model_store selects by; a manifest that disagrees would make
    # the service report a model other than the one it picked.
    expected = (folder.parent.name, folder.name)
    actual = (manifest["model"]["name"], manifest["model"]["version"])
    if actual != expected:
        raise ModelStoreError(
            f"{folder / MANIFEST_FILE}: model {actual[0]!r} version {actual[1]!r} does not match "
            f"its folder {expected[0]}/{expected[1]}"
        )
    _verify_files(folder, manifest)

    topology = _read_topology(folder / manifest["topology"]["file"])
    check_topology(
        topology,
        manifest["uv_size"],
        vertices=manifest["topology"]["vertices"],
        triangles=manifest["topology"]["triangles"],
    )
    for array in topology.values():
        # One store is shared by every request; a handler must not be able to alter it.
        array.flags.writeable = False
    return ModelStore(path=folder, manifest=manifest, topology=topology)


def find_model_store(root: str | Path, name: str | None = None, version: str | None = None) -> Path:
    """The version folder to serve under ``root``: ``<root>/<name>/<version>``.

    Without ``name`` the root must hold exactly one model. Without ``version`` the highest version
    is taken: dotted numbers ("0.10.0") compare numerically and rank above any other names, which
    compare as strings. Folders starting with "." (e.g. an export in progress) are ignored. The
    folder is only located, not verified; pass it to :func:`load_model_store`.
    """
    root = Path(root)
    if not root.is_dir():
        raise ModelStoreError(f"{root}: model-store root does not exist")
    if name is None:
        models = _subfolders(root)
        if not models:
            raise ModelStoreError(f"{root}: holds no model; export one with `python -m training.export`")
        if len(models) != 1:
            found = ", ".join(p.name for p in models)
            raise ModelStoreError(f"{root}: expected exactly one model, found {found}; name one")
        model_dir = models[0]
    else:
        model_dir = root / name
        if not model_dir.is_dir():
            raise ModelStoreError(f"{model_dir}: no model {name!r} in {root}")
    if version is not None:
        chosen = model_dir / version
        if not chosen.is_dir():
            raise ModelStoreError(f"{chosen}: no version {version!r} of model {model_dir.name!r}")
        return chosen
    versions = _subfolders(model_dir)
    if not versions:
        raise ModelStoreError(f"{model_dir}: model {model_dir.name!r} has no versions")
    return max(versions, key=lambda p: version_key(p.name))


def version_key(version: str) -> tuple:
    """Sort key: dotted numbers numerically ("0.9.1" < "0.10.0"), above any other names."""
    if re.fullmatch(r"\d+(\.\d+)*", version):
        return (1, tuple(int(part) for part in version.split(".")), version)
    return (0, (), version)


def check_topology(
    topology: dict[str, np.ndarray], uv_size: int, *, vertices: int | None = None, triangles: int | None = None
) -> None:
    """Raise :class:`ModelStoreError` unless ``topology`` meets the contract for S = ``uv_size``.

    ``vertices`` and ``triangles`` are the manifest's V and F, checked when given.
    """
    missing = [key for key in TOPOLOGY_KEYS if key not in topology]
    if missing:
        raise _topology_error(f"missing key(s) {', '.join(missing)}")
    size = int(uv_size)
    mask = topology["uv_mask"]
    counts = {
        "S": size,
        "V": int(mask.sum()) if mask.shape == (size, size) else None,
        "F": len(topology["triangles"]),
        "R": len(topology["region_names"]),
    }
    for key, (dtype, shape) in _TOPOLOGY_KEYS.items():
        array = topology[key]
        ok_dtype = array.dtype.kind == "U" if dtype == "unicode" else array.dtype == np.dtype(dtype)
        if not ok_dtype:
            raise _topology_error(f"{key}: dtype {array.dtype}, expected {dtype}")
        want = tuple(counts[d] if isinstance(d, str) else d for d in shape)
        if array.shape != want:
            named = "(" + ", ".join(f"{d}={counts[d]}" if isinstance(d, str) else str(d) for d in shape) + ")"
            raise _topology_error(f"{key}: shape {array.shape}, expected {named}")
    n_vertices, n_triangles = counts["V"], counts["F"]
    if vertices is not None and n_vertices != vertices:
        raise _topology_error(f"uv_mask has {n_vertices} valid pixels but the manifest says {vertices} vertices")
    if triangles is not None and n_triangles != triangles:
        raise _topology_error(f"{n_triangles} triangles but the manifest says {triangles}")

    pixels = topology["vertex_pixels"]
    if n_vertices == 0:
        raise _topology_error("uv_mask has no valid pixel")
    if pixels.min() < 0 or pixels.max() >= size:
        raise _topology_error(f"vertex_pixels: values outside [0, {size})")
    outside = np.flatnonzero(~mask[pixels[:, 0], pixels[:, 1]])
    if outside.size:
        r, c = pixels[outside[0]]
        raise _topology_error(f"vertex_pixels: vertex {outside[0]} at (row {r}, col {c}) is outside uv_mask")
    # Row-major order is what makes "the UV map is the mesh" exact: vertices == map[uv_mask].
    if not np.array_equal(pixels, np.argwhere(mask)):
        raise _topology_error("vertex_pixels: must list the uv_mask pixels once each in row-major order")

    expected_uv = np.stack([(pixels[:, 1] + 0.5) / size, 1.0 - (pixels[:, 0] + 0.5) / size], 1)
    if not np.allclose(topology["uv_coords"], expected_uv, rtol=0, atol=1e-6):
        raise _topology_error("uv_coords: not the pixel centres (u = (col+0.5)/S, v = 1 - (row+0.5)/S)")

    tris = topology["triangles"]
    if n_triangles == 0:
        raise _topology_error("triangles: empty")
    if tris.min() < 0 or tris.max() >= n_vertices:
        bad = int(np.flatnonzero((tris < 0).any(1) | (tris >= n_vertices).any(1))[0])
        raise _topology_error(f"triangles: triangle {bad} {tris[bad].tolist()} indexes outside [0, {n_vertices})")
    degenerate = (tris[:, 0] == tris[:, 1]) | (tris[:, 1] == tris[:, 2]) | (tris[:, 0] == tris[:, 2])
    if degenerate.any():
        raise _topology_error(f"triangles: triangle {int(np.flatnonzero(degenerate)[0])} repeats a vertex")

    landmarks = topology["landmarks_uv"]
    # Pixel centres sit at integer coordinates, so the map covers [-0.5, S - 0.5] on both axes.
    if not np.isfinite(landmarks).all() or landmarks.min() < -0.5 or landmarks.max() > size - 0.5:
        raise _topology_error(f"landmarks_uv: values outside the map [-0.5, {size - 0.5}]")

    names, labels = topology["region_names"], topology["region_labels"]
    if len(names) == 0 or names[0] != "outside":
        raise _topology_error('region_names: label 0 must be "outside"')
    if labels.max() >= len(names):
        raise _topology_error(f"region_labels: label {labels.max()} but only {len(names)} region_names")
    if not np.array_equal(labels == 0, ~mask):
        raise _topology_error('region_labels: label 0 ("outside") must be exactly the pixels outside uv_mask')

    weights = topology["weight_mask"]
    if not np.isfinite(weights).all() or weights.min() < 0:
        raise _topology_error("weight_mask: values must be finite and >= 0")

    mirror = topology["mirror_map"]
    if mirror.min() < -1 or mirror.max() >= size * size:
        raise _topology_error(f"mirror_map: values must be -1 or flat indices in [0, {size * size})")
    targets = mirror[mirror >= 0]
    if not mask.ravel()[targets].all():
        rows, cols = np.nonzero((mirror >= 0) & ~mask.ravel()[np.maximum(mirror, 0)])
        raise _topology_error(
            f"mirror_map: pixel (row {rows[0]}, col {cols[0]}) maps to flat index "
            f"{mirror[rows[0], cols[0]]}, which is outside uv_mask"
        )


def _topology_error(message: str) -> ModelStoreError:
    return ModelStoreError(f"topology.npz: {message}")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelStoreError(f"{path}: missing; {folder} is not a model store") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelStoreError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ModelStoreError(f"{path}: must hold a JSON object")
    return manifest


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
    except FileNotFoundError:
        raise ModelStoreError(
            f"{path}: schema not found; expected {SCHEMA_FILE} in the store root, or pass schema_path"
        ) from None
    except (json.JSONDecodeError, jsonschema.SchemaError) as error:
        raise ModelStoreError(f"{path}: not a valid JSON Schema ({error})") from None
    return schema


def _validate_manifest(manifest: dict[str, Any], schema: dict[str, Any], folder: Path) -> None:
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        lines = [f"  at /{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10]]
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise ModelStoreError(
            f"{folder / MANIFEST_FILE}: does not match {SCHEMA_FILE}:\n" + "\n".join(lines) + more
        )


def _verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    listed = manifest["files"]
    referenced = [part["file"] for part in manifest["onnx"].values()] + [manifest["topology"]["file"]]
    for name in referenced:
        if name not in listed:
            raise ModelStoreError(f"{folder / MANIFEST_FILE}: {name} is used but not listed in 'files'")
    unlisted = sorted({p.name for p in folder.iterdir()} - {MANIFEST_FILE} - set(listed))
    if unlisted:
        raise ModelStoreError(
            f"{folder / unlisted[0]}: not listed in manifest.json 'files'; every file of the folder must be"
        )
    for name, entry in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise ModelStoreError(f"{path}: listed in manifest.json but missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise ModelStoreError(
                f"{name}: size mismatch (manifest {entry['bytes']} bytes, file {size} bytes)"
                " — the file was modified, truncated or corrupted"
            )
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise ModelStoreError(
                f"{name}: sha256 mismatch (manifest {entry['sha256'][:8]}…, file {digest[:8]}…)"
                " — the file was modified or corrupted"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_topology(path: Path) -> dict[str, np.ndarray]:
    try:
        # No pickles: a store must not be able to run code in the service.
        npz = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ModelStoreError(f"{path.name}: not an .npz file numpy can load without pickle ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ModelStoreError(f"{path.name}: not a readable .npz file ({error})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ModelStoreError(f"{path.name}: a single .npy array, expected an .npz archive of named arrays")
    with npz:
        try:
            return {key: npz[key] for key in npz.files}
        except ValueError as error:
            raise ModelStoreError(f"{path.name}: an array needs pickle to load ({error})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise ModelStoreError(f"{path.name}: an array cannot be read ({error})") from None
