"""Finetuning the prior on ONE frontal image, in canonical space.

Exactly as the meta inner loop adapts (the lesson of the calibration prototype in
METHOD-NOTES): the same optimizer and per-group learning rates (the prior's meta α unless
overridden), a fixed step budget or a time budget, and the prior's occupancy grid, kept
frozen by default. Frontal-view PSNR is a misleading stopping signal, so there is none.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..data.format import Subject, load_subject
from ..render.renderer import render_rays
from .config import GroupLR
from .data import SubjectRays
from .model import PortraitField, PortraitModel
from .pretrain import make_optimizer, mse_to_psnr

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def default_prior_path() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "prior_meta_fast.pt"


def as_subject(source, res: int = 128) -> Subject:
    """A Subject from a subject folder, a photo path, an image array, or a Subject."""
    if isinstance(source, Subject):
        return source
    if isinstance(source, np.ndarray):
        return _photo_subject(source, "array", res)
    p = Path(source)
    if p.is_dir():
        return load_subject(p)
    if p.suffix.lower() in IMAGE_SUFFIXES or p.is_file():
        if not p.exists():
            raise FileNotFoundError(f"photo not found: {p}")
        return _photo_subject(str(p), p.stem, res)
    raise FileNotFoundError(f"no subject folder or photo at {p}")


def _photo_subject(photo, name: str, res: int) -> Subject:
    from ..face.align import align_photo

    a = align_photo(photo, None, res=res)
    img = np.asarray(a.image, dtype=np.float32)[None]
    alpha = getattr(a, "alpha", None)
    masks = None if alpha is None else np.asarray(alpha, dtype=np.float32)[None]
    return Subject(name=name, path=str(photo) if isinstance(photo, str) else "<array>", cameras=[a.camera],
                   images=img, masks=masks, file_paths=["images/frontal.png"], frontal_index=0,
                   landmarks=np.asarray(a.landmarks_world, dtype=np.float64),
                   landmarks_2d={"images/frontal.png": np.asarray(a.landmarks_2d)}, meta={"photo": True})


def finetune(
    source,
    init=None,
    steps: int | None = None,
    seconds: float | None = None,
    lr: GroupLR | None = None,
    rays_per_step: int | None = None,
    optimizer: str | None = None,
    seed: int = 0,
    progress: bool = True,
    callback=None,
) -> PortraitField:
    """Finetune a prior on the frontal view of ``source`` (subject folder, photo path,
    image array or Subject). ``init``: a checkpoint path, a PortraitModel, or None for
    the shipped prior. Stops after ``steps`` (default: the prior's finetune.steps) or
    ``seconds``, whichever comes first when both are given.
    ``callback(step, elapsed_s, field)`` runs after every step (for learning curves);
    time spent inside it is not counted in ``elapsed_s`` nor in the ``seconds`` budget."""
    from tqdm import tqdm

    if isinstance(init, PortraitModel):
        model = init
    else:
        path = Path(init) if init is not None else default_prior_path()
        model = PortraitModel.load(path)
    if model.mean_face is None and model.cfg.coordinates == "canonical":
        raise ValueError("the init checkpoint has no mean face, which canonical coordinates need")
    fc = model.cfg.finetune
    if steps is None and seconds is None:
        steps = fc.steps
    if steps is not None and steps < 0:
        raise ValueError(f"finetune: argument 'steps' must be >= 0, got {steps}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"finetune: argument 'seconds' must be > 0, got {seconds}")
    lr = lr or fc.lr or model.cfg.meta.alpha
    opt_kind = optimizer or fc.optimizer
    n = rays_per_step or fc.rays_per_step
    subject = as_subject(source)
    sr = SubjectRays(subject, model.mean_face, model.cfg.coordinates)
    field = model.field
    field.train()
    opt = make_optimizer(field, opt_kind, lr)
    gen = torch.Generator().manual_seed(seed)
    random_bg = sr.has_mask
    bg = 1.0
    t0 = time.perf_counter()
    total = steps if steps is not None else None
    bar = tqdm(total=total, desc="finetune", unit="step", disable=not progress)
    step = 0
    psnr = float("nan")
    t_cb = 0.0  # time spent in the callback, excluded from the clock
    elapsed = lambda: time.perf_counter() - t0 - t_cb
    while True:
        if steps is not None and step >= steps:
            break
        if seconds is not None and elapsed() >= seconds:
            break
        b = sr.batch(sr.support, n, gen, random_bg=random_bg, bg=bg)
        out = render_rays(field, model.grid, b.rays_o, b.rays_d, sr.warp_table, None, model.render_cfg, b.bg,
                          torch.rand(n, generator=gen))
        loss = torch.mean((out.rgb - b.target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        psnr = mse_to_psnr(float(loss.detach()))
        if fc.update_grid and step % 16 == 0:
            model.grid.update(model.density_fn(), fraction=1.0, generator=gen)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", psnr=f"{psnr:.2f}")
        if callback is not None:
            t_in = time.perf_counter()
            e = elapsed()
            field.eval()
            callback(step, e, field)
            field.train()
            t_cb += time.perf_counter() - t_in
    bar.close()
    field.eval()
    info = {"steps": step, "seconds": elapsed(), "frontal_psnr": psnr, "subject": subject.name}
    return PortraitField(model, sr.transform, sr.cameras[sr.frontal_index], bg, info)
