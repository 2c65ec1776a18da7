"""finetune.spread: one surface per input ray. One view can be matched by colour spread
over several depths along its rays; from any other angle those layers show as ghosts."""
import numpy as np
import pytest
import torch

from pnerf_fast.data.format import load_dataset
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import RenderOutput
from pnerf_fast.train import finetune as ft
from pnerf_fast.train.data import SubjectRays
from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_train import tiny  # noqa: F401  (fixture)


def test_spread_loss_is_the_weighted_variance_of_the_ray_depth():
    """Two samples per ray at t1, t2 with weights a1, a2: the loss is mask * sum a (t -
    mean)^2 in canonical units, whatever the centre the values were taken about, and zero
    for one surface wherever it lies."""
    g = torch.Generator().manual_seed(1)
    n = 6
    t = torch.rand(n, 2, generator=g) + 1
    a = torch.rand(n, 2, generator=g) * 0.5
    mask = torch.rand(n, generator=g)
    scale = 1.7
    for centre in (0.0, 1.3):
        off = scale * (t - centre)
        extra = torch.stack([(a * off ** 2).sum(1), (a * off).sum(1), torch.zeros(n)], 1)
        out = RenderOutput(torch.zeros(n, 3), (a * t).sum(1), a.sum(1), 0, extra)
        mean = (a * t).sum(1, keepdim=True) / a.sum(1, keepdim=True)
        want = torch.mean(mask * (a * (scale * (t - mean)) ** 2).sum(1))
        assert torch.allclose(ft._spread_loss(out, mask), want, rtol=1e-4, atol=1e-7)
        assert torch.allclose(ft._spread_loss(out, mask, 2), torch.mean((mask * (a * (scale * (t - mean)) ** 2)
                                                                          .sum(1))[2:]), rtol=1e-4, atol=1e-7)
    one_off = scale * (t[:, 0] - 0.4)
    one = RenderOutput(torch.zeros(n, 3), a.sum(1) * t[:, 0], a.sum(1), 0,
                       torch.stack([a.sum(1) * one_off ** 2, a.sum(1) * one_off, torch.zeros(n)], 1))
    assert float(ft._spread_loss(one, mask)) == pytest.approx(0.0, abs=1e-6)


def _subject(tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    return ds.subject(ds.subjects("test")[0])


def test_render_rays_composites_per_sample_values(latent_prior, tiny):  # noqa: F811
    """``sample_values`` are composited with the same weights: t gives the depth, 1 the
    opacity, and the values reach the ray they were made for."""
    model = PortraitModel.load(latent_prior)
    subj = _subject(tiny)
    sr = SubjectRays(subj, model.mean_face, model.cfg.coordinates)
    b = sr.view_batch(sr.frontal_index)
    seen = {}

    def values(ray, t):
        seen["rays"] = ray
        return torch.stack([t, torch.ones_like(t), ray.to(t.dtype)], 1)

    out = ft.render_rays(model.field, model.grid, Rays(b.rays_o, b.rays_d, sr.warp_table), model.render_cfg,
                         sample_values=values)
    assert float(out.opacity.detach().max()) > 0.05  # some samples carry weight
    assert torch.allclose(out.extra[:, 0], out.depth, atol=1e-5)
    assert torch.allclose(out.extra[:, 1], out.opacity, atol=1e-5)
    idx = torch.arange(out.opacity.shape[0], dtype=out.extra.dtype)
    assert torch.allclose(out.extra[:, 2], out.opacity * idx, rtol=1e-5, atol=1e-3)
    assert seen["rays"].numel() == out.n_samples
    plain = ft.render_rays(model.field, model.grid, Rays(b.rays_o, b.rays_d, sr.warp_table), model.render_cfg)
    assert plain.extra is None and torch.allclose(plain.rgb, out.rgb, atol=1e-6)


def _input_render(pf, subj):
    """(the finetuned field's render of the input view with the spread's per-sample
    values composited, that view's rays)."""
    model = pf.model
    sr = SubjectRays(subj, model.mean_face, model.cfg.coordinates)
    b = sr.view_batch(sr.frontal_index)
    with torch.no_grad():
        out = ft.render_rays(model.field, model.grid, Rays(b.rays_o, b.rays_d, sr.warp_table), model.render_cfg,
                             sample_values=ft._spread_values(b.rays_o, b.rays_d, *ft._spread_frame(sr, "cpu")))
    return out, b


def _input_spread(pf, subj):
    """The finetuned field's mean depth spread over the input view's masked rays."""
    out, b = _input_render(pf, subj)
    return float(ft._spread_loss(out, b.alpha))


def _fit(prior, subj, code_steps: int, **finetune_cfg):
    """A short finetune of ``prior`` with a high grid rate and these finetune settings."""
    model = PortraitModel.load(prior)
    for k, v in finetune_cfg.items():
        setattr(model.cfg.finetune, k, v)
    model.cfg.finetune.lr.grid = 0.3
    return ft.finetune(subj, init=model, steps=12, code_steps=code_steps, rays_per_step=256, progress=False)


def test_finetune_with_spread_puts_one_surface_on_each_input_ray(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    free = _input_spread(_fit(latent_prior, subj, 5, spread=0.0), subj)
    one = _input_spread(_fit(latent_prior, subj, 5, spread=30.0), subj)
    assert free > 0
    assert one < 0.5 * free, (one, free)


def test_spread_only_for_single_view_fits(latent_prior, tiny, monkeypatch):  # noqa: F811
    subj = _subject(tiny)
    calls = []
    real = ft.render_rays

    def spy(*a, sample_values=None, **kw):
        calls.append(sample_values is not None)
        return real(*a, sample_values=sample_values, **kw)

    monkeypatch.setattr(ft, "render_rays", spy)
    model = PortraitModel.load(latent_prior)
    model.cfg.finetune.spread = 1.0
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, progress=False)
    assert calls == [False, True, True]  # stage 2 only
    calls.clear()
    model.cfg.finetune.spread_stop = 0.5
    ft.finetune(subj, init=model, steps=4, code_steps=1, rays_per_step=64, progress=False)
    assert calls == [False, True, True, False, False]  # its first spread_stop only
    model.cfg.finetune.spread_stop = 1.0
    calls.clear()
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, views=[0, 1], progress=False)
    assert calls == [False, False, False]  # the multi-view oracle sees depth from its views
    calls.clear()
    model.cfg.finetune.spread = 0.0
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, progress=False)
    assert calls == [False, False, False]


def test_spread_must_be_a_weight(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    model = PortraitModel.load(latent_prior)
    for bad in (-1.0, float("nan"), np.inf):
        model.cfg.finetune.spread = bad
        with pytest.raises(ValueError, match="finetune.spread"):
            ft.finetune(subj, init=model, steps=1, progress=False)
