"""AFLW2000-3D protocol code: hand-made samples with known NME, and the CLI on a few real images."""

from pathlib import Path

import numpy as np
import pytest

from training.evaluate import aflw2000

DATA = Path(__file__).resolve().parents[2] / "shared" / "eval" / "aflw2000-dev"


def fake_sample(name, yaw, seed=0):
    rng = np.random.default_rng(seed)
    lm = np.c_[rng.random((68, 2)) * 100, rng.random(68) * 10]
    lm[0, :2], lm[1, :2] = [0, 0], [100, 100]
    image = np.full((120, 120, 3), seed, np.uint8)  # the seed in the pixels tells the samples apart
    return aflw2000.Sample(name, image, lm, yaw)


def test_known_shift_gives_known_nme_per_bin():
    samples = [fake_sample("a", 10), fake_sample("b", -45, 1), fake_sample("c", 80, 2)]
    truth = {int(s.image[0, 0, 0]): s.landmarks for s in samples}
    shift = {0: 1.0, 1: 2.0, 2: 3.0}

    result = aflw2000.evaluate(lambda img, box: truth[img[0, 0, 0]][:, :2] + [shift[img[0, 0, 0]], 0.0], samples)
    t = result["nme_2d"]
    assert t["bins"] == pytest.approx({"[0,30)": 0.01, "[30,60)": 0.02, "[60,90]": 0.03})
    assert t["bin_mean"] == pytest.approx(0.02) and result["nme_3d"] is None


def test_parts_are_scored_against_the_whole_face_box():
    """A 4-px shift of the 17 jaw points in a 100-px box: 4 % on the jaw, nothing elsewhere, 1 % overall."""
    sample = fake_sample("a", 10)
    moved = sample.landmarks[:, :2].copy()
    moved[:17, 0] += 4.0

    result = aflw2000.evaluate(lambda img, box: moved, [sample])
    parts = {part: t["overall"] for part, t in result["nme_2d_by_part"].items()}
    assert parts == pytest.approx({"jaw": 0.04, "brows": 0, "nose": 0, "eyes": 0, "mouth": 0,
                                   "jaw turned away": 0.04, "jaw facing": 0.04})
    assert result["nme_2d"]["overall"] == pytest.approx(0.01)
    assert "| m | 4.00 % / 4.00 % | 0.00 % / 0.00 % |" in aflw2000.markdown({"m": result})


def test_jaw_sides_follow_the_depth_of_the_ground_truth():
    """Only the half of the jaw farther from the camera is moved: it alone scores as turned away,
    whichever image side it is on."""
    for far, near in ((range(0, 8), range(9, 17)), (range(9, 17), range(0, 8))):
        sample = fake_sample("a", 50)
        sample.landmarks[:17, 2] = 0.0
        sample.landmarks[far, 2] = 5.0
        moved = sample.landmarks[:, :2].copy()
        moved[far, 1] += 8.0

        parts = aflw2000.evaluate(lambda img, box: moved, [sample])["nme_2d_by_part"]
        assert aflw2000.jaw_sides(sample.landmarks) == {"jaw turned away": far, "jaw facing": near}
        assert parts["jaw turned away"]["overall"] == pytest.approx(0.08)
        assert parts["jaw facing"]["overall"] == pytest.approx(0.0)


def test_misses_are_counted_not_scored():
    samples = [fake_sample("a", 10), fake_sample("b", 10, 1)]

    def predict(img, box):
        if img[0, 0, 0] == 1:
            raise LookupError("no face")
        return samples[0].landmarks

    result = aflw2000.evaluate(predict, samples)
    assert result["nme_2d"]["n"]["[0,30)"] == 1 and len(result["failures"]) == 1
    assert result["nme_3d"]["overall"] == pytest.approx(0)
    assert "| m |" in aflw2000.markdown({"m": result})


