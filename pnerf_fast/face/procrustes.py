"""Similarity transforms, Umeyama alignment and the mean face (generalized Procrustes).

Canonical face space (paper Sec. 3.3): every subject's world space is mapped into one
shared space by a similarity ``x' = s R x + t`` that takes the subject's 3D landmarks
``F_m`` onto the mean face ``F_bar``. The mean face comes from generalized Procrustes
analysis (GPA) of the training subjects' landmarks; its gauge (where it sits, how it is
turned and how big it is) is fixed by aligning it to ``landmarks.TEMPLATE`` with a
similarity, so canonical space is head-centred, upright and template-scaled.

Conventions: points are row vectors ``[..., 3]``; ``apply(x) = s * x @ R.T + t``.
``a.compose(b)`` is "``b`` first, then ``a``": ``a.compose(b).apply(x) == a.apply(b.apply(x))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .landmarks import TEMPLATE

__all__ = [
    "SimilarityTransform",
    "umeyama",
    "generalized_procrustes",
    "canonical_transform",
    "check_points",
]

# Relative tolerance below which a point set counts as collinear: the second singular
# value of the centred points, divided by the first.
_COLLINEAR_RTOL = 1e-9
# How far from orthonormal (max abs entry of R^T R - I) a rotation may be.
_ROTATION_ATOL = 1e-5


def check_points(points, name: str, *, min_points: int = 3) -> np.ndarray:
    """``points`` as a float64 [N, 3] array, or a ValueError naming ``name``: wrong shape,
    non-finite entries, fewer than ``min_points`` points, or all points collinear."""
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an [N, 3] array of numbers: {e}") from None
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3], got {tuple(p.shape)}")
    if p.shape[0] < min_points:
        raise ValueError(f"{name} needs at least {min_points} points, got {p.shape[0]}")
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"{name} has non-finite (NaN/inf) coordinates in rows {rows}")
    sv = np.linalg.svd(p - p.mean(0), compute_uv=False)
    if sv[0] <= 0 or sv[1] <= _COLLINEAR_RTOL * sv[0]:
        what = "identical" if sv[0] <= 0 else "collinear"
        raise ValueError(f"{name}: all {p.shape[0]} points are {what}; need at least 3 non-collinear points")
    return p


@dataclass(frozen=True, eq=False)
class SimilarityTransform:
    """``x' = scale * rotation @ x + translation`` with ``scale > 0`` and ``det(rotation) = +1``."""

    scale: float
    rotation: np.ndarray     # [3, 3] float64, proper rotation
    translation: np.ndarray  # [3] float64

    def __post_init__(self):
        s = float(self.scale)
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"SimilarityTransform.scale must be a positive finite number, got {self.scale!r}")
        r = np.array(self.rotation, dtype=np.float64)
        if r.shape != (3, 3):
            raise ValueError(f"SimilarityTransform.rotation must be 3x3, got shape {r.shape}")
        if not np.isfinite(r).all():
            raise ValueError("SimilarityTransform.rotation has non-finite entries")
        err = np.abs(r.T @ r - np.eye(3)).max()
        if err > _ROTATION_ATOL:
            raise ValueError(f"SimilarityTransform.rotation is not orthonormal (max |R^T R - I| = {err:.2e})")
        if np.linalg.det(r) < 0:
            raise ValueError("SimilarityTransform.rotation is a reflection (det = -1); only proper rotations are allowed")
        t = np.array(self.translation, dtype=np.float64).reshape(-1)
        if t.shape != (3,):
            raise ValueError(f"SimilarityTransform.translation must have 3 entries, got shape {np.shape(self.translation)}")
        if not np.isfinite(t).all():
            raise ValueError("SimilarityTransform.translation has non-finite entries")
        r.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "translation", t)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def identity(cls) -> "SimilarityTransform":
        return cls(1.0, np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, m) -> "SimilarityTransform":
        """From a 4x4 matrix whose top-left block is ``s R`` (the inverse of ``to_matrix``)."""
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"from_matrix: matrix must be 4x4, got shape {m.shape}")
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError(f"from_matrix: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        a = m[:3, :3]
        det = np.linalg.det(a)
        if not det > 0:
            raise ValueError(f"from_matrix: top-left block must be s*R with s > 0 and det(R) = 1; det = {det:.3g}")
        s = det ** (1.0 / 3.0)
        return cls(s, a / s, m[:3, 3])

    # ---- use ------------------------------------------------------------------------
    def apply(self, points) -> np.ndarray:
        """``s R x + t`` for points [..., 3] (float64 out)."""
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise ValueError(f"points must have shape [..., 3], got {tuple(p.shape)}")
        return self.scale * (p @ self.rotation.T) + self.translation

    __call__ = apply

    def apply_vectors(self, vectors) -> np.ndarray:
        """Directions [..., 3]: rotated only (unit vectors stay unit)."""
        v = np.asarray(vectors, dtype=np.float64)
        if v.shape[-1:] != (3,):
            raise ValueError(f"vectors must have shape [..., 3], got {tuple(v.shape)}")
        return v @ self.rotation.T

    def inverse(self) -> "SimilarityTransform":
        """``x = (1/s) R^T (x' - t)``."""
        rt = self.rotation.T
        return SimilarityTransform(1.0 / self.scale, rt, -(rt @ self.translation) / self.scale)

    def compose(self, other: "SimilarityTransform") -> "SimilarityTransform":
        """``other`` first, then ``self``: ``self.compose(other).apply(x) == self.apply(other.apply(x))``."""
        if not isinstance(other, SimilarityTransform):
            raise TypeError(f"compose: other must be a SimilarityTransform, got {type(other).__name__}")
        return SimilarityTransform(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            self.scale * (self.rotation @ other.translation) + self.translation,
        )

    def to_matrix(self) -> np.ndarray:
        """4x4 float64 homogeneous matrix; top-left block ``s R``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def to_warp_row(self) -> np.ndarray:
        """float32 [12]: ``(s R).ravel()`` row-major, then ``t``. One row of the canonical-warp
        kernel's per-subject table [T, 12]: ``x'_i = sum_j row[3 i + j] x_j + row[9 + i]``."""
        return np.concatenate([(self.scale * self.rotation).reshape(-1), self.translation]).astype(np.float32)

    @classmethod
    def from_warp_row(cls, row) -> "SimilarityTransform":
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        if row.shape != (12,):
            raise ValueError(f"warp row must have 12 entries, got {row.shape[0]}")
        m = np.eye(4)
        m[:3, :3] = row[:9].reshape(3, 3)
        m[:3, 3] = row[9:]
        # float32 rows lose orthonormality at ~1e-7; re-orthonormalize the rotation.
        a = m[:3, :3]
        s = np.linalg.det(a) ** (1.0 / 3.0) if np.linalg.det(a) > 0 else float("nan")
        if not np.isfinite(s):
            raise ValueError("warp row: the 3x3 block must be s*R with s > 0 and det(R) = 1")
        u, _, vt = np.linalg.svd(a / s)
        return cls(s, u @ vt, m[:3, 3])

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SimilarityTransform":
        if not isinstance(d, Mapping):
            raise ValueError(f"similarity transform must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("scale", "rotation", "translation") if k not in d]
        if missing:
            raise ValueError(f"similarity transform is missing field(s) {missing}")
        return cls(d["scale"], d["rotation"], d["translation"])

    def allclose(self, other: "SimilarityTransform", atol: float = 1e-8) -> bool:
        return (
            abs(self.scale - other.scale) <= atol
            and np.allclose(self.rotation, other.rotation, atol=atol, rtol=0)
            and np.allclose(self.translation, other.translation, atol=atol, rtol=0)
        )

    def __repr__(self) -> str:
        angle = np.degrees(np.arccos(np.clip((np.trace(self.rotation) - 1) / 2, -1, 1)))
        t = np.array2string(self.translation, precision=4, separator=", ")
        return f"SimilarityTransform(scale={self.scale:.6g}, rotation={angle:.3f} deg, translation={t})"


def umeyama(src, dst, *, with_scale: bool = True) -> SimilarityTransform:
    """Least-squares similarity (Umeyama 1991) mapping ``src`` onto ``dst``:
    argmin over s, R, t of ``sum_i |s R src_i + t - dst_i|^2`` with ``det(R) = +1``
    (reflections are excluded). ``with_scale=False`` gives the rigid fit (s = 1).

    src, dst: [N, 3] corresponding points, N >= 3, not all collinear, finite.
    """
    x = check_points(src, "src")
    y = check_points(dst, "dst")
    if x.shape != y.shape:
        raise ValueError(f"src and dst must have the same shape (same points, same order), got {x.shape} and {y.shape}")
    n = x.shape[0]
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cov = yc.T @ xc / n                       # [3, 3]
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0                        # the best proper rotation, not a reflection
    r = (u * sign) @ vt
    if with_scale:
        var_x = (xc * xc).sum() / n
        s = float((d * sign).sum() / var_x)
        if not s > 0:
            raise ValueError(
                "umeyama: the best similarity has a non-positive scale; src and dst do not correspond "
                "(check that they list the same landmarks in the same order)"
            )
    else:
        s = 1.0
    t = my - s * (r @ mx)
    # Remove round-off drift from orthonormality.
    uu, _, vv = np.linalg.svd(r)
    return SimilarityTransform(s, uu @ vv, t)


def generalized_procrustes(shapes, *, template=TEMPLATE, iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Mean shape [N, 3] of ``shapes`` [M, N, 3] under similarity transforms.

    Alternates (1) aligning every shape to the current mean by Umeyama and (2) averaging.
    After each step the mean's gauge is fixed by a similarity onto ``template`` [N, 3]
    (default ``landmarks.TEMPLATE``), so the result is centred, oriented and scaled like
    the template: its shape comes from the data, its pose and size from the template.
    Stops when the mean moves less than ``tol`` (RMS over points) or after ``iters`` rounds.
    """
    s = np.asarray(shapes, dtype=np.float64)
    if s.ndim != 3 or s.shape[2] != 3:
        raise ValueError(f"shapes must have shape [M, N, 3], got {tuple(s.shape)}")
    if s.shape[0] < 1:
        raise ValueError("shapes must hold at least one shape")
    tmpl = check_points(template, "template")
    if tmpl.shape[0] != s.shape[1]:
        raise ValueError(f"template has {tmpl.shape[0]} points but each shape has {s.shape[1]}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for m in range(s.shape[0]):
        check_points(s[m], f"shapes[{m}]")

    mean = umeyama(s[0], tmpl).apply(s[0])
    for _ in range(iters):
        aligned = np.stack([umeyama(x, mean).apply(x) for x in s])
        new = aligned.mean(0)
        new = umeyama(new, tmpl).apply(new)   # fix the gauge
        delta = np.sqrt(((new - mean) ** 2).sum(1).mean())
        mean = new
        if delta < tol:
            break
    return mean


def canonical_transform(landmarks_world, mean_face) -> SimilarityTransform:
    """World -> canonical similarity for one subject: Umeyama from its world landmarks
    [24, 3] onto the mean face [24, 3] (both in ``landmarks.NAMES`` order)."""
    lw = check_points(landmarks_world, "landmarks_world")
    mf = check_points(mean_face, "mean_face")
    if lw.shape != mf.shape:
        raise ValueError(f"landmarks_world {lw.shape} and mean_face {mf.shape} must have the same shape")
    return umeyama(lw, mf)


def alignment_residual(transform: SimilarityTransform, src, dst) -> float:
    """RMS distance between ``transform.apply(src)`` and ``dst`` (in dst units)."""
    d = transform.apply(np.asarray(src, dtype=np.float64)) - np.asarray(dst, dtype=np.float64)
    return float(np.sqrt((d * d).sum(-1).mean()))
