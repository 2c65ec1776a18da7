"""finetune.grid_down: the occupancy grid's floor lowered below the canonical box, so
that a neck seen from below is not cut where the box ends (the hash grid gives points
below its box the features of its floor: the field goes on down as that cross-section)."""
import numpy as np
import pytest
import torch

from pnerf_fast.data.format import load_dataset
from pnerf_fast.geometry import CANONICAL_AABB
from pnerf_fast.train import finetune as ft
from pnerf_fast.train.model import PortraitField, PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_train import tiny  # noqa: F401  (fixture)


def test_lowered_floor_extends_the_grid_as_its_bottom_cross_section(latent_prior):  # noqa: F811
    model = PortraitModel.load(latent_prior)
    g = torch.Generator().manual_seed(0)
    r = model.grid.geometry.res
    for name in ("bits", "allowed"):  # a grid with some structure along every axis
        getattr(model.grid, name).copy_((torch.rand(r ** 3, generator=g) > 0.5).to(torch.uint8))
    model.grid.density.copy_(torch.rand(r ** 3, generator=g))
    old = {k: getattr(model.grid, k).clone().reshape(r, r, r) for k in ("bits", "allowed", "density")}
    model.lower_grid_floor_(1.0)
    geo = model.grid.geometry
    assert geo.aabb[1] == pytest.approx(CANONICAL_AABB[1] - 1.0) and geo.aabb[4] == CANONICAL_AABB[4]
    assert geo.res == r and model.cfg.grid.floor_drop == pytest.approx(1.0)
    lo, hi = CANONICAL_AABB[1], CANONICAL_AABB[4]
    y = geo.aabb[1] + (np.arange(r) + 0.5) * (hi - geo.aabb[1]) / r  # the new rows' centres
    src = np.clip(np.floor((y - lo) / (hi - lo) * r), 0, r - 1).astype(int)
    assert (src[y < lo] == 0).all() and src[-1] == r - 1
    for k, t in old.items():
        new = getattr(model.grid, k).reshape(r, r, r)
        for j in range(r):
            assert torch.equal(new[:, j, :], t[:, src[j], :]), (k, j)
    model.lower_grid_floor_(0.0)  # nothing to do
    assert model.grid.geometry.aabb == geo.aabb


def test_finetune_with_grid_down_saves_and_reloads_the_lowered_grid(latent_prior, tiny, tmp_path):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    model = PortraitModel.load(latent_prior)
    model.cfg.finetune.grid_down = 0.5
    pf = ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, progress=False)
    assert pf.model.grid.geometry.aabb[1] == pytest.approx(CANONICAL_AABB[1] - 0.5)
    # rays now reach below the box: the lowered cells carry samples
    r = pf.model.grid.geometry.res
    rows_below = int(np.ceil(0.5 / (3.5 / r)))  # the rows under the old floor
    assert int(pf.model.grid.bits.reshape(r, r, r)[:, :rows_below - 1, :].sum()) > 0
    pf.save(tmp_path / "p.pt")
    back = PortraitField.load(tmp_path / "p.pt", device="cpu")
    assert back.model.grid.geometry == pf.model.grid.geometry
    assert torch.equal(back.model.grid.bits, pf.model.grid.bits)
    cam = subj.cameras[subj.frontal_index]
    a, b = pf.render(cam), back.render(cam)
    assert np.allclose(a["rgb"], b["rgb"], atol=2e-3)


def test_grid_down_must_be_a_length(latent_prior, tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    model = PortraitModel.load(latent_prior)
    for bad in (-0.5, float("nan")):
        model.cfg.finetune.grid_down = bad
        with pytest.raises(ValueError, match="finetune.grid_down"):
            ft.finetune(subj, init=model, steps=1, progress=False)


def test_a_negative_floor_drop_in_a_config_is_refused():
    from pnerf_fast.train.config import config_from_dict

    with pytest.raises(ValueError, match="grid.floor_drop"):
        config_from_dict({"grid": {"floor_drop": -1.0}})
