"""The Python API.

    import pnerf_fast
    portrait = pnerf_fast.finetune("me.jpg", seconds=30)        # or a subject folder
    out = portrait.render(camera)                               # rgb, depth, opacity
    portrait.save("me.pt"); portrait = pnerf_fast.load("me.pt")
"""
from __future__ import annotations

from .train.finetune import finetune
from .train.model import PortraitField, PortraitModel


def load(path) -> PortraitField:
    """Load a finetuned portrait written by PortraitField.save / `pnerf finetune`."""
    return PortraitField.load(path)


def load_prior(path=None) -> PortraitModel:
    """Load a pretrained prior: a path, a shipped prior's name ("latent", the default, or
    "meta", the paper's meta-learned initialisation), or None (the default)."""
    from .train.finetune import prior_path

    return PortraitModel.load(prior_path(path))


__all__ = ["finetune", "load", "load_prior", "PortraitField", "PortraitModel"]
