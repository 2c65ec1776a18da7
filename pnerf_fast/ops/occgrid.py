"""Occupancy grid in canonical space: an EMA of density at jittered cell positions,
thresholded into per-cell occupancy bytes that the marcher reads.

Update rule (instant-ngp): ``d <- max(d * decay, sigma(jittered cell point))`` for the
visited cells, then ``occupied = d > min(mean(d), threshold)``. ``mark_from_density``
evaluates every cell (one or more jittered points each) from a density callback and
marks it directly, e.g. to initialise a grid from a pretrained field.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .._native import native, use_native
from .raymarch import GridGeometry


def cell_positions(grid: GridGeometry, indices: torch.Tensor | None = None, jitter: torch.Tensor | None = None,
                   dtype=torch.float32, device="cpu", impl: str = "auto") -> torch.Tensor:
    """Canonical position of each cell (its centre, or a point jittered in [0,1)^3) -> [m, 3]."""
    m = grid.n_cells if indices is None else int(indices.shape[0])
    if indices is not None:
        if indices.ndim != 1:
            raise ValueError(f"cell_positions: argument 'indices' must be 1-D, got shape {list(indices.shape)}")
        indices = indices.to(device=device, dtype=torch.long).contiguous()
    if jitter is not None:
        if jitter.shape != (m, 3):
            raise ValueError(f"cell_positions: argument 'jitter' must have shape [{m}, 3], got {list(jitter.shape)}")
        jitter = jitter.to(device=device, dtype=dtype).contiguous()
    like = torch.empty(0, dtype=dtype, device=device)
    if impl == "torch" or (impl == "auto" and not use_native(like)):
        return _cell_positions_torch(grid, indices, jitter, dtype, device)
    return native().occ_cell_positions(indices, jitter, list(grid.aabb), grid.levels, grid.res, like)


def ema_update_(density: torch.Tensor, bits: torch.Tensor, indices: torch.Tensor | None, new_density: torch.Tensor,
                decay: float, threshold: float | None, impl: str = "auto") -> None:
    """In place: EMA-max update of ``density`` at ``indices`` (unique), then, when
    ``threshold`` is given, ``bits = density > threshold`` over the whole grid."""
    if indices is not None:
        indices = indices.to(dtype=torch.long, device=density.device).contiguous()
    new_density = new_density.to(density.dtype).contiguous()
    if impl == "torch" or (impl == "auto" and not use_native(density)):
        if indices is None:
            density.copy_(torch.maximum(density * decay, new_density))
        else:
            density[indices] = torch.maximum(density[indices] * decay, new_density)
        if threshold is not None:
            bits.copy_((density > threshold).to(torch.uint8))
        return
    native().occ_update(density, bits, indices, new_density, float(decay), -1.0 if threshold is None else float(threshold))


def _cell_positions_torch(grid, indices, jitter, dtype, device):
    r = grid.res
    idx = torch.arange(grid.n_cells, device=device) if indices is None else indices
    iz, iy, ix, lvl = idx % r, (idx // r) % r, (idx // (r * r)) % r, idx // (r ** 3)
    c = torch.tensor([(grid.aabb[i] + grid.aabb[i + 3]) / 2 for i in range(3)], dtype=dtype, device=device)
    h = torch.tensor([(grid.aabb[i + 3] - grid.aabb[i]) / 2 for i in range(3)], dtype=dtype, device=device)
    scale = torch.pow(2.0, lvl.to(dtype))[:, None]
    j = torch.full((idx.shape[0], 3), 0.5, dtype=dtype, device=device) if jitter is None else jitter
    ijk = torch.stack([ix, iy, iz], 1).to(dtype)
    return c - h * scale + (ijk + j) * (2 * h * scale / r)


class OccupancyGrid(nn.Module):
    """Multi-resolution occupancy grid over a canonical box. Buffers: ``density``
    (EMA, float32) and ``bits`` (uint8 0/1), both [levels * res^3]; saved in state_dict."""

    def __init__(self, aabb, levels: int = 1, res: int = 64, decay: float = 0.95, threshold: float = 0.01):
        super().__init__()
        self.geometry = GridGeometry(tuple(aabb), levels, res)
        if not 0 <= decay <= 1:
            raise ValueError(f"OccupancyGrid: argument 'decay' must be in [0, 1], got {decay}")
        if threshold < 0:
            raise ValueError(f"OccupancyGrid: argument 'threshold' must be >= 0, got {threshold}")
        self.decay = float(decay)
        self.threshold = float(threshold)
        n = self.geometry.n_cells
        self.register_buffer("density", torch.zeros(n))
        self.register_buffer("bits", torch.ones(n, dtype=torch.uint8))
        # Cells that may ever be occupied (e.g. a visual hull); updates never mark others.
        self.register_buffer("allowed", torch.ones(n, dtype=torch.uint8))

    @property
    def occupancy(self) -> float:
        return float(self.bits.float().mean())

    def _thresh(self) -> float:
        return min(float(self.density.mean()), self.threshold)

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], fraction: float = 1.0,
               generator: torch.Generator | None = None, chunk: int = 1 << 18) -> None:
        """EMA update from ``density_fn(points [m,3]) -> sigma [m]`` at jittered points of
        a random ``fraction`` of the cells (all cells when 1.0)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"OccupancyGrid.update: argument 'fraction' must be in (0, 1], got {fraction}")
        dev = self.density.device
        gdev = dev if generator is None else generator.device  # random numbers come from the generator's device
        n = self.geometry.n_cells
        if fraction >= 1:
            idx = torch.arange(n, device=dev)
        else:
            idx = torch.randperm(n, generator=generator, device=gdev)[: max(1, int(n * fraction))].to(dev)
        jit = torch.rand(idx.shape[0], 3, generator=generator, device=gdev).to(dev)
        pos = cell_positions(self.geometry, idx, jit, device=dev)
        sig = torch.cat([density_fn(pos[i:i + chunk]).reshape(-1).float() for i in range(0, pos.shape[0], chunk)]) \
            if pos.shape[0] else pos.new_zeros(0)
        ema_update_(self.density, self.bits, idx, sig, self.decay, None)
        ema_update_(self.density, self.bits, torch.empty(0, dtype=torch.long, device=dev), sig[:0], 1.0, self._thresh())
        self.bits.mul_(self.allowed)

    @torch.no_grad()
    def mark_from_density(self, density_fn: Callable[[torch.Tensor], torch.Tensor], threshold: float | None = None,
                          samples_per_cell: int = 1, generator: torch.Generator | None = None,
                          chunk: int = 1 << 18) -> None:
        """Set ``density`` to the max of ``density_fn`` over a few jittered points per cell
        (cell centres when samples_per_cell == 1) and mark ``bits`` from it."""
        dev = self.density.device
        gdev = dev if generator is None else generator.device
        n = self.geometry.n_cells
        best = torch.zeros(n, device=dev)
        for s in range(samples_per_cell):
            jit = None if samples_per_cell == 1 else torch.rand(n, 3, generator=generator, device=gdev).to(dev)
            pos = cell_positions(self.geometry, None, jit, device=dev)
            sig = torch.cat([density_fn(pos[i:i + chunk]).reshape(-1).float() for i in range(0, n, chunk)])
            best = torch.maximum(best, sig)
        self.density.copy_(best)
        thr = self._thresh() if threshold is None else float(threshold)
        self.bits.copy_((self.density > thr).to(torch.uint8) * self.allowed)

    @torch.no_grad()
    def occupied_box(self, margin: float = 0.0) -> tuple:
        """Bounding box of the occupied cells (canonical), grown by ``margin``; the
        level-0 box when nothing is occupied. Pass it to march_rays(box=...). Cached
        until ``bits`` changes (in-place writes bump the tensor's version)."""
        key = (self.bits.data_ptr(), self.bits._version, float(margin))
        cache = getattr(self, "_box_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        box = self._occupied_box(margin)
        self._box_cache = (key, box)
        return box

    def _occupied_box(self, margin: float) -> tuple:
        idx = torch.nonzero(self.bits).reshape(-1)
        if idx.numel() == 0:
            return self.geometry.aabb
        g = self.geometry
        centres = cell_positions(g, idx, device=self.bits.device)
        lvl = (idx // g.res ** 3).to(centres.dtype)
        half = torch.tensor([(g.aabb[i + 3] - g.aabb[i]) / g.res / 2 for i in range(3)], device=centres.device)
        half = half[None] * torch.pow(2.0, lvl)[:, None]
        lo = (centres - half).min(0).values - margin
        hi = (centres + half).max(0).values + margin
        outer = g.outer_box()
        lo = [max(float(lo[i]), outer[i]) for i in range(3)]
        hi = [min(float(hi[i]), outer[i + 3]) for i in range(3)]
        return tuple(lo + hi)

    @torch.no_grad()
    def restrict_(self, allowed: torch.Tensor) -> "OccupancyGrid":
        """Only cells where ``allowed`` is true may be occupied, now and after updates."""
        if allowed.numel() != self.geometry.n_cells:
            raise ValueError(f"OccupancyGrid.restrict_: argument 'allowed' must have {self.geometry.n_cells} elements, got {allowed.numel()}")
        self.allowed.copy_(allowed.reshape(-1).to(torch.uint8))
        self.bits.mul_(self.allowed)
        return self

    @torch.no_grad()
    def copy_cells_from_(self, other: "OccupancyGrid") -> "OccupancyGrid":
        """Each cell takes the state (density, occupied, allowed) of ``other``'s cell at its
        centre, clamped into ``other``'s box: where this grid reaches beyond that box it goes on
        as ``other``'s outermost cells, as a field clamps points outside its box. One-level grids
        of any boxes and resolutions."""
        if self.geometry.levels != 1 or other.geometry.levels != 1:
            raise ValueError("OccupancyGrid.copy_cells_from_: needs one-level grids (grid.levels: 1)")
        og, r, dev = other.geometry, other.geometry.res, self.bits.device
        centres = cell_positions(self.geometry, device=dev)
        lo = torch.tensor(og.aabb[:3], device=dev)
        hi = torch.tensor(og.aabb[3:], device=dev)
        ijk = ((centres - lo) / (hi - lo) * r).floor().long().clamp(0, r - 1)
        src = (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]  # cells are x-major, then y, then z
        for name in ("density", "bits", "allowed"):
            getattr(self, name).copy_(getattr(other, name).to(dev)[src])
        return self

    def fill_(self, occupied: bool = True) -> "OccupancyGrid":
        self.bits.fill_(1 if occupied else 0)
        return self
