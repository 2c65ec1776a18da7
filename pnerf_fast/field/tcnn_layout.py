"""Our MLP weights <-> tiny-cuda-nn's parameter vector, so one checkpoint layout serves
every backend.

Checkpoints hold nn.Linear layers (``W_l [out, in]``, ``b_l [out]``). tiny-cuda-nn's
``tcnn.Network`` (an Identity encoding in front of a FullyFusedMLP or CutlassMLP) holds
one flat vector: its weight matrices, each row-major ``[out, in]``, one after another
(``set_params_impl`` in fully_fused_mlp.cu / cutlass_mlp.cu), with

- the input padded to a multiple of 16 by the Identity encoding, with the padding
  columns set to 1 (encodings/identity.h);
- hidden layers ``n_neurons`` wide (FullyFusedMLP: 16, 32, 64 or 128; it needs at least
  one hidden layer);
- the output padded to a multiple of 16 (``m_padded_output_width``) and sliced back to
  ``n_output_dims`` by the torch bindings;
- no biases.

Biases are carried exactly by a constant unit: the network's input is ``[x, 1]``, and
one extra hidden neuron (index ``width``) copies that 1 from layer to layer (its weight
from the previous constant is 1, relu(1) = 1). Each layer's bias is the column of its
matrix that reads the constant. The extra neuron is why a 64-wide MLP runs as a
128-wide FullyFusedMLP (the next width it supports); CutlassMLP takes widths of 16k.

``pack`` is differentiable: the tcnn backend packs the module's own parameters on every
forward and runs the network on them (``torch.func.functional_call``), so gradients land
on the nn.Linear parameters and the state dict never changes shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

FULLY_FUSED_WIDTHS = (16, 32, 64, 128)
ALIGN = 16


def _up(n: int, m: int = ALIGN) -> int:
    return (n + m - 1) // m * m


@dataclass(frozen=True)
class TcnnSpec:
    in_dim: int
    out_dim: int
    width: int
    n_hidden: int
    output_activation: str | None = None

    @property
    def n_input_dims(self) -> int:  # what the network is given: [x, 1]
        return self.in_dim + 1

    @property
    def in_pad(self) -> int:
        return _up(self.in_dim + 1)

    @property
    def out_pad(self) -> int:
        return _up(self.out_dim)

    @property
    def otype(self) -> str:
        if self.n_hidden >= 1 and self.width + 1 <= FULLY_FUSED_WIDTHS[-1]:
            return "FullyFusedMLP"
        return "CutlassMLP"

    @property
    def net_width(self) -> int:
        if self.otype == "FullyFusedMLP":
            return next(w for w in FULLY_FUSED_WIDTHS if w >= self.width + 1)
        return _up(self.width + 1)

    def matrix_shapes(self) -> list[tuple[int, int]]:
        """[rows (out), cols (in)] of each tcnn weight matrix, in parameter order."""
        if self.n_hidden == 0:
            return [(self.out_pad, self.in_pad)]
        w = self.net_width
        return [(w, self.in_pad)] + [(w, w)] * (self.n_hidden - 1) + [(self.out_pad, w)]

    @property
    def n_params(self) -> int:
        return sum(r * c for r, c in self.matrix_shapes())

    def network_config(self) -> dict:
        act = {None: "None", "none": "None", "relu": "ReLU", "sigmoid": "Sigmoid"}[self.output_activation]
        return {"otype": self.otype, "activation": "ReLU", "output_activation": act,
                "n_neurons": self.net_width, "n_hidden_layers": self.n_hidden}


def _slots(spec: TcnnSpec):
    """Per layer: (rows of W, cols of W, column of the bias, row of the constant unit or None)."""
    L = spec.n_hidden + 1
    out = []
    for l in range(L):
        rows = spec.out_dim if l == L - 1 else spec.width
        cols = spec.in_dim if l == 0 else spec.width
        const_row = spec.width if l < L - 1 else None
        out.append((rows, cols, cols, const_row))
    return out


def pack(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], spec: TcnnSpec) -> torch.Tensor:
    """nn.Linear weights and biases -> tcnn's flat parameter vector [spec.n_params]
    (differentiable; dtype and device of the weights)."""
    if len(weights) != spec.n_hidden + 1 or len(biases) != len(weights):
        raise ValueError(f"tcnn_layout.pack: expected {spec.n_hidden + 1} layers, got {len(weights)} weights and {len(biases)} biases")
    parts = []
    for (W, b), (R, Cc), (rows, cols, bcol, crow) in zip(zip(weights, biases), spec.matrix_shapes(), _slots(spec)):
        if tuple(W.shape) != (rows, cols) or tuple(b.shape) != (rows,):
            raise ValueError(f"tcnn_layout.pack: layer has weight {list(W.shape)} and bias {list(b.shape)}, expected [{rows}, {cols}] and [{rows}]")
        M = torch.cat([W, b[:, None]], dim=1)  # [rows, cols + 1]: the bias reads the constant column
        M = F.pad(M, (0, Cc - cols - 1, 0, R - rows))
        if crow is not None:
            e = torch.zeros(R, Cc, dtype=W.dtype, device=W.device)
            e[crow, bcol] = 1  # the constant unit: 1 -> 1
            M = M + e
        parts.append(M.reshape(-1))
    return torch.cat(parts)


def unpack(flat: torch.Tensor, spec: TcnnSpec) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """tcnn's flat parameter vector -> (weights [out, in], biases [out]) per layer."""
    if flat.numel() != spec.n_params:
        raise ValueError(f"tcnn_layout.unpack: argument 'flat' must have {spec.n_params} elements, got {flat.numel()}")
    weights, biases, off = [], [], 0
    for (R, Cc), (rows, cols, bcol, _) in zip(spec.matrix_shapes(), _slots(spec)):
        M = flat[off : off + R * Cc].view(R, Cc)
        off += R * Cc
        weights.append(M[:rows, :cols].clone())
        biases.append(M[:rows, bcol].clone())
    return weights, biases


def make_network(spec: TcnnSpec):
    """A tcnn.Network for ``spec`` on the current CUDA device. Its own parameters are never
    trained or saved: ``run`` replaces them by the packed nn.Linear weights."""
    import tinycudann as tcnn

    return tcnn.Network(spec.n_input_dims, spec.out_dim, spec.network_config())


def run(net, x: torch.Tensor, weights, biases, spec: TcnnSpec) -> torch.Tensor:
    """y [n, out_dim] float32 = the MLP on x [n, in_dim], computed by tcnn ``net`` with
    the packed ``weights``/``biases`` (gradients flow back to them and to x)."""
    flat = pack(weights, biases, spec)
    ref = getattr(net, "params", None)
    if isinstance(ref, torch.Tensor):
        flat = flat.to(ref.dtype)
    xa = torch.cat([x.float(), torch.ones(x.shape[0], 1, dtype=torch.float32, device=x.device)], dim=1)
    y = torch.func.functional_call(net, {"params": flat}, (xa,))
    return y.float()
