"""Sphere tracing: the SDF sampled on a head-space grid, and the first hits of rays with a head
(the grid's box, then the neck or body below it)."""
from __future__ import annotations

import numpy as np
import torch

from .sdf import GRID_SPACING, GRID_SPACING_PORTRAIT, HeadGeometry

# the portrait light stage's scene box (head space): head, shoulders and the chest;
# outside the head box, the body is below BODY_TOP
SCENE_LO = (-2.8, -3.6, -1.9)
SCENE_HI = (2.8, 1.9, 1.7)
BODY_TOP = -1.25


class _Grid:
    """The exact SDF sampled on a head-space grid, read back trilinearly."""

    def __init__(self, geo: HeadGeometry, spacing: float | None = None, chunk: int = 1 << 18):
        if spacing is None:
            spacing = GRID_SPACING_PORTRAIT if geo.portrait else GRID_SPACING
        lo, hi = geo.grid_lo * geo.g, geo.grid_hi * geo.g
        n = np.ceil((hi - lo) / spacing).astype(int) + 1
        self.lo, self.hi, self.n = lo, lo + (n - 1) * spacing, n
        xs, ys, zs = (torch.linspace(float(lo[i]), float(self.hi[i]), int(n[i])) for i in range(3))
        vals = torch.empty(int(n[2]), int(n[1]), int(n[0]))
        zz, yy = torch.meshgrid(zs, ys, indexing="ij")
        zz, yy = zz.reshape(-1), yy.reshape(-1)
        rows = max(1, chunk // int(n[0]))
        flat = vals.view(-1, int(n[0]))
        for s in range(0, len(zz), rows):
            z = zz[s:s + rows, None].expand(-1, int(n[0]))
            y = yy[s:s + rows, None].expand(-1, int(n[0]))
            x = xs[None].expand_as(z)
            flat[s:s + rows] = geo.sdf(x, y, z)
        self.vol = vals[None, None]
        self.geo = geo
        self.spacing = spacing
        self._scale = torch.tensor(2.0 / (self.hi - lo), dtype=torch.float32)
        self._off = torch.tensor(-1.0 - 2.0 * lo / (self.hi - lo), dtype=torch.float32)
        self._lo = torch.tensor(lo, dtype=torch.float32)
        self._hi = torch.tensor(self.hi, dtype=torch.float32)

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        return ((p >= self._lo) & (p <= self._hi)).all(-1)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """Trilinear SDF at head-space points p [n, 3] inside the box (clamped outside)."""
        q = p * self._scale + self._off
        return torch.nn.functional.grid_sample(self.vol, q.view(1, 1, 1, -1, 3), mode="bilinear",
                                               padding_mode="border", align_corners=True).view(-1)

    def full(self, p: torch.Tensor) -> torch.Tensor:
        """SDF everywhere: the grid inside the box, the neck (all there is) outside."""
        f = self(p)
        out = ~self.inside(p)
        if bool(out.any()):
            po = p[out]
            f[out] = self.geo.neck_sdf(po[:, 0], po[:, 1], po[:, 2])
        return f

    def normal(self, p: torch.Tensor) -> torch.Tensor:
        """Unit normals [n, 3]: central differences of the trilinear grid over one cell
        (continuous, so shading shows no facets)."""
        h = self.spacing
        k = torch.cat([torch.eye(3), -torch.eye(3)]) * h
        f = self.full((p[None] + k[:, None]).reshape(-1, 3)).view(6, -1)
        n = (f[:3] - f[3:]).T
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def box_interval(self, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slab test: entry and exit t of rays (o, d) [n, 3] with the grid box."""
        inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        ta, tb = (self._lo - o) * inv, (self._hi - o) * inv
        return torch.minimum(ta, tb).amax(-1).clamp_min(0.0), torch.maximum(ta, tb).amin(-1)


def _sphere_trace(f, o: torch.Tensor, d: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, eps: float,
                  max_steps: int = 80, relax: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere-trace rays (unit d) through the SDF bound ``f`` from t0 to t1, compacting
    the active set as rays hit (f < eps) or leave (t > t1). Returns (hit mask, t)."""
    n = len(o)
    t = t0.clone()
    hit = torch.zeros(n, dtype=torch.bool)
    idx = torch.arange(n)
    ao, ad, at, at1 = o, d, t0.clone(), t1
    for _ in range(max_steps):
        if len(idx) == 0:
            break
        v = f(ao + ad * at[:, None])
        h = v < eps
        at = at + relax * v.clamp_min(0.5 * eps)
        done = h | (at > at1)
        if bool(done.any()):
            t[idx[h]] = at[h]
            hit[idx[h]] = True
            keep = ~done
            idx, ao, ad, at, at1 = idx[keep], ao[keep], ad[keep], at[keep], at1[keep]
    return hit, t


def _trace_portrait(grid: "_Grid", geo: HeadGeometry, o, d, eps):
    """First hits (t, inf where none) of head-space rays with the portrait scene: the
    head box's grid (which holds the top of the body too), then the analytic body (neck,
    shoulders, chest) below it, up to the head's hit."""
    n_all = len(o)
    t_hit = torch.full((n_all,), float("inf"))
    tb0, tb1 = grid.box_interval(o, d)
    vb = (tb1 > tb0).nonzero().squeeze(1)
    hit_b, t_b = _sphere_trace(grid, o[vb], d[vb], tb0[vb], tb1[vb], eps)
    t_hit[vb[hit_b]] = t_b[hit_b]
    # the body outside the head box lies below BODY_TOP (head space, before the shape scales)
    lo = torch.tensor(SCENE_LO, dtype=torch.float32) * torch.tensor(geo.g, dtype=torch.float32)
    hi = torch.tensor(SCENE_HI, dtype=torch.float32) * torch.tensor(geo.g, dtype=torch.float32)
    hi[1] = BODY_TOP * geo.g[1]
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    ta, tb = (lo - o) * inv, (hi - o) * inv
    t0, t1 = torch.minimum(ta, tb).amax(-1).clamp_min(0.0), torch.minimum(torch.maximum(ta, tb).amin(-1), t_hit)
    v = (t1 > t0).nonzero().squeeze(1)
    if len(v):
        body = lambda q: geo.neck_sdf(q[:, 0], q[:, 1], q[:, 2])  # noqa: E731
        hit, t = _sphere_trace(body, o[v], d[v], t0[v], t1[v], eps, max_steps=100)
        t_hit[v[hit]] = torch.minimum(t_hit[v[hit]], t[hit])
    return t_hit


def _trace_classic(grid: "_Grid", geo: HeadGeometry, o, d, eps):
    """First hits of the classic light stage: the head box's grid, then the neck's
    exact capsule below it."""
    n_all = len(o)
    # 1) the box holding everything but the lower neck: trace the trilinear grid
    tb0, tb1 = grid.box_interval(o, d)
    vb = (tb1 > tb0).nonzero().squeeze(1)
    hit_b, t_b = _sphere_trace(grid, o[vb], d[vb], tb0[vb], tb1[vb], eps)
    t_hit = torch.full((n_all,), float("inf"))
    t_hit[vb[hit_b]] = t_b[hit_b]
    # 2) the neck below the box: its exact capsule SDF; keep hits below the box that
    #    come before any hit in the box
    ylo = float(grid._lo[1])
    a, _, r = geo.neck
    rad = 1.3 * r * max(geo.g)
    oc = o[:, [0, 2]] - torch.tensor([a[0] * geo.g[0], a[2] * geo.g[2]])
    dd = d[:, [0, 2]]
    qa = (dd * dd).sum(-1).clamp_min(1e-12)
    qb = (oc * dd).sum(-1)
    disc = qb * qb - qa * ((oc * oc).sum(-1) - rad * rad)  # infinite bounding cylinder
    cand = (disc > 0).nonzero().squeeze(1)
    if len(cand):
        sq = disc[cand].sqrt()
        tn0 = ((-qb[cand] - sq) / qa[cand]).clamp_min(0)
        tn1 = torch.minimum((-qb[cand] + sq) / qa[cand], t_hit[cand])
        keep = tn1 > tn0
        cand, tn0, tn1 = cand[keep], tn0[keep], tn1[keep]
        # the part of the ray below the box
        oy, dy = o[cand, 1], d[cand, 1]
        ty = (ylo - oy) / torch.where(dy.abs() < 1e-9, torch.full_like(dy, 1e-9), dy)
        below0 = oy < ylo
        tn0 = torch.where(below0, tn0, torch.maximum(tn0, torch.where(dy < 0, ty, torch.full_like(ty, float("inf")))))
        tn1 = torch.where(below0, torch.minimum(tn1, torch.where(dy > 0, ty, torch.full_like(ty, float("inf")))), tn1)
        keep = tn1 > tn0
        cand, tn0, tn1 = cand[keep], tn0[keep], tn1[keep]
        if len(cand):
            neck = lambda p: geo.neck_sdf(p[:, 0], p[:, 1], p[:, 2])  # noqa: E731
            hit_n, t_n = _sphere_trace(neck, o[cand], d[cand], tn0, tn1, eps)
            t_hit[cand[hit_n]] = torch.minimum(t_hit[cand[hit_n]], t_n[hit_n])
    return t_hit
