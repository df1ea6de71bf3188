"""ICT's head decoded at one output mesh's vertices only: the per-request half of ``ict_mesh``.

``HeadFit.model_cm`` and ``HeadFit.joined_cm`` decode the whole head (N = 24,591 ICT vertices, NaN where
the asset holds no bases) and spread the residual through an (N, Nr) operator whose eyeball rows hold
hundreds of entries each (1.4M in all); an output mesh reads at most the 21,451 vertices with bases
(the head's; the teeth's and gums' expanded from their affine maps at load) and the eyeballs. A
``RegionDecoder`` is the same arithmetic cut, once at load, to what one output mesh (``region`` face
or head) reads: the bases at its vertices and at those the taps read (``C``), the spread operator's
rows at ``C``, and one spread row per eyeball (each eyeball moves rigidly, so its rows are identical;
a range whose rows differ keeps them all). Per request that leaves two
float32 matrix-vector products over ``C``, two small sparse products and a gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .head import Coefficients, HeadFit


@dataclass(frozen=True, eq=False)
class RegionDecoder:
    """One output mesh's decode (V output vertices over C decoded ICT vertices; Ve eyeball vertices)."""

    fit: HeadFit
    columns: np.ndarray  # (C,) sorted ICT ids decoded: the output's and the taps'
    gather: np.ndarray  # (V,) rows of ``columns`` the output vertices take (UV seams repeat a vertex)
    neutral: np.ndarray  # (C, 3) float32 cm
    identity: np.ndarray  # (100, 3 C) float32 cm, ICT's identity bases at ``columns``
    expression: np.ndarray  # (53, 3 C) float32 cm
    seen: sparse.csr_matrix  # (Nr, C): HeadFit.seen restricted to ``columns`` (the taps read nothing else)
    spread: sparse.csr_matrix  # (C, Nr): HeadFit.spread's rows at ``columns``
    eye_neutral: np.ndarray  # (Ve, 3) float64 cm, the output eyeball vertices
    eye_affine_x: np.ndarray  # (Ve, 4): [x - centre, 1] of each eyeball vertex
    eye_ball: np.ndarray  # (Ve,) which eyeball (index into HeadModel.eyeballs)
    eye_spread: sparse.csr_matrix  # (R, Nr): the spread rows the eyeball vertices share
    eye_spread_row: np.ndarray  # (Ve,) row of ``eye_spread`` each eyeball vertex takes

    @classmethod
    def build(cls, fit: HeadFit, output_ids: np.ndarray, eye_ids: np.ndarray) -> "RegionDecoder":
        """``output_ids``: (V,) ICT ids of the output mesh (all with bases), ``eye_ids``: (Ve,) the eyeballs'."""
        head = fit.head
        columns = np.union1d(output_ids, np.unique(fit.seen.indices))
        # Basis positions of the columns; every output and tapped vertex has bases (IctMeshes and
        # HeadFit.build check it), and the eyeballs are decoded by their affine maps, not here.
        if not np.isin(columns, head.basis_vertices).all():
            raise ValueError("the output mesh reads ICT vertices without bases")
        at = np.searchsorted(head.basis_vertices, columns)
        if len(columns) == len(head.basis_vertices):  # the head reads every basis vertex: views, no copies
            identity, expression = head.identity, head.expression
        else:
            identity, expression = head.identity[:, at], head.expression[:, at]
        c = len(columns)
        ball = np.full(len(head.neutral), -1)
        for i, (start, end) in enumerate(head.eyeballs):
            ball[start:end] = i
        eye_ball = ball[eye_ids]
        if (eye_ball < 0).any():
            raise ValueError("eye_ids holds vertices outside the eyeballs")
        rows, eye_row = [], np.empty(len(eye_ids), np.intp)
        for i, (start, end) in enumerate(head.eyeballs):
            mine = np.flatnonzero(eye_ball == i)
            block = fit.spread[eye_ids[mine]]
            if len(mine) and (block - block[np.zeros(len(mine), np.intp)]).count_nonzero() == 0:
                eye_row[mine] = sum(r.shape[0] for r in rows)
                rows.append(block[:1])
            else:
                eye_row[mine] = sum(r.shape[0] for r in rows) + np.arange(len(mine))
                rows.append(block)
        x = head.neutral[eye_ids].astype(np.float64)
        return cls(
            fit=fit, columns=columns, gather=np.searchsorted(columns, output_ids),
            neutral=np.ascontiguousarray(head.neutral[columns]),
            identity=np.ascontiguousarray(identity.reshape(len(identity), 3 * c)),
            expression=np.ascontiguousarray(expression.reshape(len(expression), 3 * c)),
            seen=fit.seen[:, columns].tocsr(), spread=fit.spread[columns].tocsr(),
            eye_neutral=x, eye_affine_x=np.c_[x - head.eyeball_centres[eye_ball], np.ones(len(x))],
            eye_ball=eye_ball, eye_spread=sparse.vstack(rows, format="csr"), eye_spread_row=eye_row,
        )

    def decode_cm(self, kind: str, a_full: np.ndarray, a_id: np.ndarray,
                  coefficients: Coefficients) -> tuple[np.ndarray, np.ndarray]:
        """The output vertices (V, 3) and eyeball vertices (Ve, 3), float64 cm: ``IctMeshes.positions``'s
        head at those vertices. ``a_full``, ``a_id``: (3, S, S) canonical maps."""
        if kind not in ("full", "identity", "expression"):
            raise ValueError(f"unknown mesh kind {kind!r}")
        c = len(self.columns)
        # float32 as HeadFit.model_cm, so the two agree to float32 rounding.
        identity_cm = self.neutral + (coefficients.identity.astype(np.float32) @ self.identity).reshape(c, 3)
        moved = identity_cm
        if kind != "identity":
            moved = identity_cm + (coefficients.expression.astype(np.float32) @ self.expression).reshape(c, 3)
        # The residual is read against the identity alone for identity and expression (ict_mesh).
        base, a = (moved, a_full) if kind == "full" else (identity_cm, a_id)
        residual = self.fit.sample(a) - self.seen @ base.astype(np.float64)  # (Nr, 3)
        out = base + self.spread @ residual
        if kind == "expression":
            out += moved.astype(np.float64) - identity_cm
        eyes = self._eyes_cm(coefficients) + (self.eye_spread @ residual)[self.eye_spread_row]
        return out[self.gather], eyes

    def _eyes_cm(self, coefficients: Coefficients) -> np.ndarray:
        """(Ve, 3) the eyeballs placed by the identity (ICT's expressions do not move them), as model_cm."""
        head = self.fit.head
        affine = np.tensordot(coefficients.identity.astype(np.float64), head.eyeball_identity, axes=([0], [1]))
        # affine: (2, 4, 3), one map per eyeball
        return self.eye_neutral + np.einsum("vk,vkc->vc", self.eye_affine_x, affine[self.eye_ball])