def test_a_miss_is_a_failure_scored_from_the_whole_photo_with_a_fallback():
    """With ``fallback``, a photo the predictor finds no face in is listed as a failure and scored with the
    fallback's landmarks, which it is given the whole photo as the box."""
    samples = [fake_sample("a", 10), fake_sample("b", 40, 1)]
    boxes = []

    def predict(img, box):
        if img[0, 0, 0] == 1:
            raise LookupError("no face")
        return samples[0].landmarks

    def fallback(img, box):
        boxes.append(box)
        return samples[1].landmarks[:, :2] + [2.0, 0.0]  # 2 px in a 100 px box: 2 %

    result = aflw2000.evaluate(predict, samples, fallback)
    assert boxes == [(0.0, 0.0, 120.0, 120.0)]
    assert len(result["failures"]) == 1 and result["nme_2d"]["n"] == {"[0,30)": 1, "[30,60)": 1, "[60,90]": 0}
    assert result["nme_2d"]["bins"]["[30,60)"] == pytest.approx(0.02)
    assert result["per_photo"]["b"]["missed"] and "missed" not in result["per_photo"]["a"]


def test_the_annotated_face_is_the_one_nearest_the_truths_box():
    """A photo with two faces: the largest may be another person; the annotated one is nearest the truth's centre."""
    from service.engine.detect import Face
    from training.evaluate.boxes import annotated_face

    near = Face((100.0, 100.0, 180.0, 180.0), 0.7, "yunet")
    large = Face((200.0, 50.0, 400.0, 250.0), 0.9, "yunet")
    assert annotated_face([large, near], (110.0, 95.0, 190.0, 175.0)) is near
    assert annotated_face([large, near], (230.0, 80.0, 380.0, 240.0)) is large
    assert annotated_face([], (0.0, 0.0, 1.0, 1.0)) is None
    # it goes by the crop box (where the first crop is cut), not the detector's box
    moved = Face((0.0, 0.0, 80.0, 80.0), 0.9, "yunet", crop_box=(110.0, 95.0, 190.0, 175.0))
    assert annotated_face([near, moved], (110.0, 95.0, 190.0, 175.0)) is moved


