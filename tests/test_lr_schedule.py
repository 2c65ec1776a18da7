"""finetune.lr_final: stage 2's learning rates decay exponentially to a fraction of their
start, so the last steps refine instead of jumping about the input view's optimum."""
import pytest

from pnerf_fast.train import finetune as ft
from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_spread import _subject
from test_train import tiny  # noqa: F401  (fixture)


def _stage2_lrs(monkeypatch, model, subj, steps):
    seen = []
    real = ft.make_optimizer

    def spy(*a, **kw):
        opt = real(*a, **kw)
        step = opt.step

        def recorded(*sa, **skw):
            seen.append([g["lr"] for g in opt.param_groups])
            return step(*sa, **skw)

        opt.step = recorded
        return opt

    monkeypatch.setattr(ft, "make_optimizer", spy)
    ft.finetune(subj, init=model, steps=steps, code_steps=1, rays_per_step=64, progress=False)
    return seen


def test_stage2_lr_decays_to_lr_final(latent_prior, tiny, monkeypatch):  # noqa: F811
    subj = _subject(tiny)
    model = PortraitModel.load(latent_prior)
    const = _stage2_lrs(monkeypatch, model, subj, 4)
    assert len(const) == 4 and all(r == const[0] for r in const)  # the default (1) keeps them
    model.cfg.finetune.lr_final = 0.01
    lrs = _stage2_lrs(monkeypatch, model, subj, 4)
    assert lrs[0] == pytest.approx(const[0])
    for k, r in enumerate(lrs):
        assert r == pytest.approx([b * 0.01 ** (k / 4) for b in const[0]])


def test_lr_final_must_be_a_fraction(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    model = PortraitModel.load(latent_prior)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        model.cfg.finetune.lr_final = bad
        with pytest.raises(ValueError, match="finetune.lr_final"):
            ft.finetune(subj, init=model, steps=1, progress=False)
