"""Fit ICT-FaceKit (identity, expression, weak-perspective pose) to 68 2D landmarks.

Pose convention (the same camera as ``training.render.WeakPerspectiveCamera`` and the network's
``p_h`` in ``training.models.pose``): ``pose = (yaw, pitch, roll, tx, ty, scale)`` with angles in
radians, ``R = euler_to_rotation(yaw, pitch, roll) = Rz(roll) Ry(yaw) Rx(pitch)`` (positive yaw turns
the nose to the image's right, positive pitch tips it down, positive roll turns the face
counter-clockwise on screen), and a point X of the canonical head frame
(``UVFaceModel.frame``: canonical = (cm - center) / scale) lands on the photo at
``x = W/2 + scale * (R X)_x + tx``, ``y = H/2 - scale * (R X)_y + ty`` in pixels (x right, y down,
pixel (row i, col j) centred at (j + 0.5, i + 0.5)); depth = -(R X)_z. ``scale`` is pixels per
canonical unit and (tx, ty) the pixel offset of the canonical origin from the image centre, so
``WeakPerspectiveCamera(R, scale, (tx, ty), (H, W))`` reproduces it; :func:`pose_to_p_h` turns it into
the network's image-relative ``p_h`` for a square image.

The fit minimises, per photo,
``E = 1/2 |r|^2 + 1/2 lambda_id |c|^2 + 1/2 lambda_exp2 |e|^2 + lambda_exp1 sum(e)`` with
``r = (projected model landmarks - target landmarks) / sqrt(w h)`` (w, h = the target landmarks'
box, so r is in NME units) over c (100 identity coefficients, prior N(0, 1) in ICT's scale), e (53
blendshape weights kept in [0, 1]; on that box the L1 norm is the linear ``sum(e)``) and the pose,
by Levenberg-Marquardt (Gauss-Newton with per-photo adaptive damping) batched over photos. The
rotation is updated multiplicatively, ``R <- exp([dw]x) R``, so there is no gimbal lock; the box
on e is kept by a projected step that freezes weights sitting on a bound whose gradient pushes
outwards (Bertsekas' projected Newton). The jaw correspondences are re-chosen between rounds of
steps (``contour.JawContour``). The initial pose is the closed-form scaled-orthographic fit of
the mean face's inner landmarks (17-67).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.facemodel import FaceKit, UVFaceModel

from .contour import JAW, JawContour

INNER = np.arange(17, 68)  # brows, nose, eyes, mouth: on fixed vertices whatever the pose
N_POSE = 6  # rotation increment (3), translation (2), log scale (1)


@dataclass(frozen=True)
class FitSettings:
    """Fit options. Prior weights are in units of squared NME (see the module docstring):
    ``lambda_id = sigma^2`` says a landmark is trusted to about ``sigma`` of the face box."""

    outer_iterations: int = 6  # jaw correspondence updates
    inner_iterations: int = 6  # LM steps per update
    lambda_id: float = 2.5e-4
    lambda_exp2: float = 1e-3
    lambda_exp1: float = 3e-3
    contour: bool = True
    march_min_yaw_degrees: float = 0.0  # below this |yaw| the jaw keeps ICT's fixed vertices
    batch_size: int = 256
    # The fit's tensors are small (a batch of 159 x 159 systems): thread hand-offs cost more than
    # they save, and on a busy 2-core machine spinning BLAS threads made it 10-30x slower.
    threads: int | None = 1


@dataclass
class FitResult:
    """B fits. pose (B, 6) ``(yaw, pitch, roll, tx, ty, scale)`` (module docstring); id_coeffs
    (B, 100); exp_weights (B, 53) in [0, 1]; landmarks (B, 68, 2) the fitted model's projected
    landmarks in pixels; vertices (B, 68) int64 the ICT vertex each landmark used (jaw marched);
    nme (B,) landmark error / sqrt(w h) of the target box. All numpy, float32 but vertices."""

    pose: np.ndarray
    id_coeffs: np.ndarray
    exp_weights: np.ndarray
    landmarks: np.ndarray
    vertices: np.ndarray
    nme: np.ndarray


def rotation_to_euler(rotation: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) ``Rz(roll) Ry(yaw) Rx(pitch)`` -> (B, 3) (yaw, pitch, roll), yaw in [-pi/2, pi/2]."""
    r = rotation
    yaw = torch.asin((-r[:, 2, 0]).clamp(-1.0, 1.0))
    pitch = torch.atan2(r[:, 2, 1], r[:, 2, 2])
    roll = torch.atan2(r[:, 1, 0], r[:, 0, 0])
    return torch.stack([yaw, pitch, roll], -1)


