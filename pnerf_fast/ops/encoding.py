"""Direction and position encodings: spherical harmonics (native forward kernel +
reference) and NeRF's frequency encoding (plain PyTorch: a handful of vectorised sin/cos
calls, which a kernel would not beat by enough to pay for itself).
"""
from __future__ import annotations

import torch

from .._native import native, use_native

SH_C = (
    0.28209479177387814, 0.48860251190291987, 1.0925484305920792, 0.94617469575755997,
    0.31539156525251999, 0.54627421529603959, 0.59004358992664352, 2.8906114426405538,
    0.45704579946446572, 0.3731763325901154, 1.4453057213202769,
)


def sh_encode(
    dirs: torch.Tensor,  # [n, 3] float, unit directions
    degree: int = 4,
    impl: str = "auto",
) -> torch.Tensor:       # [n, degree^2]
    """Real spherical harmonics of bands 0..degree-1 (degree <= 4), instant-ngp's
    polynomials on unit directions. The native kernel is forward-only; when ``dirs``
    needs a gradient the differentiable reference runs instead."""
    if not isinstance(dirs, torch.Tensor) or dirs.ndim != 2 or dirs.shape[1] != 3:
        raise ValueError(f"sh_encode: argument 'dirs' must be a tensor of shape [n, 3], got {getattr(dirs, 'shape', type(dirs))}")
    if not dirs.is_floating_point():
        raise ValueError(f"sh_encode: argument 'dirs' must be floating point, got {dirs.dtype}")
    if not 1 <= int(degree) <= 4:
        raise ValueError(f"sh_encode: argument 'degree' must be in [1, 4], got {degree}")
    if impl not in ("auto", "native", "torch"):
        raise ValueError(f"sh_encode: argument 'impl' must be 'auto', 'native' or 'torch', got {impl!r}")
    grad = dirs.requires_grad and torch.is_grad_enabled()
    if impl == "torch" or grad or (impl == "auto" and not use_native(dirs)):
        return _sh_torch(dirs, int(degree))
    if native() is None:
        raise RuntimeError("sh_encode: impl='native' but the native extension is not available")
    return native().sh_encode_forward(dirs.contiguous(), int(degree))


def _sh_torch(dirs, degree):
    x, y, z = dirs.unbind(-1)
    C = SH_C
    out = [torch.full_like(x, C[0])]
    if degree > 1:
        out += [-C[1] * y, C[1] * z, -C[1] * x]
    if degree > 2:
        x2, y2, z2 = x * x, y * y, z * z
        out += [C[2] * x * y, -C[2] * y * z, C[3] * z2 - C[4], -C[2] * x * z, C[5] * x2 - C[5] * y2]
    if degree > 3:
        out += [
            C[6] * y * (-3 * x2 + y2),
            C[7] * x * y * z,
            C[8] * y * (1 - 5 * z2),
            C[9] * z * (5 * z2 - 3),
            C[8] * x * (1 - 5 * z2),
            C[10] * z * (x2 - y2),
            C[6] * x * (-x2 + 3 * y2),
        ]
    return torch.stack(out, dim=-1)


def frequency_encode(
    x: torch.Tensor,  # [n, d] float
    n_freqs: int,
    include_input: bool = True,
) -> torch.Tensor:    # [n, d * (include_input + 2 * n_freqs)]
    """NeRF positional encoding: [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(K-1) x), cos(2^(K-1) x)]
    (the original code's convention, no factor pi)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"frequency_encode: argument 'x' must be a tensor of shape [n, d], got {getattr(x, 'shape', type(x))}")
    if n_freqs < 0:
        raise ValueError(f"frequency_encode: argument 'n_freqs' must be >= 0, got {n_freqs}")
    if n_freqs == 0:
        return x if include_input else x[:, :0]
    freqs = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)
    xf = x[:, None, :] * freqs[None, :, None]                      # [n, K, d]
    sc = torch.stack([torch.sin(xf), torch.cos(xf)], dim=2)        # [n, K, 2, d]
    sc = sc.reshape(x.shape[0], -1)
    return torch.cat([x, sc], dim=1) if include_input else sc
