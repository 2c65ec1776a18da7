"""Trilinear read of a dense feature volume spanning a box: the sampling of
``torch.nn.functional.grid_sample(..., mode="bilinear", padding_mode="zeros",
align_corners=True)`` (vertex 0 at the box's min corner, the last vertex at its max; a
corner outside the volume contributes zero). The native kernel is forward-only and reads
a channels-last volume; with gradients the grid_sample reference runs instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._native import native, use_native


def volume_read(
    x: torch.Tensor,         # [n, 3] points
    vol: torch.Tensor,       # [R0, R1, R2, C] channels last, R_a >= 2
    box,                     # (min0, min1, min2, max0, max1, max2): where the vertices span;
                             # a sequence of numbers, or a [6] tensor (the field's aabb buffer)
    impl: str = "auto",
) -> torch.Tensor:           # [n, C]
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"volume_read: argument 'x' must be a float tensor of shape [n, 3], got {getattr(x, 'shape', type(x))}")
    if not isinstance(vol, torch.Tensor) or vol.ndim != 4 or min(vol.shape[:3]) < 2 or vol.shape[3] < 1:
        raise ValueError(f"volume_read: argument 'vol' must be a tensor of shape [R0, R1, R2, C] with R >= 2, "
                         f"got {getattr(vol, 'shape', type(vol))}")
    if impl not in ("auto", "native", "torch"):
        raise ValueError(f"volume_read: argument 'impl' must be 'auto', 'native' or 'torch', got {impl!r}")
    grad = torch.is_grad_enabled() and (x.requires_grad or vol.requires_grad)
    reference = impl == "torch" or grad or (impl == "auto" and not use_native(x, vol))
    if isinstance(box, torch.Tensor):
        if box.numel() != 6:
            raise ValueError(f"volume_read: argument 'box' must have 6 numbers, got a tensor of shape {list(box.shape)}")
        if reference:  # the tensor as it is: no host round trip (a sync on a GPU) per training step
            return _volume_read_torch(x, vol, box.reshape(6).to(x))
        box = box.tolist()
    box = [float(v) for v in box]
    if len(box) != 6 or not all(box[k + 3] > box[k] for k in range(3)):
        raise ValueError(f"volume_read: argument 'box' must be 6 numbers (min xyz, max xyz) with max > min, got {box}")
    if reference:
        return _volume_read_torch(x, vol, torch.tensor(box, dtype=x.dtype, device=x.device))
    if native() is None:
        raise RuntimeError("volume_read: impl='native' but the native extension is not available")
    return native().volume_read(x.contiguous(), vol.to(x.dtype).contiguous(), box)


def _volume_read_torch(x, vol, box):
    lo, hi = box[:3], box[3:]
    xn = 2 * (x - lo) / (hi - lo) - 1
    # grid_sample's grid is (x, y, z) over the volume's (W, H, D): axes 2, 1, 0 of [R0, R1, R2]
    g = xn.to(vol.dtype).view(1, -1, 1, 1, 3)
    out = F.grid_sample(vol.permute(3, 2, 1, 0)[None], g, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(vol.shape[3], -1).t().to(x.dtype)
