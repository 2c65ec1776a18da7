"""Volume rendering of a canonical-space field from world-space rays.

One call = march (fused canonical warp + occupancy grid) -> field -> alpha
compositing -> background, with early ray termination done by *segmented marching*:
rays are marched ``segment`` samples at a time (the marcher takes a per-ray start),
and a ray stops once its transmittance falls below ``t_thresh``. A head is solid, so
this skips nearly everything behind the skin.

- Inference (no grad): each segment is evaluated and composited in turn, and the
  segments are chained: rgb += T * rgb_seg, T *= 1 - opacity_seg. Within a segment the
  density network runs first on every sample; the color network then runs only on the
  samples whose compositing weight exceeds ``color_thresh`` (pnerf_fast/field/infer.py:
  no autograd, buffers kept across segments, chunks and frames).
- Training: one differentiable pass over every marched sample (with ``prune_train``, after a
  no-grad pass with the density network alone that finds where each ray stops, so the
  differentiable pass marches each ray only up to there). With ``color_alive`` the density
  network runs on every sample and the color network only on those before each ray turned
  opaque: the same output and gradients, since composite never reads the others' color.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .._config import build_config
from ..field.infer import evaluator
from ..geometry.cameras import pixel_rays
from ..ops.composite import composite
from ..ops.occgrid import OccupancyGrid
from ..ops.raymarch import MarchConfig, PackedSamples, march_rays, ray_scale
from .rays import Rays, view_dirs


@dataclass(frozen=True)
class RenderConfig:
    step: float = 0.02          # canonical units (the canonical box is 3 units wide)
    t_thresh: float = 1e-3      # early ray termination
    prune: bool = True          # stop rays once opaque (segmented marching)
    prune_train: bool = False   # also with gradients: a no-grad density pre-pass finds where
                                # each ray turns opaque. Measured on 2 CPU cores: the pre-pass
                                # costs more than the samples it saves (0.22 vs 0.18 s/step).
    segment: int = 8            # samples per ray per segment. 8, not 16: a ray that turns opaque
                                # early in a segment marches and evaluates the rest of it for
                                # nothing (a 256² latent portrait frame: 549 k samples at 16, 345 k
                                # at 8, 297 k at 4); the extra march calls cost less than that
                                # (benchmarks/README.md, "Session 23"). Changes a render by < 1e-3.
    color_alive: bool = True    # with gradients: the colour network only on the samples before
                                # each ray turned opaque (the same output and gradients; 30-60%
                                # of a training batch's samples lie behind a surface). False: on
                                # every sample, the reference
    box_margin: float = 0.0     # grow the occupied box by this much
    max_samples: int = 0        # per ray, 0 = no cap
    fast_infer: bool = True     # no-grad rendering: density network on every sample, then the
                                # color network only where the compositing weight > color_thresh
                                # (false: the whole field on every sample, the reference)
    color_thresh: float = 0.0   # 0: every sample of nonzero weight (those after a ray stops are
                                # skipped, a third of them; the reference's sums). > 0: each ray's
                                # heaviest sample is kept too and the skipped weight takes the ray's
                                # kept mean color. On finetuned heads 1e-4..1e-2 skip few more
                                # samples than 0 does (benchmarks/README.md, "Rendering")

    def march_config(self) -> MarchConfig:
        return MarchConfig(step=self.step, max_samples=self.max_samples)

    @classmethod
    def from_dict(cls, d: dict) -> "RenderConfig":
        """A checked RenderConfig from a mapping (a config's ``render`` section)."""
        import math

        cfg = build_config(cls, d, "render config")
        for f in dataclasses.fields(cls):
            v = getattr(cfg, f.name)
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                lo = 1 if f.name == "segment" else 0
                if v < lo:
                    raise ValueError(f"render config: {f.name}: must be an integer >= {lo}, got {v}")
            elif not math.isfinite(v) or v < 0 or (f.name == "step" and v <= 0):
                raise ValueError(f"render config: {f.name}: must be a finite number "
                                 f"{'> 0' if f.name == 'step' else '>= 0'}, got {v}")
        return cfg


class RenderOutput(NamedTuple):
    rgb: torch.Tensor       # [n, 3] composited over the background
    depth: torch.Tensor     # [n] expected world distance (0 where empty)
    opacity: torch.Tensor   # [n]
    n_samples: int
    # [n, 3] each ray's sum of weight * sample_values(...) (render_rays' ``sample_values``)
    extra: torch.Tensor | None = None
    # [n] (render_rays' ``stop_depth``) world distance at which each ray stopped: the t_end of
    # its last sample before its transmittance fell below t_thresh; +inf where it never did
    stop: torch.Tensor | None = None


def _bg(bg, like: torch.Tensor, n: int) -> torch.Tensor:
    bg = torch.as_tensor(bg, dtype=like.dtype, device=like.device)
    return bg.expand(3) if bg.ndim == 0 else bg


def _splits(field) -> bool:
    """Whether ``field(x, d)`` is ``field.color(*field.geometry(x)[1:], d)`` with that sigma, so
    the colour network can run on a subset of the samples: a RadianceField whose forward is
    RadianceField's own."""
    from ..field.field import RadianceField

    return isinstance(field, RadianceField) and type(field).forward is RadianceField.forward


def _segments(rays: Rays, grid, cfg, box, scale_ray, fn, max_segments=256):
    """March alive rays ``cfg.segment`` samples at a time; ``fn(idx, samples, sigma_scale)``
    consumes a segment (``idx`` = the rays' indices) and returns the boolean "ray still
    transmits" per ray of ``idx``."""
    n = len(rays)
    dev = rays.origins.device
    alive = torch.arange(n, device=dev)
    t_begin = torch.zeros(n, dtype=rays.origins.dtype, device=dev)
    mc = MarchConfig(step=cfg.step, max_samples=cfg.segment)
    for i in range(max_segments):
        if alive.numel() == 0:
            break
        r = rays[alive]
        if i > 0 and r.jitter is not None:
            # A later segment starts at the last one's t_end, which carries the ray's jitter
            # already: jittering again would leave a gap of jitter * step at every boundary.
            r = dataclasses.replace(r, jitter=None)
        s = _march(r, grid, mc, box, t_min=t_begin[alive])
        if s.n_samples == 0:
            break
        keep = fn(alive, s, scale_ray[alive][s.ray_indices])
        counts = s.packed_info[:, 1]
        last = s.packed_info[:, 0] + counts - 1
        more = keep & (counts == cfg.segment)  # a full segment: the ray may go on
        t_begin[alive[more]] = s.t_ends[last[more]]
        alive = alive[more]


def _march(rays: Rays, grid, mc: MarchConfig, box, t_min=None) -> PackedSamples:
    return march_rays(rays.origins, rays.directions, grid.geometry, grid.bits, mc, warp_table=rays.warp_table,
                      warp_index=rays.warp_index, jitter=rays.jitter, box=box, t_min=t_min, t_max=rays.t_max)


def render_rays(
    field,
    grid: OccupancyGrid,
    rays: Rays,
    cfg: RenderConfig = RenderConfig(),
    *,
    bg: torch.Tensor | float = 1.0,
    sample_values=None,
    stop_depth: bool = False,
) -> RenderOutput:
    """Render a bundle of rays through ``field`` -> RenderOutput.

    Args:
        field: the canonical-space field: ``field(x [m, 3], d [m, 3]) -> (sigma [m],
            rgb [m, 3])`` and ``field.density(x [m, 3]) -> [m]``, on the grid's device.
        grid: the OccupancyGrid (canonical space) that the march skips empty cells of.
        rays: the n rays (``Rays``: origins [n, 3] and directions [n, 3] world, warp_table
            [n_warps, 12] and warp_index [n] world -> canonical, jitter [n] in [0, 1),
            t_max [n] world).
        cfg: the RenderConfig (step, early termination, segmented marching, ...).
        bg: the background behind each ray: [3], [n, 3] or a grey level.
        sample_values: ``(ray_indices [m] int64, t_mid [m] world) -> [m, 3]``, values per
            sample composited with the same weights into ``.extra`` (losses on the samples),
            or None.
        stop_depth: also return each ray's stop depth (``.stop``).

    Returns:
        RenderOutput: rgb [n, 3] composited over ``bg``; depth [n] the expected world
        distance (0 where empty); opacity [n]; n_samples (int, samples marched); extra
        [n, 3] each ray's sum of weight * sample_values (None without ``sample_values``);
        stop [n] (None without ``stop_depth``): the t_end of each ray's last sample before
        its transmittance fell below ``cfg.t_thresh``, +inf where it did not become opaque
        within the march.

    ``rays.t_max`` ends each ray's march there (the samples before are the same as without
    it), which changes nothing where the ray is already opaque by then (composite gives the
    samples after that zero weight and zero gradient). Without gradients (and with
    ``cfg.prune`` and no ``sample_values``) rays are marched in segments and stop once
    opaque; with gradients, in one pass (after a no-grad pass that finds where each ray
    stops, with ``cfg.prune_train``), in which a RadianceField's color network runs only on
    the samples before each ray turned opaque (``cfg.color_alive``; ``field.geometry`` and
    ``field.color``, bypassing ``field(x, d)``: a forward hook on the field is not called)."""
    n = len(rays)
    box = grid.occupied_box(cfg.box_margin)
    scale_ray = ray_scale(rays.directions, rays.warp_table, rays.warp_index)
    if rays.t_max is not None:
        rays = dataclasses.replace(rays, t_max=rays.t_max.to(dtype=rays.origins.dtype, device=rays.origins.device))
    if cfg.prune and not torch.is_grad_enabled() and sample_values is None:
        return _render_segmented(field, grid, rays, cfg, bg, box, scale_ray, stop_depth)
    if cfg.prune and cfg.prune_train:
        like = rays.origins
        t_max = torch.full((n,), 1e10, dtype=like.dtype, device=like.device) if rays.t_max is None else rays.t_max.clone()

        def find_stop(idx, s, sc):
            with torch.no_grad():
                sig = field.density(s.positions).float() * sc
                r = composite(s.packed_info, sig, torch.zeros_like(s.positions), s.t_starts, s.t_ends, 0.0)
                T0 = T[idx][s.ray_indices]
                dead = (r.trans * T0) < cfg.t_thresh
                stop = torch.full((idx.numel(),), 1e10, dtype=s.t_ends.dtype, device=s.t_ends.device)
                stop = stop.scatter_reduce(0, s.ray_indices[dead], s.t_ends[dead], "amin")
                T[idx] = T[idx] * (1 - r.opacity)
                t_max[idx] = torch.minimum(t_max[idx], stop)
                return stop >= 1e10

        T = torch.ones(n, dtype=like.dtype, device=like.device)
        with torch.no_grad():
            _segments(rays, grid, cfg, box, scale_ray, find_stop)
        rays = dataclasses.replace(rays, t_max=t_max)
    s = _march(rays, grid, cfg.march_config(), box)
    if cfg.color_alive and cfg.t_thresh > 0 and _splits(field):
        # density first; the colour network only on the samples before each ray turned
        # opaque. composite gives the others zero weight and zero gradient and never reads
        # their colour, so this is the same output and the same gradients, for less work
        # (30-60% of a training batch's samples lie behind an opaque surface)
        sigma, feat = field.geometry(s.positions)
        sigma = sigma * scale_ray[s.ray_indices]
        with torch.no_grad():
            alive = composite(s.packed_info, sigma.detach(), sigma.new_zeros(s.n_samples, 3), s.t_starts, s.t_ends,
                              cfg.t_thresh).trans > 0
        sel = alive.nonzero()[:, 0]
        if sel.numel() == s.n_samples:  # nothing opaque yet (a young field): no gather
            rgb = field.color(feat, rays.color_dirs(s.positions, s.dirs))
        else:
            c = field.color(feat[sel], rays.color_dirs(s.positions[sel], s.dirs[sel]))
            rgb = c.new_zeros(s.n_samples, 3).index_copy(0, sel, c)
    else:
        sigma, rgb = field(s.positions, rays.color_dirs(s.positions, s.dirs))
        sigma = sigma * scale_ray[s.ray_indices]
    out = composite(s.packed_info, sigma, rgb, s.t_starts, s.t_ends, cfg.t_thresh)
    color = out.rgb + (1.0 - out.opacity)[:, None] * _bg(bg, out.rgb, n)
    extra = None
    if sample_values is not None:  # the same weights over per-sample values (for losses on the samples)
        vals = sample_values(s.ray_indices, 0.5 * (s.t_starts + s.t_ends)).to(rgb.dtype)
        extra = composite(s.packed_info, sigma, vals, s.t_starts, s.t_ends, cfg.t_thresh).rgb
    stop = None
    if stop_depth:
        with torch.no_grad():
            alive = out.trans > 0  # composite zeroes the transmittance from the first dead sample on
            last = torch.zeros(n, dtype=s.t_ends.dtype, device=s.t_ends.device)
            last = last.scatter_reduce(0, s.ray_indices[alive], s.t_ends[alive], "amax")
            stop = torch.where(1 - out.opacity.detach() < cfg.t_thresh, last, torch.full_like(last, float("inf")))
    return RenderOutput(color, out.depth, out.opacity, s.n_samples, extra, stop)


@torch.no_grad()
def _render_segmented(field, grid, rays: Rays, cfg, bg, box, scale_ray, stop_depth=False):
    n = len(rays)
    dt, dev = rays.origins.dtype, rays.origins.device
    rgb = torch.zeros(n, 3, dtype=dt, device=dev)
    depth = torch.zeros(n, dtype=dt, device=dev)
    T = torch.ones(n, dtype=dt, device=dev)
    last = torch.zeros(n, dtype=dt, device=dev) if stop_depth else None  # t_end of each ray's last live sample
    total = [0]
    ev = evaluator(field) if cfg.fast_infer else None

    def seg(idx, s, sc):
        if ev is None:  # the reference: the whole field on every sample
            sigma, c = field(s.positions, rays.color_dirs(s.positions, s.dirs))
            r = composite(s.packed_info, sigma.float() * sc, c.float(), s.t_starts, s.t_ends, cfg.t_thresh)
            seg_rgb = r.rgb
        else:  # density first; color only where the weight counts
            # the colour's directions: for a field with only forward(x, d) in geometry already,
            # else for the selected samples only
            early = rays.view_from is not None and ev.colors_in_geometry(s.positions)
            dirs = rays.color_dirs(s.positions, s.dirs) if early else s.dirs
            sigma = ev.geometry(s.positions, dirs).float() * sc
            r = composite(s.packed_info, sigma, ev.zeros(s.n_samples, 3, sigma), s.t_starts, s.t_ends, cfg.t_thresh)
            keep = r.weights > cfg.color_thresh
            if cfg.color_thresh > 0:  # and each ray's heaviest sample, whose color stands for the skipped
                top = torch.zeros_like(r.opacity).scatter_reduce_(0, s.ray_indices, r.weights, "amax")
                keep |= (r.weights == top[s.ray_indices]) & (r.weights > 0)
            sel = keep.nonzero()[:, 0]
            sel_dirs = dirs[sel] if early or rays.view_from is None else view_dirs(s.positions[sel], rays.view_from)
            c = ev.color(sel, sel_dirs).float()
            # sum w c per ray, in sample order like the kernel (a skipped sample adds w c = 0)
            ray, w = s.ray_indices[sel], r.weights[sel]
            seg_rgb = torch.zeros_like(r.rgb).index_add_(0, ray, w[:, None] * c)
            if cfg.color_thresh > 0:  # the skipped weight takes the ray's kept samples' mean color
                kept = torch.zeros_like(r.opacity).index_add_(0, ray, w)
                seg_rgb *= torch.where(kept > 0, r.opacity / kept.clamp_min(1e-30), 0.0)[:, None]
        T0 = T[idx]
        if last is not None:  # live: the ray's transmittance before the sample (T0 times the segment's) >= t_thresh
            live = (r.trans > 0) & (T0[s.ray_indices] * r.trans >= cfg.t_thresh)
            seg_last = torch.zeros_like(T0).scatter_reduce_(0, s.ray_indices[live], s.t_ends[live], "amax")
            last[idx] = torch.maximum(last[idx], seg_last)
        rgb[idx] += T0[:, None] * seg_rgb
        depth[idx] += T0 * r.depth
        T[idx] = T0 * (1 - r.opacity)
        total[0] += s.n_samples
        return T[idx] >= cfg.t_thresh

    _segments(rays, grid, cfg, box, scale_ray, seg)
    opacity = 1 - T
    color = rgb + T[:, None] * _bg(bg, rgb, n)
    stop = None if last is None else torch.where(T < cfg.t_thresh, last, torch.full_like(last, float("inf")))
    return RenderOutput(color, depth, opacity, total[0], None, stop)


# render_image's default chunk: a frame of up to WHOLE_FRAME rays (256x256) in one chunk, a larger
# one in chunks of LARGE_FRAME_CHUNK. One chunk per small frame rendered it 6-12% faster (the
# hash grid's pass per level gets 4x the points, and the per-segment work runs once, not 4 times:
# benchmarks/README.md, "Rendering"); large frames keep the smaller chunk, so the peak memory of
# a 2048x2048 frame is unchanged (a 65,536-ray chunk raised it from 853 to 1,063 MB).
WHOLE_FRAME = 1 << 16
LARGE_FRAME_CHUNK = 1 << 14


def default_chunk(n_rays: int) -> int:
    """render_image's rays per chunk for a frame of ``n_rays`` when none is given."""
    return max(n_rays, 1) if n_rays <= WHOLE_FRAME else LARGE_FRAME_CHUNK


@torch.no_grad()
def render_image(field, grid, camera, warp_table=None, cfg: RenderConfig = RenderConfig(), bg=1.0,
                 chunk: int | None = None, progress=None, view_from: torch.Tensor | None = None):
    """Render a whole camera in chunks of rays -> (rgb [H,W,3], depth [H,W], opacity [H,W]).

    Everything (rays, outputs) is made on the grid's device, where the field must be
    too. Memory is bounded by ``chunk`` (None: ``default_chunk``, the whole frame up to
    256x256, else 16,384 rays): each chunk's rays are made on the fly (the same
    values as ``camera.rays()``, pixel for pixel) and its results are written into the
    preallocated outputs, so beyond the outputs themselves (20 bytes a pixel) nothing
    grows with the image. The result does not depend on ``chunk``. ``view_from``: colour
    the samples as seen from this canonical point (``Rays.view_from``)."""
    H, W = camera.height, camera.width
    n = H * W
    if chunk is None:
        chunk = default_chunk(n)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"render_image: chunk must be an integer >= 1, got {chunk!r:.60}")
    dev = grid.bits.device
    rgb = torch.empty(n, 3, device=dev)
    depth = torch.empty(n, device=dev)
    opacity = torch.empty(n, device=dev)
    for i in range(0, n, chunk):
        j = min(i + chunk, n)
        idx = torch.arange(i, j, device=dev)
        o, d = pixel_rays(camera, torch.stack([idx % W, idx // W], -1), device=dev)
        r = render_rays(field, grid, Rays(o, d, warp_table, view_from=view_from), cfg, bg=bg)
        rgb[i:j] = r.rgb
        depth[i:j] = r.depth
        opacity[i:j] = r.opacity
        del o, d, r
        if progress is not None:
            progress.update(j - i)
    return rgb.clamp_(0, 1).reshape(H, W, 3), depth.reshape(H, W), opacity.reshape(H, W)
