"""The radiance field: position encoding -> density network -> (sigma, geometry
features); direction encoding + features -> color network -> rgb.

Two shapes, chosen by the config:
- hash grid (preset "fast"): density MLP outputs ``geo_features`` channels; channel 0 is
  the density pre-activation and all channels feed the color MLP (instant-ngp);
- frequency encoding (preset "paper"): the NeRF trunk (``n_hidden`` x ``width`` ReLU
  layers, the encoded input re-concatenated after each layer in ``skips``), a linear
  density head and a linear feature layer; the color MLP sees the features and the
  encoded direction. The trunk is plain PyTorch (256 wide is past the fused limits).

sigma = act(h0 + density.bias), act = truncated exp by default (exp forward, gradient
clamped at exp(15)); the negative bias makes the field almost empty at initialisation.
rgb = sigmoid(color MLP).

Latent conditioning (``latent_dim`` > 0, hash-grid fields): a per-subject code z [D]
shifts the first-layer bias of both MLPs, b0 + W_z z (the same function as feeding
[enc(x), z] to them, at no cost per sample); with ``latent_layers`` > 1 also the next
hidden layers' biases (as feeding z to each of them). The hash grid holds what all subjects
share; the code says which head this is (an auto-decoder, as in Preface / Cafca).
The field keeps ONE current code, ``self.latent``; pretraining swaps it per subject.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._native import use_native
from ..ops.volume import volume_read
from .config import FieldConfig, load_field_config, validate
from .encoding import FrequencyEncoding, HashGridEncoding, SHEncoding
from .mlp import MLP, make_mlp


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) with its gradient clamped at exp(15) (instant-ngp / torch-ngp)."""
    return _TruncExp.apply(x)


class NeRFTrunk(nn.Module):
    """The original NeRF MLP trunk with skip connections; returns (sigma_pre [n], feat [n, F])."""

    def __init__(self, in_dim: int, width: int, n_hidden: int, skips, feat_dim: int):
        super().__init__()
        self.skips = tuple(skips)
        layers, d = [], in_dim
        for i in range(n_hidden):
            layers.append(nn.Linear(d, width))
            d = width + (in_dim if i in self.skips else 0)
        self.layers = nn.ModuleList(layers)
        self.sigma_head = nn.Linear(d, 1)
        self.feature = nn.Linear(d, feat_dim)

    def forward(self, e):
        h = e
        for i, layer in enumerate(self.layers):
            h = F.relu(layer(h))
            if i in self.skips:
                h = torch.cat([h, e], dim=-1)
        return self.sigma_head(h)[:, 0], self.feature(h)


