"""The `photo` texture's landmark alignment in UV: zero for the mesh's own landmarks, the photo-pixel
offset times the local scale for shifted ones, on a known placed face."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def placed(tiny_topology, kit):
    from service.engine.align import Crop
    from service.engine.unwrap import unwrap
    from test_evaluate_texture import placed_face
    from training.facemodel import UVFaceModel

    neutral = UVFaceModel.build(tiny_topology.size, kit).identity_map().transpose(2, 0, 1)
    geo = placed_face(neutral, tiny_topology, Crop(np.zeros((3, 64, 64), np.float32), origin=(30.0, 20.0), step=3.0))
    return geo, unwrap(geo, tiny_topology)


def test_the_meshs_own_landmarks_land_on_its_uv_landmarks(placed, tiny_topology):
    from training.evaluate.uv_alignment import INNER, uv_distances

    geo, unwrapped = placed
    d = uv_distances(geo, unwrapped, tiny_topology, geo.landmarks_photo[:, :2], 256)
    seen = d["mesh_seen"][INNER]
    assert seen.mean() > 0.8
    assert np.median(d["texels"][INNER][seen]) < 0.25 and np.quantile(d["texels"][INNER][seen], 0.9) < 0.75
    assert (d["gap_px"][INNER][seen] < 1.0).all()


def test_a_shift_in_the_photo_moves_the_uv_by_the_local_scale(placed, tiny_topology):
    from training.evaluate.uv_alignment import INNER, uv_distances

    geo, unwrapped = placed
    own = geo.landmarks_photo[:, :2]
    d = uv_distances(geo, unwrapped, tiny_topology, own + [0.0, 2.0], 256)  # two photo pixels down
    seen = d["mesh_seen"][INNER] & (d["gap_px"][INNER] < 1.0)
    ratio = d["texels"][INNER][seen] / (2.0 * d["texels_per_px"][INNER][seen])
    assert seen.sum() > 30 and 0.8 < np.median(ratio) < 1.2
    at_512 = uv_distances(geo, unwrapped, tiny_topology, own + [0.0, 2.0], 512)  # texels scale with the texture side
    assert np.median(at_512["texels"][INNER][seen] / d["texels"][INNER][seen]) == pytest.approx(2.0, rel=0.1)


def test_the_cli_scores_or_reports_every_annotated_face(tiny_model, tmp_path):
    import json
    import shutil

    from service_fixtures import PHOTOS
    from training.evaluate.__main__ import main

    data = PHOTOS.parent / "aflw2000-dev"
    if not (PHOTOS / "takeo.pts").is_file() or not data.is_dir():
        pytest.skip(f"real photos or AFLW2000-3D dev absent under {PHOTOS.parent}")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("takeo.ppm", "takeo.pts", "trump.jpg"):  # trump has no .pts: not scored, not counted
        shutil.copy(PHOTOS / name, folder / name)
    main(["uv-alignment", "--model", str(tiny_model), "--photos", str(folder), "--aflw", str(data), "--limit", "2",
          "--size", "128", "--out", str(tmp_path / "reports")])
    report = json.loads((tmp_path / "reports" / "uv_alignment.json").read_text())
    sets = report["sets"]
    assert report["size"] == 128 and set(sets) == {"photos", data.name}
    assert sets["photos"]["n"] + sets[data.name]["n"] + len(report["failures"]) == 3
    assert "| photos |" in (tmp_path / "reports" / "uv_alignment.md").read_text()
