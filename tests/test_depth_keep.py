"""finetune.depth_keep: stage 2 keeps the surface where the code stage put it (one view
shows the colour exactly but says little about depth)."""
import pytest
import torch

from pnerf_fast.data.format import load_dataset
from pnerf_fast.render.renderer import RenderOutput
from pnerf_fast.train import finetune as ft
from pnerf_fast.train.data import SubjectRays
from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_train import tiny  # noqa: F401  (fixture)


class _Keep(ft._DepthKeeper):
    def __init__(self, depth, weight, scale):  # no field needed for the loss
        self.depth, self.weight, self.scale = depth, weight, scale


def test_depth_keep_loss_is_the_weighted_canonical_offset():
    g = torch.Generator().manual_seed(0)
    n, skip = 10, 3
    d0, w, mask = torch.rand(n, generator=g) + 1, torch.rand(n, generator=g), torch.rand(n, generator=g)
    opacity = torch.rand(n, generator=g)
    k = _Keep(d0, w, 2.5)
    same = RenderOutput(torch.zeros(n, 3), opacity * d0, opacity, 0)
    assert float(k.loss(same, (d0, w, mask))) == pytest.approx(0.0, abs=1e-12)  # the same surface costs nothing
    depth = torch.rand(n, generator=g) * 3
    out = RenderOutput(torch.zeros(n, 3), depth, opacity, 0)
    want = torch.mean(w[skip:] * (2.5 * (depth[skip:] - opacity[skip:] * d0[skip:])) ** 2)
    assert torch.allclose(k.loss(out, (d0, w, mask), skip), want)
    assert not torch.allclose(k.loss(out, (d0, w, mask), skip), k.loss(out, (d0, w, mask)))  # mirrored rays left out


def test_samples_and_spread_losses_from_per_sample_sums():
    """Two samples per ray at t1, t2 with weights a1, a2: "samples" is the weighted squared
    offset from the kept depth, "spread" the weighted variance about the ray's own mean
    (zero for one surface, wherever it lies)."""
    g = torch.Generator().manual_seed(1)
    n, scale = 6, 1.7
    d0, w, mask = torch.rand(n, generator=g) + 1, torch.rand(n, generator=g), torch.rand(n, generator=g)
    t = torch.rand(n, 2, generator=g) + 1
    a = torch.rand(n, 2, generator=g) * 0.5
    k = _Keep(d0, w, scale)
    vals = k.sample_values((d0, w, mask))
    ray = torch.arange(n).repeat_interleave(2)
    v = vals(ray, t.reshape(-1)).reshape(n, 2, 3)
    extra = (a[..., None] * v).sum(1)
    out = RenderOutput(torch.zeros(n, 3), (a * t).sum(1), a.sum(1), 0, extra)
    off = scale * (t - d0[:, None])
    assert torch.allclose(k.loss(out, (d0, w, mask), mode="samples"), torch.mean(w * (a * off ** 2).sum(1)))
    mean = (a * t).sum(1, keepdim=True) / a.sum(1, keepdim=True)
    want = torch.mean(mask * (a * (scale * (t - mean)) ** 2).sum(1))
    assert torch.allclose(k.loss(out, (d0, w, mask), mode="spread"), want, rtol=1e-4, atol=1e-7)
    one = RenderOutput(torch.zeros(n, 3), a.sum(1) * t[:, 0], a.sum(1), 0,
                       a.sum(1)[:, None] * vals(torch.arange(n), t[:, 0]))  # all weight at one depth
    assert float(k.loss(one, (d0, w, mask), mode="spread")) == pytest.approx(0.0, abs=1e-6)


def _depth_after(model_path, subj, steps, keep, mode="mean", lr_grid=0.3):
    model = PortraitModel.load(model_path)
    fc = model.cfg.finetune
    fc.depth_keep, fc.depth_keep_mode = keep, mode
    fc.lr.grid = lr_grid
    pf = ft.finetune(subj, init=model, steps=steps, code_steps=5, rays_per_step=256, progress=False)
    sr = SubjectRays(subj, model.mean_face, model.cfg.coordinates)
    return ft._DepthKeeper(pf.model.field, pf.model, sr, sr.frontal_index)


@pytest.mark.parametrize("mode", ["mean", "samples"])  # "spread" keeps no depth
def test_finetune_with_depth_keep_stays_nearer_the_code_stage_surface(latent_prior, tiny, mode):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    code = _depth_after(latent_prior, subj, 0, 0.0)  # the code stage only: the surface to keep
    assert float(code.weight.sum()) > 1  # the field covers some of the input mask

    def drift(k):
        w = code.weight * k.weight
        return float((w * (code.depth - k.depth).abs()).sum() / w.sum())

    free = drift(_depth_after(latent_prior, subj, 12, 0.0))
    kept = drift(_depth_after(latent_prior, subj, 12, 30.0, mode))
    assert free > 0
    assert kept < 0.7 * free, (kept, free)


def test_depth_keep_only_for_single_view_fits(latent_prior, tiny, monkeypatch):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    made = []
    real = ft._DepthKeeper

    def spy(*a, **kw):
        made.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(ft, "_DepthKeeper", spy)
    model = PortraitModel.load(latent_prior)
    model.cfg.finetune.depth_keep = 1.0
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, progress=False)
    assert made == [1]
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, views=[0, 1], progress=False)
    assert made == [1]  # the multi-view oracle has real depth cues
    model.cfg.finetune.depth_keep = 0.0
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, progress=False)
    assert made == [1]


def test_depth_keep_must_be_a_weight(latent_prior, tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    model = PortraitModel.load(latent_prior)
    for bad in (-1.0, float("nan")):
        model.cfg.finetune.depth_keep = bad
        with pytest.raises(ValueError, match="depth_keep"):
            ft.finetune(subj, init=model, steps=1, progress=False)
    model.cfg.finetune.depth_keep, model.cfg.finetune.depth_keep_mode = 1.0, "median"
    with pytest.raises(ValueError, match="depth_keep_mode"):
        ft.finetune(subj, init=model, steps=1, progress=False)


def test_render_rays_composites_per_sample_values(latent_prior, tiny):  # noqa: F811
    """``sample_values`` are composited with the same weights: t gives the depth, 1 the
    opacity, and the values reach the ray they were made for."""
    model = PortraitModel.load(latent_prior)
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    sr = SubjectRays(subj, model.mean_face, model.cfg.coordinates)
    b = sr.view_batch(sr.frontal_index)
    seen = {}

    def values(ray, t):
        seen["rays"] = ray
        return torch.stack([t, torch.ones_like(t), ray.to(t.dtype)], 1)

    out = ft.render_rays(model.field, model.grid, b.rays_o, b.rays_d, sr.warp_table, None, model.render_cfg,
                         1.0, None, sample_values=values)
    assert float(out.opacity.detach().max()) > 0.05  # some samples carry weight
    assert torch.allclose(out.extra[:, 0], out.depth, atol=1e-5)
    assert torch.allclose(out.extra[:, 1], out.opacity, atol=1e-5)
    idx = torch.arange(out.opacity.shape[0], dtype=out.extra.dtype)
    assert torch.allclose(out.extra[:, 2], out.opacity * idx, rtol=1e-5, atol=1e-3)
    assert seen["rays"].numel() == out.n_samples
    plain = ft.render_rays(model.field, model.grid, b.rays_o, b.rays_d, sr.warp_table, None, model.render_cfg, 1.0)
    assert plain.extra is None and torch.allclose(plain.rgb, out.rgb, atol=1e-6)
