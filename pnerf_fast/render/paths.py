"""Camera paths for videos and contact sheets. Every function returns ``list[Camera]``
with square images of ``res`` pixels, cameras looking at ``target`` with world y up.

Angles follow the rig (pnerf_fast.geometry.rig): yaw > 0 moves the camera towards +x (the
subject's left), pitch > 0 moves it up; (0, 0) is the frontal camera on +z.

A single-image model only knows the front of the head, and the prior was trained on
views within yaw ±60°, pitch ±30° (the rig's cap). The default paths stay inside that
cap: they sweep in front of the face and never go round the back.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..geometry.cameras import Camera, focal_from_fov, look_at
from ..geometry.rig import DISTANCE, FOV_Y_DEG, PITCH_RANGE_DEG, YAW_RANGE_DEG

__all__ = ["camera_on_sphere", "orbit", "dolly_zoom", "dolly", "grid", "spiral", "DOLLY_NEAR", "DOLLY_FAR"]

DOLLY_NEAR = 2.2  # closest dolly-zoom distance (the canonical box is 3 units wide, so the camera stays outside it)
DOLLY_FAR = 9.0


def _check(n: int, name: str, minimum: int = 1) -> int:
    if int(n) != n or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n}")
    return int(n)


def camera_on_sphere(yaw_deg: float, pitch_deg: float, res: int, radius: float = DISTANCE,
                     fov_deg: float = FOV_Y_DEG, target=(0.0, 0.0, 0.0), focal: float | None = None) -> Camera:
    """A camera at (yaw, pitch) on the sphere of ``radius`` around ``target``, looking at it.
    ``focal`` (pixels) overrides ``fov_deg``."""
    res = _check(res, "res")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    target = np.asarray(target, dtype=np.float64)
    eye = target + radius * np.array([np.sin(y) * np.cos(p), np.sin(p), np.cos(y) * np.cos(p)])
    f = float(focal) if focal is not None else focal_from_fov(res, fov_deg)
    return Camera(fx=f, fy=f, cx=res / 2, cy=res / 2, width=res, height=res, c2w=look_at(eye, target))


def orbit(n_frames: int, res: int, radius: float = DISTANCE, fov_deg: float = FOV_Y_DEG,
          yaw_range_deg: float = 40.0, pitch_deg: float = 0.0, pitch_amp_deg: float = 8.0,
          target=(0.0, 0.0, 0.0)) -> list[Camera]:
    """A closed loop in front of the face: an ellipse in (yaw, pitch),

        yaw_k = yaw_range * sin(2 pi k / n),  pitch_k = pitch_deg + pitch_amp * cos(2 pi k / n).

    Frame n would equal frame 0, so the video loops without a jump. With
    ``pitch_amp_deg=0`` it is a plain side-to-side sweep (yaw oscillating ±yaw_range).
    Frame 0 is at yaw 0, slightly above the frontal view (pitch_deg + pitch_amp_deg).
    The camera keeps its distance ``radius`` to ``target`` and looks at it.
    """
    n = _check(n_frames, "n_frames")
    th = 2 * np.pi * np.arange(n) / n
    yaws = yaw_range_deg * np.sin(th)
    pitches = pitch_deg + pitch_amp_deg * np.cos(th)
    if np.any(np.abs(pitches) >= 89.0):
        raise ValueError(f"pitch_deg ± pitch_amp_deg must stay within ±89°, got {pitch_deg} ± {pitch_amp_deg}")
    return [camera_on_sphere(y, p, res, radius, fov_deg, target) for y, p in zip(yaws, pitches)]


def dolly_zoom(n_frames: int, res: int, start_distance: float = DOLLY_NEAR, end_distance: float = DOLLY_FAR,
               ref_distance: float = DISTANCE, fov_deg: float = FOV_Y_DEG, yaw_deg: float = 0.0,
               pitch_deg: float = 0.0, target=(0.0, 0.0, 0.0), loop: bool = True) -> list[Camera]:
    """The paper's perspective manipulation (a "vertigo" shot): the camera moves along its
    view axis through ``target`` while the focal length follows the distance,

        f(d) = f0 * d / ref_distance,   f0 = the focal length of a ``fov_deg`` camera,

    so everything on the plane through ``target`` facing the camera keeps its size and
    pixel position, while points in front of it (the nose) or behind it (the ears) grow or
    shrink: close cameras exaggerate the perspective, far ones flatten it. At
    ``ref_distance`` the camera is the rig's camera.

    Distances are spaced geometrically (each frame changes the focal length by the same
    factor). With ``loop`` (default) the path goes start -> end -> start with a cosine
    ease and frame n would equal frame 0; without it, frame 0 is at ``start_distance`` and
    the last frame at ``end_distance``.
    """
    n = _check(n_frames, "n_frames")
    for name, v in (("start_distance", start_distance), ("end_distance", end_distance), ("ref_distance", ref_distance)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")
    if loop:
        s = (1 - np.cos(2 * np.pi * np.arange(n) / n)) / 2
    else:
        s = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    dists = start_distance * (end_distance / start_distance) ** s
    f0 = focal_from_fov(_check(res, "res"), fov_deg)
    return [camera_on_sphere(yaw_deg, pitch_deg, res, d, fov_deg, target, focal=f0 * d / ref_distance)
            for d in dists]


def dolly(cam: Camera, fov_deg: float, target=(0.0, 0.0, 0.0), min_distance: float = DOLLY_NEAR) -> Camera:
    """One step of :func:`dolly_zoom` by hand: ``cam`` with a new vertical field of view,
    moved along the line through ``target`` so that the focal length stays proportional
    to the distance (``f / d`` constant): the plane through ``target`` facing the camera
    keeps its size in pixels. The camera's orientation and resolution are kept.

    The camera never comes closer to ``target`` than ``min_distance`` (default
    ``DOLLY_NEAR``: outside the canonical box); there the field of view is the one that
    keeps ``f / d`` at that distance, so the returned camera's fov may differ from
    ``fov_deg``.
    """
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    target = np.asarray(target, dtype=np.float64)
    offset = cam.position - target
    d0 = float(np.linalg.norm(offset))
    if d0 == 0:
        raise ValueError("dolly: the camera sits on its target")
    fy = focal_from_fov(cam.height, fov_deg)
    d1 = d0 * fy / cam.fy
    if d1 < min_distance:
        d1, fy = min_distance, cam.fy * min_distance / d0
    c2w = cam.c2w.copy()
    c2w[:3, 3] = target + offset * (d1 / d0)
    return replace(cam, fx=cam.fx * fy / cam.fy, fy=fy, c2w=c2w)


def grid(n_yaw: int, n_pitch: int, res: int, yaw_range_deg: float = YAW_RANGE_DEG,
         pitch_range_deg: float = PITCH_RANGE_DEG, radius: float = DISTANCE, fov_deg: float = FOV_Y_DEG,
         target=(0.0, 0.0, 0.0)) -> list[Camera]:
    """A grid of views for contact sheets, row-major: ``n_pitch`` rows from above
    (pitch +range) to below, ``n_yaw`` columns from the viewer's left (yaw -range, camera
    at -x) to the right. A single row or column sits at 0°. Defaults: the rig's cap."""
    ny, npch = _check(n_yaw, "n_yaw"), _check(n_pitch, "n_pitch")
    yaws = np.linspace(-yaw_range_deg, yaw_range_deg, ny) if ny > 1 else np.zeros(1)
    pitches = np.linspace(pitch_range_deg, -pitch_range_deg, npch) if npch > 1 else np.zeros(1)
    return [camera_on_sphere(y, p, res, radius, fov_deg, target) for p in pitches for y in yaws]


def spiral(n_frames: int, res: int, n_turns: float = 2.0, yaw_range_deg: float = 40.0,
           pitch_range_deg: float = 20.0, radius: float = DISTANCE, fov_deg: float = FOV_Y_DEG,
           target=(0.0, 0.0, 0.0)) -> list[Camera]:
    """An outward spiral in (yaw, pitch) from the frontal view to the ellipse of the
    given ranges, ``n_turns`` times round. Frame 0 is the frontal camera."""
    n = _check(n_frames, "n_frames")
    s = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    th = 2 * np.pi * n_turns * s
    return [camera_on_sphere(yaw_range_deg * r * np.sin(t), pitch_range_deg * r * np.cos(t),
                             res, radius, fov_deg, target) for r, t in zip(s, th)]
