"""Multi-resolution hash-grid encoding (instant-ngp style), native kernels + reference.

Level ``l`` has resolution ``R_l`` (``(R_l + 1)^3`` vertices). A point ``x`` is mapped to
``u = clamp((x - aabb_min) / extent, 0, 1)``: **points outside the box are clamped** onto
its surface (they get the features of the nearest surface point, and no position
gradient along the clamped axes). ``p = u R_l``, cell ``i0 = min(floor(p), R_l - 1)``,
trilinear weights from ``p - i0``. A level whose ``(R_l + 1)^3`` vertices fit in the
table (``2^log2_table`` rows) is indexed densely, ``cx + (R+1) (cy + (R+1) cz)``, and
uses exactly that many rows; finer levels use the full table and the spatial hash
``(cx ^ cy * 2654435761 ^ cz * 805459861) mod 2^log2_table``. ``params`` stacks the
levels' rows: ``[sum_l rows_l, F]``. Output ``[n, L * F]``, level-major.
Gradients flow to ``params`` and to ``x``; float32 and float64.

**Row-sparse table gradient.** With a ``SparseGradBuffer`` (``sparse_grad=``), the
native backward returns the table gradient as a sparse COO tensor (``[rows, F]``, one
index per touched row, ascending: coalesced, though autograd's accumulation drops the
flag): the kernel adds into the
buffer's persistent accumulator, marks the touched rows in its bitmap, then lists
those rows and zeroes exactly them again, so nothing table-sized is cleared or written
per step. pnerf_fast/train/optim.py's optimizers update only those rows.
"""
from __future__ import annotations

import math
import weakref
from typing import Sequence

import torch

from .._native import native, use_native

PRIMES = (1, 2654435761, 805459861)


def level_resolutions(n_levels: int, base_res: int, finest_res: int) -> list[int]:
    """Geometric progression from base_res to finest_res: R_l = floor(base * b^l)."""
    if n_levels < 1:
        raise ValueError(f"hashgrid: argument 'n_levels' must be >= 1, got {n_levels}")
    if base_res < 1 or finest_res < base_res:
        raise ValueError(f"hashgrid: need 1 <= base_res <= finest_res, got base_res={base_res}, finest_res={finest_res}")
    if n_levels == 1:
        return [int(base_res)]
    b = math.exp((math.log(finest_res) - math.log(base_res)) / (n_levels - 1))
    return [int(math.floor(base_res * b**l + 1e-6)) for l in range(n_levels)]


def level_layout(resolutions: Sequence[int], log2_table: int) -> tuple[list[int], list[bool]]:
    """(row offsets with a final total, dense flags) of each level in ``params``."""
    T = 1 << log2_table
    offsets, dense, off = [], [], 0
    for R in resolutions:
        rows = (R + 1) ** 3
        d = rows <= T
        offsets.append(off)
        dense.append(d)
        off += rows if d else T
    offsets.append(off)
    return offsets, dense


def _check(x, params, resolutions, log2_table, aabb):
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"hashgrid: argument 'x' must be a tensor of shape [n, 3], got {getattr(x, 'shape', type(x))}")
    if not isinstance(params, torch.Tensor) or params.ndim != 2:
        raise ValueError("hashgrid: argument 'params' must be a tensor of shape [rows, n_features]")
    if not params.is_floating_point():
        raise ValueError(f"hashgrid: argument 'params' must be floating point, got {params.dtype}")
    if x.dtype != params.dtype:
        raise ValueError(f"hashgrid: argument 'x' must have dtype {params.dtype} like 'params', got {x.dtype}")
    if x.device != params.device:
        raise ValueError(f"hashgrid: argument 'x' is on {x.device}, but 'params' is on {params.device}")
    if len(aabb) != 6:
        raise ValueError(f"hashgrid: argument 'aabb' must have 6 numbers, got {len(aabb)}")
    total = level_layout(resolutions, log2_table)[0][-1]
    if params.shape[0] != total:
        raise ValueError(f"hashgrid: argument 'params' must have {total} rows for these levels, got {params.shape[0]}")


