"""Visual hulls in canonical space from the foreground masks of multi-view subjects.

A canonical grid cell belongs to a subject's hull when its centre, mapped back to that
subject's world space, projects onto the foreground (alpha > 0.5) in every view that
sees it. The union over subjects, dilated by a cell or two, bounds where any head can
be: pretraining restricts the shared occupancy grid to it, which keeps empty space
empty from the first step (and makes each step several times cheaper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.occgrid import OccupancyGrid, cell_positions
from .data import SubjectRays


@torch.no_grad()
def subject_hull(grid: OccupancyGrid, sr: SubjectRays, views: list[int] | None = None) -> torch.Tensor:
    """bool [n_cells] on the CPU: cells inside this subject's visual hull (level 0 cells;
    coarser levels are left allowed). The cell centres are projected through the numpy
    cameras on the host, once per subject; callers move the result to the grid's device."""
    inside, seen = _hull_and_seen(grid, sr, views)
    return inside & seen


@torch.no_grad()
def _hull_and_seen(grid: OccupancyGrid, sr: SubjectRays, views: list[int] | None = None):
    """(bool [n_cells] on the CPU: cells that no view in ``views`` sees as background,
    bool [n_cells]: cells that some view sees, i.e. projects into its frame), level 0; both
    True on the coarser levels. ``subject_hull`` is their intersection."""
    g = grid.geometry
    n0 = g.res ** 3
    dev = grid.bits.device
    centres = cell_positions(g, torch.arange(n0, device=dev), device=dev).double().cpu().numpy()
    world = sr.transform.inverse().apply(centres)
    H, W = sr.hw
    inside = torch.ones(g.n_cells, dtype=torch.bool)
    seen = torch.ones(g.n_cells, dtype=torch.bool)
    seen[:n0] = False
    for v in views if views is not None else range(sr.num_views):
        uv, depth = sr.cameras[v].project(world)
        uv = torch.as_tensor(uv)
        u = torch.floor(uv[:, 0]).long()
        w = torch.floor(uv[:, 1]).long()
        in_frame = (u >= 0) & (u < W) & (w >= 0) & (w < H) & torch.as_tensor(depth > 0)
        a = torch.zeros(n0)
        idx = (w.clamp(0, H - 1) * W + u.clamp(0, W - 1))
        a[in_frame] = sr.alpha[v][idx[in_frame]].cpu()
        inside[:n0] &= ~in_frame | (a > 0.5)
        seen[:n0] |= in_frame
    return inside, seen


@torch.no_grad()
def union_hull(grid: OccupancyGrid, subjects: list[SubjectRays], dilate: int = 2, min_fraction: float = 0.25,
               progress: bool = False) -> torch.Tensor:
    """Cells inside the hulls of at least ``min_fraction`` of the subjects, dilated.
    (A plain union is loose: each hull is a cone extruded away from its cameras, and the
    cones of differently posed subjects point different ways in canonical space, while
    the heads themselves coincide there.) ``progress``: a bar over the subjects (each
    one's masks are read, from disk where they are not cached: about 8 minutes for 1,000
    light-stage heads on 2 cores)."""
    from tqdm import tqdm

    g = grid.geometry
    votes = torch.zeros(g.n_cells)
    for sr in tqdm(subjects, desc="visual hulls", unit="subject", disable=not progress):
        votes += subject_hull(grid, sr).float()
    acc = votes >= max(1.0, min_fraction * len(subjects))
    return dilate_cells(grid, acc, dilate)


def dilate_cells(grid: OccupancyGrid, cells: torch.Tensor, dilate: int) -> torch.Tensor:
    """bool [n_cells]: ``cells`` grown by ``dilate`` cells (level 0; other levels kept)."""
    g = grid.geometry
    n0 = g.res ** 3
    out = cells.clone().bool()
    if dilate > 0:
        vol = out[:n0].reshape(1, 1, g.res, g.res, g.res).float()
        vol = F.max_pool3d(vol, 2 * dilate + 1, stride=1, padding=dilate)
        out[:n0] = vol.reshape(-1) > 0
    return out


@torch.no_grad()
def cover_subject_(grid: OccupancyGrid, sr: SubjectRays, views: list[int] | None = None, dilate: int = 2,
                   carve: bool = False) -> torch.Tensor:
    """Unite ``grid`` (its occupied and allowed cells) with the visual cone of the
    subject's masks in ``views`` (default: the support set, the input view), dilated,
    so that the finetune can place the subject wherever its silhouette reaches, whatever
    the size of its head or hair. With ``carve``, also remove every cell that those views
    see as background (dilated the same way, so a mask's edge errors keep their cells;
    cells outside every frame stay): matter there would show in the input view, and
    without it a ray through the background crosses no cell at all. Returns the indices
    [k] int64 of the cells it added."""
    g = grid.geometry
    n0 = g.res ** 3
    views = views if views is not None else sr.support
    not_background, seen = _hull_and_seen(grid, sr, views)
    cone = not_background & seen
    cone[n0:] = False  # coarser levels: leave as they are
    cone = dilate_cells(grid, cone, dilate)
    before = grid.bits.bool()
    new = cone.to(grid.bits.device) & ~before
    allowed = grid.allowed.bool() | cone.to(grid.allowed.device)
    bits = before | cone.to(grid.bits.device)
    if carve:
        keep = dilate_cells(grid, not_background, dilate).to(grid.bits.device)
        allowed &= keep.to(allowed.device)
        bits &= keep
    grid.allowed.copy_(allowed.to(torch.uint8))
    grid.bits.copy_(bits.to(torch.uint8))
    return torch.nonzero(new).reshape(-1)
