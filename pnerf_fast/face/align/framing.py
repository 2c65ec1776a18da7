"""Steps 3 and 4: frame the landmarks like the rig's frontal camera, and lift them to 3D."""
from __future__ import annotations

import numpy as np

from ...geometry import rig
from ...geometry.cameras import Camera
from .. import landmarks as lm
from ..mediapipe_map import MEDIAPIPE_TO_PNERF24, NUM_MEDIAPIPE_POINTS
from .errors import FaceAlignmentError


def template_pixels(camera: Camera) -> np.ndarray:
    """Where ``landmarks.TEMPLATE`` at the origin projects in ``camera``: [24, 2] pixels."""
    uv, _ = camera.project(lm.TEMPLATE)
    return uv


def frame_landmarks(points_2d: np.ndarray, res: int) -> tuple[float, np.ndarray]:
    """Scale ``a`` and translation ``b`` [2] (photo pixels -> crop pixels, ``a * p + b``)
    that best put the 24 photo landmarks [24, 2] onto the template as seen by
    ``rig.frontal_camera(res)`` (least squares, no rotation)."""
    p = np.asarray(points_2d, dtype=np.float64)
    q = template_pixels(rig.frontal_camera(res))
    pm, qm = p.mean(0), q.mean(0)
    pc, qc = p - pm, q - qm
    a = float((pc * qc).sum() / (pc * pc).sum())
    if not a > 0:
        raise FaceAlignmentError("landmarks are degenerate (zero spread or mirrored); cannot frame the face")
    return a, qm - a * pm


def lift_landmarks(uv: np.ndarray, z_rel_px: np.ndarray, camera: Camera) -> np.ndarray:
    """Back-project pixels ``uv`` [N, 2] with relative depths ``z_rel_px`` [N] (pixels at the
    camera's focal length, smaller = nearer) to world points [N, 3].

    The absolute depth is fixed by requiring that the mean landmark depth equals ``D0``,
    the mean depth of ``landmarks.TEMPLATE`` at the origin seen by ``camera``; relative
    depths (centred on the landmarks' mean) become world units at ``D0``
    (``dz = z_rel * D0 / f``), the weak-perspective scale MediaPipe uses for x and y.
    With 468 points, the mean is taken over the 24 landmarks' vertices.
    """
    uv = np.asarray(uv, dtype=np.float64)
    z = np.asarray(z_rel_px, dtype=np.float64)
    _, tmpl_depth = camera.project(lm.TEMPLATE)
    target = float(tmpl_depth.mean())
    f = 0.5 * (camera.fx + camera.fy)
    # Use the mean over the 24 landmarks as the reference when given all 468 points.
    z_ref = z[list(MEDIAPIPE_TO_PNERF24)] if z.shape[0] == NUM_MEDIAPIPE_POINTS else z
    depth = target + (z - z_ref.mean()) * target / f  # mean landmark depth == target
    xc = (uv[:, 0] - camera.cx) / camera.fx * depth
    yc = -(uv[:, 1] - camera.cy) / camera.fy * depth
    pc = np.stack([xc, yc, -depth, np.ones_like(depth)], -1)
    return (pc @ camera.c2w.T)[:, :3]