def axis_angle_to_rotation(w: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle -> (B, 3, 3) (Rodrigues)."""
    theta = w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = w / theta
    zero = torch.zeros_like(k[:, 0])
    kx = torch.stack([zero, -k[:, 2], k[:, 1], k[:, 2], zero, -k[:, 0], -k[:, 1], k[:, 0], zero], -1).reshape(-1, 3, 3)
    s, c = torch.sin(theta)[:, :, None], torch.cos(theta)[:, :, None]
    eye = torch.eye(3, dtype=w.dtype).expand_as(kx)
    return eye + s * kx + (1 - c) * kx @ kx


def euler_rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) (yaw, pitch, roll) -> (B, 3, 3), as ``training.render.euler_to_rotation``."""
    from training.render import euler_to_rotation

    return euler_to_rotation(angles[:, 0], angles[:, 1], angles[:, 2])


def project(points: torch.Tensor, pose: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """Canonical points (B, L, 3), pose (B, 6), image_size (B, 2) as (H, W) -> (B, L, 2) pixels."""
    view = points @ euler_rotation(pose[:, :3]).transpose(-1, -2)
    s = pose[:, 5, None]
    x = image_size[:, 1, None] / 2 + s * view[..., 0] + pose[:, 3, None]
    y = image_size[:, 0, None] / 2 - s * view[..., 1] + pose[:, 4, None]
    return torch.stack([x, y], -1)


def pose_to_p_h(pose: np.ndarray, size: float) -> np.ndarray:
    """(..., 6) pixel pose of a square ``size`` x ``size`` image -> (..., 6) the network's ``p_h``
    ``(yaw, pitch, roll, tx / (size/2), ty / (size/2), log(scale / (size/2)))``."""
    pose = np.asarray(pose, np.float64)
    half = size / 2.0
    return np.concatenate([pose[..., :3], pose[..., 3:5] / half, np.log(pose[..., 5:6] / half)], -1)


def pose_in_crop(pose: np.ndarray, image_size: tuple[int, int], box: tuple[float, float, float], out_size: int) -> np.ndarray:
    """(6,) pose in a photo of ``image_size`` (H, W) -> the pose in the square crop ``box`` =
    (x0, y0, side) pixels resized to ``out_size``: the same rotation, translation and scale
    re-expressed about the crop's centre and scaled by ``out_size / side``."""
    (h, w), (x0, y0, side) = image_size, box
    k = out_size / side
    out = np.array(pose, np.float64)
    out[3] = (w / 2 + pose[3] - (x0 + side / 2)) * k
    out[4] = (h / 2 + pose[4] - (y0 + side / 2)) * k
    out[5] = pose[5] * k
    return out


def landmark_box_size(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...,) sqrt(w h) of the landmarks' bounding box (the NME normaliser)."""
    span = landmarks.max(-2) - landmarks.min(-2)
    return np.sqrt(span[..., 0] * span[..., 1])


def nme(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(B, 68, 2) each -> (B,) mean point-to-point error / sqrt(w h) of the target box."""
    return np.linalg.norm(pred - target, axis=-1).mean(-1) / landmark_box_size(target)


class LandmarkFitter:
    """Batched landmark fitting against one face model.

    Only the vertices landmarks can land on are kept: the 68 ICT landmark vertices and the jaw
    parallels (M vertices in all), with their identity and expression bases in canonical units.
    """

    def __init__(self, model: UVFaceModel, settings: FitSettings = FitSettings()):
        kit: FaceKit = model.kit
        self.settings = settings
        frame = model.frame
        center, scale = np.asarray(frame.center, np.float64), float(frame.scale)
        canonical = (kit.neutral - center) / scale
        self.contour = JawContour.build(kit, model.region, canonical)
        self.landmarks68 = kit.landmarks68.astype(np.int64)
        self.vertex_ids = np.union1d(self.landmarks68, self.contour.candidates.ravel())
        ids = self.vertex_ids
        # (M, 3) mean and (M, 3, 153) bases, identity then expression, float64: the normal
        # equations square the Jacobian's condition number.
        self.mean = torch.from_numpy(canonical[ids])
        basis = np.concatenate([kit.identity[:, ids], kit.expression[:, ids]], 0) / scale  # (153, M, 3)
        self.basis = torch.from_numpy(np.ascontiguousarray(basis.transpose(1, 2, 0), np.float64))
        self.n_id, self.n_exp = kit.identity.shape[0], kit.expression.shape[0]
        self.candidate_index = torch.from_numpy(self._local(self.contour.candidates.ravel()))

    def _local(self, ict_ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """ICT vertex ids -> positions in ``vertex_ids``."""
        if isinstance(ict_ids, torch.Tensor):
            return torch.searchsorted(torch.from_numpy(self.vertex_ids), ict_ids)
        return np.searchsorted(self.vertex_ids, ict_ids)

    def points(self, coeffs: torch.Tensor, local: torch.Tensor | None = None) -> torch.Tensor:
        """coeffs (B, 153) [id | exp], local (B, L) kept-vertex positions or None for all M ->
        (B, L, 3) (or (B, M, 3)) canonical positions."""
        if local is None:
            return self.mean + torch.einsum("mck,bk->bmc", self.basis, coeffs)
        return self._shape(coeffs, (self.mean[local], self.basis[local]))

    # ------------------------------------------------------------------ the fit
    def fit(self, landmarks: np.ndarray, image_size: np.ndarray, progress=None) -> FitResult:
        """Fit B photos.

        Args:
            landmarks: (B, 68, 2) target pixels (renderer convention, see ``pts.py``).
            image_size: (B, 2) (H, W) of each photo.
            progress: optional callable(n_done) for progress bars.
        Returns:
            :class:`FitResult`.
        """
        landmarks = np.asarray(landmarks, np.float64)
        image_size = np.asarray(image_size, np.float64).reshape(-1, 2)
        parts = []
        threads = torch.get_num_threads()
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        try:
            for start in range(0, len(landmarks), self.settings.batch_size):
                stop = start + self.settings.batch_size
                parts.append(self._fit_batch(torch.from_numpy(landmarks[start:stop]), torch.from_numpy(image_size[start:stop])))
                if progress is not None:
                    progress(len(parts[-1].pose))
        finally:
            torch.set_num_threads(threads)
        return FitResult(*(np.concatenate([getattr(p, f) for p in parts]) for f in FitResult.__dataclass_fields__))

    def _fit_batch(self, target: torch.Tensor, hw: torch.Tensor) -> FitResult:
        st, b = self.settings, target.shape[0]
        norm = torch.from_numpy(landmark_box_size(target.numpy())).clamp_min(1e-6)
        centre = torch.stack([hw[:, 1], hw[:, 0]], -1) / 2  # (B, 2) image centre (x, y)
        local = torch.from_numpy(self._local(self.landmarks68))[None].repeat(b, 1)  # (B, 68)
        rotation, trans, log_s = self.init_pose(target, hw, local)
        coeffs = torch.zeros(b, self.n_id + self.n_exp, dtype=torch.float64)
        mu = torch.full((b,), 1e-3, dtype=torch.float64)
        for _ in range(st.outer_iterations):
            if st.contour:
                angles = rotation_to_euler(rotation)
                cand = self.points(coeffs)[:, self.candidate_index]
                local[:, JAW] = self._local(self.contour.select(
                    cand, angles[:, 0], angles[:, 1], np.deg2rad(st.march_min_yaw_degrees)))
            # The landmarks' mean and bases, gathered once per correspondence set.
            lm = (self.mean[local], self.basis[local])  # (B, 68, 3), (B, 68, 3, 153)
            for _ in range(st.inner_iterations):
                rotation, trans, log_s, coeffs, mu = self._lm_step(
                    target, centre, norm, lm, rotation, trans, log_s, coeffs, mu)
        angles = rotation_to_euler(rotation)
        pred = self._project(coeffs, (self.mean[local], self.basis[local]), rotation, trans, log_s, centre)
        pose = torch.cat([angles, trans, log_s.exp()[:, None]], -1)
        return FitResult(
            pose=pose.numpy().astype(np.float32),
            id_coeffs=coeffs[:, : self.n_id].numpy().astype(np.float32),
            exp_weights=coeffs[:, self.n_id :].numpy().astype(np.float32),
            landmarks=pred.numpy().astype(np.float32),
            vertices=self.vertex_ids[local.numpy()],
            nme=nme(pred.numpy(), target.numpy()).astype(np.float32),
        )

    def init_pose(self, target: torch.Tensor, hw: torch.Tensor, local: torch.Tensor):
        """Closed-form scaled-orthographic fit of the mean face's inner landmarks.

        Least squares affine camera ``q = A X + b`` (q = pixels about the image centre, y up),
        then the nearest scaled rotation: ``A = U S V^T -> scale = mean(S)``, rows ``U V^T``.
        Returns rotation (B, 3, 3), translation (B, 2) pixels (y down), log scale (B,).
        """
        x = self.mean[local[:, INNER]]  # (B, 51, 3)
        q = torch.stack([target[:, INNER, 0] - hw[:, 1, None] / 2, hw[:, 0, None] / 2 - target[:, INNER, 1]], -1)
        xh = torch.cat([x, torch.ones_like(x[..., :1])], -1)  # (B, 51, 4)
        sol = torch.linalg.lstsq(xh, q).solution  # (B, 4, 2)
        a = sol[:, :3].transpose(1, 2)  # (B, 2, 3)
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        rows = u @ vh  # (B, 2, 3) orthonormal rows
        rotation = torch.cat([rows, torch.cross(rows[:, 0], rows[:, 1], dim=-1)[:, None]], 1)
        scale = s.mean(-1)
        b_xy = q.mean(1) - scale[:, None] * (x.mean(1)[:, None] @ rows.transpose(1, 2))[:, 0]
        trans = torch.stack([b_xy[:, 0], -b_xy[:, 1]], -1)
        return rotation, trans, scale.log()

    @staticmethod
    def _shape(coeffs, lm) -> torch.Tensor:
        """coeffs (B, 153), lm = (mean (B, L, 3), basis (B, L, 3, 153)) -> (B, L, 3)."""
        b, n, _, k = lm[1].shape
        # One (L*3, K) x (K, 1) product per photo: far faster than L*3 tiny ones.
        return lm[0] + (lm[1].reshape(b, n * 3, k) @ coeffs[:, :, None]).reshape(b, n, 3)

    def _project(self, coeffs, lm, rotation, trans, log_s, centre) -> torch.Tensor:
        view = self._shape(coeffs, lm) @ rotation.transpose(1, 2)
        s = log_s.exp()[:, None]
        return torch.stack([centre[:, None, 0] + s * view[..., 0] + trans[:, None, 0],
                            centre[:, None, 1] - s * view[..., 1] + trans[:, None, 1]], -1)

    def _energy(self, target, centre, norm, lm, rotation, trans, log_s, coeffs) -> torch.Tensor:
        """(B,) the objective E of the module docstring."""
        st = self.settings
        r = (self._project(coeffs, lm, rotation, trans, log_s, centre) - target) / norm[:, None, None]
        c, e = coeffs[:, : self.n_id], coeffs[:, self.n_id :]
        return (0.5 * r.square().sum((1, 2)) + 0.5 * st.lambda_id * c.square().sum(1)
                + 0.5 * st.lambda_exp2 * e.square().sum(1) + st.lambda_exp1 * e.sum(1))

    def _lm_step(self, target, centre, norm, lm, rotation, trans, log_s, coeffs, mu):
        """One Levenberg-Marquardt step for every photo; a photo keeps its old state if E rises.
        lm = (mean (B, 68, 3), basis (B, 68, 3, 153)) at the current correspondences."""
        st, b = self.settings, target.shape[0]
        n_coef = coeffs.shape[1]
        x = self._shape(coeffs, lm)  # (B, 68, 3)
        p = x @ rotation.transpose(1, 2)
        s = log_s.exp()[:, None]
        pred = torch.stack([centre[:, None, 0] + s * p[..., 0] + trans[:, None, 0],
                            centre[:, None, 1] - s * p[..., 1] + trans[:, None, 1]], -1)
        r = ((pred - target) / norm[:, None, None]).reshape(b, -1)  # (B, 136)

        # Jacobian of (x, y) per landmark w.r.t. [dw, t, log s, coeffs]. With R <- (I + [dw]x) R
        # the view point moves by dw x p, so d(s p_x) = s (0, p_z, -p_y) and d(-s p_y) = s (p_z, 0, -p_x).
        zero, one = torch.zeros_like(p[..., 0]), torch.ones_like(p[..., 0])
        jx = torch.stack([zero, s * p[..., 2], -s * p[..., 1], one, zero, s * p[..., 0]], -1)
        jy = torch.stack([s * p[..., 2], zero, -s * p[..., 0], zero, one, -s * p[..., 1]], -1)
        n, k = lm[1].shape[1], lm[1].shape[3]
        # x and y rows of the rotated bases, (B, 2, 68, 153), as one GEMM per photo.
        rb = (rotation[:, :2] @ lm[1].permute(0, 2, 1, 3).reshape(b, 3, n * k)).reshape(b, 2, n, k)
        jx = torch.cat([jx, s[..., None] * rb[:, 0]], -1)
        jy = torch.cat([jy, -s[..., None] * rb[:, 1]], -1)
        jac = torch.stack([jx, jy], 2).reshape(b, -1, N_POSE + n_coef) / norm[:, None, None]

        prior = torch.zeros(N_POSE + n_coef, dtype=torch.float64)
        prior[N_POSE : N_POSE + self.n_id] = st.lambda_id
        prior[N_POSE + self.n_id :] = st.lambda_exp2
        linear = torch.zeros_like(prior)
        linear[N_POSE + self.n_id :] = st.lambda_exp1
        theta = torch.cat([torch.zeros(b, N_POSE, dtype=torch.float64), coeffs], 1)
        grad = (jac.transpose(1, 2) @ r[..., None]).squeeze(-1) + prior * theta + linear
        hess = jac.transpose(1, 2) @ jac + torch.diag(prior)

        # Projected Newton on the [0, 1] box of e: a weight on a bound whose gradient pushes it
        # outwards is frozen for this step, so the others do not compensate for a move it can't make.
        e = coeffs[:, self.n_id :]
        g_e = grad[:, N_POSE + self.n_id :]
        frozen = torch.zeros_like(grad, dtype=torch.bool)
        frozen[:, N_POSE + self.n_id :] = ((e <= 0) & (g_e > 0)) | ((e >= 1) & (g_e < 0))
        keep = (~frozen).to(torch.float64)
        hess = hess * keep[:, :, None] * keep[:, None, :]
        diag = torch.diagonal(hess, dim1=1, dim2=2)
        # Marquardt's scaling: damping proportional to each parameter's own curvature copes with
        # pixels, radians and coefficients in one system.
        damped = hess + torch.diag_embed(mu[:, None] * (diag + 1e-9) + frozen.to(torch.float64))
        # The damped system is symmetric positive definite: Cholesky needs no pivoting (and this
        # torch build's batched LU solve has been seen to fail under thread contention).
        chol, _ = torch.linalg.cholesky_ex(damped)
        step = -torch.cholesky_solve((grad * keep)[..., None], chol).squeeze(-1)

        new_rot = axis_angle_to_rotation(step[:, :3]) @ rotation
        new_trans = trans + step[:, 3:5] * 1.0
        new_log_s = log_s + step[:, 5]
        new_coeffs = coeffs + step[:, N_POSE:]
        new_coeffs[:, self.n_id :] = new_coeffs[:, self.n_id :].clamp(0.0, 1.0)

        old = self._energy(target, centre, norm, lm, rotation, trans, log_s, coeffs)
        new = self._energy(target, centre, norm, lm, new_rot, new_trans, new_log_s, new_coeffs)
        ok = new <= old
        mu = torch.where(ok, mu / 3, mu * 4).clamp(1e-7, 1e7)
        sel = ok[:, None]
        return (
            torch.where(sel[..., None], new_rot, rotation),
            torch.where(sel, new_trans, trans),
            torch.where(ok, new_log_s, log_s),
            torch.where(sel, new_coeffs, coeffs),
            mu,
        )
