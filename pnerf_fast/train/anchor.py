"""Pseudo side views of the code stage's head, to anchor stage 2 (``finetune.anchor``).

One view cannot tell stage 2 what the sides and the back of the head look like, and a
finetune on it moves them anyway: every weight it changes for the input view is shared
with points the input never sees. After the code stage the field holds the prior's
completion of the head from that view (the head the code decodes to). ``Anchor`` renders
it once from virtual cameras orbiting the head (the input camera turned about the face's
up axis through the head's centre), keeps the pixels whose surface the input camera does
not see (a depth test against the input view's own render), and hands out rays of them
with those colours as targets: stage 2 then fits the input view while the unseen side
stays near the completion it started from. The pixels the input sees are left to the real
rays, and so are the virtual views' background pixels (the input's silhouette, not the
prior's, decides where the head ends).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from ..geometry.cameras import Camera, pixel_rays
from ..render.renderer import render_image
from .data import RayBatch

#: Yaws (degrees) of the virtual views, about the face's up axis from the input camera.
ANCHOR_YAWS = (-60.0, -40.0, -20.0, 20.0, 40.0, 60.0)


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    """Rodrigues: the 3x3 rotation by ``deg`` degrees about the unit ``axis``."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    th = np.deg2rad(deg)
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * (k @ k)


def orbit_camera(cam: Camera, centre, up, yaw_deg: float) -> Camera:
    """``cam`` turned by ``yaw_deg`` about the axis ``up`` through ``centre`` (world)."""
    r = _rotation(up, yaw_deg)
    c = np.asarray(centre, dtype=np.float64)
    c2w = cam.c2w.copy()
    c2w[:3, :3] = r @ c2w[:3, :3]
    c2w[:3, 3] = r @ (c2w[:3, 3] - c) + c
    return dataclasses.replace(cam, c2w=c2w)


def _pixel_of(cam: Camera, points: np.ndarray):
    """-> (column, row, in front of the camera) of world ``points`` [n, 3] in ``cam``
    (Camera.project; points at or behind the camera get column and row -1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        uv, depth = cam.project(points)
    front = depth > 1e-6
    big = float(max(cam.width, cam.height) + 1)
    uv = np.floor(np.clip(np.where(front[:, None], uv, -1.0), -1, big)).astype(np.int64)
    return uv[:, 0], uv[:, 1], front


class Anchor:
    """Rays of virtual views of the field as it is now, where the input view does not see
    the surface, with the field's own colours and opacity as targets.

    ``field``/``grid``/``render_cfg``/``warp_table``: the model after the code stage;
    ``density_fn``: its density, to refresh a copy of the grid (the covered grid is mostly
    empty space, slow to render, and is not changed); ``cam``: the input camera;
    ``centre``, ``up``: the head's centre and the face's up axis (world); ``scale``: the
    virtual views' resolution as a fraction of the input's; ``tol``: how far behind the
    input view's surface (world units) a point still counts as seen; ``world_to_canonical``:
    the length scale of the depth loss. Everything lives on the grid's device."""

    def __init__(self, field, grid, render_cfg, warp_table, density_fn, cam: Camera, centre, up,
                 yaws=ANCHOR_YAWS, scale: float = 0.5, tol: float = 0.05, world_to_canonical: float = 1.0):
        g = copy.deepcopy(grid)
        g.update(density_fn, fraction=1.0, generator=torch.Generator(device=g.bits.device).manual_seed(0))
        if not bool(g.bits.any()):  # a field too faint for the refresh's threshold: render it as it is
            g = grid
        cam0 = cam.scaled(scale)
        was_training = field.training
        field.eval()
        try:
            _, dep0, op0 = render_image(field, g, cam0, warp_table, render_cfg, bg=0.0)
            t0 = (dep0 / op0.clamp_min(1e-6)).cpu().numpy()
            op0 = op0.cpu().numpy()
            keep_o, keep_d, keep_c, keep_a, keep_t = [], [], [], [], []
            self.counts = []  # per virtual view: (foreground pixels, of them seen by the input)
            pos0 = cam0.position
            for yaw in yaws:
                v = orbit_camera(cam0, centre, up, yaw)
                rgb, dep, op = render_image(field, g, v, warp_table, render_cfg, bg=0.0)
                o, d = pixel_rays(v, device=op.device)
                op = op.reshape(-1)
                t = dep.reshape(-1) / op.clamp_min(1e-6)
                p = (o + t[:, None] * d).cpu().numpy().astype(np.float64)
                u, w, front = _pixel_of(cam0, p)
                inside = front & (u >= 0) & (u < cam0.width) & (w >= 0) & (w < cam0.height)
                uu, ww = np.clip(u, 0, cam0.width - 1), np.clip(w, 0, cam0.height - 1)
                dist = np.linalg.norm(p - pos0, axis=1)
                seen = inside & (op0[ww, uu] > 0.5) & (dist < t0[ww, uu] + tol)
                fg = op.cpu().numpy() > 0.5
                self.counts.append((int(fg.sum()), int((fg & seen).sum())))
                keep = torch.as_tensor(fg & ~seen, device=op.device)  # the render's device, the grid's
                keep_o.append(o[keep])
                keep_d.append(d[keep])
                keep_c.append(rgb.reshape(-1, 3)[keep])
                keep_a.append(op[keep])
                keep_t.append(t[keep])
        finally:
            field.train(was_training)
        self.rays_o = torch.cat(keep_o)
        self.rays_d = torch.cat(keep_d)
        self.color = torch.cat(keep_c)  # premultiplied (rendered over black)
        self.alpha = torch.cat(keep_a)
        self.depth = torch.cat(keep_t)  # world distance of the surface along each ray
        self.scale = float(world_to_canonical)
        self.device = self.rays_o.device  # the grid's, where render_image works

    def __len__(self) -> int:
        return int(self.rays_o.shape[0])

    def batch(self, n: int, generator: torch.Generator, random_bg: bool, bg: float = 1.0):
        """-> (``n`` random anchor rays, composited over random (or ``bg``) backgrounds,
        their target depths [n])."""
        i = torch.randint(0, len(self), (n,), generator=generator, device=self.device)
        if random_bg:
            b = torch.rand(n, 3, generator=generator, device=self.device)
        else:
            b = torch.full((n, 3), float(bg), device=self.device)
        a = self.alpha[i]
        return RayBatch(self.rays_o[i], self.rays_d[i], self.color[i] + b * (1 - a[:, None]), b, a,
                        torch.zeros(n, dtype=torch.long, device=self.device)), self.depth[i]

    def loss(self, out, batch: RayBatch, start: int, depth, rgb_weight: float, depth_weight: float):
        """The mean loss of the anchor rays ``start``..``start + len(depth)`` of a render
        ``out`` of ``batch``: opacity's squared error, plus ``rgb_weight`` times the
        colour's, plus ``depth_weight`` times the expected depth's (canonical units)."""
        k = slice(start, start + depth.shape[0])
        a = batch.alpha[k]
        loss = torch.mean((out.opacity[k] - a) ** 2)
        if rgb_weight:
            loss = loss + rgb_weight * torch.mean((out.rgb[k] - batch.target[k]) ** 2)
        if depth_weight:
            loss = loss + depth_weight * torch.mean((self.scale * (out.depth[k] - a * depth)) ** 2)
        return loss