def test_cli_baselines_on_real_images(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    pytest.importorskip("dlib")
    from training.evaluate.__main__ import main

    main(["aflw2000", "--data", str(DATA), "--limit", "6", "--out", str(tmp_path)])
    report = (tmp_path / "aflw2000.md").read_text()
    assert "dlib 68-point predictor" in report and "mean face in the box" in report
    import json

    results = json.loads((tmp_path / "aflw2000.json").read_text())
    dlib_nme = results["dlib 68-point predictor"]["nme_2d"]["overall"]
    assert 0 < dlib_nme < results["mean face in the box"]["nme_2d"]["overall"]


def test_cli_scores_the_services_own_detection(tmp_path, tiny_model):
    """``--detector``: the model's rows come from the service's detector, YuNet, without a recrop (their
    labels say so, and the header), every photo scored, a miss also counted as a failure."""
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    pytest.importorskip("dlib")
    import json

    from training.evaluate.__main__ import main

    main(["aflw2000", "--data", str(DATA), "--limit", "4", "--model", str(tiny_model), "--detector", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "aflw2000.json").read_text())
    label = "tiny 0.0.1, in-process (own detection)"
    assert {label, label + ", mirror-averaged"} <= set(results)
    scored = results[label]["nme_2d"]
    assert sum(scored["n"].values()) == 4
    missed = [name for name, row in results[label]["per_photo"].items() if row.get("missed")]
    assert len(missed) == len(results[label]["failures"])
    assert "the service's own detection" in (tmp_path / "aflw2000.md").read_text()


def test_ground_truth_depth_follows_the_service_convention():
    """The service's z grows away from the camera; pt3d_68's grows towards it, so the loader flips it:
    on a near-frontal face the nose tip is then the nearest landmark, the jaw's ends the farthest."""
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    samples = [s for s in aflw2000.load_samples(DATA, 40) if abs(s.yaw_degrees) < 15]
    assert samples
    for s in samples:
        z = s.landmarks[:, 2]
        assert z[30] < np.median(z) < max(z[0], z[16])


def test_box_offset_of_known_boxes():
    from training.evaluate.boxes import box_offset

    truth = (10.0, 20.0, 110.0, 100.0)  # longer side 100, centre (60, 60)
    assert box_offset(truth, truth) == (1.0, 0.0, 0.0)
    # 20 % larger, centre 10 px higher and 5 px to the left
    assert box_offset((-5.0, -10.0, 115.0, 110.0), truth) == pytest.approx((1.2, -0.1, -0.05))


def test_cli_boxes_scores_both_boxes_with_and_without_the_recrop(tmp_path, tiny_model):
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    pytest.importorskip("dlib")
    import json

    from training.evaluate.__main__ import main

    main(["boxes", "--model", str(tiny_model), "--data", str(DATA), "--limit", "4", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "boxes.json").read_text())
    boxes = ("ground truth's landmark box", "service's detector (yunet), largest face",
             "service's detector (yunet), the annotated face")
    assert set(result["nme"]) == {f"{box}, {passes}" for box in boxes for passes in ("one pass", "recropped")}
    given = result["nme"]["ground truth's landmark box, one pass"]
    assert sum(given["nme_2d"]["n"].values()) == 4 and not given["failures"]
    found = result["found"]
    assert found == result["detector_offsets"]["all"]["n"] == result["crop_box_offsets"]["all"]["n"]
    assert 0 <= result["second_face"] <= found
    for box in boxes[1:]:  # every photo scored; a miss also counted as a failure
        row = result["nme"][f"{box}, one pass"]
        assert sum(row["nme_2d"]["n"].values()) == 4 and found + len(row["failures"]) == 4
    assert "side ratio" in (tmp_path / "boxes.md").read_text()
    # `compare` reads a boxes report's rows
    main(["compare", str(tmp_path / "boxes.json"), str(tmp_path / "boxes.json"), "--rounds", "50",
          "--row-a", "ground truth's landmark box, one pass", "--row-b", f"{boxes[2]}, one pass"])


def _per_photo(nmes: dict[str, list[float]]) -> dict:
    return {f"{b}-{i}": {"yaw_bin": b, "nme_2d": v} for b, values in nmes.items() for i, v in enumerate(values)}


def test_a_paired_comparison_measures_the_difference_photo_by_photo():
    from training.evaluate.compare import paired_difference

    rng = np.random.default_rng(0)
    a = _per_photo({"[0,30)": list(rng.uniform(0.02, 0.08, 40)), "[30,60)": list(rng.uniform(0.04, 0.1, 12)),
                    "[60,90]": list(rng.uniform(0.06, 0.2, 8))})
    shifted = {k: {**v, "nme_2d": v["nme_2d"] + 0.01} for k, v in a.items()}
    result = paired_difference(a, shifted, rounds=500)
    assert result["photos"] == 60 and result["n"] == {"[0,30)": 40, "[30,60)": 12, "[60,90]": 8}
    for key in ("mean_of_bins", "overall"):
        assert result[key]["difference"] == pytest.approx(0.01)
        assert result[key]["interval"] == pytest.approx([0.01, 0.01])  # every photo moved by the same amount
    # photo-level noise around no change: an interval that straddles zero; a photo only B scored is left out
    noisy = {k: {**v, "nme_2d": v["nme_2d"] + rng.normal(0, 0.01)} for k, v in a.items()}
    noisy["extra"] = {"yaw_bin": "[60,90]", "nme_2d": 5.0}
    result = paired_difference(a, noisy, rounds=2000)
    lo, hi = result["mean_of_bins"]["interval"]
    assert result["photos"] == 60 and lo < result["mean_of_bins"]["difference"] < hi and lo < 0 < hi
    assert result["mean_of_bins"]["a"] == pytest.approx(np.mean([np.mean([v["nme_2d"] for v in a.values()
                                                                          if v["yaw_bin"] == b]) for b in aflw2000.BINS]))


def test_cli_compare_picks_the_model_rows_and_refuses_reports_without_per_photo_figures(tmp_path, capsys):
    import json

    from training.evaluate.__main__ import main

    a = _per_photo({"[0,30)": [0.05, 0.06, 0.07], "[30,60)": [0.08], "[60,90]": [0.1, 0.12]})
    b = {k: {**v, "nme_2d": v["nme_2d"] - 0.005} for k, v in a.items()}
    baseline = {"nme_2d": None, "per_photo": {k: {**v, "nme_2d": 0.5} for k, v in a.items()}}
    for name, rows in (("a", {"dlib 68-point predictor": baseline, "m 0.1, in-process": {"per_photo": a},
                              "m 0.1, in-process, mirror-averaged": {"per_photo": b}}),
                       ("b", {"m 0.2, in-process": {"per_photo": b}}), ("old", {"m 0.0, in-process": {}})):
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--rounds", "200"])
    out = capsys.readouterr().out
    assert "A: m 0.1, in-process" in out and "B: m 0.2, in-process" in out
    assert "| mean of bins | 8.33 % | 7.83 % | -0.50 points | -0.50 to -0.50 |" in out
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "old.json"), str(tmp_path / "b.json")])
    assert "no per-photo figures" in capsys.readouterr().err


