"""The canonical box: where a canonical-space head lives, and the boxes derived from it.

A box is ``(xmin, ymin, zmin, xmax, ymax, zmax)`` in canonical units. The field's box is
its config's ``aabb`` (``FieldConfig.aabb``, default ``CANONICAL_AABB``); everything that
covers the field (the occupancy grid, and through it the visual cone, the hull and the
renderer's bounds) takes its box from that one with ``grid_box``, never from the constant.
"""
from __future__ import annotations

from typing import Sequence

#: The default canonical-space box: a whole template-sized head (``face.landmarks.TEMPLATE``)
#: with hair and a bit of neck: (xmin, ymin, zmin, xmax, ymax, zmax).
CANONICAL_AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


def grid_box(aabb: Sequence[float], floor_drop: float = 0.0) -> tuple:
    """The occupancy grid's box over a field's ``aabb``: the same box with its floor (y)
    lowered by ``floor_drop`` canonical units (the field clamps points below its floor onto
    it, so the grid goes on below as the floor's cross-section)."""
    a = [float(v) for v in aabb]
    if len(a) != 6:
        raise ValueError(f"grid_box: argument 'aabb' must be 6 numbers (min xyz, max xyz), got {len(a)}")
    a[1] -= float(floor_drop)
    return tuple(a)


def half_extent(aabb: Sequence[float]) -> float:
    """Half the largest side of ``aabb`` (canonical units): 1.5 for ``CANONICAL_AABB``."""
    return 0.5 * max(float(aabb[i + 3]) - float(aabb[i]) for i in range(3))
