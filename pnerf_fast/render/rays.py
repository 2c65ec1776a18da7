"""A bundle of world-space rays, with what the march needs of each: the renderer's input."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Rays:
    """``n`` world-space rays for ``render_rays``: where they start and go, how they map
    into canonical space, and how their samples are placed.

    Attributes:
        origins: [n, 3] world.
        directions: [n, 3] world, unit.
        warp_table: [n_warps, 12] float32 world -> canonical rows (a 3x4 similarity, row
            major), or None: the world is canonical.
        warp_index: [n] int64, each ray's row of ``warp_table``, or None: row 0 for all.
        jitter: [n] in [0, 1): each ray's stratified offset of its samples (training), or
            None: samples at the step's midpoints.
        t_max: [n] world distance (finite): march no farther (e.g. a per-pixel stop-depth
            cache); samples whose midpoint lies beyond it are not marched. None: no limit.
        view_from: [3] canonical point: each sample is coloured as seen from there (the
            field's direction input is the unit vector from it to the sample), not along
            its ray. A portrait fitted to one photo passes its camera's centre: its novel
            views then take the colours that the photo's camera saw, which is all that one
            view tells, instead of what its colour network makes of directions it never
            saw. None: along the ray.

    ``rays[idx]`` (a slice, an index tensor or a boolean mask) is the bundle of those rays
    (the warp table is shared)."""

    origins: torch.Tensor
    directions: torch.Tensor
    warp_table: torch.Tensor | None = None
    warp_index: torch.Tensor | None = None
    jitter: torch.Tensor | None = None
    t_max: torch.Tensor | None = None
    view_from: torch.Tensor | None = None

    def __post_init__(self):
        n = self.origins.shape[0]
        if self.origins.shape != (n, 3) or self.directions.shape != (n, 3):
            raise ValueError(f"Rays: origins and directions must have shape [n, 3], got "
                             f"{list(self.origins.shape)} and {list(self.directions.shape)}")
        if self.view_from is not None and self.view_from.shape != (3,):
            raise ValueError(f"Rays: view_from must have shape [3], got {list(self.view_from.shape)}")
        for name in ("warp_index", "jitter", "t_max"):
            v = getattr(self, name)
            if v is not None and v.shape != (n,):
                raise ValueError(f"Rays: {name} must have shape [{n}], got {list(v.shape)}")

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, idx) -> "Rays":
        def pick(t):
            return None if t is None else t[idx]

        return Rays(self.origins[idx], self.directions[idx], self.warp_table, pick(self.warp_index),
                    pick(self.jitter), pick(self.t_max), self.view_from)

    def color_dirs(self, positions: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """The direction input of the field's colour at samples ``positions`` [m, 3]
        (canonical) whose rays run along ``dirs`` [m, 3]: ``dirs``, or the unit vectors from
        ``view_from``."""
        return dirs if self.view_from is None else view_dirs(positions, self.view_from)


def view_dirs(positions: torch.Tensor, view_from: torch.Tensor) -> torch.Tensor:
    """Unit vectors from the point ``view_from`` [3] to ``positions`` [m, 3]."""
    v = view_from.to(device=positions.device, dtype=positions.dtype)
    return torch.nn.functional.normalize(positions - v, dim=-1)
