"""Optimizers whose table parameters (the hash grid) take row-sparse gradients.

``RowSparseAdam`` and ``RowSparseSGD`` are torch.optim.Adam and torch.optim.SGD (same
arguments, same state_dict format, so checkpoints move between them) with one addition:
a parameter whose gradient is sparse (the hash grid's touched rows,
pnerf_fast/ops/hashgrid.py) is updated by the fused row-sparse step of
pnerf_fast/ops/sparse_adam.py, touching only those rows. Dense gradients (the MLPs, the
code, or a table whose gradient was made dense) go through torch's own step.

Adam on sparse gradients is lazy, as in instant-ngp / tiny-cuda-nn: an untouched row's
parameters and moments do not change, and each row's bias correction counts the steps
that touched it (``state["row_step"]``, int32 per row). ``state["step"]`` still counts
every step of the parameter (it sizes the bias table). A dense step on such a parameter
drops ``row_step`` (every row was updated with the global count); the next sparse step
starts every row's count from ``step`` again, which is also how a state saved by
torch.optim.Adam is picked up.
"""
from __future__ import annotations

import contextlib

import torch

from ..ops.sparse_adam import bias_table, sparse_adam_step_, sparse_sgd_step_


def _split_sparse(opt):
    """Hide the parameters with sparse gradients from torch's step; -> [(group, its
    sparse-gradient parameters, its full parameter list)]."""
    hidden = []
    for g in opt.param_groups:
        sp = [p for p in g["params"] if p.grad is not None and p.grad.is_sparse]
        if sp:
            hidden.append((g, sp, g["params"]))
            g["params"] = [p for p in g["params"] if not (p.grad is not None and p.grad.is_sparse)]
    return hidden


def _rows(p):
    """(rows [k], values [k, ...]) of a sparse gradient. The backward's rows are ascending
    and unique, but autograd's accumulation drops the coalesced flag: so check the order
    (one comparison per row) instead of sorting; only a sum of several backward passes
    (rows out of order or repeated) is coalesced."""
    g = p.grad
    rows = g._indices()[0]
    if g.is_coalesced() or rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all()):
        return rows, g._values()
    g = g.coalesce()
    return g.indices()[0], g.values()


class _RowSparse:
    def _sparse_step(self, group, p):
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hidden = _split_sparse(self)
        try:
            super().step()
        finally:
            for g, _, params in hidden:
                g["params"] = params
        for g, sp, _ in hidden:
            for p in sp:
                self._sparse_step(g, p)
        for g in self.param_groups:  # dense steps on a lazily stepped table: see the module docstring
            for p in g["params"]:
                if p.grad is not None and not p.grad.is_sparse:
                    self.state.get(p, {}).pop("row_step", None)
        return loss


class RowSparseAdam(_RowSparse, torch.optim.Adam):
    """torch.optim.Adam + the lazy row-sparse step for sparse gradients (module docstring)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self._bias = {}

    def _bias_table(self, beta1, beta2, t_max: int) -> torch.Tensor:
        """Bias corrections for t < len, grown as steps go, until both are exactly 1."""
        tab = self._bias.get((beta1, beta2))
        if tab is None or (tab.shape[0] <= t_max and not bool((tab[-1] == 1).all())):
            n = max(64, 2 * (t_max + 1))
            tab = bias_table(beta1, beta2, n)
            done = torch.nonzero((tab == 1).all(1))
            if done.numel():
                tab = tab[: int(done[0]) + 1]
            self._bias[(beta1, beta2)] = tab
        return tab

    def _sparse_step(self, group, p):
        if group["amsgrad"] or group["maximize"] or group.get("capturable") or group.get("differentiable"):
            raise ValueError("RowSparseAdam: sparse gradients support neither amsgrad, maximize, capturable "
                             "nor differentiable")
        st = self.state[p]
        if len(st) == 0:
            st["step"] = torch.tensor(0.0)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if "row_step" not in st:
            st["row_step"] = torch.full((p.shape[0],), int(st["step"]), dtype=torch.int32, device=p.device)
        elif st["row_step"].dtype != torch.int32:  # load_state_dict casts state to the parameter's dtype
            st["row_step"] = st["row_step"].round().to(torch.int32)
        st["step"] += 1
        beta1, beta2 = group["betas"]
        tab = self._bias_table(float(beta1), float(beta2), int(st["step"]))
        rows, values = _rows(p)
        sparse_adam_step_(p.view(p.shape[0], -1), rows, values.reshape(rows.shape[0], -1),
                          st["exp_avg"].view(p.shape[0], -1), st["exp_avg_sq"].view(p.shape[0], -1),
                          st["row_step"], tab, float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
                          float(group["weight_decay"]))


class RowSparseSGD(_RowSparse, torch.optim.SGD):
    """torch.optim.SGD + the fused row-sparse step for sparse gradients (plain SGD only:
    no momentum, weight decay, nesterov or maximize on those)."""

    def _sparse_step(self, group, p):
        if group["momentum"] or group["weight_decay"] or group["nesterov"] or group["maximize"]:
            raise ValueError("RowSparseSGD: sparse gradients take plain SGD only (no momentum, weight_decay, "
                             "nesterov or maximize)")
        rows, values = _rows(p)
        sparse_sgd_step_(p.view(p.shape[0], -1), rows, values.reshape(rows.shape[0], -1), float(group["lr"]))


def claim_sparse_tables(field, optimizer) -> int:
    """Make the hash-grid tables of ``field`` give row-sparse gradients while
    ``optimizer`` lives (None: dense again). -> how many tables."""
    from ..field.encoding import HashGridEncoding

    n = 0
    for m in field.modules():
        if isinstance(m, HashGridEncoding):
            m.sparse_grad_for(optimizer)
            n += 1
    return n


@contextlib.contextmanager
def frozen(params):
    """No gradients for ``params`` (those that had them) inside the block, so neither the
    backward pass nor an optimizer touches them; given back on any exit."""
    held = [p for p in params if p.requires_grad]
    for p in held:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in held:
            p.requires_grad_(True)
