"""The viewer page over plain HTTP: GET / is HTML, the three.js its import map names is served from
service/viewer/node_modules, none of it is in the API schema, and a missing build is explained."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

import service.viewer
from service.app import create_app
from service.engine.morph import read_glb
from service.settings import Settings
from service_fixtures import build_viewer, encode, noise_image, tiny_client


@pytest.fixture(scope="module")
def client(tmp_path_factory, kit):
    build_viewer()
    with tiny_client(tmp_path_factory, kit, "viewer_http_jobs") as test_client:
        yield test_client


def import_map(page: str) -> dict[str, str]:
    match = re.search(r'<script type="importmap">(.*?)</script>', page, re.DOTALL)
    assert match, "no import map in the page"
    return json.loads(match.group(1))["imports"]


def test_the_page_and_its_own_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="viewer/viewer.js"' in page.text and 'data-state="starting"' in page.text
    for path, media_type in [("/viewer/viewer.js", "javascript"), ("/viewer/viewer.css", "text/css")]:
        asset = client.get(path)
        assert asset.status_code == 200 and media_type in asset.headers["content-type"], path


def test_the_expression_sliders_name_targets_the_glb_carries(client):
    page = client.get("/").text
    sliders = re.findall(r'<input id="([^"]+)" type="range"[^>]*?data-targets="([^"]+)"', page, re.DOTALL)
    assert [id_ for id_, _ in sliders] == ["morph-jaw", "morph-smile", "morph-blink"], sliders
    for id_, _ in sliders:  # each has a label and a read-out of its value
        assert f'<label for="{id_}">' in page and f'<output for="{id_}">' in page, id_
    assert re.search(r'<fieldset id="morphs"[^>]*\bhidden\b', page)  # until a GLB with targets is shown
    # What the page asks for (morph_targets=true) gives these names in the mesh's extras.targetNames.
    glb = client.post("/v1/reconstruct", files={"image": ("face", encode(noise_image(), "PNG"))},
                      data={"box": "40,30,160,150", "format": "glb", "texture_size": "16", "morph_targets": "true"})
    assert glb.status_code == 200, glb.text
    # The face carries the targets; its eyeballs (the second mesh) none.
    (mesh,) = [m for m in read_glb(glb.content)[0]["meshes"] if "targetNames" in m.get("extras", {})]
    names = set(mesh["extras"]["targetNames"])
    for id_, targets in sliders:
        assert set(targets.split()) <= names, (id_, targets)


def test_the_vendor_javascript_is_served_from_npm(client):
    imports = import_map(client.get("/").text)
    addons = imports["three/addons/"]
    for url in [imports["three"], addons + "loaders/GLTFLoader.js", addons + "controls/OrbitControls.js"]:
        assert url.startswith("./viewer/vendor/"), url  # relative, and from this server only
        script = client.get(url[1:])
        assert script.status_code == 200 and "javascript" in script.headers["content-type"], url
        assert len(script.content) > 10_000, url
    assert "REVISION = '187'" in client.get("/viewer/vendor/three/build/three.core.js").text  # as package.json pins


def test_the_viewer_is_not_in_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/viewer")], list(paths)


def test_a_missing_build_is_explained_not_a_500(tmp_path, monkeypatch):
    monkeypatch.setattr(service.viewer, "VENDOR", tmp_path / "node_modules")
    # No lifespan (no model, no job store): the page must not need them.
    client = TestClient(create_app(Settings(model_store=tmp_path / "no-store")), raise_server_exceptions=False)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "have not been built" in page.text and "make viewer" in page.text
    vendor = client.get("/viewer/vendor/three/build/three.module.js")
    assert vendor.status_code == 404 and vendor.headers["content-type"].startswith("application/problem+json")


def test_api_docs_take_swagger_ui_from_the_npm_build_not_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/viewer/vendor/swagger-ui-dist/") for a in assets), assets
    for path in assets:
        assert client.get(path).status_code == 200, path
    assert "'/openapi.json'" in page.text and client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would need a CDN
