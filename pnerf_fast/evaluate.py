"""The evaluation protocol: for each held-out subject, finetune the prior on the frontal
view only and score every other view against ground truth.

Metrics are computed on the whole image over a white background (psnr, ssim, lpips),
and on the foreground only (psnr_fg, ssim_fg: averaged over pixels whose ground-truth
alpha > 0.5). Whole-image numbers on a constant background are inflated by the easy
background pixels; report both.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .data.format import Subject, load_dataset
from .train.finetune import finetune
from .train.model import PortraitField, PortraitModel


@torch.no_grad()
def score_subject(portrait: PortraitField, subject: Subject, views: list[int] | None = None, bg: float = 1.0,
                  lpips: bool = True, progress=None) -> dict:
    from .metrics import evaluate_views

    views = views if views is not None else subject.query_indices()
    targets = subject.composite(bg)
    preds, gts, masks = [], [], []
    for v in views:
        out = portrait.render(subject.cameras[v])
        preds.append(out["rgb"].numpy())
        gts.append(targets[v])
        masks.append(subject.masks[v] > 0.5 if subject.masks is not None else None)
        if progress is not None:
            progress.update(1)
    m = evaluate_views(preds, gts, masks=None if masks[0] is None else masks, lpips=lpips)
    m["views"] = list(views)
    return m


def evaluate_prior(data_root, init, split: str = "test", steps: int | None = None, seconds: float | None = None,
                   max_subjects: int | None = None, lpips: bool = True, progress: bool = True,
                   seed: int = 0) -> dict:
    """Finetune ``init`` on each held-out subject's frontal view; score its other views."""
    from tqdm import tqdm

    ds = load_dataset(data_root)
    names = ds.subjects(split)[: max_subjects or None]
    if not names:
        raise ValueError(f"{data_root}: split '{split}' lists no subjects")
    prior_state = None
    results = []
    for name in tqdm(names, desc=f"eval {Path(str(init)).name}", unit="subject", disable=not progress):
        subj = ds.subject(name)
        model = PortraitModel.load(init)  # a fresh copy of the prior per subject
        t0 = time.perf_counter()
        pf = finetune(subj, init=model, steps=steps, seconds=seconds, progress=False, seed=seed)
        ft_s = time.perf_counter() - t0
        m = score_subject(pf, subj, lpips=lpips)
        m.update(subject=name, finetune_s=ft_s, finetune_steps=pf.info["steps"])
        results.append(m)
    keys = [k for k in ("psnr", "ssim", "lpips", "psnr_fg", "ssim_fg") if k in results[0]]
    summary = {k: float(np.mean([r[k] for r in results])) for k in keys}
    summary["finetune_s"] = float(np.mean([r["finetune_s"] for r in results]))
    return {"init": str(init), "split": split, "subjects": results, "mean": summary}


def write_json(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable))
    tmp.replace(path)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
