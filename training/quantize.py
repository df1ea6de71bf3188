"""int8 graphs for CPU workers: a model store's two graphs quantized statically on real photos' feeds.

    python -m training.quantize --model /tmp/stores/facerecon-cpu-small/0.11.0-float --version 0.11.0 \\
        --root model_store

Each graph is read back in float32 (``half.widen_half_weights``), then quantized by onnxruntime in the
QDQ format: int8 weights per output channel, uint8 activations whose ranges are the min and max seen
on the calibration feeds. The feeds are what the service itself feeds the graphs (the same crop,
ASM decode, unwrap and heatmaps, ``InProcessModel``) for faces of Helen/AFW photos, boxed by their
68 annotated landmarks: training photos, so the evaluation sets stay unseen. Half of the faces
calibrate; the other half measure how far each output moved, and the manifest records it.

What is quantized, and what stays float, was chosen on AFLW2000-3D dev and E_pho (issue 25's
acceptance: NME within 0.1 points, E_pho within 0.002; docs/service.md#int8-graphs):

- texture: every convolution, Gemm and MatMul.
- geometry: the convolutions only, except the first (it reads the photo) and the landmark head's
  last (it writes the heatmaps whose soft-argmax gives the 68 points). With those two quantized as
  well, the pose moved 1.4 % and AFLW's profile bin 0.16 points; the MLPs (Gemm), which turn the
  landmarks into the face and the appearance, cost little time and moved p_t by 17 %.

Weights that stay float are stored in float16 as ``training.export.half`` does, except the
quantization scales, which onnxruntime needs as plain constants to fuse the int8 kernels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from service.engine.decode import decode_image
from service.settings import Settings
from training.evaluate.inprocess import InProcessModel
from training.evaluate.rendered import IMAGE_SUFFIXES, Photo
from training.export.half import store_weights_in_half, widen_half_weights
from training.export.store import REPO_ROOT, write_model_store

DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "data" / "helen-afw-68pt"
PARTS = ("geometry", "texture")
QUANTIZED_OPS = {"geometry": ("Conv",), "texture": ("Conv", "Gemm", "MatMul")}
# Name fragments of nodes kept in float32 (the exporter names nodes after the modules).
FLOAT_NODES = {"geometry": ("/features.0/", "/landmark_head/heatmaps/"), "texture": ()}
SCHEME = "QDQ; int8 weights per output channel (symmetric); uint8 activations, min-max calibrated"
Feeds = dict[str, np.ndarray]  # one graph's inputs by name, batch first


def calibration_photos(folder: Path, count: int, seed: int) -> list[Photo]:
    """``count`` photos of ``folder`` drawn without replacement (seeded), each decoded as the service
    decodes uploads, with the box of the 68-point ``.pts`` beside it (photos without one are not drawn)."""
    from training.fitting.pts import read_pts

    paths = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.with_suffix(".pts").is_file())
    if len(paths) < count:
        raise ValueError(f"{folder}: {len(paths)} photos with a .pts beside them, fewer than the {count} asked for")
    s = Settings()
    chosen = np.random.default_rng(seed).choice(len(paths), count, replace=False)
    return [Photo(paths[i].stem, decode_image(paths[i].read_bytes(), max_pixels=s.max_pixels, formats=s.image_formats),
                  read_pts(paths[i].with_suffix(".pts")).astype(np.float64)) for i in sorted(chosen)]


def calibration_feeds(model: InProcessModel, photos: list[Photo]) -> dict[str, list[Feeds]]:
    """Each graph's batch-1 inputs for each photo's face, as the service builds them: ``{"geometry":
    [...], "texture": [...]}``, one entry per face (faces the service would refuse are skipped)."""
    feeds: dict[str, list[Feeds]] = {part: [] for part in PARTS}
    for photo in tqdm(photos, desc="calibration feeds", unit="photo"):
        try:
            _, _, outputs, geo = model.geometry(photo.image, photo.box)
        except LookupError:
            continue
        feeds["geometry"].append({"image": geo.crop.image[None]})
        feeds["texture"].append(model.texture_feeds(outputs, geo)[1])
    return feeds


class _Reader(CalibrationDataReader):
    def __init__(self, feeds: list[Feeds]):
        self._feeds = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._feeds, None)


def quantize_graph(source: Path, out: Path, calibration: list[Feeds], ops: tuple[str, ...],
                   float_nodes: tuple[str, ...]) -> list[str]:
    """Write ``source`` (an ONNX file, weights in float32 or ``half``'s float16) quantized to ``out``;
    returns the names of the nodes of ``ops`` kept in float32 (those whose name holds a ``float_nodes``
    fragment)."""
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(source))
        widen_half_weights(model)
        wide, prepared = Path(tmp) / "float32.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, str(wide))
        quant_pre_process(str(wide), str(prepared), skip_symbolic_shape=True)
        kept = [n.name for n in onnx.load(str(prepared)).graph.node
                if n.op_type in ops and any(fragment in n.name for fragment in float_nodes)]
        quantize_static(str(prepared), str(out), _Reader(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(ops), nodes_to_exclude=kept, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    quantized = onnx.load(str(out))
    scales = frozenset(name for n in quantized.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                       for name in n.input[1:])
    store_weights_in_half(out, keep=scales)
    return kept


def output_error(source: Path, quantized: Path, feeds: list[Feeds], threads: int = 2) -> dict[str, dict[str, float]]:
    """Per output of the graph: the mean and max absolute difference between ``source``'s and
    ``quantized``'s values over ``feeds``, and the mean absolute value of ``source``'s (the scale)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    a, b = (ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (source, quantized))
    names = [o.name for o in a.get_outputs()]
    diffs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    scale: dict[str, list[float]] = {n: [] for n in names}
    for feed in feeds:
        for name, x, y in zip(names, a.run(names, feed), b.run(names, feed)):
            diffs[name].append(np.abs(x - y).ravel())
            scale[name].append(float(np.abs(x).mean()))
    return {n: {"mean_abs": float(np.concatenate(diffs[n]).mean()), "max_abs": float(np.concatenate(diffs[n]).max()),
                "mean_abs_value": float(np.mean(scale[n]))} for n in names}


def quantize_store(source: Path, root: Path, version: str, photos: list[Photo], photo_set: str,
                   overwrite: bool = False) -> tuple[Path, dict]:
    """``source`` (a model-store version folder) with int8 graphs, as ``<root>/<name>/<version>``; returns
    the folder and the manifest's ``evaluation.quantization`` record. Even faces calibrate, odd faces
    measure. The manifest keeps how the model was trained, its export parity and its landmark
    calibration; its other figures are dropped (rerun ``training.evaluate record``)."""
    model = InProcessModel(source, Settings(mirror_average=False))
    feeds = calibration_feeds(model, photos)
    manifest = json.loads((source / "manifest.json").read_text())
    record = {"scheme": SCHEME, "onnxruntime": ort.__version__, "photos": photo_set,
              "calibration_faces": len(feeds["geometry"][0::2]), "held_out_faces": len(feeds["geometry"][1::2]),
              "quantized_ops": {}, "float_nodes": {}, "held_out_error": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for part in PARTS:
            graph = source / manifest["onnx"][part]["file"]
            files[part] = Path(tmp) / f"{part}.onnx"
            kept = quantize_graph(graph, files[part], feeds[part][0::2], QUANTIZED_OPS[part], FLOAT_NODES[part])
            record["quantized_ops"][part] = list(QUANTIZED_OPS[part])
            record["float_nodes"][part] = kept
            record["held_out_error"][part] = output_error(graph, files[part], feeds[part][1::2])
        with np.load(source / "topology.npz", allow_pickle=False) as stored:
            topology = dict(stored)
        kept_figures = {k: v for k, v in manifest["evaluation"].items()
                        if k in ("trained", "onnx_parity_max_abs", "landmark_calibration")}
        folder = write_model_store(
            root, manifest["model"]["name"], version, config=manifest["config"], input_size=manifest["input_size"],
            uv_size=manifest["uv_size"], normalization=manifest["normalization"], camera=manifest["camera"],
            onnx_files=files, topology=topology,
            evaluation={**kept_figures, "quantization": {"source": f"{manifest['model']['name']} "
                                                         f"{manifest['model']['version']}", **record}},
            overwrite=overwrite)
    return folder, record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.quantize", description=(
        "Write a model store's graphs quantized to int8 (static, calibrated on photos' feeds) as a new version."))
    parser.add_argument("--model", type=Path, required=True, help="the model-store version folder to quantize")
    parser.add_argument("--version", required=True, help="the quantized store's version")
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "model_store", help="where the quantized store goes")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS,
                        help="calibration photos, each with a 68-point .pts beside it (default: Helen/AFW)")
    parser.add_argument("--count", type=int, default=192, help="photos drawn: half calibrate, half measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    photos = calibration_photos(args.photos, args.count, args.seed)
    folder, record = quantize_store(args.model, args.root, args.version, photos, args.photos.name, args.overwrite)
    print(f"wrote {folder} ({record['calibration_faces']} faces calibrated, {record['held_out_faces']} held out)")
    for part, outputs in record["held_out_error"].items():
        for name, e in outputs.items():
            print(f"  {part}.{name}: mean |Δ| {e['mean_abs']:.3g} (mean |value| {e['mean_abs_value']:.3g}), "
                  f"max |Δ| {e['max_abs']:.3g}")


if __name__ == "__main__":
    main()
