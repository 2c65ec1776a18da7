"""Small MLPs with switchable backends (see backends.py).

:class:`MLP` holds its parameters as nn.Linear layers, whatever backend runs them, so
state dicts are the same for "torch", "fused" and "tcnn" and a checkpoint written on
one device loads and runs on any other. The backend is resolved per forward pass from
the input's device (cached per device type). Hidden layers use ReLU.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..ops.mlp import OUT_ACTS, _torch_impl, fused_supported, mlp_forward
from . import tcnn_layout
from .backends import BACKENDS, resolve_backend


class MLP(nn.Module):
    """``n_hidden`` hidden layers of ``width`` (ReLU), then a linear layer to ``out_dim`` and
    the output activation. ``backend``: "auto" | "torch" | "fused" | "tcnn" (may be
    changed later through the attribute of the same name; the weights do not change)."""

    def __init__(self, in_dim: int, out_dim: int, width: int, n_hidden: int, backend: str = "auto",
                 output_activation: str | None = None):
        super().__init__()
        for name, v, lo in (("in_dim", in_dim, 1), ("out_dim", out_dim, 1), ("width", width, 1), ("n_hidden", n_hidden, 0)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"make_mlp: argument '{name}' must be an integer >= {lo}, got {v!r}")
        if output_activation not in OUT_ACTS:
            raise ValueError(f"make_mlp: argument 'output_activation' must be one of None, 'none', 'relu', 'sigmoid'; got {output_activation!r}")
        if backend not in BACKENDS:
            raise ValueError(f"make_mlp: argument 'backend' must be one of {', '.join(BACKENDS)}; got {backend!r}")
        dims = [in_dim] + [width] * n_hidden + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.in_dim, self.out_dim, self.width, self.n_hidden = in_dim, out_dim, width, n_hidden
        self.output_activation = output_activation
        self._fused_ok, self._fused_why = fused_supported(in_dim, out_dim, width, n_hidden)
        self.tcnn_spec = tcnn_layout.TcnnSpec(in_dim, out_dim, width, n_hidden, output_activation)
        self._tcnn_nets: dict = {}  # device -> tcnn.Network (not a submodule: its params are never used)
        self.backend = backend
        if backend == "fused":
            if not self._fused_ok:
                raise ValueError(f"make_mlp: backend 'fused' cannot run this MLP: {self._fused_why}")
            resolve_backend("fused", "cpu")  # fails early, with the reason, when the extension is missing
        if backend == "tcnn":
            resolve_backend("tcnn", "cuda")  # fails early, with the reason, without a GPU or tinycudann

    def active_backend(self, device: torch.device | str = "cpu") -> str:
        """The implementation a forward pass on ``device`` will use."""
        if self.backend != "auto":
            return resolve_backend(self.backend, device)
        be = resolve_backend("auto", device)
        return "torch" if (be == "fused" and not self._fused_ok) else be

    def _tcnn_net(self, device: torch.device):
        key = str(device)
        if key not in self._tcnn_nets:
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                self._tcnn_nets[key] = tcnn_layout.make_network(self.tcnn_spec)
        return self._tcnn_nets[key]

    def forward(self, x: torch.Tensor, bias_shift: torch.Tensor | None = None) -> torch.Tensor:
        """x [n, in_dim] -> [n, out_dim]. ``bias_shift``: added to the first layer's bias
        (a per-call conditioning, e.g. W_z @ latent code), a tensor [width of layer 0], or a
        sequence of them (or None) for the first layers in order."""
        weights = [l.weight for l in self.layers]
        biases = shifted_biases(self, bias_shift)
        be = self.active_backend(x.device)
        if be == "fused":
            return mlp_forward(x, weights, biases, self.output_activation, impl="native")
        if be == "tcnn":
            return tcnn_layout.run(self._tcnn_net(x.device), x, weights, biases, self.tcnn_spec).to(x.dtype)
        return _torch_impl(x, weights, biases, self.output_activation)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, output_activation={self.output_activation!r}"


def shifted_biases(mlp: MLP, bias_shift) -> list:
    """``mlp``'s biases, with ``bias_shift`` (see :meth:`MLP.forward`) added."""
    biases = [l.bias for l in mlp.layers]
    if bias_shift is None:
        return biases
    shifts = (bias_shift,) if isinstance(bias_shift, torch.Tensor) else tuple(bias_shift)
    if len(shifts) > len(biases):
        raise ValueError(f"MLP: {len(shifts)} bias shifts for {len(biases)} layers")
    for i, s in enumerate(shifts):
        if s is not None:
            biases[i] = biases[i] + s.to(biases[i].dtype)
    return biases


def make_mlp(in_dim: int, out_dim: int, width: int, n_hidden: int, backend: str = "auto",
             output_activation: str | None = None) -> MLP:
    """A small ReLU MLP; ``backend`` as in :class:`MLP` ("auto" resolves per forward from
    the input's device: fused or torch on the CPU, tcnn or torch on a GPU)."""
    return MLP(in_dim, out_dim, width, n_hidden, backend, output_activation)
