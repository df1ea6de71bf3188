"""Fit ICT-FaceKit to a photo's 68 landmarks: the pseudo-ground truth of real photos (DESIGN.md, adaptation 4b).

* ``pts``: 300-W ``.pts`` files -> (68, 2) landmarks in renderer pixels (1-based iBUG centres - 0.5).
* ``fitter``: batched Levenberg-Marquardt over weak-perspective pose, 100 identity coefficients
  and 53 expression weights in [0, 1], with priors; the pose convention is in its docstring.
* ``contour``: jaw landmark marching (silhouette correspondences on the side turned away).
* ``unwrap``: A_id / A_exp maps from the coefficients, and the photo unwrapped into UV with a
  z-buffer visibility mask.
* ``dataset`` / ``__main__``: ``python -m training.fitting --data DIR --out DIR`` writes shards + index.
* ``report``: NME by yaw bin, Markdown report, contact sheet.
"""

from .contour import JawContour
from .dataset import fit_samples, load_shard, write_dataset
from .fitter import (FitResult, FitSettings, LandmarkFitter, landmark_box_size, nme, pose_in_crop, pose_to_p_h,
                     project, rotation_to_euler)
from .pts import Sample, list_samples, read_pts, write_pts
from .unwrap import UVUnwrapper, pose_camera

__all__ = [
    "JawContour", "fit_samples", "load_shard", "write_dataset", "FitResult", "FitSettings", "LandmarkFitter",
    "landmark_box_size", "nme", "pose_in_crop", "pose_to_p_h", "project", "rotation_to_euler", "Sample",
    "list_samples", "read_pts", "write_pts", "UVUnwrapper", "pose_camera",
]