class RadianceField(nn.Module):
    def __init__(self, cfg: FieldConfig | str | Path = "fast"):
        super().__init__()
        if not isinstance(cfg, FieldConfig):
            cfg = load_field_config(cfg)
        self.cfg = validate(cfg)
        e, de, dm, cm = cfg.encoding, cfg.dir_encoding, cfg.density_mlp, cfg.color_mlp
        self.register_buffer("aabb", torch.tensor(cfg.aabb, dtype=torch.float32), persistent=False)
        self.hashgrid = e.type == "hashgrid"
        if self.hashgrid:
            self.encoding = HashGridEncoding(e.n_levels, e.n_features, e.log2_table, e.base_res, e.finest_res, cfg.aabb)
            if dm.skips:
                raise ValueError("field config: density_mlp.skips: only supported with encoding.type 'frequency'")
            vol_ch = cfg.latent_volume_features if cfg.latent_volume_res else 0
            self.density_net = self._mlp(self.encoding.out_dim + vol_ch, dm.geo_features, dm.width, dm.n_hidden, None)
            feat_dim = dm.geo_features
        else:
            self.encoding = FrequencyEncoding(e.n_freqs, e.include_input)
            self.density_net = NeRFTrunk(self.encoding.out_dim, dm.width, dm.n_hidden, dm.skips, dm.geo_features)
            feat_dim = dm.geo_features
        self.dir_encoding = SHEncoding(de.degree) if de.type == "sh" else FrequencyEncoding(de.n_freqs, de.include_input)
        self.color_net = self._mlp(self.dir_encoding.out_dim + feat_dim, 3, cm.width, cm.n_hidden, "sigmoid")
        self.latent_dim = cfg.latent_dim
        if self.latent_dim:
            if not self.hashgrid:
                raise ValueError("field config: latent_dim: only supported with encoding.type 'hashgrid'")
            D = self.latent_dim
            first = lambda net: net.layers[0].out_features  # noqa: E731
            self.density_z = nn.Linear(D, first(self.density_net), bias=False)
            self.color_z = nn.Linear(D, first(self.color_net), bias=False)
            for lin in (self.density_z, self.color_z):
                nn.init.normal_(lin.weight, std=1.0 / D ** 0.5)
            # latent_layers > 1: the code also shifts the next hidden layers' biases
            # (density_z_deep[i] is hidden layer i + 1's), zero at start: a field grown
            # from a first-layer-only one (scripts/grow_prior.py) starts as that field.
            for name, net in (("density_z_deep", self.density_net), ("color_z_deep", self.color_net)):
                k = min(cfg.latent_layers, net.n_hidden) - 1
                if k > 0:
                    deep = nn.ModuleList(nn.Linear(D, net.layers[i].out_features, bias=False) for i in range(1, k + 1))
                    for lin in deep:
                        nn.init.zeros_(lin.weight)
                    setattr(self, name, deep)
            # The current subject's code [D]; zero = the mean head.
            self.latent = nn.Parameter(torch.zeros(D))
            if cfg.latent_volume_res:
                R, C = cfg.latent_volume_res, cfg.latent_volume_features
                # V(z) = volume_mean + sum_k z_k volume_basis[k]; small at start (the density
                # MLP's columns for it start at zero when grown from a prior: scripts/grow_prior.py)
                self.volume_mean = nn.Parameter(torch.randn(C, R, R, R) * 0.1)
                self.volume_basis = nn.Parameter(torch.randn(D, C, R, R, R) * (0.1 / D ** 0.5))

    def _mlp(self, in_dim, out_dim, width, n_hidden, act):
        # One MLP class for every backend ("auto" picks per call from the input's device;
        # torch past the fused limits), so state dicts never depend on the backend, and
        # every backend takes the latent code's first-layer bias shift.
        return make_mlp(in_dim, out_dim, width, n_hidden, self.cfg.backend, act)

    def _code(self) -> torch.Tensor:
        """The code in use: ``code(z)``'s, else ``self.latent``."""
        return self._override if getattr(self, "_override", None) is not None else self.latent

    def volume_params(self) -> list[nn.Parameter]:
        """The code's feature volume (field ``latent_volume_res``): [mean, basis], or []."""
        return [self.volume_mean, self.volume_basis] if getattr(self.cfg, "latent_volume_res", 0) else []

    def _shift(self, which: str):
        """The code's bias shifts of ``which`` MLP ("density_z" | "color_z"): one tensor (its
        first layer) or, with latent_layers > 1, a tuple for its first layers."""
        if not getattr(self, "latent_dim", 0):
            return None
        z = self._code()
        deep = getattr(self, which + "_deep", None)
        if deep is None:
            return getattr(self, which)(z)
        return (getattr(self, which)(z), *(lin(z) for lin in deep))

    def volume_features(self, x: torch.Tensor) -> torch.Tensor | None:
        """The code's feature volume (field ``latent_volume_res``) read trilinearly at ``x``
        [n, 3] -> [n, latent_volume_features] (zero outside the box); None without one."""
        if not self.volume_params():
            return None
        vol = self._volume(self._code())
        if not torch.is_grad_enabled() and vol.dtype == x.dtype and use_native(x, vol):
            # rendering: the native read (ops/volume.py, grid_sample's sampling; 20 -> 3 ms of a
            # 256² frame) of a channels-last copy kept with the volume
            kept = getattr(self, "_volume_cl", None)
            if kept is None or kept[0] is not vol:
                kept = (vol, vol.permute(1, 2, 3, 0).contiguous(), [float(v) for v in self.aabb.tolist()])
                self._volume_cl = kept
            return volume_read(x, kept[1], kept[2])
        # training: grid_sample (differentiable) on a channels-last view of [C, R, R, R]
        return volume_read(x, vol.permute(1, 2, 3, 0), self.aabb, impl="torch")

    def _volume(self, z: torch.Tensor) -> torch.Tensor:
        """V(z) [C, R, R, R]. Without autograd (rendering) the last one is kept and reused
        while z holds the same values and the basis and mean are unchanged: a frame reads
        the volume once per segment of every chunk, and each V(z) is a sum over the whole
        basis (D x C x R^3 products; keeping it made a 256² frame of a finetuned latent
        portrait about 3% faster, the same bits)."""
        basis, mean = self.volume_basis, self.volume_mean
        if torch.is_grad_enabled() or basis.is_inference() or mean.is_inference():  # (no version counter)
            return mean + torch.einsum("k,kcxyz->cxyz", z.to(basis.dtype), basis)
        key = (basis.data_ptr(), basis._version, mean.data_ptr(), mean._version, basis.device, basis.dtype,
               mean.dtype, z.device, z.shape)
        kept = getattr(self, "_volume_kept", None)
        if kept is not None and kept[0] == key and torch.equal(kept[1], z):
            return kept[2]
        zc = z.detach().clone()
        vol = mean + torch.einsum("k,kcxyz->cxyz", zc.to(basis.dtype), basis)
        # the detached basis and mean keep their storage alive (so its address is not reused by
        # a replacement parameter) and share the parameters' version counters
        self._volume_kept = (key, zc, vol, basis.detach(), mean.detach())
        return vol

    @contextlib.contextmanager
    def code(self, z: torch.Tensor | None):
        """Evaluate with the code ``z`` [latent_dim] (differentiable, e.g. a row of a
        table of codes) instead of ``self.latent``; ``z`` None: as the field is (so code-less
        fields and priors without training codes go through the same call)."""
        if z is None:
            yield self
            return
        if not self.latent_dim:
            raise ValueError("RadianceField.code: this field has no latent code (latent_dim = 0)")
        if z.shape != (self.latent_dim,):
            raise ValueError(f"RadianceField.code: argument 'z' must have shape [{self.latent_dim}], got {list(z.shape)}")
        prev = getattr(self, "_override", None)
        self._override = z
        try:
            yield self
        finally:
            self._override = prev

    # -- evaluation ---------------------------------------------------------------
    def _geometry(self, x: torch.Tensor):
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"RadianceField: argument 'x' must have shape [n, 3], got {list(x.shape)}")
        if self.hashgrid:
            enc = self.encoding(x)
            vf = self.volume_features(x)
            if vf is not None:
                enc = torch.cat([enc, vf], dim=1)
            h = self.density_net(enc) if not self.latent_dim else self.density_net(enc, self._shift("density_z"))
            return h[:, 0], h
        lo, hi = self.aabb[:3].to(x), self.aabb[3:].to(x)
        xn = 2 * (x - lo) / (hi - lo) - 1  # [-1, 1] inside the box
        return self.density_net(self.encoding(xn))

    def _sigma(self, h0: torch.Tensor) -> torch.Tensor:
        z = h0 + self.cfg.density.bias
        act = self.cfg.density.activation
        if act == "trunc_exp":
            return trunc_exp(z)
        if act == "softplus":
            return F.softplus(z)
        return F.relu(z)

    def density(self, x: torch.Tensor) -> torch.Tensor:  # [n, 3] -> [n]
        return self._sigma(self._geometry(x)[0])

    def geometry(self, x: torch.Tensor):  # [n, 3] -> (sigma [n], features [n, geo_features])
        """The density network alone: sigma and the features the color network takes.
        ``forward(x, d)`` is ``color(*geometry(x)[1:], d)`` with this sigma."""
        h0, feat = self._geometry(x)
        return self._sigma(h0), feat

    def color(self, feat: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # [n, G], [n, 3] unit -> [n, 3]
        """The color network on ``geometry``'s features of the same points."""
        c_in = torch.cat([self.dir_encoding(d.to(feat.dtype)), feat], dim=-1)
        return self.color_net(c_in) if not self.latent_dim else self.color_net(c_in, self._shift("color_z"))

    def forward(self, x: torch.Tensor, d: torch.Tensor):  # [n,3], [n,3] unit -> ([n], [n,3])
        if d.shape != x.shape:
            raise ValueError(f"RadianceField: argument 'd' must have shape {list(x.shape)} like 'x', got {list(d.shape)}")
        sigma, feat = self.geometry(x)
        return sigma, self.color(feat, d)

    # -- optimisation -------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"grid": encoding tables (and the code's feature volume), "mlp": everything else, "latent": the code (latent
        fields only)} for per-group learning rates."""
        grid = list(self.encoding.parameters()) + self.volume_params()  # the volume: a table of features too
        lat = [self.latent] if self.latent_dim else []
        ids = {id(p) for p in grid + lat}
        groups = {"grid": grid, "mlp": [p for p in self.parameters() if id(p) not in ids]}
        if lat:
            groups["latent"] = lat
        return groups

    def set_backend(self, backend: str) -> None:
        """Switch every MLP of this field ("auto" | "torch" | "fused" | "tcnn"); weights are kept."""
        for m in self.modules():
            if isinstance(m, MLP):
                if backend == "fused" and not m._fused_ok:
                    raise ValueError(f"RadianceField.set_backend: argument 'backend' 'fused' cannot run {m}: {m._fused_why}")
                m.backend = backend
