"""The geometry layer: one canonical box. The field's box is its config's ``aabb``; the
occupancy grid (and through it the visual cone, the hull and the renderer's bounds) covers
that same box, its floor lowered by ``grid.floor_drop``; a stored checkpoint's box comes
from its stored field config."""
import numpy as np
import pytest
import torch

import pnerf_fast
from pnerf_fast.geometry import CANONICAL_AABB, grid_box, half_extent
from pnerf_fast.ops.occgrid import cell_positions
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import RenderConfig, render_rays
from pnerf_fast.train.config import config_from_dict
from pnerf_fast.train.model import PortraitModel, build_field

from test_train import TINY_FIELD

TALL = (-1.5, -2.5, -1.5, 1.5, 1.5, 1.5)  # a box with room for the neck and shoulders


def tiny_model(aabb=TALL, floor_drop=0.0, bias=-3.0):
    field = build_field({**TINY_FIELD, "aabb": list(aabb), "density": {"bias": bias}})
    cfg = config_from_dict({"grid": {"res": 16, "floor_drop": floor_drop}, "render": {"step": 0.05}})
    return PortraitModel(cfg, None, field=field)


def test_grid_box_lowers_only_the_floor():
    assert grid_box(CANONICAL_AABB) == CANONICAL_AABB
    assert grid_box(TALL, 0.5) == (-1.5, -3.0, -1.5, 1.5, 1.5, 1.5)
    assert half_extent(CANONICAL_AABB) == 1.5 and half_extent(TALL) == 2.0
    with pytest.raises(ValueError, match="aabb"):
        grid_box((0, 0, 0, 1, 1))


def test_the_grid_covers_the_fields_box():
    m = tiny_model()
    assert m.field.cfg.aabb == TALL and m.grid.geometry.aabb == TALL
    y = cell_positions(m.grid.geometry)[:, 1]
    assert float(y.min()) == pytest.approx(-2.375) and float(y.max()) == pytest.approx(1.375)  # cell centres, 0.25 apart
    assert tiny_model(floor_drop=0.5).grid.geometry.aabb == (-1.5, -3.0, -1.5, 1.5, 1.5, 1.5)
    m.lower_grid_floor_(0.25)  # finetune.grid_down lowers the field's floor, not the constant's
    assert m.grid.geometry.aabb == (-1.5, -2.75, -1.5, 1.5, 1.5, 1.5)
    assert m.cfg.grid.floor_drop == pytest.approx(0.25)


def test_a_render_reaches_the_taller_box():
    """A ray through y = -2.2 (below the default box, inside the tall one) meets the
    field only when the grid covers the field's box."""
    o = torch.tensor([[0.0, -2.2, 4.0]])
    d = torch.tensor([[0.0, 0.0, -1.0]])
    cfg = RenderConfig(step=0.05)
    with torch.no_grad():
        tall = tiny_model(bias=2.0)
        short = tiny_model(CANONICAL_AABB, bias=2.0)
        assert tall.grid.occupied_box() == TALL
        hit = render_rays(tall.field, tall.grid, Rays(o, d), cfg)
        miss = render_rays(short.field, short.grid, Rays(o, d), cfg)
    assert float(hit.opacity[0]) > 0.5 and float(miss.opacity[0]) == 0.0


def test_a_checkpoint_keeps_its_box(tmp_path):
    m = tiny_model(floor_drop=0.5)
    m.save(tmp_path / "tall.pt")
    back = PortraitModel.load(tmp_path / "tall.pt", device="cpu")
    assert back.field.cfg.aabb == TALL
    assert back.grid.geometry == m.grid.geometry
    assert torch.equal(back.grid.bits, m.grid.bits)


@pytest.mark.parametrize("name,floor_drop", [("latent", 1.0), ("portrait", 1.0), ("meta", 0.0)])
def test_shipped_priors_keep_the_canonical_box(name, floor_drop):
    """The shipped priors' fields store the default box (checked pixel for pixel against
    main when the box moved); their grids cover it, the classic prior's (session 25,
    configs/pretrain_latent_floor.yaml) and the portrait prior's (session 28,
    configs/pretrain_portrait_front_floor.yaml) with their floors one unit lower for the
    neck and the body."""
    m = pnerf_fast.load_prior(name, device="cpu")
    assert m.field.cfg.aabb == CANONICAL_AABB
    assert m.cfg.grid.floor_drop == floor_drop
    assert m.grid.geometry.aabb == grid_box(CANONICAL_AABB, floor_drop)
    assert m.grid.geometry.aabb[1] == CANONICAL_AABB[1] - floor_drop
    assert np.isfinite(m.grid.density.numpy()).all()
