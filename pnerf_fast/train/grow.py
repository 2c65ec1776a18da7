"""Grow a latent prior's MLPs (wider, deeper, the code in more layers) so that the grown
field starts as exactly the same function (Net2Net's function-preserving growth, Chen et al.
2016), then continue pretraining it (``pnerf pretrain --init``): the capacity grows without
throwing away the hours the prior has been trained.

For each MLP (density, colour), with the old one's width w and hidden layers h, the new
one's W >= w and H >= h:
- old hidden layers keep their weights in the top-left w x w block (the first layer: its
  first w rows); the new units' incoming weights keep their fresh initialization, and the
  weights from new units into old ones are zero;
- the H - h new hidden layers, after the old ones, are the identity on their input (which
  is a ReLU output, so ReLU leaves it as it is), with zero bias;
- the output layer keeps its old columns, and takes zero from the new units.
The new units then change nothing until training moves their outgoing weights. A field
with the code's feature volume (``latent_volume_res``) that the prior lacks takes it as
extra density-MLP inputs whose weights start at zero (the volume itself starts small and
random, so those weights get a gradient). The code's
bias shifts of the deeper layers (field ``latent_layers``) start at zero, as a new field
makes them; the first layer's keeps its old rows. The hash grid, the direction encoding,
the codes, the occupancy grid and the mean face are copied. A longer code (``latent_dim``)
keeps the old numbers' weights and basis volumes; its new numbers start unheard (zero
weights, zero basis volumes) and the training codes get them at random (grow_model).
scripts/grow_prior.py is the command line.
"""
from __future__ import annotations

import copy

import torch

from .._io import short_repr
from .model import PortraitModel, build_field


def _grow_mlp(old, new, old_z, new_z, name: str) -> None:
    """Copy ``old`` MLP (and its first-layer code weights ``old_z``) into the larger ``new``."""
    w, h = old.width, old.n_hidden
    W, H = new.width, new.n_hidden
    if h < 1:
        raise ValueError(f"grow: the prior's {name} MLP has no hidden layer to grow from")
    if W < w or H < h or new.in_dim < old.in_dim or new.out_dim != old.out_dim:
        raise ValueError(f"grow: the new {name} MLP ({new.in_dim} -> {H} x {W} -> {new.out_dim}) must be at least "
                         f"as wide and as deep as the prior's ({old.in_dim} -> {h} x {w} -> {old.out_dim}), "
                         "with the same inputs (new ones appended) and outputs")
    with torch.no_grad():
        L0, N0 = old.layers[0], new.layers[0]
        N0.weight[:w, : old.in_dim].copy_(L0.weight)
        N0.weight[:w, old.in_dim:].zero_()  # appended inputs (the code's feature volume): unheard at start
        N0.bias[:w].copy_(L0.bias)
        if old_z is not None:
            d = old_z.weight.shape[1]
            new_z.weight[:w, :d].copy_(old_z.weight)
            new_z.weight[:w, d:].zero_()  # the code's new numbers: unheard at start
        for i in range(1, h):  # old hidden layers after the first
            Li, Ni = old.layers[i], new.layers[i]
            Ni.weight[:w, :w].copy_(Li.weight)
            Ni.weight[:w, w:].zero_()
            Ni.bias[:w].copy_(Li.bias)
        for i in range(h, H):  # new hidden layers: the identity on a ReLU output
            new.layers[i].weight.copy_(torch.eye(W))
            new.layers[i].bias.zero_()
        Lo, No = old.layers[h], new.layers[H]
        No.weight[:, :w].copy_(Lo.weight)
        No.weight[:, w:].zero_()
        No.bias.copy_(Lo.bias)


