"""Refit a latent prior's training codes from each subject's frontal view alone.

An auto-decoder prior (pretrain method 'latent') learns every training subject's code
from all of its views; a new subject's code is fitted to one view. ``refit_codes``
closes that mismatch before training on with ``latent.front_rays`` (the codes then keep
learning from the frontal view only): every training code is replaced by what the
finetune's own code stage (``finetune(..., steps=0)``: from the codes' mean, with its
pull, on the mask's covered grid) finds from that subject's frontal view, with the
shared weights untouched.
"""
from __future__ import annotations

import copy

import torch

from ..data.format import load_dataset
from .finetune import finetune
from .model import PortraitModel


def refit_codes(model: PortraitModel, data_root, split: str = "train", code_steps: int | None = None,
                progress: bool = True, seed: int = 0, extend: bool = False) -> torch.Tensor:
    """-> the refitted codes [n, latent_dim] of ``split``'s subjects (in the order that
    pretraining gives them codes), each fitted to its frontal view from a fresh copy of
    ``model``; ``model`` itself is not changed. With ``extend`` the light stage may list
    more subjects than the prior has codes (the same light stage with subjects added, as
    ``pnerf lightstage`` makes with a larger --subjects and the same seed): the first ones
    keep the prior's codes and only the added ones are fitted."""
    from tqdm import tqdm

    if not model.field.latent_dim or model.codes is None:
        raise ValueError("refit_codes: the prior has no training codes (pretrain it with method 'latent')")
    ds = load_dataset(data_root)
    names = ds.subjects(split)
    have = model.codes.shape[0]
    if len(names) < have if extend else len(names) != have:
        raise ValueError(f"refit_codes: {data_root} lists {len(names)} '{split}' subjects, the prior holds "
                         f"{have} codes: it was not trained on them")
    keep = have if extend else 0
    new = torch.empty(len(names), model.codes.shape[1], dtype=model.codes.dtype, device=model.codes.device)
    new[:keep] = model.codes[:keep]
    for k in tqdm(range(keep, len(names)), desc="refit codes", unit="subject", disable=not progress):
        pf = finetune(ds.subject(names[k]), init=copy.deepcopy(model), steps=0, code_steps=code_steps, seed=seed,
                      progress=False, device=model.codes.device)
        new[k] = pf.model.field.latent.detach()
    return new


def with_codes(model: PortraitModel, codes: torch.Tensor) -> PortraitModel:
    """A copy of ``model`` with these training codes, and their mean as its own code."""
    out = copy.deepcopy(model)
    out.codes = codes.detach().clone()
    with torch.no_grad():
        out.field.latent.copy_(out.codes.mean(0))
    return out
