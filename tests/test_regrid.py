"""Moving a prior into another field box (train/regrid.py, scripts/regrid_prior.py): the MLPs
and codes are copied, the new tables are fitted so the field inside the old box is the old
one, the grid's cells come from the old cells at their centres, and bad input is refused."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pnerf_fast.ops.occgrid import cell_positions
from pnerf_fast.train.config import config_from_dict
from pnerf_fast.train.model import PortraitModel, build_field
from pnerf_fast.train.regrid import check_regrid, regrid_model

from test_train import TINY_FIELD

BOX = [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]
# 1.5x taller, with 1.5x the resolution: the same lattice per unit, so the old tables can be matched
TALL = [-1.5, -3.0, -1.5, 1.5, 1.5, 1.5]
ROOT = Path(__file__).resolve().parents[1]


def latent_field(aabb, base_res=4, finest_res=16):
    # every level dense (indexed, not hashed), so that a lattice the same per unit can hold the same values
    enc = dict(TINY_FIELD["encoding"], n_levels=3, log2_table=15, base_res=base_res, finest_res=finest_res)
    return {**TINY_FIELD, "name": "tiny_latent", "latent_dim": 4, "aabb": aabb, "encoding": enc,
            "density": {"bias": 1.0}}  # dense: opacities that can be compared


def old_model():
    torch.manual_seed(0)
    field = build_field(latent_field(BOX))
    with torch.no_grad():  # a field with structure: tables and code layers far from their init
        field.encoding.params.uniform_(-1, 1)
        field.density_z.weight.normal_(0, 1)
        for name, p in field.named_parameters():  # MLPs that listen to the encoding
            if name.startswith(("density_net", "color_net")) and p.ndim == 2:
                p.mul_(4.0)
    cfg = config_from_dict({"grid": {"res": 8}, "render": {"step": 0.05}, "method": "latent"})
    m = PortraitModel(cfg, None, field=field)
    m.codes = torch.randn(3, 4) * 0.5
    with torch.no_grad():
        m.grid.bits.copy_(torch.rand(m.grid.bits.shape) < 0.5)
    return m


def test_regrid_keeps_the_field_inside_the_old_box():
    old = old_model()
    before = {k: v.clone() for k, v in old.field.state_dict().items()}
    fresh = PortraitModel(old.cfg, None, field=build_field(latent_field(TALL, 6, 24)))
    fresh.field.load_state_dict({k: v for k, v in old.field.state_dict().items() if not k.startswith("encoding.")},
                                strict=False)
    untrained = check_regrid(old, fresh)
    new, report = regrid_model(old, latent_field(TALL, 6, 24), steps=300, points=4096, lr=0.1)
    assert new.field.cfg.aabb == tuple(TALL) and new.grid.geometry.aabb == tuple(TALL)
    # the old prior is untouched; MLPs, code layers and codes are copied
    assert all(torch.equal(v, old.field.state_dict()[k]) for k, v in before.items())
    for k, v in old.field.state_dict().items():
        if not k.startswith("encoding."):
            assert torch.equal(new.field.state_dict()[k], v), k
    assert torch.equal(new.codes, old.codes)
    # the fit brings the field inside the old box close to the old one
    assert report["opacity_abs_diff"] < 0.25 * untrained["opacity_abs_diff"]
    assert report["rgb_abs_diff_opaque"] < 0.5 * untrained["rgb_abs_diff_opaque"]
    # every new cell takes the old cell at its centre, clamped into the old box
    c = cell_positions(new.grid.geometry)
    og = old.grid.geometry
    ijk = ((c - torch.tensor(BOX[:3])) / 3.0 * og.res).floor().long().clamp(0, og.res - 1)
    oc = cell_positions(og)
    oijk = ((oc - torch.tensor(BOX[:3])) / 3.0 * og.res).floor().long()
    key = lambda t: (t[:, 0] * og.res + t[:, 1]) * og.res + t[:, 2]  # noqa: E731
    lookup = dict(zip(key(oijk).tolist(), old.grid.bits.tolist()))
    assert new.grid.bits.tolist() == [lookup[k] for k in key(ijk).tolist()]
    below = c[:, 1] < -1.5  # the cells under the old floor repeat the old bottom row
    assert bool(below.any())


def test_regrid_refuses_fields_that_do_not_match():
    old = old_model()
    with pytest.raises(ValueError, match="MLPs do not match"):
        regrid_model(old, {**latent_field(TALL), "density_mlp": {"width": 32, "n_hidden": 1, "geo_features": 8}},
                     steps=1, points=16)
    with pytest.raises(ValueError, match="'steps'"):
        regrid_model(old, latent_field(TALL), steps=0)


def test_regrid_script_names_a_bad_file(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "regrid_prior.py"), str(tmp_path / "none.pt"),
                        str(tmp_path / "out.pt"), "--field", "fast_latent_tall"], capture_output=True, text=True)
    assert r.returncode == 2 and "none.pt" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.pt").exists()
