"""A fused, row-sparse optimizer step for tables (the hash grid): native kernels + reference.

``rows`` [k] (unique) are the table rows a step touched and ``grad`` [k, F] their
gradient (the hash-grid backward's row-sparse gradient, pnerf_fast/ops/hashgrid.py).

Adam follows the lazy convention of instant-ngp / tiny-cuda-nn: only touched rows change.
An untouched row keeps its parameters **and its moments** as they were (no decay of
``exp_avg`` / ``exp_avg_sq``, so no momentum drift), and every row has its own step
counter ``row_step`` that counts the steps which touched it; its bias correction uses
that count, not the optimizer's. A row touched by every step follows torch.optim.Adam
exactly (same operations in the same order). torch.optim.SparseAdam differs: it uses one
global step count for the bias correction of every row.

SGD (``sparse_sgd_step_``) is exact: untouched rows have a zero gradient.
"""
from __future__ import annotations

import torch

from .._native import native, use_native


def bias_table(beta1: float, beta2: float, n: int) -> torch.Tensor:  # [n, 2] float64
    """(1 - beta1^t, sqrt(1 - beta2^t)) for t = 0..n-1, in double, with Python's pow as
    torch.optim.Adam computes them (row 0 is unused)."""
    return torch.tensor([[1 - beta1 ** float(t), (1 - beta2 ** float(t)) ** 0.5] for t in range(n)],
                        dtype=torch.float64).reshape(n, 2)


def _check(params, rows, grad):
    if not isinstance(params, torch.Tensor) or params.ndim != 2 or not params.is_floating_point():
        raise ValueError("sparse_adam: argument 'params' must be a floating tensor of shape [rows, F]")
    if rows.ndim != 1 or rows.dtype != torch.int64:
        raise ValueError(f"sparse_adam: argument 'rows' must be an int64 tensor of shape [k], got {rows.dtype} "
                         f"{tuple(rows.shape)}")
    if grad.shape != (rows.shape[0], params.shape[1]) or grad.dtype != params.dtype:
        raise ValueError(f"sparse_adam: argument 'grad' must be {params.dtype} of shape "
                         f"[{rows.shape[0]}, {params.shape[1]}], got {grad.dtype} {tuple(grad.shape)}")


def sparse_adam_step_(
    params: torch.Tensor,      # [R, F] float, updated in place
    rows: torch.Tensor,        # [k] int64, unique
    grad: torch.Tensor,        # [k, F]
    exp_avg: torch.Tensor,     # [R, F], in place
    exp_avg_sq: torch.Tensor,  # [R, F], in place
    row_step: torch.Tensor,    # [R] int32, in place
    bias: torch.Tensor,        # [n, 2] float64, bias_table(beta1, beta2, n)
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float = 0.0,
    impl: str = "auto",
) -> None:
    """One lazy Adam step on ``rows`` (see the module docstring). impl: auto | native | torch."""
    _check(params, rows, grad)
    if impl == "torch" or (impl == "auto" and not use_native(params, grad)) or not params.is_contiguous():
        return _torch_adam(params, rows, grad, exp_avg, exp_avg_sq, row_step, bias, lr, beta1, beta2, eps,
                           weight_decay)
    native().sparse_adam_step(params, rows, grad.contiguous(), exp_avg, exp_avg_sq, row_step,
                              bias.to(params.device), float(lr), float(beta1), float(beta2), float(eps),
                              float(weight_decay))


def sparse_sgd_step_(params: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, lr: float,
                     impl: str = "auto") -> None:
    """params[rows] -= lr * grad, in place."""
    _check(params, rows, grad)
    if impl == "torch" or (impl == "auto" and not use_native(params, grad)) or not params.is_contiguous():
        params.index_add_(0, rows, grad, alpha=-lr)
        return
    native().sparse_sgd_step(params, rows, grad.contiguous(), float(lr))


def _torch_adam(params, rows, grad, exp_avg, exp_avg_sq, row_step, bias, lr, beta1, beta2, eps, weight_decay):
    """Pure-PyTorch reference, the same arithmetic per row."""
    t = row_step[rows].long() + 1
    row_step[rows] = t.to(row_step.dtype)
    inside = t < bias.shape[0]
    tb = t.clamp(max=bias.shape[0] - 1).to(bias.device)
    bc1 = torch.where(inside, bias[tb, 0], 1 - beta1 ** t.double())
    bc2s = torch.where(inside, bias[tb, 1], (1 - beta2 ** t.double()).sqrt())
    p, m, v = params[rows], exp_avg[rows], exp_avg_sq[rows]
    g = grad + weight_decay * p if weight_decay else grad
    m = m + (1 - beta1) * (g - m)
    v = v * beta2 + (1 - beta2) * g * g
    neg_step = (-(lr / bc1)).to(p.dtype)[:, None]
    p = p + neg_step * (m / (v.sqrt() / bc2s.to(p.dtype)[:, None] + eps))
    params[rows], exp_avg[rows], exp_avg_sq[rows] = p, m, v