def test_evaluate_keeps_each_scored_photo(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    samples = aflw2000.load_samples(DATA, 3)
    marks = np.random.default_rng(0).uniform(0, 1, (68, 2))
    result = aflw2000.evaluate(aflw2000.mean_face_predictor(marks), samples)
    assert set(result["per_photo"]) == {s.name for s in samples}
    for s in samples:
        row = result["per_photo"][s.name]
        assert row["yaw_bin"] in aflw2000.BINS and row["nme_2d"] > 0
    assert np.mean([r["nme_2d"] for r in result["per_photo"].values()]) == pytest.approx(result["nme_2d"]["overall"])


def test_cli_scores_the_mean_face_under_the_models_own_pose(tmp_path, tiny_model):
    """The 3D NME's baseline: ICT's mean face placed by the model's predicted pose, a row beside the model's."""
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    pytest.importorskip("dlib")
    import json

    from training.evaluate.__main__ import main

    main(["aflw2000", "--data", str(DATA), "--limit", "3", "--model", str(tiny_model), "--out", str(tmp_path)])
    results = json.loads((tmp_path / "aflw2000.json").read_text())
    baseline, model = results["mean face under tiny 0.0.1's pose"], results["tiny 0.0.1, in-process"]
    assert baseline["nme_3d"]["overall"] > 0 and model["nme_3d"]["overall"] > 0
    assert baseline["nme_3d"]["overall"] != model["nme_3d"]["overall"]
    assert "mean face under tiny 0.0.1's pose" in (tmp_path / "aflw2000.md").read_text()


def test_cli_blendshape_report_scores_the_weights_beside_its_baselines(tmp_path, tiny_model):
    """`blendshapes`: MAE against the synthetic truth for the service's weights, the clipped least
    squares and zeros (the zeros' MAE is the truth's mean), exclusive pairs on real photos."""
    if not DATA.is_dir():
        pytest.skip(f"AFLW2000-3D dev subset not found at {DATA}")
    import json

    from training.evaluate.__main__ import main

    main(["blendshapes", "--model", str(tiny_model), "--size", "4", "--limit", "2", "--aflw", str(DATA),
          "--out", str(tmp_path)])
    (report,) = tmp_path.glob("blendshapes*.json")
    result = json.loads(report.read_text())
    synthetic = result["synthetic"] if "synthetic" in result else result
    assert set(synthetic["mae"]) == {"service", "clipped least squares", "zeros"}
    assert all(0 <= v <= 1 for v in synthetic["mae"].values())
