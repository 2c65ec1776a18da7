"""finetune.anchor: virtual side views of the code stage's head hold the side of the head
that the input view does not see."""
import numpy as np
import pytest
import torch

from pnerf_fast.data.format import load_dataset
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import render_rays
from pnerf_fast.train import finetune as ft
from pnerf_fast.train.anchor import orbit_camera
from pnerf_fast.train.data import RayBatch, SubjectRays
from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_train import tiny  # noqa: F401  (fixture)


def _subject(tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    return ds.subject(ds.subjects("test")[0])


def test_orbit_camera_turns_about_the_axis_through_the_centre(tiny):  # noqa: F811
    cam = _subject(tiny).cameras[0]
    centre, up = np.array([0.1, -0.2, 0.3]), np.array([0.0, 1.0, 0.0])
    assert np.allclose(orbit_camera(cam, centre, up, 0.0).c2w, cam.c2w)
    turned = orbit_camera(cam, centre, up, 90.0)
    assert np.linalg.norm(turned.position - centre) == pytest.approx(np.linalg.norm(cam.position - centre))
    # the viewing direction (-z) turns by 90 degrees about up, the up component stays
    d0, d1 = -cam.c2w[:3, 2], -turned.c2w[:3, 2]
    flat = lambda v: v - (v @ up) * up  # noqa: E731
    cos = flat(d0) @ flat(d1) / (np.linalg.norm(flat(d0)) * np.linalg.norm(flat(d1)))
    assert cos == pytest.approx(0.0, abs=1e-9)
    assert d0 @ up == pytest.approx(d1 @ up)
    assert np.allclose(orbit_camera(turned, centre, up, -90.0).c2w, cam.c2w, atol=1e-12)


def _anchor(model, subj, yaws):
    sr = SubjectRays(subj, model.mean_face, model.cfg.coordinates)
    return ft._anchor_of(subj, model, sr, sr.frontal_index, yaws=yaws), sr


def test_anchor_keeps_only_what_the_input_view_does_not_see(latent_prior, tiny):  # noqa: F811
    """From the input camera itself every surface point is seen (no anchor rays); from
    behind the head almost none is, and the targets are the field's own colours."""
    subj = _subject(tiny)
    model = _opaque(latent_prior, subj)
    same, _ = _anchor(model, subj, (0.0,))
    back, sr = _anchor(model, subj, (180.0,))
    assert same is None  # no ray kept
    assert len(back) > 20
    # the kept rays are foreground, and their targets are what the field renders there
    assert bool((back.alpha > 0.5).all())
    with torch.no_grad():
        out = render_rays(model.field.eval(), model.grid, Rays(back.rays_o, back.rays_d, sr.warp_table),
                          model.render_cfg, bg=0.0)
    assert torch.allclose(out.rgb.clamp(0, 1), back.color, atol=0.05)
    b, depth = back.batch(64, torch.Generator().manual_seed(0), random_bg=True)
    assert b.rays_o.shape == (64, 3) and b.target.shape == (64, 3) and depth.shape == (64,)
    assert bool((depth > 0).all())
    assert bool(((b.target >= 0) & (b.target <= 1)).all())


def test_photo_loss_scores_anchor_rays_but_reports_the_real_ones():
    class Out:
        pass

    out = Out()
    out.rgb = torch.tensor([[0.5] * 3, [1.0] * 3, [0.0] * 3, [0.2] * 3])
    out.opacity = torch.ones(4)
    batch = RayBatch(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 3), torch.ones(4))
    err = (out.rgb ** 2).mean(1)
    mse, loss = ft._photo_loss(out, batch, 0, 1.0, anchored=2, anchor_loss=torch.tensor(0.7))
    assert float(mse) == pytest.approx(float(err[2:].mean()))
    assert float(loss) == pytest.approx(float(2 * err[2:].mean() + 2 * 0.7) / 4)
    mse, loss = ft._photo_loss(out, batch, 1, 1.0, anchored=2, anchor_loss=torch.tensor(0.7))  # [mirrored | anchor x2 | real]
    assert float(mse) == pytest.approx(float(err[3:].mean()))


def test_anchor_loss_terms(latent_prior, tiny):  # noqa: F811
    """Opacity always; colour and depth by their weights; zero for the field it was made from."""
    subj = _subject(tiny)
    back, sr = _anchor(_opaque(latent_prior, subj), subj, (180.0,))
    b, depth = back.batch(32, torch.Generator().manual_seed(0), random_bg=True)

    class Out:
        pass

    exact = Out()
    exact.rgb, exact.opacity, exact.depth = b.target.clone(), b.alpha.clone(), b.alpha * depth
    assert float(back.loss(exact, b, 0, depth, 1.0, 1.0)) == pytest.approx(0.0, abs=1e-10)
    off = Out()
    off.rgb, off.opacity, off.depth = b.target + 0.1, b.alpha.clone(), b.alpha * depth + 1.0 / back.scale
    assert float(back.loss(off, b, 0, depth, 0.0, 0.0)) == pytest.approx(0.0, abs=1e-10)
    assert float(back.loss(off, b, 0, depth, 1.0, 0.0)) == pytest.approx(0.01, rel=1e-4)
    assert float(back.loss(off, b, 0, depth, 0.0, 2.0)) == pytest.approx(2.0, rel=1e-4)


def _opaque(latent_prior, subj):  # noqa: F811
    """The tiny prior, fitted to ``subj`` until its head is opaque (as a real prior's is)."""
    model = PortraitModel.load(latent_prior, "cpu")
    model.cfg.finetune.lr.grid, model.cfg.finetune.lr.mlp = 0.1, 0.01
    return ft.finetune(subj, init=model, steps=60, progress=False, seed=0).model


def test_finetune_with_anchor_fits_and_reports_its_rays(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    model = _opaque(latent_prior, subj)
    model.cfg.finetune.anchor = 0.3
    pf = ft.finetune(subj, init=model, progress=False, seed=0)
    assert pf.info["anchor_rays"] > 0
    assert all(bool(torch.isfinite(p).all()) for p in pf.model.field.parameters())
    model = PortraitModel.load(latent_prior, "cpu")
    model.cfg.finetune.anchor = 1.0
    with pytest.raises(ValueError, match="finetune.anchor"):
        ft.finetune(_subject(tiny), init=model, progress=False)
    model.cfg.finetune.anchor, model.cfg.finetune.anchor_depth = 0.3, -1.0
    with pytest.raises(ValueError, match="finetune.anchor_depth"):
        ft.finetune(_subject(tiny), init=model, progress=False)
