"""The Python API.

    import pnerf_fast
    portrait = pnerf_fast.finetune("me.jpg", seconds=30)        # or a subject folder
    out = portrait.render(camera)                               # rgb, depth, opacity
    portrait.save("me.pt"); portrait = pnerf_fast.load("me.pt")

Every function takes ``device``: "auto" (the default: CUDA when torch sees a GPU and
pnerf_fast._C was compiled with CUDA, else the CPU), "cpu", "cuda" or "cuda:N".
Checkpoints hold no device: they are saved from the CPU and loaded onto the one asked for.
"""
from __future__ import annotations

from .train.finetune import finetune
from .train.model import PortraitField, PortraitModel


def load(path, device="auto") -> PortraitField:
    """Load a finetuned portrait written by PortraitField.save / `pnerf finetune` onto
    ``device`` ("auto" | "cpu" | "cuda" | "cuda:N")."""
    return PortraitField.load(path, device)


def load_prior(path=None, device="auto") -> PortraitModel:
    """Load a pretrained prior: a path, a shipped prior's name ("portrait": the portrait
    light stage's, which ``finetune`` starts photos from; "latent": the classic light
    stage's; "meta": the paper's meta-learned initialisation), or None ("latent"), onto
    ``device`` ("auto" | "cpu" | "cuda" | "cuda:N")."""
    from .train.finetune import prior_path

    return PortraitModel.load(prior_path(path), device)


__all__ = ["finetune", "load", "load_prior", "PortraitField", "PortraitModel"]
