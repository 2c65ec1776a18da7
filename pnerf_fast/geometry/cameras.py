"""Pinhole cameras in the instant-ngp / nerfstudio convention.

``c2w`` is a 4x4 camera-to-world matrix with OpenGL camera axes: x right, y up, the
camera looks down -z. Pixel (u, v) has u to the right and v downwards; pixel centres
sit at integer + 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Camera:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    c2w: np.ndarray  # [4, 4] float64, camera-to-world, OpenGL axes

    def __post_init__(self):
        c2w = np.asarray(self.c2w, dtype=np.float64)
        if c2w.shape != (4, 4):
            raise ValueError(f"Camera.c2w must be 4x4, got shape {c2w.shape}")
        if not np.all(np.isfinite(c2w)):
            raise ValueError("Camera.c2w has non-finite entries")
        for name in ("fx", "fy"):
            v = float(getattr(self, name))
            if not (v > 0 and np.isfinite(v)):
                raise ValueError(f"Camera.{name} must be a positive number, got {v}")
        # Plain Python floats (not numpy scalars): cameras are saved in checkpoints, which
        # load with torch.load(weights_only=True) and refuse numpy objects.
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("width", "height"):
            v = int(getattr(self, name))
            if v <= 0:
                raise ValueError(f"Camera.{name} must be a positive integer, got {v}")
        object.__setattr__(self, "c2w", c2w)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def position(self) -> np.ndarray:
        return self.c2w[:3, 3].copy()

    @property
    def w2c(self) -> np.ndarray:
        return np.linalg.inv(self.c2w)

    def scaled(self, factor: float) -> "Camera":
        """The same camera at ``factor`` times the resolution."""
        w = max(1, int(round(self.width * factor)))
        h = max(1, int(round(self.height * factor)))
        sx, sy = w / self.width, h / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy, width=w, height=h)

    def with_intrinsics(self, width: int, height: int, fov_y_deg: float) -> "Camera":
        f = 0.5 * height / np.tan(np.deg2rad(fov_y_deg) / 2)
        return replace(self, fx=f, fy=f, cx=width / 2, cy=height / 2, width=width, height=height)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [..., 3] -> (pixel uv [..., 2], depth along the view axis [...])."""
        p = np.asarray(points, dtype=np.float64)
        w2c = self.w2c
        pc = p @ w2c[:3, :3].T + w2c[:3, 3]
        depth = -pc[..., 2]
        u = self.fx * pc[..., 0] / depth + self.cx
        v = -self.fy * pc[..., 1] / depth + self.cy
        return np.stack([u, v], -1), depth

    def rays(self, device="cpu", dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel rays, row-major: origins [H*W, 3] and unit directions [H*W, 3]."""
        return pixel_rays(self, None, device=device, dtype=dtype)


def pixel_rays(cam: Camera, pixels: torch.Tensor | None = None, device="cpu", dtype=torch.float32):
    """Rays through pixel centres. ``pixels`` is [n, 2] (u, v) integer or float pixel
    coordinates (centres at +0.5 are added for integer input); None means all pixels.
    The rays are computed (in float64) and returned on ``device``."""
    if pixels is None:
        v, u = torch.meshgrid(
            torch.arange(cam.height, dtype=torch.float64, device=device),
            torch.arange(cam.width, dtype=torch.float64, device=device),
            indexing="ij",
        )
        u = u.reshape(-1) + 0.5
        v = v.reshape(-1) + 0.5
    else:
        pixels = torch.as_tensor(pixels, device=device)
        if pixels.ndim != 2 or pixels.shape[1] != 2:
            raise ValueError(f"pixels must be [n, 2], got {tuple(pixels.shape)}")
        pf = pixels.to(torch.float64)
        if not pixels.is_floating_point():
            pf = pf + 0.5
        u, v = pf[:, 0], pf[:, 1]
    d_cam = torch.stack([(u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy, -torch.ones_like(u)], -1)
    c2w = torch.as_tensor(cam.c2w, dtype=torch.float64, device=u.device)
    d = d_cam @ c2w[:3, :3].T
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[:3, 3].expand_as(d)
    return o.to(device=device, dtype=dtype).contiguous(), d.to(device=device, dtype=dtype).contiguous()


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world matrix (OpenGL axes) for a camera at ``eye`` looking at ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    back = eye - target
    n = np.linalg.norm(back)
    if n == 0:
        raise ValueError("look_at: eye and target coincide")
    back /= n
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: up is parallel to the viewing direction")
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, back, eye
    return m


def focal_from_fov(size_px: int, fov_deg: float) -> float:
    return 0.5 * size_px / np.tan(np.deg2rad(fov_deg) / 2)
