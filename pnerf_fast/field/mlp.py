"""Small MLPs with switchable backends (see backends.py).

``make_mlp`` returns an :class:`MLP` (parameters held as nn.Linear layers, so the same
weights run through "torch" or "fused" and state dicts are interchangeable), or a
:class:`TcnnMLP` for backend "tcnn". Hidden layers use ReLU.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops.mlp import OUT_ACTS, _torch_impl, fused_supported, mlp_forward
from .backends import BACKENDS, resolve_backend


class MLP(nn.Module):
    """``n_hidden`` hidden layers of ``width`` (ReLU), then a linear layer to ``out_dim`` and
    the output activation. ``backend``: "auto" | "torch" | "fused" (may be changed later
    through the attribute of the same name; the weights do not change)."""

    def __init__(self, in_dim: int, out_dim: int, width: int, n_hidden: int, backend: str = "auto",
                 output_activation: str | None = None):
        super().__init__()
        for name, v, lo in (("in_dim", in_dim, 1), ("out_dim", out_dim, 1), ("width", width, 1), ("n_hidden", n_hidden, 0)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"make_mlp: argument '{name}' must be an integer >= {lo}, got {v!r}")
        if output_activation not in OUT_ACTS:
            raise ValueError(f"make_mlp: argument 'output_activation' must be one of None, 'none', 'relu', 'sigmoid'; got {output_activation!r}")
        if backend not in ("auto", "torch", "fused"):
            raise ValueError(f"make_mlp: argument 'backend' must be one of {', '.join(BACKENDS)}; got {backend!r}")
        dims = [in_dim] + [width] * n_hidden + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.in_dim, self.out_dim, self.width, self.n_hidden = in_dim, out_dim, width, n_hidden
        self.output_activation = output_activation
        self._fused_ok, self._fused_why = fused_supported(in_dim, out_dim, width, n_hidden)
        self.backend = backend
        if backend == "fused":
            if not self._fused_ok:
                raise ValueError(f"make_mlp: backend 'fused' cannot run this MLP: {self._fused_why}")
            resolve_backend("fused", "cpu")  # fails early, with the reason, when the extension is missing

    def active_backend(self, device: torch.device | str = "cpu") -> str:
        """The implementation a forward pass on ``device`` will use."""
        if self.backend == "torch":
            return "torch"
        if self.backend == "fused":
            return resolve_backend("fused", device)
        be = resolve_backend("auto", device)
        return "fused" if (be == "fused" and self._fused_ok) else "torch"

    def forward(self, x: torch.Tensor, bias_shift: torch.Tensor | None = None) -> torch.Tensor:
        """x [n, in_dim] -> [n, out_dim]. ``bias_shift`` [width of layer 0]: added to the
        first layer's bias (a per-call conditioning, e.g. W_z @ latent code)."""
        weights = [l.weight for l in self.layers]
        biases = [l.bias for l in self.layers]
        if bias_shift is not None:
            biases[0] = biases[0] + bias_shift.to(biases[0].dtype)
        if self.active_backend(x.device) == "fused":
            return mlp_forward(x, weights, biases, self.output_activation, impl="native")
        return _torch_impl(x, weights, biases, self.output_activation)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, output_activation={self.output_activation!r}"


class TcnnMLP(nn.Module):
    """tiny-cuda-nn FullyFusedMLP (widths 16..128) or CutlassMLP; half-precision inside,
    float32 out. Only constructed when tinycudann imports and a GPU is present."""

    def __init__(self, in_dim, out_dim, width, n_hidden, output_activation=None):
        super().__init__()
        resolve_backend("tcnn", "cuda")
        import tinycudann as tcnn

        act = {None: "None", "none": "None", "relu": "ReLU", "sigmoid": "Sigmoid"}[output_activation]
        otype = "FullyFusedMLP" if width in (16, 32, 64, 128) else "CutlassMLP"
        self.net = tcnn.Network(in_dim, out_dim, {
            "otype": otype, "activation": "ReLU", "output_activation": act,
            "n_neurons": width, "n_hidden_layers": n_hidden,
        })
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x):
        return self.net(x).float()


def make_mlp(in_dim: int, out_dim: int, width: int, n_hidden: int, backend: str = "auto",
             output_activation: str | None = None) -> nn.Module:
    """A small ReLU MLP on the named backend. "auto" resolves for this machine (GPU if
    present): tcnn when available on a GPU, otherwise an :class:`MLP` that runs fused or
    torch per the recorded CPU choice (torch when the shape exceeds the fused limits)."""
    if backend not in BACKENDS:
        raise ValueError(f"make_mlp: argument 'backend' must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "tcnn" or (backend == "auto" and resolve_backend("auto") == "tcnn"):
        return TcnnMLP(in_dim, out_dim, width, n_hidden, output_activation)
    return MLP(in_dim, out_dim, width, n_hidden, backend, output_activation)
