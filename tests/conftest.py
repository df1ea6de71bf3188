from pathlib import Path

import pytest

from training.facemodel import FaceKit, UVFaceModel, facekit_path


@pytest.fixture(scope="session")
def kit() -> FaceKit:
    path = facekit_path()
    if not path.is_file():
        pytest.skip(f"ICT-FaceKit not found at {path} (set FACEKIT_PATH to ict_facekit.npz)")
    return FaceKit.load(path)


@pytest.fixture(scope="session")
def uv_models(kit) -> dict[int, UVFaceModel]:
    return {s: UVFaceModel.build(s, kit) for s in (64, 128, 256)}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, kit) -> Path:
    """The tiny seeded model store's version folder (``service_fixtures.tiny_store``)."""
    from service_fixtures import tiny_store

    return tiny_store(tmp_path_factory, kit) / "tiny" / "0.0.1"


@pytest.fixture(scope="session")
def tiny_topology(tiny_model):
    """The tiny store's topology as the service reads it (``service.engine.topology.MeshTopology``)."""
    from service.engine.topology import MeshTopology
    from service.model_store import load_model_store

    return MeshTopology.from_store(load_model_store(tiny_model))
