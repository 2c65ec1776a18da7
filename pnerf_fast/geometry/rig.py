"""The light-stage camera rig shared by the synthetic light stage, photo alignment
(which frames a photo like the rig's frontal camera) and the renderer.

World units: a head is about 1.6 wide and centred near the origin, y up, the face
towards +z. Cameras look at the origin from ``DISTANCE`` with a fixed field of view.
"""
from __future__ import annotations

import numpy as np

from .cameras import Camera, focal_from_fov, look_at

DISTANCE = 4.5          # camera distance to the origin, world units
FOV_Y_DEG = 30.0        # vertical (and horizontal) field of view of every rig camera
YAW_RANGE_DEG = 60.0    # cameras on a spherical cap: yaw in [-60, 60]
PITCH_RANGE_DEG = 30.0  # pitch in [-30, 30]
NUM_VIEWS = 25          # frontal + 24


def camera_at(yaw_deg: float, pitch_deg: float, res: int, distance: float = DISTANCE, fov_deg: float = FOV_Y_DEG) -> Camera:
    """A rig camera at (yaw, pitch) on the sphere of radius ``distance``, looking at the origin.
    Yaw > 0 moves the camera towards +x (the subject's left), pitch > 0 moves it up."""
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    eye = distance * np.array([np.sin(y) * np.cos(p), np.sin(p), np.cos(y) * np.cos(p)])
    f = focal_from_fov(res, fov_deg)
    return Camera(fx=f, fy=f, cx=res / 2, cy=res / 2, width=res, height=res, c2w=look_at(eye))


def frontal_camera(res: int) -> Camera:
    return camera_at(0.0, 0.0, res)


def rig_angles(num_views: int = NUM_VIEWS) -> list[tuple[float, float]]:
    """(yaw, pitch) in degrees; index 0 is the frontal camera. The other views lie on a
    5x5 grid over the cap with its centre (the frontal position) removed."""
    if num_views == NUM_VIEWS:
        yaws = np.linspace(-YAW_RANGE_DEG, YAW_RANGE_DEG, 5)
        pitches = np.linspace(-PITCH_RANGE_DEG, PITCH_RANGE_DEG, 5)
        out = [(0.0, 0.0)]
        for p in pitches:
            for y in yaws:
                if y == 0.0 and p == 0.0:
                    continue
                out.append((float(y), float(p)))
        return out
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    # Any other count: the frontal camera plus a golden-angle spiral over the cap.
    out = [(0.0, 0.0)]
    for k in range(1, num_views):
        r = np.sqrt(k / max(num_views - 1, 1))
        a = k * np.pi * (3 - np.sqrt(5))
        out.append((float(YAW_RANGE_DEG * r * np.cos(a)), float(PITCH_RANGE_DEG * r * np.sin(a))))
    return out


def rig_cameras(res: int, num_views: int = NUM_VIEWS) -> list[Camera]:
    return [camera_at(y, p, res) for y, p in rig_angles(num_views)]