def grow_model(old: PortraitModel, field_cfg, seed: int = 0) -> PortraitModel:
    """``old`` (left untouched) grown into the field of ``field_cfg`` (a preset name, YAML
    path, dict or FieldConfig): the same box and encodings, MLPs at least as wide and deep,
    ``latent_layers`` at least the prior's, and a code at least as long as a latent prior's.

    A longer code's new numbers are heard nowhere at start (zero weights in the MLPs' code
    shifts, zero basis volumes), so the field is the same function; the training codes get
    them drawn at random (``seed``) with the spread of their old numbers, so that those
    weights get a gradient from the first step (with both at zero neither would move)."""
    field = build_field(field_cfg)
    a, b = old.field.cfg, field.cfg
    same = [("aabb", list(a.aabb), list(b.aabb)), ("encoding", a.encoding, b.encoding),
            ("dir_encoding", a.dir_encoding, b.dir_encoding), ("density", a.density, b.density),
            ("density_mlp.geo_features", a.density_mlp.geo_features, b.density_mlp.geo_features)]
    if not a.latent_dim or b.latent_dim < a.latent_dim:
        same.append(("latent_dim", a.latent_dim, b.latent_dim))
    for key, x, y in same:
        if x != y:
            raise ValueError(f"grow: field config '{key}' must be the prior's ({short_repr(x)}), got {short_repr(y)}")
    if not field.hashgrid:
        raise ValueError("grow: only hash-grid fields can be grown")
    if a.latent_volume_res and (a.latent_volume_res, a.latent_volume_features) != (b.latent_volume_res,
                                                                                  b.latent_volume_features):
        raise ValueError(f"grow: field config 'latent_volume_res' / 'latent_volume_features' must be the prior's "
                         f"({a.latent_volume_res} / {a.latent_volume_features})")
    if b.latent_layers < a.latent_layers:
        raise ValueError(f"grow: field config 'latent_layers' must be at least the prior's ({a.latent_layers}), "
                         f"got {b.latent_layers}")
    d = a.latent_dim
    with torch.no_grad():
        field.encoding.load_state_dict(old.field.encoding.state_dict())
        if d:
            field.latent.zero_()[:d].copy_(old.field.latent)
        if old.field.volume_params():
            field.volume_mean.copy_(old.field.volume_mean)
            # the basis, one volume per number of the code: the new numbers' zero
            field.volume_basis.zero_()[:d].copy_(old.field.volume_basis)
    lat = bool(d)
    _grow_mlp(old.field.density_net, field.density_net, old.field.density_z if lat else None,
              field.density_z if lat else None, "density")
    _grow_mlp(old.field.color_net, field.color_net, old.field.color_z if lat else None,
              field.color_z if lat else None, "color")
    # the prior's own deeper code shifts (latent_layers > 1), into the same layers
    for which in ("density_z_deep", "color_z_deep"):
        src, dst = getattr(old.field, which, None), getattr(field, which, None)
        if src is None:
            continue
        with torch.no_grad():
            for s_, d_ in zip(src, dst):
                d_.weight.zero_()[: s_.weight.shape[0], :d].copy_(s_.weight)
    cfg = copy.deepcopy(old.cfg)
    cfg.field = field_cfg if isinstance(field_cfg, str) else field.cfg.name
    new = PortraitModel(cfg, old.mean_face, field=field)
    new.codes = None if old.codes is None else old.codes.clone()
    if new.codes is not None and b.latent_dim > d:
        g = torch.Generator().manual_seed(int(seed))
        spread = float(old.codes.std()) if old.codes.numel() > 1 else 1.0
        extra = torch.randn(old.codes.shape[0], b.latent_dim - d, generator=g) * spread
        new.codes = torch.cat([new.codes, extra], dim=1)
    new.grid.load_state_dict(old.grid.state_dict())
    return new


def max_output_diff(old: PortraitModel, new: PortraitModel, n: int = 4096, seed: int = 0) -> float:
    """The largest |difference| between the two fields' density pre-activations, features
    and colours, at random points and directions in the box, with each training code (up
    to 8 of them) or the field's own code."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor(old.field.cfg.aabb[:3]); hi = torch.tensor(old.field.cfg.aabb[3:])
    x = torch.rand(n, 3, generator=g) * (hi - lo) + lo
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    pairs = [(None, None)] if old.codes is None else list(zip(old.codes[: 8], new.codes[: 8]))
    worst = 0.0
    with torch.no_grad():
        for zs in pairs:
            outs = []
            for m, z in zip((old, new), zs):
                with m.field.code(z):
                    h0, feat = m.field._geometry(x)
                    outs.append(torch.cat([feat, m.field.color(feat, d)], dim=1))
            worst = max(worst, float((outs[0] - outs[1]).abs().max()))
    return worst

