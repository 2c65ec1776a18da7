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
    d0, w = torch.rand(n, generator=g) + 1, torch.rand(n, generator=g)
    opacity = torch.rand(n, generator=g)
    k = _Keep(d0, w, 2.5)
    same = RenderOutput(torch.zeros(n, 3), opacity * d0, opacity, 0)
    assert float(k.loss(same, (d0, w))) == pytest.approx(0.0, abs=1e-12)  # the same surface costs nothing
    depth = torch.rand(n, generator=g) * 3
    out = RenderOutput(torch.zeros(n, 3), depth, opacity, 0)
    want = torch.mean(w[skip:] * (2.5 * (depth[skip:] - opacity[skip:] * d0[skip:])) ** 2)
    assert torch.allclose(k.loss(out, (d0, w), skip), want)
    assert not torch.allclose(k.loss(out, (d0, w), skip), k.loss(out, (d0, w)))  # mirrored rays left out


def _depth_after(model_path, subj, steps, keep, lr_grid=0.3):
    model = PortraitModel.load(model_path)
    fc = model.cfg.finetune
    fc.depth_keep = keep
    fc.lr.grid = lr_grid
    pf = ft.finetune(subj, init=model, steps=steps, code_steps=5, rays_per_step=256, progress=False)
    sr = SubjectRays(subj, model.mean_face, model.cfg.coordinates)
    return ft._DepthKeeper(pf.model.field, pf.model, sr, sr.frontal_index)


def test_finetune_with_depth_keep_stays_nearer_the_code_stage_surface(latent_prior, tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    code = _depth_after(latent_prior, subj, 0, 0.0)  # the code stage only: the surface to keep
    assert float(code.weight.sum()) > 1  # the field covers some of the input mask

    def drift(k):
        w = code.weight * k.weight
        return float((w * (code.depth - k.depth).abs()).sum() / w.sum())

    free = drift(_depth_after(latent_prior, subj, 12, 0.0))
    kept = drift(_depth_after(latent_prior, subj, 12, 30.0))
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
