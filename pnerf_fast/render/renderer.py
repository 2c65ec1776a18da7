"""Volume rendering of a canonical-space field from world-space rays.

One call = march (fused canonical warp + occupancy grid) -> optional pruning of
samples hidden behind opaque ones -> field -> alpha compositing -> background.

Pruning ("early stop" for training as well as inference): the field's density alone
is evaluated on all marched samples without gradients; samples whose transmittance
fell below ``t_thresh`` are dropped before the full (differentiable) field pass. A
head is solid, so this removes most samples behind the skin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..ops.composite import composite
from ..ops.occgrid import OccupancyGrid
from ..ops.raymarch import MarchConfig, PackedSamples, march_rays, ray_scale


@dataclass(frozen=True)
class RenderConfig:
    step: float = 0.02          # canonical units (the canonical box is 3 units wide)
    t_thresh: float = 1e-3      # early ray termination
    prune: bool = True          # drop samples hidden behind opaque ones before the field pass
    box_margin: float = 0.0     # grow the occupied box by this much
    max_samples: int = 0        # per ray, 0 = no cap

    def march_config(self) -> MarchConfig:
        return MarchConfig(step=self.step, max_samples=self.max_samples)

    @classmethod
    def from_dict(cls, d: dict) -> "RenderConfig":
        known = set(cls.__dataclass_fields__)
        bad = set(d) - known
        if bad:
            raise ValueError(f"render config: unknown key(s) {sorted(bad)}; known: {sorted(known)}")
        return cls(**d)


class RenderOutput(NamedTuple):
    rgb: torch.Tensor       # [n, 3] composited over the background
    depth: torch.Tensor     # [n] expected world distance (0 where empty)
    opacity: torch.Tensor   # [n]
    n_samples: int


def _filter(s: PackedSamples, keep: torch.Tensor, n_rays: int) -> PackedSamples:
    ray = s.ray_indices[keep]
    counts = torch.zeros(n_rays, dtype=torch.long, device=ray.device).index_add_(0, ray, torch.ones_like(ray))
    offsets = torch.cumsum(counts, 0) - counts
    return PackedSamples(torch.stack([offsets, counts], 1), ray, s.t_starts[keep], s.t_ends[keep],
                         s.positions[keep], s.dirs[keep])


def render_rays(
    field,                                   # .density(x) -> [m], forward(x, d) -> (sigma [m], rgb [m,3])
    grid: OccupancyGrid,
    rays_o: torch.Tensor,                    # [n, 3] world
    rays_d: torch.Tensor,                    # [n, 3] world, unit
    warp_table: torch.Tensor | None = None,  # [n_warps, 12] world -> canonical
    warp_index: torch.Tensor | None = None,  # [n] int64
    cfg: RenderConfig = RenderConfig(),
    bg: torch.Tensor | float = 1.0,          # [3] or [n, 3] or a grey level
    jitter: torch.Tensor | None = None,      # [n] in [0, 1) for stratified training samples
) -> RenderOutput:
    n = rays_o.shape[0]
    s = march_rays(rays_o, rays_d, grid.geometry, grid.bits, cfg.march_config(), warp_table=warp_table,
                   warp_index=warp_index, jitter=jitter, box=grid.occupied_box(cfg.box_margin))
    scale_ray = ray_scale(rays_d, warp_table, warp_index)
    if cfg.prune and s.n_samples:
        with torch.no_grad():
            sig = field.density(s.positions) * scale_ray[s.ray_indices]
            r = composite(s.packed_info, sig.float(), torch.zeros_like(s.positions), s.t_starts, s.t_ends, cfg.t_thresh)
            s = _filter(s, r.trans > 0, n)
    sigma, rgb = field(s.positions, s.dirs)
    sigma = sigma * scale_ray[s.ray_indices]
    out = composite(s.packed_info, sigma, rgb, s.t_starts, s.t_ends, cfg.t_thresh)
    bg = torch.as_tensor(bg, dtype=out.rgb.dtype, device=out.rgb.device)
    if bg.ndim == 0:
        bg = bg.expand(3)
    color = out.rgb + (1.0 - out.opacity)[:, None] * bg
    return RenderOutput(color, out.depth, out.opacity, s.n_samples)


@torch.no_grad()
def render_image(field, grid, camera, warp_table=None, cfg: RenderConfig = RenderConfig(), bg=1.0,
                 chunk: int = 1 << 14, progress=None):
    """Render a whole camera in chunks of rays -> (rgb [H,W,3], depth [H,W], opacity [H,W])."""
    o, d = camera.rays()
    rgbs, depths, opas = [], [], []
    for i in range(0, o.shape[0], chunk):
        r = render_rays(field, grid, o[i:i + chunk], d[i:i + chunk], warp_table, None, cfg, bg)
        rgbs.append(r.rgb)
        depths.append(r.depth)
        opas.append(r.opacity)
        if progress is not None:
            progress.update(min(chunk, o.shape[0] - i))
    H, W = camera.height, camera.width
    return (torch.cat(rgbs).reshape(H, W, 3).clamp(0, 1), torch.cat(depths).reshape(H, W),
            torch.cat(opas).reshape(H, W))
