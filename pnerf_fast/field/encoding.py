"""Input encodings as nn.Modules: the hash grid (positions), NeRF's frequency encoding
and spherical harmonics (directions). Each has ``out_dim``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..geometry.box import CANONICAL_AABB
from ..ops.encoding import frequency_encode, sh_encode
from ..ops.hashgrid import SparseGradBuffer, hash_encode, level_layout, level_resolutions


class HashGridEncoding(nn.Module):
    """Multi-resolution hash grid over ``aabb`` (canonical coordinates; normalised to
    [0,1]^3 inside). Points outside the box are clamped onto its surface (see
    pnerf_fast/ops/hashgrid.py). ``params`` [rows, n_features] holds all levels."""

    def __init__(
        self,
        n_levels: int = 16,
        n_features: int = 2,
        log2_table: int = 17,
        base_res: int = 16,
        finest_res: int = 1024,
        aabb: Sequence[float] = CANONICAL_AABB,
        init_scale: float = 1e-4,
        impl: str = "auto",
    ):
        super().__init__()
        if not 1 <= n_features <= 8:
            raise ValueError(f"HashGridEncoding: argument 'n_features' must be in [1, 8], got {n_features}")
        if not 4 <= log2_table <= 30:
            raise ValueError(f"HashGridEncoding: argument 'log2_table' must be in [4, 30], got {log2_table}")
        if not 1 <= n_levels <= 32:
            raise ValueError(f"HashGridEncoding: argument 'n_levels' must be in [1, 32], got {n_levels}")
        if len(aabb) != 6 or any(aabb[i + 3] <= aabb[i] for i in range(3)):
            raise ValueError(f"HashGridEncoding: argument 'aabb' must be (min xyz, max xyz) with max > min, got {aabb}")
        self.n_levels, self.n_features, self.log2_table = int(n_levels), int(n_features), int(log2_table)
        self.resolutions = level_resolutions(n_levels, base_res, finest_res)
        self.offsets, self.dense = level_layout(self.resolutions, log2_table)
        self.aabb = tuple(float(v) for v in aabb)
        self.impl = impl
        self.params = nn.Parameter(torch.empty(self.offsets[-1], n_features).uniform_(-init_scale, init_scale))
        self.sparse = SparseGradBuffer()

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features

    def sparse_grad_for(self, optimizer) -> None:
        """Give ``params`` row-sparse gradients (the touched rows only) while
        ``optimizer`` is alive (it must take sparse gradients: pnerf_fast/train/optim.py);
        None: dense gradients again."""
        self.sparse.claim(optimizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, 3] -> [n, L*F]
        sparse = self.sparse if self.sparse.active else None
        return hash_encode(x.to(self.params.dtype), self.params, self.resolutions, self.log2_table, self.aabb,
                           impl=self.impl, sparse_grad=sparse)

    def extra_repr(self) -> str:
        return (f"levels={self.n_levels}, features={self.n_features}, table=2^{self.log2_table}, "
                f"res={self.resolutions[0]}..{self.resolutions[-1]}, dense_levels={sum(self.dense)}")


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding of ``in_dim`` inputs: [x, sin(2^k x), cos(2^k x)]_k."""

    def __init__(self, n_freqs: int, include_input: bool = True, in_dim: int = 3):
        super().__init__()
        if n_freqs < 0:
            raise ValueError(f"FrequencyEncoding: argument 'n_freqs' must be >= 0, got {n_freqs}")
        self.n_freqs, self.include_input, self.in_dim = int(n_freqs), bool(include_input), int(in_dim)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (int(self.include_input) + 2 * self.n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return frequency_encode(x, self.n_freqs, self.include_input)


class SHEncoding(nn.Module):
    """Real spherical harmonics of unit directions, bands 0..degree-1 (degree^2 outputs)."""

    def __init__(self, degree: int = 4, impl: str = "auto"):
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError(f"SHEncoding: argument 'degree' must be in [1, 4], got {degree}")
        self.degree, self.impl = int(degree), impl

    @property
    def out_dim(self) -> int:
        return self.degree**2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return sh_encode(d, self.degree, impl=self.impl)
