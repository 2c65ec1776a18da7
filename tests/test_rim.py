"""finetune.rim: input rays that the code stage leaves transparent (hair or shoulders
beyond the prior's head) get their surface near their point closest to the head's
centre, instead of wherever stage 2 happens to grow it (the front of the grid)."""
import pytest
import torch

from pnerf_fast.render.renderer import RenderOutput
from pnerf_fast.train import finetune as ft
from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_spread import _fit, _input_render, _subject
from test_train import tiny  # noqa: F401  (fixture)


def test_rim_loss_is_opacity_times_the_squared_mean_offset():
    n = 5
    g = torch.Generator().manual_seed(3)
    op = torch.rand(n, generator=g) * 0.9 + 0.1
    mean_off = torch.randn(n, generator=g)
    extra = torch.stack([torch.zeros(n), op * mean_off, torch.zeros(n)], 1)
    out = RenderOutput(torch.zeros(n, 3), torch.zeros(n), op, 0, extra)
    w = torch.rand(n, generator=g)
    assert torch.allclose(ft._rim_loss(out, w), torch.mean(w * op * mean_off ** 2), rtol=1e-5)
    assert torch.allclose(ft._rim_loss(out, w, 2), torch.mean((w * op * mean_off ** 2)[2:]), rtol=1e-5)


def _offsets(pf, subj):
    """(mean |offset| of each masked input ray's mean depth from its point nearest the
    head's centre, canonical units), over the rays weighted by their opacity."""
    out, b = _input_render(pf, subj)
    off = out.extra[:, 1].abs()  # opacity * |mean offset|
    return float((b.alpha * off).sum() / (b.alpha * out.opacity).sum())


def test_finetune_with_rim_puts_uncovered_surfaces_near_the_head_centre(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    free = _offsets(_fit(latent_prior, subj, 2, rim=0.0), subj)
    anchored = _offsets(_fit(latent_prior, subj, 2, rim=30.0), subj)
    assert anchored < 0.8 * free, (anchored, free)


def test_rim_uses_the_code_stage_transparency(latent_prior, tiny, monkeypatch):  # noqa: F811
    subj = _subject(tiny)
    seen = []
    real = ft._transparency

    def spy(*a, **kw):
        t = real(*a, **kw)
        seen.append(t)
        return t

    monkeypatch.setattr(ft, "_transparency", spy)
    model = PortraitModel.load(latent_prior)
    model.cfg.finetune.rim = 1.0
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, progress=False)
    assert len(seen) == 1 and float(seen[0].min()) >= 0 and float(seen[0].max()) <= 1
    seen.clear()
    ft.finetune(subj, init=model, steps=2, code_steps=1, rays_per_step=64, views=[0, 1], progress=False)
    assert not seen  # multi-view fits have depth from their views


def test_rim_must_be_a_weight(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    model = PortraitModel.load(latent_prior)
    for bad in (-1.0, float("nan")):
        model.cfg.finetune.rim = bad
        with pytest.raises(ValueError, match="finetune.rim"):
            ft.finetune(subj, init=model, steps=1, progress=False)
