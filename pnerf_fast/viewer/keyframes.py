"""What the viewer writes: keyframes as a nerfstudio camera_path.json (through
:mod:`pnerf_fast.render.camera_path`, so ``pnerf render --camera-path`` plays it), and
PNG snapshots of the current view."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..render.camera_path import MAX_CAMERAS, _fov_deg, write_camera_path
from ..geometry.cameras import Camera

__all__ = ["KeyframeRecorder", "interpolate", "save_png"]


def interpolate(a: Camera, b: Camera, t: float) -> Camera:
    """The camera a fraction ``t`` of the way from ``a`` to ``b`` (same resolution): the
    position and the vertical fov linearly, the rotation along the shortest arc (viser's
    SO3 log/exp)."""
    import viser.transforms as vtf

    ra, rb = vtf.SO3.from_matrix(a.c2w[:3, :3]), vtf.SO3.from_matrix(b.c2w[:3, :3])
    rot = ra @ vtf.SO3.exp(t * (ra.inverse() @ rb).log())
    c2w = np.eye(4)
    c2w[:3, :3] = rot.as_matrix()
    c2w[:3, 3] = (1 - t) * a.position + t * b.position
    fov = (1 - t) * _fov_deg(a) + t * _fov_deg(b)
    return replace(a.with_intrinsics(a.width, a.height, fov), c2w=c2w)


class KeyframeRecorder:
    """Keyframes of the viewer's camera, written as a camera_path.json whose frames
    run smoothly from one keyframe to the next (``frames_per_segment`` frames each).

    All frames of a camera_path.json share one resolution: keyframes are stored at the
    first one's size (``width`` x ``height``), each with its own vertical fov.
    """

    def __init__(self):
        self.keyframes: list[Camera] = []

    def __len__(self) -> int:
        return len(self.keyframes)

    def add(self, cam: Camera) -> int:
        """Record ``cam``; -> the number of keyframes."""
        if self.keyframes:
            first = self.keyframes[0]
            if (cam.width, cam.height) != (first.width, first.height):
                cam = cam.with_intrinsics(first.width, first.height, _fov_deg(cam))
        self.keyframes.append(cam)
        return len(self.keyframes)

    def clear(self) -> None:
        self.keyframes.clear()

    def frames(self, frames_per_segment: int = 24) -> list[Camera]:
        """Every frame of the path: the keyframes and ``frames_per_segment - 1`` cameras
        between each pair (a single keyframe is one frame)."""
        if isinstance(frames_per_segment, bool) or int(frames_per_segment) != frames_per_segment \
                or frames_per_segment < 1:
            raise ValueError(f"frames_per_segment must be an integer >= 1, got {frames_per_segment!r:.40}")
        if not self.keyframes:
            raise ValueError("no keyframes recorded yet")
        n = int(frames_per_segment)
        out = []
        for a, b in zip(self.keyframes, self.keyframes[1:]):
            out += [a] + [interpolate(a, b, k / n) for k in range(1, n)]
        out.append(self.keyframes[-1])
        if len(out) > MAX_CAMERAS:
            raise ValueError(f"{len(out)} frames: more than a camera_path.json may hold ({MAX_CAMERAS})")
        return out

    def save(self, path, frames_per_segment: int = 24, fps: float = 24.0) -> Path:
        """Write the path as a nerfstudio camera_path.json (atomically) -> the path."""
        return write_camera_path(self.frames(frames_per_segment), path, fps)


def save_png(image: np.ndarray, path) -> Path:
    """Write an [H, W, 3] uint8 image as a PNG, atomically -> the path."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp)
    return Path(path)
