"""Alpha compositing over packed samples, with an exact backward for sigma and rgb.

Samples of ray r are ``[start, start + count)`` with ``(start, count) = packed_info[r]``.
``T_i = exp(-sum_{j<i} sigma_j delta_j)``, ``alpha_i = 1 - exp(-sigma_i delta_i)``,
``w_i = T_i alpha_i``. A ray terminates at the first sample with ``T_i < t_thresh``:
that sample and the rest get weight 0 (and transmittance 0).
Outputs per ray: rgb = sum w c, depth = sum w * (t_start + t_end) / 2 (not normalised
by opacity), opacity = sum w. Gradients flow to ``sigmas`` and ``rgbs``; weights and
transmittance are returned for inspection and are not differentiable.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .._native import native, use_native


class CompositeResult(NamedTuple):
    rgb: torch.Tensor       # [n_rays, 3]
    depth: torch.Tensor     # [n_rays]
    opacity: torch.Tensor   # [n_rays]
    weights: torch.Tensor   # [n_samples]
    trans: torch.Tensor     # [n_samples]


def _check(packed_info, sigmas, rgbs, t_starts, t_ends):
    for name, t in (("packed_info", packed_info), ("sigmas", sigmas), ("rgbs", rgbs), ("t_starts", t_starts), ("t_ends", t_ends)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"composite: argument '{name}' must be a tensor, got {type(t).__name__}")
    if packed_info.ndim != 2 or packed_info.shape[1] != 2:
        raise ValueError(f"composite: argument 'packed_info' must have shape [n_rays, 2], got {list(packed_info.shape)}")
    if packed_info.dtype != torch.long:
        raise ValueError(f"composite: argument 'packed_info' must be int64, got {packed_info.dtype}")
    if not sigmas.is_floating_point():
        raise ValueError(f"composite: argument 'sigmas' must be floating point, got {sigmas.dtype}")
    S = sigmas.shape[0] if sigmas.ndim == 1 else -1
    if sigmas.ndim != 1:
        raise ValueError(f"composite: argument 'sigmas' must have shape [n_samples], got {list(sigmas.shape)}")
    if rgbs.shape != (S, 3):
        raise ValueError(f"composite: argument 'rgbs' must have shape [{S}, 3], got {list(rgbs.shape)}")
    for name, t in (("t_starts", t_starts), ("t_ends", t_ends)):
        if t.shape != (S,):
            raise ValueError(f"composite: argument '{name}' must have shape [{S}], got {list(t.shape)}")
    for name, t in (("rgbs", rgbs), ("t_starts", t_starts), ("t_ends", t_ends)):
        if t.dtype != sigmas.dtype:
            raise ValueError(f"composite: argument '{name}' must have dtype {sigmas.dtype} like 'sigmas', got {t.dtype}")
    for name, t in (("packed_info", packed_info), ("rgbs", rgbs), ("t_starts", t_starts), ("t_ends", t_ends)):
        if t.device != sigmas.device:
            raise ValueError(f"composite: argument '{name}' is on {t.device}, but 'sigmas' is on {sigmas.device}")


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, packed_info, sigmas, rgbs, t_starts, t_ends, t_thresh):
        rgb, depth, opacity, weights, trans = native().composite_forward(
            packed_info, sigmas, rgbs, t_starts, t_ends, float(t_thresh)
        )
        ctx.save_for_backward(packed_info, sigmas, rgbs, t_starts, t_ends, weights, trans, rgb, depth, opacity)
        ctx.mark_non_differentiable(weights, trans)
        return rgb, depth, opacity, weights, trans

    @staticmethod
    def backward(ctx, g_rgb, g_depth, g_opacity, _gw, _gt):
        packed_info, sigmas, rgbs, t_starts, t_ends, weights, trans, rgb, depth, opacity = ctx.saved_tensors

        def _g(g, like):
            return torch.zeros_like(like) if g is None else g.contiguous()

        g_sig, g_rgbs = native().composite_backward(
            packed_info, sigmas, rgbs, t_starts, t_ends, weights, trans, rgb, depth, opacity,
            _g(g_rgb, rgb), _g(g_depth, depth), _g(g_opacity, opacity),
        )
        return None, g_sig, g_rgbs, None, None, None


def composite(
    packed_info: torch.Tensor,  # [n_rays, 2] int64 (start, count)
    sigmas: torch.Tensor,       # [n_samples] float
    rgbs: torch.Tensor,         # [n_samples, 3] float
    t_starts: torch.Tensor,     # [n_samples] float
    t_ends: torch.Tensor,       # [n_samples] float
    t_thresh: float = 1e-4,
    impl: str = "auto",
) -> CompositeResult:
    """Composite packed samples into per-ray rgb, depth and opacity.

    impl: "auto" (native when available), "native" or "torch" (the reference)."""
    _check(packed_info, sigmas, rgbs, t_starts, t_ends)
    if impl not in ("auto", "native", "torch"):
        raise ValueError(f"composite: argument 'impl' must be 'auto', 'native' or 'torch', got {impl!r}")
    args = [t.contiguous() for t in (packed_info, sigmas, rgbs, t_starts, t_ends)]
    if impl == "torch" or (impl == "auto" and not use_native(sigmas)):
        return CompositeResult(*_torch_impl(*args, t_thresh=t_thresh))
    if native() is None:
        raise RuntimeError("composite: impl='native' but the native extension is not available")
    return CompositeResult(*_Composite.apply(*args, float(t_thresh)))


def _dense_index(packed_info: torch.Tensor, n_samples: int):
    """(ray index, position within the ray) of every packed sample, and the max count."""
    counts = packed_info[:, 1]
    ray_idx = torch.repeat_interleave(torch.arange(packed_info.shape[0], device=packed_info.device), counts)
    pos = torch.arange(n_samples, device=packed_info.device) - packed_info[ray_idx, 0]
    kmax = int(counts.max()) if counts.numel() else 0
    return ray_idx, pos, kmax


def _torch_impl(packed_info, sigmas, rgbs, t_starts, t_ends, t_thresh=1e-4):
    """Pure-PyTorch reference: pads to a dense [n_rays, max_count] layout. Differentiable
    by autograd. The same math as the kernel, which keeps T as a running product of
    exp(-tau) where this takes the exp of the running sum: equal to float rounding."""
    N, S = packed_info.shape[0], sigmas.shape[0]
    ray_idx, pos, K = _dense_index(packed_info, S)
    tau = sigmas * (t_ends - t_starts)
    dense_tau = sigmas.new_zeros(N, K + 1)
    dense_tau = dense_tau.index_put((ray_idx, pos + 1), tau)
    cum = torch.cumsum(dense_tau, dim=1)[:, :K]  # exclusive sum of tau before each sample
    trans_d = torch.exp(-cum)
    trans = trans_d[ray_idx, pos]
    # Terminated: this or an earlier sample of the ray had T < t_thresh.
    below = (trans_d < t_thresh).to(torch.int32)
    dead_d = torch.cumsum(below, dim=1) > 0
    alive = ~dead_d[ray_idx, pos]
    alpha = 1 - torch.exp(-tau)
    weights = torch.where(alive, trans * alpha, torch.zeros_like(alpha))
    trans = torch.where(alive, trans, torch.zeros_like(trans))
    mids = 0.5 * (t_starts + t_ends)
    rgb = sigmas.new_zeros(N, 3).index_add(0, ray_idx, weights[:, None] * rgbs)
    depth = sigmas.new_zeros(N).index_add(0, ray_idx, weights * mids)
    opacity = sigmas.new_zeros(N).index_add(0, ray_idx, weights)
    return rgb, depth, opacity, weights, trans