def bitmap_words(resolutions: Sequence[int], log2_table: int) -> int:
    """Words (64 bits) of a touched-row bitmap: each level's bits start on a new word."""
    offsets, _ = level_layout(resolutions, log2_table)
    return sum((b - a + 63) // 64 for a, b in zip(offsets, offsets[1:]))


class SparseGradBuffer:
    """What the row-sparse backward of one table keeps between steps: an accumulator
    ``[rows, F]`` and a row bitmap, both all zero between calls, allocated on first use
    (and again when the table's shape, dtype or device changes).

    ``owner``: sparse gradients are produced only while this object (an optimizer that
    takes them) is alive, so a field never hands a sparse gradient to an optimizer that
    did not ask for one. A copy (``copy.deepcopy`` of a field) starts unclaimed."""

    def __init__(self):
        self._owner = None
        self.acc = None
        self.touched = None

    def claim(self, owner) -> None:
        self._owner = None if owner is None else weakref.ref(owner)

    @property
    def active(self) -> bool:
        return self._owner is not None and self._owner() is not None

    def buffers(self, params: torch.Tensor, resolutions, log2_table):
        if self.acc is None or self.acc.shape != params.shape or self.acc.dtype != params.dtype \
                or self.acc.device != params.device:
            self.acc = torch.zeros_like(params, memory_format=torch.contiguous_format)
            words = bitmap_words(resolutions, log2_table)
            self.touched = torch.zeros(words, dtype=torch.int64, device=params.device)
        return self.acc, self.touched

    def __deepcopy__(self, memo):
        return SparseGradBuffer()

    def __getstate__(self):
        return {"_owner": None, "acc": None, "touched": None}


class _HashGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params, resolutions, log2_table, aabb, sparse):
        out = native().hashgrid_forward(x, params, resolutions, log2_table, aabb)
        ctx.save_for_backward(x, params)
        ctx.cfg = (resolutions, log2_table, aabb, sparse)
        return out

    @staticmethod
    def backward(ctx, g):
        x, params = ctx.saved_tensors
        resolutions, log2_table, aabb, sparse = ctx.cfg
        want_x, want_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if want_p and sparse is not None:
            acc, touched = sparse.buffers(params, resolutions, log2_table)
            rows, values, gx = native().hashgrid_backward_sparse(g.contiguous(), x, params, resolutions, log2_table,
                                                                 aabb, acc, touched, want_x)
            gp = torch.sparse_coo_tensor(rows[None], values, params.shape, is_coalesced=True, check_invariants=False)
        else:
            gp, gx = native().hashgrid_backward(g.contiguous(), x, params, resolutions, log2_table, aabb, want_p,
                                                want_x)
        return (gx if want_x else None), (gp if want_p else None), None, None, None, None


def hash_encode(
    x: torch.Tensor,        # [n, 3] float, canonical coordinates
    params: torch.Tensor,   # [rows, F] float, all levels stacked
    resolutions: Sequence[int],
    log2_table: int,
    aabb: Sequence[float],  # (xmin, ymin, zmin, xmax, ymax, zmax)
    impl: str = "auto",
    sparse_grad: SparseGradBuffer | None = None,
) -> torch.Tensor:          # [n, L * F]
    """Encode points with the hash grid. impl: "auto" | "native" | "torch".
    ``sparse_grad``: with the native kernels, ``params`` gets a row-sparse gradient
    (a coalesced sparse COO tensor of the touched rows) through this buffer; the torch
    reference always gives a dense one."""
    resolutions = [int(r) for r in resolutions]
    aabb = [float(v) for v in aabb]
    _check(x, params, resolutions, log2_table, aabb)
    if impl not in ("auto", "native", "torch"):
        raise ValueError(f"hashgrid: argument 'impl' must be 'auto', 'native' or 'torch', got {impl!r}")
    if impl == "torch" or (impl == "auto" and not use_native(x, params)):
        return _torch_impl(x, params, resolutions, log2_table, aabb)
    if native() is None:
        raise RuntimeError("hashgrid: impl='native' but the native extension is not available")
    return _HashGrid.apply(x.contiguous(), params.contiguous(), resolutions, int(log2_table), aabb, sparse_grad)


def _torch_impl(x, params, resolutions, log2_table, aabb):
    """Pure-PyTorch reference (differentiable by autograd), same arithmetic as the kernel."""
    offsets, dense = level_layout(resolutions, log2_table)
    mask = (1 << log2_table) - 1
    lo = torch.tensor(aabb[:3], dtype=x.dtype, device=x.device)
    inv = 1.0 / (torch.tensor(aabb[3:], dtype=x.dtype, device=x.device) - lo)
    u = ((x - lo) * inv).clamp(0, 1)
    outs = []
    for l, R in enumerate(resolutions):
        pos = u * R
        i0 = torch.floor(pos).clamp(max=R - 1)
        w = pos - i0
        i0 = i0.long()
        idx, wts = [], []
        for c in range(8):
            b = [(c >> d) & 1 for d in range(3)]
            cx, cy, cz = (i0[:, d] + b[d] for d in range(3))
            if dense[l]:
                idx.append(cx + (R + 1) * (cy + (R + 1) * cz))
            else:
                idx.append((cx * PRIMES[0] ^ cy * PRIMES[1] ^ cz * PRIMES[2]) & mask)
            wc = 1
            for d in range(3):
                wc = wc * (w[:, d] if b[d] else 1 - w[:, d])
            wts.append(wc)
        # one gather per level (its backward is one scatter into a table-sized gradient)
        rows = params[offsets[l] + torch.stack(idx, dim=1)]            # [n, 8, F]
        feat = (torch.stack(wts, dim=1)[:, :, None] * rows).sum(dim=1)  # [n, F]
        outs.append(feat)
    return torch.cat(outs, dim=1)
