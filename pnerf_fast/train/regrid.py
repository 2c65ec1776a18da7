"""Move a hash-grid prior into another field box (for example fast_latent_tall's taller box,
which holds a portrait's neck and shoulders), keeping what it has learned.

- The MLPs, the code layers and the training subjects' codes are copied as they are.
- The new box's hash tables are fitted with Adam so that the density network gives the old
  one's output (the density and the colour network's features) with the training subjects'
  codes. A third of the points are uniform in the new box, two thirds near where the old
  field is dense for some code. Inside the old box the field is then (nearly) unchanged;
  outside it, it takes the old field's values clamped onto the old box, which is what the old
  field itself gives there. So the new field starts as the old one.
- Every cell of the new occupancy grid takes the state of the old cell at its centre, clamped
  into the old box.

Continue pretraining from the result in the new box (``pnerf pretrain --init``): that run
rebuilds the grid from the training subjects' visual hulls and learns what lies outside the
old box. scripts/regrid_prior.py is the command line.
"""
from __future__ import annotations

import copy
import time

import torch

from .model import PortraitModel, build_field
from .optim import frozen


def regrid_model(old: PortraitModel, field_cfg, steps: int = 600, points: int = 1 << 16, lr: float = 0.1,
                 seed: int = 0, progress: bool = False) -> tuple[PortraitModel, dict]:
    """``old`` (left untouched, on the CPU) moved into the field of ``field_cfg`` (a preset
    name, YAML path, dict or FieldConfig with the same MLPs and code size, another ``aabb`` or
    hash-grid resolution). -> (the new model, a report of the fit on held-out points)."""
    for name, v in (("steps", steps), ("points", points)):
        if int(v) < 1:
            raise ValueError(f"regrid: argument '{name}' must be >= 1, got {v}")
    if not lr > 0:
        raise ValueError(f"regrid: argument 'lr' must be > 0, got {lr}")
    field = build_field(field_cfg)
    if not (old.field.hashgrid and field.hashgrid):
        raise ValueError("regrid: both fields must use a hash-grid encoding")
    fs = {k: v for k, v in old.field.state_dict().items() if not k.startswith("encoding.")}
    try:
        missing, unexpected = field.load_state_dict(fs, strict=False)
    except RuntimeError as e:
        raise ValueError(f"regrid: the new field's MLPs do not match the prior's: {' '.join(str(e).split())[:300]}") from None
    if unexpected or [k for k in missing if not k.startswith("encoding.")]:
        raise ValueError(f"regrid: the new field's MLPs do not match the prior's (missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)})")
    cfg = copy.deepcopy(old.cfg)
    cfg.field = field_cfg if isinstance(field_cfg, str) else field.cfg.name
    new = PortraitModel(cfg, old.mean_face, field=field)
    new.codes = old.codes
    new.grid.copy_cells_from_(old.grid)

    gen = torch.Generator().manual_seed(int(seed))
    ng = new.grid.geometry
    nlo = torch.tensor(ng.aabb[:3]); nhi = torch.tensor(ng.aabb[3:])
    codes = old.codes
    step_len = new.render_cfg.step

    def uniform(n, g):
        return torch.rand(n, 3, generator=g) * (nhi - nlo) + nlo

    def with_code(f, i):
        return f.code(None if codes is None else codes[i])

    def pick_code(g):
        return int(torch.randint(len(codes), (1,), generator=g)) if codes is not None else 0

    pool = []
    with torch.no_grad():
        for _ in range(16 if codes is not None else 1):
            x = uniform(1 << 18, gen)
            with with_code(old.field, pick_code(gen)):
                a = 1 - torch.exp(-old.field.density(x) * step_len)
            pool.append(x[a > 0.01])
    pool = torch.cat(pool)
    if not len(pool):
        pool = uniform(1 << 12, gen)  # an empty prior: uniform points only
    cell = (nhi - nlo) / ng.res

    def sample(n, g):
        near = pool[torch.randint(len(pool), (n - n // 3,), generator=g)]
        near = near + (torch.rand(len(near), 3, generator=g) * 2 - 1) * cell
        return torch.cat([uniform(n // 3, g), near])

    table = field.encoding.params
    opt = torch.optim.Adam([table], lr=lr, betas=(0.9, 0.99), eps=1e-15, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** (s / steps))
    from tqdm import tqdm

    t0 = time.perf_counter()
    # only the table learns; the bar closes and the weights thaw on any exit
    with frozen([p for p in field.parameters() if p is not table]), \
            tqdm(range(int(steps)), desc="regrid", unit="step", disable=not progress) as bar:
        for step in bar:
            x = sample(int(points), gen)
            ci = pick_code(gen)
            with torch.no_grad(), with_code(old.field, ci):
                target = old.field._geometry(x)[1]
            with with_code(field, ci):
                loss = (field._geometry(x)[1] - target).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 25 == 0:
                bar.set_postfix(loss=f"{loss.item():.2e}")
    report = check_regrid(old, new, seed=int(seed) + 1)
    report["fit_s"] = time.perf_counter() - t0
    report["dense_points"] = int(len(pool))
    return new, report


def check_regrid(old: PortraitModel, new: PortraitModel, n: int = 1 << 15, seed: int = 1) -> dict:
    """How far ``new``'s field is from ``old``'s, with the mean training code, on held-out
    points inside the old box (uniform, and where the old field is dense): the mean
    |difference| of the opacity per render step (and that opacity's mean), and of the colour
    where the old field is opaque."""
    g = torch.Generator().manual_seed(seed)
    og = old.grid.geometry
    lo = torch.tensor(og.aabb[:3]); hi = torch.tensor(og.aabb[3:])
    x = torch.rand(n, 3, generator=g) * (hi - lo) + lo
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    step_len = new.render_cfg.step
    z = None if old.codes is None else old.codes.mean(0)
    with torch.no_grad(), old.field.code(z), new.field.code(z):
        s0, c0 = old.field(x, d)
        s1, c1 = new.field(x, d)
    a0 = 1 - torch.exp(-s0 * step_len)
    a1 = 1 - torch.exp(-s1 * step_len)
    opaque = a0 > 0.05
    return {
        "opacity_mean": float(a0.mean()),
        "opacity_abs_diff": float((a0 - a1).abs().mean()),
        "rgb_abs_diff_opaque": float((c0 - c1)[opaque].abs().mean()) if bool(opaque.any()) else 0.0,
    }
