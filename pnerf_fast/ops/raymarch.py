"""Ray/box intersection and fused canonical-warp ray marching.

Rays come in world space. Each ray is warped into canonical face space by a
similarity ``x' = A x + t`` (``A = s R``), given as rows of 12 numbers
``(A row-major, t)`` in ``warp_table`` (one row for the batch, or one per ray through
``warp_index``). The ray is clipped to the occupancy grid's outer box and marched:
``t_k = near + (k + u) dt`` in canonical units (``u`` = per-ray jitter), or with
``cone_angle > 0`` steps ``dt_k = clamp(t_k * cone_angle, dt, max_step)``. Sample k is
kept when its midpoint lies in an occupied cell and before ``far``.

Packed outputs (nerfacc style): ``packed_info [n_rays, 2]`` = (start, count),
``ray_indices``, ``t_starts``/``t_ends`` in **world** units, canonical midpoint
``positions`` and canonical unit ``dirs``. Sigma learned in canonical space should be
multiplied by the ray's scale (``ray_scale``) before compositing with world deltas.
No gradients flow through marching.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from .._native import native, use_native


@dataclass(frozen=True)
class MarchConfig:
    step: float = 0.02            # canonical units
    cone_angle: float = 0.0       # 0: constant steps
    max_step: float = 0.1         # cap on dt when cone_angle > 0
    near_plane: float = 0.0       # world units
    far_plane: float = 1e10       # world units
    max_samples: int = 0          # per ray, 0 = no cap
    max_steps: int = 4096         # candidates per ray (safety bound)

    def __post_init__(self):
        if not self.step > 0:
            raise ValueError(f"MarchConfig.step must be > 0, got {self.step}")
        if self.cone_angle < 0:
            raise ValueError(f"MarchConfig.cone_angle must be >= 0, got {self.cone_angle}")
        if not self.far_plane > self.near_plane:
            raise ValueError("MarchConfig.far_plane must be > near_plane")
        if self.max_steps <= 0:
            raise ValueError(f"MarchConfig.max_steps must be > 0, got {self.max_steps}")


@dataclass(frozen=True)
class GridGeometry:
    aabb: tuple  # level-0 box (xmin, ymin, zmin, xmax, ymax, zmax), canonical
    levels: int = 1
    res: int = 64

    def __post_init__(self):
        if len(self.aabb) != 6:
            raise ValueError(f"GridGeometry.aabb must have 6 numbers, got {len(self.aabb)}")
        a = tuple(float(v) for v in self.aabb)
        if not all(a[i + 3] > a[i] for i in range(3)):
            raise ValueError(f"GridGeometry.aabb must have max > min on every axis, got {a}")
        if not 1 <= self.levels <= 16:
            raise ValueError(f"GridGeometry.levels must be in [1, 16], got {self.levels}")
        if not 1 <= self.res <= 1024:
            raise ValueError(f"GridGeometry.res must be in [1, 1024], got {self.res}")
        if self.levels > 1 and self.res % 2:
            # With an even res, level-l cells never straddle the level-(l-1) box, which
            # the marcher's cell skipping relies on.
            raise ValueError(f"GridGeometry.res must be even when levels > 1, got {self.res}")
        object.__setattr__(self, "aabb", a)

    @property
    def n_cells(self) -> int:
        return self.levels * self.res ** 3

    def outer_box(self) -> tuple:
        s = float(2 ** (self.levels - 1))
        c = [(self.aabb[i] + self.aabb[i + 3]) / 2 for i in range(3)]
        h = [(self.aabb[i + 3] - self.aabb[i]) / 2 * s for i in range(3)]
        return tuple(c[i] - h[i] for i in range(3)) + tuple(c[i] + h[i] for i in range(3))


class PackedSamples(NamedTuple):
    packed_info: torch.Tensor  # [n_rays, 2] int64 (start, count)
    ray_indices: torch.Tensor  # [n_samples] int64
    t_starts: torch.Tensor     # [n_samples] world units
    t_ends: torch.Tensor       # [n_samples] world units
    positions: torch.Tensor    # [n_samples, 3] canonical midpoints
    dirs: torch.Tensor         # [n_samples, 3] canonical unit directions

    @property
    def n_samples(self) -> int:
        return int(self.ray_indices.shape[0])


def _check_rays(rays_o, rays_d, fn):
    for name, t in (("rays_o", rays_o), ("rays_d", rays_d)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}: argument '{name}' must be a tensor, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"{fn}: argument '{name}' must have shape [n_rays, 3], got {list(t.shape)}")
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{fn}: argument '{name}' must be float32 or float64, got {t.dtype}")
    if rays_d.shape != rays_o.shape:
        raise ValueError(f"{fn}: argument 'rays_d' must have shape {list(rays_o.shape)} like 'rays_o', got {list(rays_d.shape)}")
    if rays_d.dtype != rays_o.dtype:
        raise ValueError(f"{fn}: argument 'rays_d' must have dtype {rays_o.dtype} like 'rays_o', got {rays_d.dtype}")
    if rays_d.device != rays_o.device:
        raise ValueError(f"{fn}: argument 'rays_d' is on {rays_d.device}, but 'rays_o' is on {rays_o.device}")


def ray_aabb_intersect(rays_o, rays_d, aabb: Sequence[float], impl: str = "auto"):
    """-> (near [n], far [n], hit [n] bool); near >= 0; near = far = 0 on a miss."""
    _check_rays(rays_o, rays_d, "ray_aabb_intersect")
    aabb = [float(v) for v in aabb]
    if len(aabb) != 6:
        raise ValueError(f"ray_aabb_intersect: argument 'aabb' must have 6 numbers, got {len(aabb)}")
    rays_o, rays_d = rays_o.contiguous(), rays_d.contiguous()
    if impl == "torch" or (impl == "auto" and not use_native(rays_o)):
        return _ray_aabb_torch(rays_o, rays_d, aabb)
    return tuple(native().ray_aabb_intersect(rays_o, rays_d, aabb))


def march_rays(
    rays_o: torch.Tensor,                      # [n_rays, 3] world
    rays_d: torch.Tensor,                      # [n_rays, 3] world
    grid: GridGeometry,
    grid_bits: torch.Tensor | None = None,     # [levels * res^3] uint8, None = all occupied
    cfg: MarchConfig = MarchConfig(),
    warp_table: torch.Tensor | None = None,    # [n_warps, 12] world -> canonical, None = identity
    warp_index: torch.Tensor | None = None,    # [n_rays] int64 into warp_table
    jitter: torch.Tensor | None = None,        # [n_rays] in [0, 1), None = 0
    impl: str = "auto",
    box: Sequence[float] | None = None,         # marching box (canonical); None = the grid's outer box
    t_min: torch.Tensor | None = None,         # [n_rays] world units: start no earlier (segmented marching)
    t_max: torch.Tensor | None = None,         # [n_rays] world units: stop before
) -> PackedSamples:
    """March world rays through the grid in canonical space. ``box`` clips the rays
    further, e.g. to ``OccupancyGrid.occupied_box()``, so empty space around the
    occupied cells costs nothing; samples start at the clipped near point."""
    _check_rays(rays_o, rays_d, "march_rays")
    if box is None:
        box = grid.outer_box()
    box = [float(v) for v in box]
    if len(box) != 6:
        raise ValueError(f"march_rays: argument 'box' must have 6 numbers, got {len(box)}")
    dt, dev, n = rays_o.dtype, rays_o.device, rays_o.shape[0]
    if warp_table is not None:
        if warp_table.ndim != 2 or warp_table.shape[1] != 12 or warp_table.shape[0] < 1:
            raise ValueError(f"march_rays: argument 'warp_table' must have shape [n_warps >= 1, 12], got {list(warp_table.shape)}")
        warp_table = warp_table.to(dtype=dt, device=dev).contiguous()
    if warp_index is not None:
        if warp_table is None:
            raise ValueError("march_rays: argument 'warp_index' given without 'warp_table'")
        if warp_index.shape != (n,):
            raise ValueError(f"march_rays: argument 'warp_index' must have shape [{n}], got {list(warp_index.shape)}")
        warp_index = warp_index.to(dtype=torch.long, device=dev).contiguous()
    if jitter is not None:
        if jitter.shape != (n,):
            raise ValueError(f"march_rays: argument 'jitter' must have shape [{n}], got {list(jitter.shape)}")
        jitter = jitter.to(dtype=dt, device=dev).contiguous()
    for name, t in (("t_min", t_min), ("t_max", t_max)):
        if t is not None and t.shape != (n,):
            raise ValueError(f"march_rays: argument '{name}' must have shape [{n}], got {list(t.shape)}")
    t_min = None if t_min is None else t_min.to(dtype=dt, device=dev).contiguous()
    t_max = None if t_max is None else t_max.to(dtype=dt, device=dev).contiguous()
    if grid_bits is not None:
        if grid_bits.numel() != grid.n_cells:
            raise ValueError(f"march_rays: argument 'grid_bits' must have {grid.n_cells} elements (levels*res^3), got {grid_bits.numel()}")
        if grid_bits.device != dev:
            raise ValueError(f"march_rays: argument 'grid_bits' is on {grid_bits.device}, but 'rays_o' is on {dev}")
        grid_bits = grid_bits.reshape(-1).to(torch.uint8).contiguous()
    rays_o, rays_d = rays_o.contiguous(), rays_d.contiguous()
    if impl == "torch" or (impl == "auto" and not use_native(rays_o)):
        return _march_torch(rays_o, rays_d, grid, grid_bits, cfg, warp_table, warp_index, jitter, box, t_min, t_max)
    out = native().march_rays(
        rays_o, rays_d, warp_table, warp_index, jitter, t_min, t_max, grid_bits, list(grid.aabb), box, grid.levels, grid.res,
        cfg.near_plane, cfg.far_plane, cfg.step, cfg.cone_angle, cfg.max_step, cfg.max_samples, cfg.max_steps,
    )
    return PackedSamples(*out)


def ray_scale(rays_d: torch.Tensor, warp_table: torch.Tensor | None, warp_index: torch.Tensor | None) -> torch.Tensor:
    """|A d| per ray: canonical length per world length (the similarity's scale for unit d)."""
    if warp_table is None:
        return rays_d.norm(dim=-1)
    A = warp_table[:, :9].reshape(-1, 3, 3).to(rays_d)
    A = A[warp_index] if warp_index is not None else A[:1].expand(rays_d.shape[0], 3, 3)
    return torch.einsum("nij,nj->ni", A, rays_d).norm(dim=-1)


# ----------------------------------------------------------------------------------
# Pure-PyTorch references. They mirror the kernels' floating-point operations.


def _ray_aabb_torch(o, d, aabb):
    lo = torch.tensor(aabb[:3], dtype=o.dtype, device=o.device)
    hi = torch.tensor(aabb[3:], dtype=o.dtype, device=o.device)
    zero = d == 0
    safe_d = torch.where(zero, torch.ones_like(d), d)
    t1 = (lo - o) / safe_d
    t2 = (hi - o) / safe_d
    big = torch.full_like(t1, 1e30)
    tmin_a = torch.where(zero, -big, torch.minimum(t1, t2))
    tmax_a = torch.where(zero, big, torch.maximum(t1, t2))
    outside = (zero & ((o < lo) | (o > hi))).any(dim=1)
    tmin = tmin_a.max(dim=1).values.clamp_min(-1e30)
    tmax = tmax_a.min(dim=1).values.clamp_max(1e30)
    tmin = tmin.clamp_min(0)
    hit = (tmax > tmin) & ~outside
    z = torch.zeros_like(tmin)
    return torch.where(hit, tmin, z), torch.where(hit, tmax, z), hit


def _warp_torch(o, d, warp_table, warp_index):
    if warp_table is None:
        n = torch.sqrt((d * d).sum(-1))
        return o, d * (1.0 / n)[:, None], n
    rows = warp_table[warp_index] if warp_index is not None else warp_table[:1].expand(o.shape[0], 12)
    A = rows[:, :9].reshape(-1, 3, 3)
    oc = (A[:, :, 0] * o[:, None, 0] + A[:, :, 1] * o[:, None, 1]) + A[:, :, 2] * o[:, None, 2]
    oc = oc + rows[:, 9:]
    dc = (A[:, :, 0] * d[:, None, 0] + A[:, :, 1] * d[:, None, 1]) + A[:, :, 2] * d[:, None, 2]
    n = torch.sqrt((dc * dc).sum(-1))
    return oc, dc * (1.0 / n)[:, None], n


def grid_cells_torch(p: torch.Tensor, grid: GridGeometry) -> torch.Tensor:
    """Flat cell index of each point [m, 3], -1 outside the grid (mirrors grid.h)."""
    c = torch.tensor([(grid.aabb[i] + grid.aabb[i + 3]) / 2 for i in range(3)], dtype=p.dtype, device=p.device)
    inv_h = torch.tensor([1.0 / ((grid.aabb[i + 3] - grid.aabb[i]) / 2) for i in range(3)], dtype=p.dtype, device=p.device)
    q = (p - c) * inv_h
    mx = q.abs().max(dim=-1).values
    level = torch.full(mx.shape, -1, dtype=torch.long, device=p.device)
    for l in reversed(range(grid.levels)):
        level = torch.where(mx < 2.0 ** l, torch.full_like(level, l), level)
    inv_scale = torch.pow(2.0, -level.clamp_min(0).to(p.dtype))[:, None]
    u = (q * inv_scale + 1) * (0.5 * grid.res)
    idx = torch.floor(u).long().clamp(0, grid.res - 1)
    flat = ((level * grid.res + idx[:, 0]) * grid.res + idx[:, 1]) * grid.res + idx[:, 2]
    return torch.where(level >= 0, flat, torch.full_like(flat, -1))


def _march_torch(rays_o, rays_d, grid, grid_bits, cfg, warp_table, warp_index, jitter, box, t_min=None, t_max=None):
    dt, dev, N = rays_o.dtype, rays_o.device, rays_o.shape[0]
    o, d, ln = _warp_torch(rays_o, rays_d, warp_table, warp_index)
    near, far, hit = _ray_aabb_torch(o, d, list(box))
    hit = hit & (ln > 0)
    near = torch.maximum(near, cfg.near_plane * ln)
    far = torch.minimum(far, cfg.far_plane * ln)
    if t_min is not None:
        near = torch.maximum(near, t_min * ln)
    if t_max is not None:
        far = torch.minimum(far, t_max * ln)
    u = jitter if jitter is not None else torch.zeros(N, dtype=dt, device=dev)
    step = torch.tensor(cfg.step, dtype=dt, device=dev)
    if cfg.cone_angle <= 0:
        span = float((far - near).clamp_min(0).max()) if N else 0.0
        K = min(cfg.max_steps, int(span / cfg.step) + 2)
        k = torch.arange(K, dtype=dt, device=dev)
        t0 = near[:, None] + (k[None, :] + u[:, None]) * step
        t1 = near[:, None] + ((k + 1)[None, :] + u[:, None]) * step
    else:
        t = near + u * torch.clamp(near * cfg.cone_angle, cfg.step, max(cfg.max_step, cfg.step))
        t0s, t1s = [], []
        for _ in range(cfg.max_steps):
            dts = torch.clamp(t * cfg.cone_angle, cfg.step, max(cfg.max_step, cfg.step))
            t_next = t + dts
            t0s.append(t)
            t1s.append(t_next)
            if N == 0 or not bool((0.5 * (t + t_next) < far).any()):
                break
            t = t_next
        t0 = torch.stack(t0s, 1) if t0s else torch.zeros(N, 0, dtype=dt, device=dev)
        t1 = torch.stack(t1s, 1) if t1s else torch.zeros(N, 0, dtype=dt, device=dev)
    mid = 0.5 * (t0 + t1)
    valid = hit[:, None] & (mid < far[:, None])
    # Once a midpoint passes far the kernel stops, even if a later one would not.
    valid = torch.cumprod(valid.to(torch.int32), dim=1).bool()
    pos = o[:, None, :] + d[:, None, :] * mid[..., None]
    cells = grid_cells_torch(pos.reshape(-1, 3), grid).reshape(N, -1)
    if grid_bits is None:
        occ = cells >= 0
    else:
        occ = (cells >= 0) & (grid_bits[cells.clamp_min(0)] != 0)
    keep = valid & occ
    if cfg.max_samples > 0:
        keep = keep & (torch.cumsum(keep.to(torch.int64), dim=1) <= cfg.max_samples)
    counts = keep.sum(1)
    offsets = torch.cumsum(counts, 0) - counts
    ray_idx = torch.arange(N, device=dev)[:, None].expand_as(keep)[keep]
    inv = (1.0 / ln)[:, None].expand_as(keep)[keep]
    return PackedSamples(
        packed_info=torch.stack([offsets, counts], 1),
        ray_indices=ray_idx,
        t_starts=t0[keep] * inv,
        t_ends=t1[keep] * inv,
        positions=pos[keep],
        dirs=d[:, None, :].expand(N, keep.shape[1], 3)[keep],
    )
