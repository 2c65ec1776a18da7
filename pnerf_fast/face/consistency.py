"""Landmark consistency of novel views, where no ground-truth image exists.

A portrait finetuned from one photo is rendered from a new camera; MediaPipe's face mesh
runs on the render, and the 24 landmarks it finds are compared with the subject's own 3D
landmarks (the aligned photo's ``landmarks_world``, see docs/FACE.md) projected into that
camera. If the model's geometry holds, the two agree; a blurred or collapsed side view
either hides the face from the detector (a detection failure) or moves its features (a
large error). docs/PHOTO_CHECKS.md describes the benchmark built on it.

Everything here is numpy only, except :func:`detect_points24`, which runs MediaPipe.

- :func:`project_landmarks`: world landmarks -> pixels of a camera;
- :func:`inter_ocular`: the normaliser, the distance between the outer eye corners;
- :func:`nme`: mean point-to-point error over the inter-ocular distance;
- :func:`match_detection`: which detected face (if any) is the subject's;
- :func:`score_view`: one view's result (detected or not, and its NME);
- :func:`detection_rate`, :func:`summarize_bands`: means over views and yaw bands.
"""
from __future__ import annotations

import warnings

import numpy as np

from .landmarks import NAMES, NUM_LANDMARKS

__all__ = ["IOD_POINTS", "INNER_POINTS", "project_landmarks", "inter_ocular", "nme", "landmark_box", "match_detection",
           "score_view", "detection_rate", "band_of_yaw", "summarize_bands", "detect_points24"]

#: The inter-ocular distance is measured between the outer eye corners (iBUG 36 and 45),
#: the 300-W convention.
IOD_POINTS = (NAMES.index("eye_right_outer"), NAMES.index("eye_left_outer"))

#: The 19 landmarks off the jaw line (brows, eyes, nose, mouth). The 5 jaw points are the
#: least exact (MediaPipe's face oval is a fixed mesh ring, docs/FACE.md) and move along
#: the silhouette as the head turns; ``nme_inner`` leaves them out.
INNER_POINTS = tuple(i for i, n in enumerate(NAMES) if not n.startswith(("jaw_", "chin")))


def _points(x, name: str, dim: int) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != dim or a.shape[0] < 1:
        raise ValueError(f"argument '{name}': must be [n, {dim}] with n >= 1, got shape {tuple(a.shape)}")
    if not np.all(np.isfinite(a)):
        rows = sorted({int(i) for i in np.argwhere(~np.isfinite(a))[:, 0]})
        raise ValueError(f"argument '{name}': has NaN or inf in rows {rows[:8]}")
    return a


def project_landmarks(landmarks_world, camera) -> np.ndarray:
    """Project 3D landmarks into a camera.

    Args:
        landmarks_world: [n, 3] world points (e.g. ``Subject.landmarks``).
        camera: a :class:`~pnerf_fast.geometry.cameras.Camera` (OpenGL axes).
    Returns:
        [n, 2] float64 pixel (u, v), u right, v down, pixel centres at integer + 0.5
        (MediaPipe's and ``Camera.project``'s convention).
    Raises:
        ValueError naming ``landmarks_world`` for a bad shape, non-finite values, or a
        point on or behind the camera plane.
    """
    p = _points(landmarks_world, "landmarks_world", 3)
    uv, depth = camera.project(p)
    if np.any(depth <= 1e-9):
        bad = [int(i) for i in np.flatnonzero(depth <= 1e-9)]
        raise ValueError(f"argument 'landmarks_world': points {bad[:8]} are behind the camera (depth <= 0)")
    return uv


def inter_ocular(points_2d) -> float:
    """Distance in pixels between the outer eye corners of [24, 2] landmarks (project order)."""
    p = _points(points_2d, "points_2d", 2)
    if p.shape[0] != NUM_LANDMARKS:
        raise ValueError(f"argument 'points_2d': must hold the {NUM_LANDMARKS} project landmarks, got {p.shape[0]}")
    return float(np.linalg.norm(p[IOD_POINTS[0]] - p[IOD_POINTS[1]]))


