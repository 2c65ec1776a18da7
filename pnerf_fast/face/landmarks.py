"""The project's facial landmark set: 24 semantic points in iBUG-68 order.

Every subject folder's ``face.json`` stores its landmarks in this order. Each point
keeps its iBUG-68 index (0-based), so a 68-point annotation maps onto this set by
indexing. "Right" and "left" are the *subject's*: the subject's right eye appears
on the left of a frontal photo, exactly as in iBUG-68.

World and canonical axes: y up, the face looks towards +z, the subject's right is -x.
"""
from __future__ import annotations

import numpy as np

#: (iBUG-68 index, name) in storage order.
LANDMARKS: tuple[tuple[int, str], ...] = (
    (0, "jaw_right_top"),
    (4, "jaw_right_low"),
    (8, "chin"),
    (12, "jaw_left_low"),
    (16, "jaw_left_top"),
    (17, "brow_right_outer"),
    (19, "brow_right_mid"),
    (21, "brow_right_inner"),
    (22, "brow_left_inner"),
    (24, "brow_left_mid"),
    (26, "brow_left_outer"),
    (27, "nose_bridge"),
    (30, "nose_tip"),
    (31, "nose_right_ala"),
    (33, "subnasale"),
    (35, "nose_left_ala"),
    (36, "eye_right_outer"),
    (39, "eye_right_inner"),
    (42, "eye_left_inner"),
    (45, "eye_left_outer"),
    (48, "mouth_right_corner"),
    (51, "upper_lip_top"),
    (54, "mouth_left_corner"),
    (57, "lower_lip_bottom"),
)

LANDMARK_ORDER_NAME = "pnerf24-ibug68"
IBUG_INDICES: tuple[int, ...] = tuple(i for i, _ in LANDMARKS)
NAMES: tuple[str, ...] = tuple(n for _, n in LANDMARKS)
NUM_LANDMARKS = len(LANDMARKS)
INDEX = {name: k for k, name in enumerate(NAMES)}

#: A hand-made reference face in canonical units: head centre at the origin, y up,
#: face towards +z, a head about 1.6 units wide. It fixes the gauge (position,
#: orientation, scale) of the mean face computed by Procrustes analysis, so that
#: canonical space is always head-centred and upright, whatever subjects it saw.
TEMPLATE = np.array(
    [
        (-0.72, 0.10, 0.25),   # jaw_right_top
        (-0.62, -0.50, 0.45),  # jaw_right_low
        (0.00, -0.85, 0.75),   # chin
        (0.62, -0.50, 0.45),   # jaw_left_low
        (0.72, 0.10, 0.25),    # jaw_left_top
        (-0.55, 0.33, 0.60),   # brow_right_outer
        (-0.32, 0.40, 0.74),   # brow_right_mid
        (-0.10, 0.36, 0.80),   # brow_right_inner
        (0.10, 0.36, 0.80),    # brow_left_inner
        (0.32, 0.40, 0.74),    # brow_left_mid
        (0.55, 0.33, 0.60),    # brow_left_outer
        (0.00, 0.18, 0.80),    # nose_bridge
        (0.00, -0.15, 1.02),   # nose_tip
        (-0.14, -0.22, 0.82),  # nose_right_ala
        (0.00, -0.26, 0.88),   # subnasale
        (0.14, -0.22, 0.82),   # nose_left_ala
        (-0.45, 0.15, 0.62),   # eye_right_outer
        (-0.15, 0.15, 0.70),   # eye_right_inner
        (0.15, 0.15, 0.70),    # eye_left_inner
        (0.45, 0.15, 0.62),    # eye_left_outer
        (-0.25, -0.48, 0.76),  # mouth_right_corner
        (0.00, -0.40, 0.88),   # upper_lip_top
        (0.25, -0.48, 0.76),   # mouth_left_corner
        (0.00, -0.58, 0.84),   # lower_lip_bottom
    ],
    dtype=np.float64,
)
TEMPLATE.setflags(write=False)

#: Pairs that swap under a left-right mirror, as storage indices.
MIRROR_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (INDEX[a], INDEX[a.replace("right", "left")])
    for a in NAMES
    if "right" in a
)

#: Landmarks on the face's midline (their own mirror images), as storage indices.
MIDLINE: tuple[int, ...] = tuple(sorted(set(range(len(NAMES))) - {i for p in MIRROR_PAIRS for i in p}))


def symmetry_plane(points) -> tuple[np.ndarray, float]:
    """The face's plane of left-right symmetry from its 24 landmarks [24, 3] (``NAMES``
    order): ``(n, d)`` with unit normal ``n`` pointing from the right side to the left,
    and the plane ``n . x = d``. Least squares: ``n`` is the principal direction of the
    right-to-left differences of the mirror pairs, ``d`` the mean offset of the pairs'
    midpoints and the midline points along it."""
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (len(NAMES), 3) or not np.isfinite(p).all():
        raise ValueError(f"symmetry_plane: landmarks must be finite with shape ({len(NAMES)}, 3), got {p.shape}")
    right = p[[i for i, _ in MIRROR_PAIRS]]
    left = p[[j for _, j in MIRROR_PAIRS]]
    diff = left - right
    n = np.linalg.svd(diff, full_matrices=False)[2][0]
    if np.dot(n, diff.sum(0)) < 0:
        n = -n
    scale = np.linalg.norm(diff, axis=1).mean()
    if not scale > 0:
        raise ValueError("symmetry_plane: the mirror pairs coincide; the landmarks are degenerate")
    on_plane = np.concatenate([(left + right) / 2, p[list(MIDLINE)]])
    return n, float((on_plane @ n).mean())


def mirror_matrix(points) -> np.ndarray:
    """The 4x4 reflection across the landmarks' symmetry plane (``symmetry_plane``):
    ``x -> x - 2 (n . x - d) n``. An isometry with det -1; its own inverse."""
    n, d = symmetry_plane(points)
    m = np.eye(4)
    m[:3, :3] -= 2.0 * np.outer(n, n)
    m[:3, 3] = 2.0 * d * n
    return m
