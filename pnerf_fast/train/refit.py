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
                progress: bool = True, seed: int = 0, extend: bool = False, jobs: int = 1) -> torch.Tensor:
    """-> the refitted codes [n, latent_dim] of ``split``'s subjects (in the order that
    pretraining gives them codes), each fitted to its frontal view from a fresh copy of
    ``model``; ``model`` itself is not changed. With ``extend`` the light stage may list
    more subjects than the prior has codes (the same light stage with subjects added, as
    ``pnerf lightstage`` makes with a larger --subjects and the same seed): the first ones
    keep the prior's codes and only the added ones are fitted. ``jobs`` > 1 fits the subjects
    in that many worker processes of one torch thread each (CPU only; each fit is
    independent, so the codes are those of ``jobs=1`` up to float rounding)."""
    from tqdm import tqdm

    if not model.field.latent_dim or model.codes is None:
        raise ValueError("refit_codes: the prior has no training codes (pretrain it with method 'latent')")
    ds = load_dataset(data_root)
    names = ds.subjects(split)
    have = model.codes.shape[0]
    if len(names) < have if extend else len(names) != have:
        raise ValueError(f"refit_codes: {data_root} lists {len(names)} '{split}' subjects, the prior holds "
                         f"{have} codes: it was not trained on them")
    if int(jobs) < 1:
        raise ValueError(f"refit_codes: jobs must be >= 1, got {jobs}")
    if int(jobs) > 1 and model.codes.device.type != "cpu":
        raise ValueError("refit_codes: jobs > 1 runs on the CPU; move the model there or use jobs=1")
    keep = have if extend else 0
    new = torch.empty(len(names), model.codes.shape[1], dtype=model.codes.dtype, device=model.codes.device)
    new[:keep] = model.codes[:keep]
    todo = range(keep, len(names))
    bar = tqdm(total=len(todo), desc="refit codes", unit="subject", disable=not progress)
    if int(jobs) == 1 or len(todo) <= 1:
        for k in todo:
            new[k] = _fit_code(model, ds.subject(names[k]), code_steps, seed)
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(int(jobs), len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(model.state(),)) as ex:
            futs = {ex.submit(_worker_fit, str(data_root), names[k], code_steps, seed): k for k in todo}
            for fut in as_completed(futs):
                new[futs[fut]] = fut.result()
                bar.update(1)
    bar.close()
    return new


def _fit_code(model: PortraitModel, subject, code_steps, seed) -> torch.Tensor:
    pf = finetune(subject, init=model, steps=0, code_steps=code_steps, seed=seed,  # finetune fits a copy
                  progress=False, device=model.codes.device)
    return pf.model.field.latent.detach().clone()


_WORKER: dict = {}


def _worker_init(state: dict) -> None:
    torch.set_num_threads(1)
    _WORKER["model"] = PortraitModel.from_state(state, "<refit worker>", "cpu")
    _WORKER["datasets"] = {}


def _worker_fit(data_root: str, name: str, code_steps, seed) -> torch.Tensor:
    ds = _WORKER["datasets"].get(data_root)
    if ds is None:
        ds = _WORKER["datasets"][data_root] = load_dataset(data_root)
    return _fit_code(_WORKER["model"], ds.subject(name), code_steps, seed)


def with_codes(model: PortraitModel, codes: torch.Tensor) -> PortraitModel:
    """A copy of ``model`` with these training codes, and their mean as its own code."""
    out = copy.deepcopy(model)
    out.codes = codes.detach().clone()
    with torch.no_grad():
        out.field.latent.copy_(out.codes.mean(0))
    return out