def nme(detected, reference, normalizer: float | None = None, points=None) -> float:
    """Normalised mean error: the mean over landmarks of ``|detected_i - reference_i|``,
    divided by ``normalizer`` (default: the inter-ocular distance of ``reference``).

    Args:
        detected: [24, 2] pixels (or [n, 2] with an explicit ``normalizer``).
        reference: the same shape: the projected subject landmarks.
        normalizer: a length in pixels > 0.
        points: indices of the landmarks to average over (default: all), e.g. INNER_POINTS.
    Returns:
        The NME as a fraction of the normaliser (0.05 = 5 % of the inter-ocular distance).
    """
    d = _points(detected, "detected", 2)
    r = _points(reference, "reference", 2)
    if d.shape != r.shape:
        raise ValueError(f"arguments 'detected' and 'reference': shapes differ, {d.shape} vs {r.shape}")
    norm = inter_ocular(r) if normalizer is None else float(normalizer)
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"argument 'normalizer': must be a length > 0, got {norm} "
                         "(with the default: the reference's eye corners coincide)")
    err = np.linalg.norm(d - r, axis=1)
    if points is not None:
        idx = np.asarray(points, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= len(err):
            raise ValueError(f"argument 'points': must be a non-empty list of indices below {len(err)}")
        err = err[idx]
    return float(np.mean(err) / norm)


def landmark_box(points_2d) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of [n, 2] pixel points."""
    p = _points(points_2d, "points_2d", 2)
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


def match_detection(candidates, projected) -> int | None:
    """Which detected face is the subject's.

    A candidate matches when the centroid of its landmarks lies inside the box of the
    projected landmarks: a face the detector finds somewhere else (in the hair, in the
    background) is not the subject's face and does not count as a detection. Among
    matching candidates the one closest to the projection (smallest mean error) is
    returned.

    Args:
        candidates: a list of [n, 2] detected landmark sets (may be empty).
        projected: [n, 2] projected subject landmarks.
    Returns:
        The index into ``candidates``, or None when none matches.
    """
    r = _points(projected, "projected", 2)
    x0, y0, x1, y1 = landmark_box(r)
    best, best_err = None, np.inf
    for i, c in enumerate(candidates):
        c = _points(c, f"candidates[{i}]", 2)
        if c.shape != r.shape:
            raise ValueError(f"argument 'candidates[{i}]': shape {c.shape} differs from 'projected' {r.shape}")
        cx, cy = c.mean(0)
        if not (x0 <= cx <= x1 and y0 <= cy <= y1):
            continue
        err = float(np.mean(np.linalg.norm(c - r, axis=1)))
        if err < best_err:
            best, best_err = i, err
    return best


def score_view(candidates, projected) -> dict:
    """One view: ``{"detected": bool, "nme": float | None, "nme_inner": float | None,
    "iod_px": float}`` (``nme_inner``: over INNER_POINTS only).

    ``candidates`` are the faces the detector found in the render (a list of [24, 2]; an
    empty list or None when it found none); ``projected`` the subject's landmarks
    projected into the render's camera. The NME is that of the matching face
    (:func:`match_detection`), None when no face matches."""
    r = _points(projected, "projected", 2)
    cands = [] if candidates is None else list(candidates)
    i = match_detection(cands, r)
    out = {"detected": i is not None, "nme": None, "nme_inner": None, "iod_px": inter_ocular(r)}
    if i is not None:
        out["nme"] = nme(cands[i], r)
        if len(r) == NUM_LANDMARKS:
            out["nme_inner"] = nme(cands[i], r, points=INNER_POINTS)
    return out


def detection_rate(detected) -> float:
    """The fraction of views whose face was detected (a list of bools, at least one)."""
    d = list(detected)
    if not d:
        raise ValueError("argument 'detected': no views")
    return float(np.mean([bool(x) for x in d]))


def band_of_yaw(yaw_deg: float, bands=(0, 10, 20, 30)) -> int:
    """The band a yaw belongs to: the nearest of ``bands`` to ``|yaw|``."""
    a = abs(float(yaw_deg))
    return int(min(bands, key=lambda b: abs(a - b)))


def summarize_bands(views: list[dict], bands=(0, 10, 20, 30)) -> dict:
    """Per yaw band: ``{str(band): {"detect_rate", "nme", "nme_inner", "n_views", "n_detected"}}``.

    ``views`` are :func:`score_view` results with a ``"yaw"`` key. ``nme`` is the mean
    over the band's detected views (None when none was detected: an undetected face has
    no error to average, and the detection rate says so)."""
    out = {}
    for b in bands:
        rows = [v for v in views if band_of_yaw(v["yaw"], bands) == b]
        if not rows:
            continue
        errs = [v["nme"] for v in rows if v["detected"]]
        inner = [v["nme_inner"] for v in rows if v["detected"] and v.get("nme_inner") is not None]
        out[str(b)] = {"detect_rate": detection_rate(v["detected"] for v in rows),
                       "nme": float(np.mean(errs)) if errs else None,
                       "nme_inner": float(np.mean(inner)) if inner else None,
                       "n_views": len(rows), "n_detected": len(errs)}
    return out


def detect_points24(image) -> list[np.ndarray]:
    """MediaPipe's 24 project landmarks in an RGB image, with the same offline face mesh
    (and full-range detector fallback) that ``pnerf align`` uses.

    Args:
        image: [H, W, 3] uint8, or float in [0, 1] (a render).
    Returns:
        A list with one [24, 2] pixel array for the face found (the largest, as in
        alignment), or an empty list when MediaPipe finds no face.
    """
    from .align import FaceAlignmentError, detect_landmarks

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"argument 'image': must be [H, W, 3], got shape {tuple(img.shape)}")
    if img.dtype != np.uint8:
        img = (np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "found N faces": the largest is returned
            det = detect_landmarks(img, source="render")
    except FaceAlignmentError:
        return []
    return [det.points24[:, :2].copy()]
