"""One subject in every camera: sub-pixel rays -> head space -> trace -> shade -> pixels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...geometry import rig
from ...geometry.cameras import Camera, pixel_rays
from .params import HeadParams, HeadPose
from .sdf import HeadGeometry
from .shading import shade
from .trace import _Grid, _trace_classic, _trace_portrait

BACKGROUND = (1.0, 1.0, 1.0)


def _subpixel_offsets(spp: int) -> np.ndarray:
    if spp < 1:
        raise ValueError(f"spp must be >= 1, got {spp}")
    if spp == 1:
        return np.array([[0.5, 0.5]])
    if spp == 4:  # rotated grid
        return np.array([[0.375, 0.125], [0.875, 0.375], [0.125, 0.625], [0.625, 0.875]])
    k = np.arange(spp)
    g = 1.32471795724474602596
    return np.stack([(0.5 + k / g) % 1.0, (0.5 + k / g**2) % 1.0], -1)


def _pose_tensors(pose: HeadPose):
    R = torch.tensor(pose.rotation(), dtype=torch.float32)
    T = torch.tensor(pose.translation, dtype=torch.float32)
    return R, T, float(pose.scale)


def _camera_rays(cameras: Sequence[Camera], spp: int):
    """World rays of every sub-pixel sample of every camera, pixel-major per view."""
    offs = torch.tensor(_subpixel_offsets(spp), dtype=torch.float64)
    os_, ds_ = [], []
    for cam in cameras:
        v, u = torch.meshgrid(torch.arange(cam.height, dtype=torch.float64), torch.arange(cam.width, dtype=torch.float64), indexing="ij")
        pix = torch.stack([u.reshape(-1), v.reshape(-1)], -1)
        pix = (pix[:, None, :] + offs[None]).reshape(-1, 2)  # [H*W*spp, 2]
        o, d = pixel_rays(cam, pix)
        os_.append(o)
        ds_.append(d)
    return torch.cat(os_), torch.cat(ds_)


def render_subject(params: HeadParams, cameras: Sequence[Camera], spp: int = 4, *, background=BACKGROUND,
                   geometry: HeadGeometry | None = None):
    """Render one subject in every camera (all views batched).

    Returns (list of [H, W, 4] float32 RGBA images, straight rgb with alpha = coverage
    of the ``spp`` samples; rgb is ``background`` where alpha is 0,
    world landmarks [24, 3] float64)."""
    cameras = list(cameras)
    if not cameras:
        raise ValueError("render_subject: cameras is empty")
    geo = geometry or HeadGeometry(params.shape)
    R, T, s = _pose_tensors(params.pose)
    grid = _Grid(geo)
    ow, dw = _camera_rays(cameras, spp)
    o = (ow - T) @ R / s  # head space; head-space t = world t / s
    d = dw @ R
    n_all = len(o)
    eps = 0.3 / min(c.fx for c in cameras) * (rig.DISTANCE / s)  # ~0.3 px at the head

    if geo.portrait:
        t_hit = _trace_portrait(grid, geo, o, d, eps)
    else:
        t_hit = _trace_classic(grid, geo, o, d, eps)

    hi_idx = torch.isfinite(t_hit).nonzero().squeeze(1)
    p = o[hi_idx] + d[hi_idx] * t_hit[hi_idx, None]
    col = shade(geo, params, grid, p, d[hi_idx], R)

    rgb_sum = torch.zeros(n_all, 3)
    cov = torch.zeros(n_all)
    rgb_sum[hi_idx] = col
    cov[hi_idx] = 1.0
    out, start = [], 0
    bg = torch.tensor(background, dtype=torch.float32)
    for cam in cameras:
        h, w = cam.height, cam.width
        m = h * w * spp
        cs = rgb_sum[start:start + m].view(h * w, spp, 3).sum(1)
        cv = cov[start:start + m].view(h * w, spp).sum(1)
        start += m
        rgb = torch.where(cv[:, None] > 0, cs / cv.clamp_min(1)[:, None], bg)
        out.append(torch.cat([rgb, (cv / spp)[:, None]], -1).view(h, w, 4).numpy().astype(np.float32))
    lms = params.pose.apply(geo.landmarks())
    return out, lms
