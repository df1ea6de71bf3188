"""GLBs from /v1/reconstruct pass the Khronos glTF validator (npm `gltf-validator`) with zero errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from service.engine.eyes import EYE_TEXTURE_SIZE
from service_fixtures import encode, noise_image, photo_path, tiny_client

GLTF_DIR = Path(__file__).parent / "gltf"


@pytest.fixture(scope="module")
def validate(tmp_path_factory):
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip("node and npm are needed to run the Khronos glTF validator (npm package gltf-validator)")
    # The lockfile pins the validator; `npm ci` installs exactly that into tests/gltf/node_modules.
    installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=GLTF_DIR, capture_output=True,
                               text=True, timeout=300)
    assert installed.returncode == 0, f"npm ci failed in {GLTF_DIR}:\n{installed.stderr}"
    folder = tmp_path_factory.mktemp("glb")

    def run(glb: bytes) -> dict:
        path = folder / "face.glb"
        path.write_bytes(glb)
        out = subprocess.run([node, str(GLTF_DIR / "validate.js"), str(path)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    return run


@pytest.fixture(scope="module")
def client(tmp_path_factory, kit):
    with tiny_client(tmp_path_factory, kit, "gltf_jobs", default_texture_size=64) as test_client:
        yield test_client


def reconstruct(client, image: bytes, **options) -> bytes:
    response = client.post("/v1/reconstruct", files={"image": ("face", image, "application/octet-stream")},
                           data={"format": "glb", **options})
    assert response.status_code == 200, response.text
    return response.content


def photo(name: str) -> bytes:
    path = photo_path(name)
    if not path.is_file():
        pytest.skip(f"real photo {path} absent")
    return path.read_bytes()


@pytest.mark.parametrize("case", ["caller box", "photo texture", "real photo", "two faces", "identity mesh",
                                  "morph targets", "two faces with morph targets", "identity mesh with morph targets",
                                  "head", "head with morph targets"])
def test_glb_validates_with_zero_errors(client, validate, case):
    boxed = {"box": "40,30,160,150"}
    image, options = {
        "caller box": (encode(noise_image(), "PNG"), boxed),
        "photo texture": (encode(noise_image(), "PNG"), {**boxed, "texture": "photo"}),
        "real photo": (lambda: photo("JianzhuGuo.jpg"), {"texture": "shaded"}),
        "two faces": (lambda: photo("trump_hillary.jpg"), {"faces": "all"}),
        "identity mesh": (encode(noise_image(), "PNG"), {**boxed, "mesh": "identity"}),
        "morph targets": (lambda: photo("JianzhuGuo.jpg"), {"morph_targets": "true"}),
        "two faces with morph targets": (lambda: photo("trump_hillary.jpg"), {"faces": "all", "morph_targets": "true"}),
        "identity mesh with morph targets": (encode(noise_image(), "PNG"), {**boxed, "mesh": "identity",
                                                                            "morph_targets": "true"}),
        "head": (lambda: photo("JianzhuGuo.jpg"), {"region": "head"}),
        "head with morph targets": (lambda: photo("JianzhuGuo.jpg"), {"region": "head", "morph_targets": "true"}),
    }[case]
    image = image() if callable(image) else image
    report = validate(reconstruct(client, image, **options))
    issues = report["issues"]
    # Errors fail the glTF; warnings and hints are held to zero too, so that a regression shows.
    assert issues["numErrors"] == issues["numWarnings"] == issues["numHints"] == 0, \
        json.dumps(issues["messages"], indent=1)
    images = [r for r in report["info"]["resources"] if r["pointer"].startswith("/images/")]
    # The validator decoded the textures: the face's at texture_size, the eyeballs' at EYE_TEXTURE_SIZE.
    assert images and sorted({r["image"]["width"] for r in images}) == [64, EYE_TEXTURE_SIZE]
    # A face is two meshes in ICT's topology: the face and its eyeballs.
    assert report["info"]["drawCallCount"] == 2 * (2 if case.startswith("two faces") else 1)
    assert report["info"]["hasMorphTargets"] == ("morph targets" in case)
