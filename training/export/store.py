"""Writing a model store: ``<root>/<model>/<version>/`` as described in ``model_store/README.md``.

The service reads the store without importing anything from ``training``; the manifest schema
``model_store/manifest.schema.json`` is the only shared definition. The full topology checks live
in the reader (``service.model_store.check_topology``); this writer checks what it needs to write
a consistent manifest and leaves the rest to the reader, which tests run on every written store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import numpy as np
import onnx

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "model_store" / "manifest.schema.json"
SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOPOLOGY_FILE = "topology.npz"
TOPOLOGY_KEYS = (
    "uv_mask", "vertex_pixels", "uv_coords", "triangles", "landmarks_uv",
    "region_labels", "region_names", "weight_mask", "mirror_map",
)


def write_model_store(
    root: str | Path,
    name: str,
    version: str,
    *,
    config: Mapping[str, Any],
    input_size: int,
    uv_size: int,
    normalization: Mapping[str, Any],
    camera: Mapping[str, Any],
    onnx_files: Mapping[str, str | Path],
    topology: Mapping[str, np.ndarray],
    evaluation: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``<root>/<name>/<version>/`` and return that folder.

    Args:
        root: the store root (normally the repository's ``model_store``).
        name, version: model slug and version string; they become the folder names.
        config: the training config (JSON-serialisable).
        input_size: side in pixels of the square input image.
        uv_size: S, the side of the S x S UV maps (64, 128 or 256).
        normalization: {"center": 3 numbers, "scale": number > 0, "units": e.g. "cm"};
            canonical = (ict_position - center) / scale.
        camera: {"type": "weak_perspective" | "perspective", other numeric parameters}.
        onnx_files: part name ("geometry", "texture", ...) -> existing .onnx file; each is
            copied in as ``<part>.onnx``.
        topology: the arrays of ``topology.npz`` (see the README for keys, dtypes and shapes);
            extra keys are stored as given.
        evaluation: figures the model is released with; stored as {} when None.
        overwrite: replace an existing version instead of refusing.

    Raises:
        FileExistsError: the version exists and ``overwrite`` is False.
        ValueError: the inputs do not make a valid manifest, an ONNX file is unusable, or a
            topology array is missing or needs pickle.

    Everything is written into a hidden temporary folder next to the target and renamed into place
    only once complete, so a crash never leaves a half-written ``<version>`` folder behind.
    """
    root = Path(root)
    model_dir = root / name
    target = model_dir / version
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: model {name!r} version {version!r} exists; pass overwrite=True to replace it")

    missing = [key for key in TOPOLOGY_KEYS if key not in topology]
    if missing:
        raise ValueError(f"topology: missing key(s) {', '.join(missing)}")
    arrays = {key: np.asarray(value) for key, value in topology.items()}
    needs_pickle = [key for key, array in arrays.items() if array.dtype.hasobject]
    if needs_pickle:
        raise ValueError(f"topology: {', '.join(needs_pickle)} hold Python objects; the reader loads without pickle")

    onnx_specs = {part: _onnx_signature(Path(path)) for part, path in onnx_files.items()}
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": name, "version": version},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "config": dict(config),
        "input_size": input_size,
        "uv_size": uv_size,
        "normalization": dict(normalization),
        "camera": dict(camera),
        "onnx": {part: {"file": f"{part}.onnx", **spec} for part, spec in onnx_specs.items()},
        "files": {},
        "topology": {
            "file": TOPOLOGY_FILE,
            "vertices": int(len(arrays["vertex_pixels"])),
            "triangles": int(len(arrays["triangles"])),
        },
        "evaluation": dict(evaluation or {}),
    }
    # Round-trip through JSON first so numpy scalars become plain numbers before validation, and
    # NaN (not JSON) is refused here rather than by some other reader later.
    try:
        manifest = json.loads(json.dumps(manifest, allow_nan=False, default=_numpy_to_json))
    except (TypeError, ValueError) as error:
        raise ValueError(f"manifest is not plain JSON: {error}") from None
    # Validate before writing anything; 'files' is filled in later, so check with a stand-in entry.
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    _validate(schema, {**manifest, "files": {TOPOLOGY_FILE: {"sha256": "0" * 64, "bytes": 0}}})

    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=model_dir))
    try:
        for part, source in onnx_files.items():
            shutil.copyfile(source, tmp / f"{part}.onnx")
        np.savez_compressed(tmp / TOPOLOGY_FILE, **arrays)
        manifest["files"] = {
            p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())
        }
        _validate(schema, manifest)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the service may run as another user
        _move_into_place(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _ensure_schema_beside(root)
    return target


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target``; an old ``target`` is moved aside first and deleted after."""
    old = None
    if target.exists():
        if not overwrite:  # appeared while we were writing
            raise FileExistsError(f"{target}: exists; pass overwrite=True to replace it")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    try:
        # Fails (rather than merging) if another writer created target meanwhile.
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old)


def _ensure_schema_beside(root: Path) -> None:
    """Copy the schema into ``root`` when it has none, so a store outside the repo is readable."""
    beside = root / SCHEMA_PATH.name
    if not beside.exists():
        shutil.copyfile(SCHEMA_PATH, beside)


def _onnx_signature(path: Path) -> dict[str, list[dict[str, Any]]]:
    """{"inputs": [...], "outputs": [...]}, each {"name", "shape", "dtype"}; dynamic axes by name."""
    if not path.is_file():
        raise ValueError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as error:  # onnx raises several unrelated types for a bad file
        raise ValueError(f"{path}: not a valid ONNX model ({error})") from None
    # Only the .onnx file is copied, so weights kept in side files would be lost.
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ValueError(f"{path}: keeps weights in external data files; save it as a single file")
    graph = model.graph
    # Before IR version 4 initializers were also listed as graph inputs; they are not fed.
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    return {
        "inputs": [_tensor_spec(v, path) for v in inputs],
        "outputs": [_tensor_spec(v, path) for v in graph.output],
    }


def _tensor_spec(value: onnx.ValueInfoProto, path: Path) -> dict[str, Any]:
    if value.type.WhichOneof("value") != "tensor_type":
        raise ValueError(f"{path}: graph input/output {value.name!r} is not a tensor")
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        raise ValueError(f"{path}: graph input/output {value.name!r} has no known rank")
    shape: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            shape.append(dim.dim_param)
        else:
            shape.append("?")  # dynamic and unnamed
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    return {"name": value.name, "shape": shape, "dtype": dtype}


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def _validate(schema: dict[str, Any], manifest: dict[str, Any]) -> None:
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"/{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])
        raise ValueError(f"manifest does not match {SCHEMA_PATH.name}: {details}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _numpy_to_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
