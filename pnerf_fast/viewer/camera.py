"""viser's client camera <-> our :class:`~pnerf_fast.geometry.cameras.Camera`.

viser reports a client's camera as ``wxyz`` (the rotation R in ``P_world = R p_camera +
t``, with OpenCV camera axes: x right, y down, looking down +z), ``position`` (t), the
vertical ``fov`` in radians and the canvas ``aspect`` (width / height). Our cameras use
OpenGL axes (x right, y up, looking down -z), so ``c2w[:3, :3] = R @ diag(1, -1, -1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry.cameras import Camera

__all__ = ["ViserPose", "camera_from_viser", "viser_pose", "image_size", "GL_FROM_CV"]

GL_FROM_CV = np.diag([1.0, -1.0, -1.0])  # flips y and z: OpenCV camera axes <-> OpenGL ones


@dataclass(frozen=True)
class ViserPose:
    """What viser's ``initial_camera`` / ``CameraHandle`` take."""

    wxyz: np.ndarray      # [4] unit quaternion, R_world_camera (OpenCV axes)
    position: np.ndarray  # [3] world
    fov: float            # vertical field of view, radians
    look_at: np.ndarray   # [3] world: the orbit centre
    up: np.ndarray        # [3] world: the camera's up direction


def image_size(pixels: int, aspect: float) -> tuple[int, int]:
    """(width, height) of an image of about ``pixels`` pixels with ``aspect`` = width /
    height, so a "128²" render of a wide canvas costs as many rays as a square one."""
    if not (pixels >= 1 and math.isfinite(aspect) and aspect > 0):
        raise ValueError(f"image_size: need pixels >= 1 and a positive aspect, got {pixels}, {aspect}")
    h = max(1, int(round(math.sqrt(pixels / aspect))))
    return max(1, int(round(h * aspect))), h


def camera_from_viser(wxyz, position, fov: float, aspect: float, pixels: int) -> Camera:
    """A viser client camera -> a :class:`Camera` of about ``pixels`` pixels with the
    canvas's aspect and vertical field of view (square pixels, centred principal point).

    Args:
        wxyz: [4] R_world_camera as a quaternion (viser's ``camera.wxyz``).
        position: [3] camera centre in world units.
        fov: vertical field of view in radians (viser's ``camera.fov``).
        aspect: canvas width / height (viser's ``camera.aspect``).
        pixels: the render's pixel budget (e.g. 128 * 128).
    """
    import viser.transforms as vtf

    if not 0 < fov < math.pi:
        raise ValueError(f"camera_from_viser: fov must be in (0, pi) radians, got {fov}")
    w, h = image_size(pixels, aspect)
    c2w = np.eye(4)
    c2w[:3, :3] = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix() @ GL_FROM_CV
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    f = 0.5 * h / math.tan(fov / 2)
    return Camera(fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h, c2w=c2w)


def viser_pose(cam: Camera, look_at) -> ViserPose:
    """A :class:`Camera` -> viser's pose for it; ``look_at`` (the orbit centre) is moved
    onto the camera's view axis, at the same depth, so viser's orbit keeps the view."""
    import viser.transforms as vtf

    rot = cam.c2w[:3, :3]
    fwd = -rot[:, 2]
    eye = cam.position
    depth = float(np.dot(np.asarray(look_at, dtype=np.float64) - eye, fwd))
    if not depth > 0:
        raise ValueError("viser_pose: look_at is not in front of the camera")
    wxyz = vtf.SO3.from_matrix(rot @ GL_FROM_CV).wxyz
    return ViserPose(wxyz=np.asarray(wxyz, dtype=np.float64), position=eye, fov=2 * math.atan(0.5 * cam.height / cam.fy),
                     look_at=eye + depth * fwd, up=rot[:, 1].copy())
