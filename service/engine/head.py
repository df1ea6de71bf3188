"""ICT-FaceKit's head in the service: the bounded coefficient fit and the output mesh in ICT's topology.

The network predicts the face region as S x S maps (A = A_id + A_exp, canonical units). The mesh a
user downloads is ICT's own: the region's vertices where the maps put them, everything else (the rest
of the head, the eyeballs, teeth, gums, mouth socket) from ICT's linear model at identity and
expression coefficients fitted to the maps. The difference between the maps and the fitted model at
the region's vertices (the residual: what the linear model cannot express) is carried smoothly out
of the region, so the two meet at the rim without a step.

The maps are compared with the fitted model through the same sampler (the store's masked-bilinear
taps of the S x S map at ICT's vertex UVs, applied to the model rasterised into the same layout), so
the sampler's own error cancels: a face that ICT's model can express comes back as ICT's exact mesh.

ICT's arrays come from ``service/assets/ict/ict_head.npz`` (written by ``python -m
training.facemodel.head_asset``, MIT licence beside it), checked against ``HEAD_ASSET_SHA256``. It
holds ICT's bases at the face region, the ring of vertices around it (what the fit and the seam read)
and the rest of what ``region=head`` outputs (ICT's face part, the back of the head, the mouth and eye
sockets), an affine map per identity component for each eyeball, and for the teeth and for the gums and
tongue an affine map per identity component and the deltas of the jaw's four expressions (the only
ones that move them); the latter are expanded into the dense bases at load, so every vertex but the
eyeballs' has bases in ``HeadModel``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.linalg import cholesky, solve_triangular
from scipy.optimize import lsq_linear
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from .assets import read_verified

HEAD_ASSET_PATH = Path(__file__).resolve().parents[1] / "assets" / "ict" / "ict_head.npz"
HEAD_ASSET_SHA256 = "3acd6890f2cb8d9acf5ef9a65a73e484c6a2083c9292b91f0eebb5c18ca5be61"


@dataclass(frozen=True)
class FitPriors:
    """How hard the fit pulls the coefficients towards 0. ``identity`` and ``expression``: quadratic
    costs (cm^2 of summed squared vertex error that a unit coefficient costs; the data term gives a unit
    identity coefficient 50-750 cm^2 over the region, a unit weight 13-11,000 cm^2); ``expression_l1``:
    a linear cost per unit weight (cm^2), which sets a weight the maps barely support to exactly 0.

    The defaults are tuned for 0.7.0's maps on 336 synthetic faces of the validation seed (not the
    held-out set): its A carries little of the expression (fitted weights correlate with the truth at
    0.52 for jawOpen, 0.36 mouthSmile_L, ~0 for most), so a weak prior lets the maps' noise through
    (MAE 0.148 at 1 / 1 / 0, worse than all-zero weights' 0.081) and only a strong linear cost keeps
    the fit from being worse than zeros (0.0800). On exact maps the same prior costs accuracy (MAE
    0.072 against 0.038 at 1 / 1 / 0): a model whose maps carry the expression wants a weaker one.
    See docs/evaluation.md (blendshapes)."""

    identity: float = 10.0
    expression: float = 1.0
    expression_l1: float = 400.0


# The weak prior for maps that hold the expression exactly (ICT's own model rasterised).
EXACT_MAPS = FitPriors(identity=1.0, expression=1.0, expression_l1=0.0)
# The residual fades to zero over this distance (cm, on the neutral head) from the nearest region vertex.
SPREAD_CM = 3.0
SPREAD_NEIGHBOURS = 8


class HeadAssetError(RuntimeError):
    """The ICT head asset is missing or not the shipped file."""


@dataclass(frozen=True, eq=False)
class HeadModel:
    """ICT's head as the asset stores it (N ICT vertices, Nb of them with bases, F triangles)."""

    neutral: np.ndarray  # (N, 3) float32 cm
    basis_vertices: np.ndarray  # (Nb,) sorted ICT ids: the face region, the ring around it, what region=head outputs
    identity: np.ndarray  # (100, Nb, 3) float32 cm deltas at basis_vertices (the teeth, gums: their affine maps')
    expression: np.ndarray  # (53, Nb, 3) float32 cm deltas at basis_vertices
    expression_names: list[str]
    triangles: np.ndarray  # (F, 3) ICT vertex ids
    eyeballs: np.ndarray  # (2, 2) ICT vertex ranges
    layouts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # S -> pixels (P,), vertices (P, 3), bary (P, 3)
    face: "SubMesh"  # the face region as an output mesh, ICT's triangles and UVs
    eyes: "SubMesh"  # both eyeballs
    head: "SubMesh"  # region=head: ICT's face part (ears, neck), the back of the head, the sockets, teeth, gums
    head_palette_uv: np.ndarray  # (4, 2) the texels the head's unseen parts read: [skin, interior, teeth, gums]
    eyeball_centres: np.ndarray  # (2, 3) cm, the neutral eyeballs' vertex means
    eyeball_identity: np.ndarray  # (2, 100, 4, 3): [x - centre, 1] @ A = identity component's delta at x

    @classmethod
    def load(cls, path: Path = HEAD_ASSET_PATH, sha256: str = HEAD_ASSET_SHA256) -> "HeadModel":
        return _load_head(Path(path).resolve(), sha256)

    @property
    def n_identity(self) -> int:
        return len(self.identity)


@lru_cache(maxsize=2)
def _load_head(path: Path, sha256: str) -> HeadModel:
    data = read_verified(path, sha256, HeadAssetError, "ICT head asset",
                         "service/assets/ict (python -m training.facemodel.head_asset writes it)")
    with np.load(io.BytesIO(data)) as d:
        sizes = sorted(int(k[6:-7]) for k in d.files if k.startswith("layout") and k.endswith("_pixels"))
        ids, identity, expression = _with_mouth(d)
        return HeadModel(
            neutral=d["neutral"], basis_vertices=ids, identity=identity, expression=expression,
            expression_names=[str(n) for n in d["expression_names"]], triangles=d["triangles"].astype(np.intp),
            eyeballs=d["eyeballs"],
            layouts={s: (d[f"layout{s}_pixels"], d[f"layout{s}_vertices"], d[f"layout{s}_bary"]) for s in sizes},
            face=SubMesh.read(d, "face"), eyes=SubMesh.read(d, "eye"), head=SubMesh.read(d, "head"),
            head_palette_uv=d["head_palette_uv"].astype(np.float64),
            eyeball_centres=d["eyeball_centres"].astype(np.float64),
            eyeball_identity=d["eyeball_identity"].astype(np.float64),
        )


def _with_mouth(d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The asset's bases with the teeth's and the gums and tongue's expanded from their compact form:
    (Nb,) sorted ICT ids, (100, Nb, 3) and (53, Nb, 3) float32 cm deltas. The expansion is the affine
    maps' and the four jaw deltas' own arithmetic done once at load, so every decode (HeadFit.model_cm,
    RegionDecoder, the morph targets) reads one dense basis, as for the rest of the head."""
    ids = d["basis_vertices"].astype(np.intp)
    identity, expression = unshuffled_half(d["identity_bytes"]), unshuffled_half(d["expression_bytes"])
    neutral = d["neutral"].astype(np.float64)
    part_ids, part_identity = [], []
    for (start, end), centre, maps in zip(d["mouth_ranges"], d["mouth_centres"], d["mouth_identity"]):
        mine = np.setdiff1d(np.arange(start, end), ids)  # the part's vertices not stored in full
        x = np.c_[neutral[mine] - centre, np.ones(len(mine))]  # (n, 4)
        part_ids.append(mine)
        part_identity.append(np.einsum("nk,ckd->cnd", x, maps.astype(np.float64)))  # (100, n, 3)
    mouth = np.concatenate(part_ids)
    mouth_expression = np.zeros((len(expression), len(mouth), 3), np.float32)
    mouth_expression[d["mouth_expressions"]] = unshuffled_half(d["mouth_expression_bytes"])
    all_ids = np.r_[ids, mouth]
    order = np.argsort(all_ids, kind="stable")
    identity = np.concatenate([identity, np.concatenate(part_identity, 1).astype(np.float32)], 1)[:, order]
    expression = np.concatenate([expression, mouth_expression], 1)[:, order]
    return all_ids[order], np.ascontiguousarray(identity), np.ascontiguousarray(expression)


@dataclass(frozen=True, eq=False)
class SubMesh:
    """Part of ICT's mesh as a mesh to output: one vertex per (ICT vertex, texture coordinate) pair."""

    ids: np.ndarray  # (V,) ICT vertex ids
    uv: np.ndarray  # (V, 2) float32 texture coordinates, v up
    triangles: np.ndarray  # (F, 3) int32 indices into ids, counter-clockwise seen from outside

    @classmethod
    def read(cls, arrays, prefix: str) -> "SubMesh":
        return cls(arrays[f"{prefix}_vertices"].astype(np.intp), arrays[f"{prefix}_uv"].astype(np.float32),
                   arrays[f"{prefix}_triangles"].astype(np.int32))


def unshuffled_half(planes: np.ndarray) -> np.ndarray:
    """(2, K, 3, Nb) uint8, a float16 basis's low and high byte planes (the asset's storage,
    ``training.facemodel.head_asset.shuffled_half``) -> (K, Nb, 3) float32."""
    half = np.ascontiguousarray(np.moveaxis(planes, 0, -1)).view("<f2")[..., 0]
    return half.transpose(0, 2, 1).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Coefficients:
    identity: np.ndarray  # (100,) ICT identity coefficients
    expression: np.ndarray  # (53,) blendshape weights in [0, 1]


def unit_box_least_squares(r: np.ndarray, d: np.ndarray, gram: np.ndarray | None = None,
                           max_steps: int = 50) -> np.ndarray:
    """w (n,) in [0, 1] minimising |r w - d|^2, for a square full-rank ``r`` (n, n) and ``d`` (n,); ``gram``:
    r^T r when the caller has it.

    Newton's method on the optimum's fixed point w = clip(w - grad / diag(gram), 0, 1) (a primal-dual
    active set): each step fixes the weights the clip holds at 0 or 1 and solves for the others exactly,
    until those sets stop changing, which is then the KKT point, unique as the problem is strictly convex.
    A few steps of one small solve each, where scipy's bvls (``lsq_linear``) spends about 3 ms in Python on
    the 53 blendshape weights; should the sets still move after ``max_steps``, bvls answers."""
    gram = r.T @ r if gram is None else gram
    g = r.T @ d
    scale = np.diag(gram)
    w = np.linalg.solve(r, d)  # unbounded
    lower, upper = w < 0.0, w > 1.0
    for _ in range(max_steps):
        free = ~(lower | upper)
        w = upper.astype(np.float64)
        if free.any():
            w[free] = np.linalg.solve(gram[np.ix_(free, free)], g[free] - gram[np.ix_(free, upper)].sum(1))
        step = w - (gram @ w - g) / scale
        new_lower, new_upper = step < 0.0, step > 1.0
        if (new_lower == lower).all() and (new_upper == upper).all():
            return w
        lower, upper = new_lower, new_upper
    return np.clip(lsq_linear(r, d, bounds=(0.0, 1.0), method="bvls").x, 0.0, 1.0)


@dataclass(frozen=True, eq=False)
class HeadFit:
    """One model store's face region (Nr ICT vertices, read off its S x S maps) joined to ICT's head."""

    head: HeadModel
    region_ids: np.ndarray  # (Nr,) ICT ids of the region's vertices
    tap_index: np.ndarray  # (Nr, 4) flat pixel indices into an S x S map
    tap_weight: np.ndarray  # (Nr, 4)
    seen: sparse.csr_matrix  # (Nr, N): ICT vertex positions -> what the taps read from their rasterised map
    design_t: np.ndarray  # (K, 3 Nr) the seen identity and expression bases, transposed, cm
    seen_neutral: np.ndarray  # (Nr, 3) cm
    identity_solve: np.ndarray  # (100, K): x_id = identity_solve @ [rhs; w] (identity minimised out)
    expression_chol: np.ndarray  # (53, 53) upper R, R^T R = the weights' Schur complement
    expression_rhs: np.ndarray  # (53, K): R^T z = expression_rhs @ rhs
    expression_gram: np.ndarray  # (53, 53) R^T R
    spread: sparse.csr_matrix  # (N, Nr): region residuals -> every ICT vertex
    center: np.ndarray  # (3,) cm, the canonical origin
    scale: float  # cm per canonical unit
    expression_l1: float  # FitPriors.expression_l1

    @classmethod
    def build(cls, head: HeadModel, topology: dict[str, np.ndarray], size: int, center, scale: float,
              priors: FitPriors = FitPriors()) -> "HeadFit":
        """``topology``: the store's topology.npz arrays (``ict_vertex_ids``, ``ict_sample_index``/``_weight``)."""
        region_ids = topology["ict_vertex_ids"].astype(np.intp)
        tap_index = topology["ict_sample_index"].astype(np.intp)
        tap_weight = topology["ict_sample_weight"].astype(np.float64)
        n = len(head.neutral)
        seen = _seen_operator(head, tap_index, tap_weight, size, region_ids, n)
        if not np.isin(seen.indices, head.basis_vertices).all():
            raise HeadAssetError("the store's face region reads ICT vertices the head asset holds no bases for "
                                 "(rewrite it with python -m training.facemodel.head_asset)")
        bases = np.concatenate([head.identity, head.expression])  # (K, Nb, 3)
        k, k_id = len(bases), head.n_identity
        nb = len(head.basis_vertices)
        design = seen[:, head.basis_vertices] @ bases.transpose(1, 0, 2).reshape(nb, k * 3)
        design = design.reshape(len(region_ids), k, 3)
        design_t = np.ascontiguousarray(design.transpose(1, 0, 2).reshape(k, -1))
        prior = np.r_[np.full(k_id, priors.identity), np.full(k - k_id, priors.expression)]
        gram = design_t @ design_t.T + np.diag(prior)
        # The identity is unbounded, so it is minimised out in closed form; what is left is a bounded
        # least-squares problem in the 53 weights alone (a Schur complement), solved per face.
        g_ii, g_ie, g_ee = gram[:k_id, :k_id], gram[:k_id, k_id:], gram[k_id:, k_id:]
        inv_ii = np.linalg.inv(g_ii)
        chol = cholesky(g_ee - g_ie.T @ inv_ii @ g_ie)
        select = np.eye(k)
        expression_rhs = solve_triangular(chol, select[k_id:] - g_ie.T @ inv_ii @ select[:k_id], trans="T")
        identity_solve = np.concatenate([inv_ii @ select[:k_id, :], -inv_ii @ g_ie], 1)
        return cls(head, region_ids, tap_index, tap_weight, seen, design_t, seen @ head.neutral.astype(np.float64),
                   identity_solve, chol, expression_rhs, chol.T @ chol, _spread_operator(head, region_ids),
                   np.asarray(center, np.float64), float(scale), float(priors.expression_l1))

    def sample(self, a: np.ndarray) -> np.ndarray:
        """(3, S, S) canonical map -> (Nr, 3) cm at the region's ICT vertices."""
        flat = a.reshape(3, -1).T
        canonical = np.einsum("qkc,qk->qc", flat[self.tap_index], self.tap_weight)
        return canonical * self.scale + self.center

    def fit(self, a_full: np.ndarray) -> Coefficients:
        """Identity and expression coefficients of ICT's model closest to the map ``a_full`` (3, S, S),
        solved together, the 53 weights bounded to [0, 1], a small prior pulling all towards 0."""
        target = (self.sample(a_full) - self.seen_neutral).reshape(-1)
        rhs = self.design_t @ target
        rhs[self.head.n_identity:] -= self.expression_l1 / 2.0
        weights = unit_box_least_squares(self.expression_chol, self.expression_rhs @ rhs, self.expression_gram)
        return Coefficients(identity=self.identity_solve @ np.r_[rhs, weights], expression=weights)

    def model_cm(self, coefficients: Coefficients, with_expression: bool = True) -> np.ndarray:
        """(N, 3) ICT's head at the coefficients, cm, at the asset's ``basis_vertices`` and the eyeballs
        (ICT's expressions do not move them); NaN at any vertex an asset holds no bases for (the shipped
        one holds them for every vertex but the eyeballs')."""
        ids = self.head.basis_vertices
        identity = np.tensordot(coefficients.identity.astype(np.float32), self.head.identity, axes=1)
        moved = self.head.neutral[ids] + identity
        if with_expression:
            moved = moved + np.tensordot(coefficients.expression.astype(np.float32), self.head.expression, axes=1)
        out = np.full(self.head.neutral.shape, np.nan)
        out[ids] = moved
        head = self.head
        for (start, end), centre, maps in zip(head.eyeballs, head.eyeball_centres, head.eyeball_identity):
            x = self.head.neutral[start:end].astype(np.float64)
            affine = np.tensordot(coefficients.identity.astype(np.float64), maps, axes=1)  # (4, 3)
            out[start:end] = x + np.c_[x - centre, np.ones(len(x))] @ affine
        return out

    def joined_cm(self, a: np.ndarray, model_cm: np.ndarray) -> np.ndarray:
        """(N, 3) the head: ``model_cm`` moved by the map ``a``'s residual at the region, spread outwards."""
        residual = self.sample(a) - self.seen @ model_cm
        return model_cm + self.spread @ residual


def _seen_operator(head: HeadModel, tap_index, tap_weight, size: int, region_ids, n: int) -> sparse.csr_matrix:
    """(Nr, N): each region vertex's taps of the S x S map that rasterising ICT's mesh would give. Without
    the layout for this S in the asset, the plain selection of the region's own vertices."""
    if size not in head.layouts:
        return sparse.csr_matrix((np.ones(len(region_ids)), (np.arange(len(region_ids)), region_ids)),
                                 shape=(len(region_ids), n))
    pixels, vertices, bary = head.layouts[size]
    pixel_row = np.full(size * size, -1, np.intp)
    pixel_row[pixels] = np.arange(len(pixels))
    rows = pixel_row[tap_index]  # (Nr, 4) rows of the layout; -1 where a tap is off the mask (weight 0)
    ok = rows >= 0
    q, k = np.nonzero(ok)
    rr = rows[q, k]
    values = tap_weight[q, k][:, None] * bary[rr]  # (T, 3)
    return sparse.csr_matrix((values.ravel(), (np.repeat(q, 3), vertices[rr].ravel())), shape=(len(region_ids), n))


def _spread_operator(head: HeadModel, region_ids: np.ndarray) -> sparse.csr_matrix:
    """(N, Nr): how the region's residuals move every ICT vertex. A region vertex keeps its own. The
    vertices joined to the region by ICT's edges (the rest of the face and the head, within
    ``SPREAD_CM`` of the region) take the harmonic extension: each the edge-length-weighted mean of its
    neighbours, the region fixed and 0 from ``SPREAD_CM`` on, so the residual fades along the mesh and
    an edge across the rim stretches only by the fade over its own length. Parts not joined to the
    region (teeth, gums) take their nearest region vertices' (inverse-distance weighted, faded to 0 at
    ``SPREAD_CM``); an eyeball moves rigidly, by the mean of its vertices' such weights."""
    n, nr = len(head.neutral), len(region_ids)
    distance, nearest = cKDTree(head.neutral[region_ids]).query(head.neutral, SPREAD_NEIGHBOURS)
    weight = 1.0 / np.maximum(distance, 1e-3)
    weight /= weight.sum(1, keepdims=True)
    weight *= np.clip(1.0 - distance[:, :1] / SPREAD_CM, 0.0, 1.0) ** 2
    weight[region_ids] = 0.0
    rows, cols, values = [], [], []
    for start, end in head.eyeballs:
        mean = np.zeros(nr)
        np.add.at(mean, nearest[start:end].ravel(), weight[start:end].ravel() / (end - start))
        used = np.flatnonzero(mean)
        rows.append(np.repeat(np.arange(start, end), len(used)))
        cols.append(np.tile(used, end - start))
        values.append(np.tile(mean[used], end - start))
        weight[start:end] = 0.0
    eyes = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, nr))

    # ICT's edges (its vertices, not the UV-split output vertices), weighted by 1 / neutral length.
    tris = head.triangles
    edges = np.unique(np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), 1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    length = np.linalg.norm(head.neutral[edges[:, 0]] - head.neutral[edges[:, 1]], axis=1)
    w = 1.0 / np.maximum(length, 1e-4)
    adjacency = sparse.csr_matrix((np.r_[w, w], (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                                  shape=(n, n))
    in_region = np.zeros(n, bool)
    in_region[region_ids] = True
    in_band = distance[:, 0] < SPREAD_CM
    # The vertices the harmonic extension covers: in the band, outside the region, joined to it by edges.
    _, component = connected_components(adjacency, directed=False)
    joined = np.isin(component, np.unique(component[region_ids]))
    free = np.flatnonzero(joined & in_band & ~in_region)
    eyeball = np.zeros(n, bool)
    for start, end in head.eyeballs:
        eyeball[start:end] = True
    free = free[~eyeball[free]]
    column = np.full(n, -1)
    column[region_ids] = np.arange(nr)
    a_ff = adjacency[free][:, free]
    laplacian = sparse.diags(np.asarray(adjacency[free].sum(1)).ravel()) - a_ff
    a_fb = adjacency[free][:, region_ids]  # (Nf, Nr); vertices beyond the band are 0, so they drop out
    rim = np.flatnonzero(np.asarray(a_fb.sum(0)).ravel() > 0)
    solve = splu(laplacian.tocsc())
    harmonic = solve.solve(a_fb[:, rim].toarray())  # (Nf, Nrim)
    # Each row spreads over hundreds of rim vertices, smoothly: its largest few, rescaled to the row's
    # total, move the vertex alike and keep the operator small (1.5M entries -> 16 per vertex).
    keep = min(SPREAD_NEIGHBOURS * 2, len(rim))
    top = np.argpartition(-harmonic, keep - 1, axis=1)[:, :keep]
    kept = np.take_along_axis(harmonic, top, 1)
    kept *= harmonic.sum(1, keepdims=True) / np.maximum(kept.sum(1, keepdims=True), 1e-12)
    extension = sparse.csr_matrix((kept.ravel(), (np.repeat(free, keep), rim[top].ravel())), shape=(n, nr))
    weight[free] = 0.0
    weight[joined & ~eyeball] = 0.0  # joined vertices outside the band stay where the model puts them
    per_vertex = sparse.csr_matrix((weight.ravel(), (np.repeat(np.arange(n), SPREAD_NEIGHBOURS), nearest.ravel())),
                                   shape=(n, nr))
    own = sparse.csr_matrix((np.ones(nr), (region_ids, np.arange(nr))), shape=(n, nr))
    return (per_vertex + eyes + extension + own).tocsr()
