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
    """Load a pretrained prior (None: the one shipped with the package)."""
    from .train.finetune import default_prior_path

    return PortraitModel.load(path or default_prior_path())


__all__ = ["finetune", "load", "load_prior", "PortraitField", "PortraitModel"]
