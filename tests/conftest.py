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
