"""Fully fused MLP: all layers of a small MLP in one kernel per pass (native), with a
pure-PyTorch reference.

Layers follow ``nn.Linear``: ``W_l [out, in]``, ``b_l [out]``; hidden layers use ReLU and
the last layer the output activation (None/"none", "relu" or "sigmoid"). Widths up to
128 (padded to multiples of 16 inside) and at most 8 layers. The backward recomputes the
forward inside the kernel, so only ``x`` is kept between passes; gradients flow to ``x``
and to every weight and bias. float32 and float64.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .._native import native, use_native

OUT_ACTS = {None: 0, "none": 0, "relu": 1, "sigmoid": 2}
PAD = 16
MAX_WIDTH = 128
MAX_LAYERS = 8


def _pad(n: int) -> int:
    return (n + PAD - 1) // PAD * PAD


def fused_supported(in_dim: int, out_dim: int, width: int, n_hidden: int) -> tuple[bool, str]:
    """(ok, why not) for an MLP shape on the fused backend."""
    n_layers = n_hidden + 1
    if n_layers > MAX_LAYERS:
        return False, f"n_hidden={n_hidden} gives {n_layers} layers; the fused MLP takes at most {MAX_LAYERS}"
    for name, v in (("in_dim", in_dim), ("out_dim", out_dim), ("width", width)):
        if _pad(v) > MAX_WIDTH:
            return False, f"{name}={v} exceeds the fused MLP's maximum width {MAX_WIDTH}"
    return True, ""


def pack_params(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]):
    """-> (params_fwd [P], params_bwd [Q], dims): the kernel layouts of pnerf/mlp.h."""
    dims = [_pad(weights[0].shape[1])] + [_pad(w.shape[0]) for w in weights]
    fwd, bwd = [], []
    for l, (W, b) in enumerate(zip(weights, biases)):
        K, N = dims[l], dims[l + 1]
        Wp = F.pad(W, (0, K - W.shape[1], 0, N - W.shape[0]))  # [N, K]
        fwd += [Wp.t().reshape(-1), F.pad(b, (0, N - b.shape[0]))]
        bwd.append(Wp.reshape(-1))
    return torch.cat(fwd).contiguous(), torch.cat(bwd).contiguous(), dims


def unpack_grad(gpf: torch.Tensor, weights, dims):
    """Gradient in params_fwd's layout -> per-layer (dW [out, in], db [out])."""
    out, off = [], 0
    for l, W in enumerate(weights):
        K, N = dims[l], dims[l + 1]
        gWt = gpf[off : off + K * N].view(K, N)
        gb = gpf[off + K * N : off + K * N + N]
        out.append((gWt[: W.shape[1], : W.shape[0]].t().contiguous(), gb[: W.shape[0]].contiguous()))
        off += K * N + N
    return out


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out_act, *params):
        L = len(params) // 2
        weights, biases = params[:L], params[L:]
        pf, pb, dims = pack_params(weights, biases)
        out_dim = weights[-1].shape[0]
        y = native().mlp_forward(x, pf, pb, dims, out_dim, out_act)
        ctx.save_for_backward(x, pf, pb)
        ctx.meta = (dims, out_dim, out_act, [w.shape for w in weights])
        ctx.weights_like = weights
        return y

    @staticmethod
    def backward(ctx, gy):
        x, pf, pb = ctx.saved_tensors
        dims, out_dim, out_act, _ = ctx.meta
        want_x = ctx.needs_input_grad[0]
        gpf, gx = native().mlp_backward(gy.contiguous(), x, pf, pb, dims, out_dim, out_act, want_x)
        grads = unpack_grad(gpf, ctx.weights_like, dims)
        return (gx if want_x else None, None, *[g[0] for g in grads], *[g[1] for g in grads])


def mlp_forward(
    x: torch.Tensor,                      # [n, in_dim] float
    weights: Sequence[torch.Tensor],      # W_l [out_l, in_l]
    biases: Sequence[torch.Tensor],       # b_l [out_l]
    output_activation: str | None = None,
    impl: str = "auto",
) -> torch.Tensor:                        # [n, out_dim]
    """Evaluate the MLP. impl: "auto" (native when available), "native" or "torch"."""
    if output_activation not in OUT_ACTS:
        raise ValueError(f"mlp: argument 'output_activation' must be one of None, 'none', 'relu', 'sigmoid'; got {output_activation!r}")
    if impl not in ("auto", "native", "torch"):
        raise ValueError(f"mlp: argument 'impl' must be 'auto', 'native' or 'torch', got {impl!r}")
    if len(weights) != len(biases) or not weights:
        raise ValueError("mlp: arguments 'weights' and 'biases' must be non-empty lists of the same length")
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"mlp: argument 'x' must be a tensor of shape [n, in_dim], got {getattr(x, 'shape', type(x))}")
    if x.shape[1] != weights[0].shape[1]:
        raise ValueError(f"mlp: argument 'x' has {x.shape[1]} columns, but the first layer takes {weights[0].shape[1]}")
    if impl == "torch" or (impl == "auto" and not use_native(x)):
        return _torch_impl(x, weights, biases, output_activation)
    if native() is None:
        raise RuntimeError("mlp: impl='native' but the native extension is not available")
    ok, why = fused_supported(weights[0].shape[1], weights[-1].shape[0], max(w.shape[0] for w in weights), len(weights) - 1)
    if not ok:
        raise ValueError(f"mlp: {why}")
    x = x.contiguous()
    if x.dtype != weights[0].dtype:
        raise ValueError(f"mlp: argument 'x' must have dtype {weights[0].dtype} like the weights, got {x.dtype}")
    return _FusedMLP.apply(x, OUT_ACTS[output_activation], *weights, *biases)


def _torch_impl(x, weights, biases, output_activation=None):
    """Pure-PyTorch reference: nn.Linear layers with ReLU in between."""
    h = x
    L = len(weights)
    for l, (W, b) in enumerate(zip(weights, biases)):
        h = F.linear(h, W, b)
        if l < L - 1 or output_activation == "relu":
            h = torch.relu(h)
    if output_activation == "sigmoid":
        h = torch.sigmoid(h)
    return h
