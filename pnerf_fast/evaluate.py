"""The evaluation protocol: for each held-out subject, finetune the prior on the frontal
view only and score every other view against ground truth.

Metrics are computed on the whole image over a white background (psnr, ssim, lpips),
and on the foreground only (psnr_fg, ssim_fg: averaged over pixels whose ground-truth
alpha > 0.5). Whole-image numbers on a constant background are inflated by the easy
background pixels; report both.

Per subject the report also holds:
- ``input``: the input (frontal) view re-rendered: does the model reproduce its input?
- ``by_angle``: the novel views in bands of their angle from the input camera
  (ANGLE_BANDS: 0-20, 20-40 and beyond 40 degrees), each with the same metrics;
- ``oracle`` (``oracle_seconds``): the same field fitted from a random initialisation to
  ALL views of the subject, with a grid that holds their visual hull (no clipping),
  scored on the same novel views: what the field can hold (``oracle_start="prior"``:
  the prior finetuned the same way but on all views, i.e. what one view costs it).
  ``oracle_gap_db`` is its PSNR minus the single-view PSNR.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ._device import resolve_device
from .data.format import Subject, load_dataset
from .train.finetune import finetune
from .train.model import PortraitField, PortraitModel

ANGLE_BANDS = ((0.0, 20.0), (20.0, 40.0), (40.0, 180.0))
BAND_NAMES = ("0-20", "20-40", "40+")
METRIC_KEYS = ("psnr", "ssim", "lpips", "psnr_fg", "ssim_fg")
#: metrics.silhouette_scores, for subjects with masks: how much of the error is the outline
SILHOUETTE_KEYS = ("silhouette_iou", "silhouette_err_share", "psnr_silhouettes_agree")


def view_angles(subject: Subject, views: list[int] | None = None) -> list[float]:
    """Angle in degrees between each view's optical axis and the input camera's."""
    views = views if views is not None else subject.query_indices()
    return camera_angles(subject.cameras[subject.frontal_index], [subject.cameras[v] for v in views])


def camera_angles(reference, cameras) -> list[float]:
    """Angle in degrees between each of ``cameras``' optical axes and ``reference``'s."""
    fwd = lambda c: -np.asarray(c.c2w, dtype=np.float64)[:3, 2]  # noqa: E731  OpenGL: the camera looks along -z
    f0 = fwd(reference)
    out = []
    for cam in cameras:
        f = fwd(cam)
        c = float(np.dot(f, f0) / (np.linalg.norm(f) * np.linalg.norm(f0)))
        out.append(float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))))
    return out


def band_of(angle: float) -> str:
    for name, (lo, hi) in zip(BAND_NAMES, ANGLE_BANDS):
        if lo <= angle < hi:
            return name
    return BAND_NAMES[-1]


def _finite_mean(xs) -> float:
    """The mean of the finite values of ``xs`` (nan when there are none)."""
    xs = [float(x) for x in xs if np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def split_by_angle(per_view: dict, angles: list[float]) -> dict:
    """{band: {metric: mean over that band's views, "n_views": k}} for the bands that
    have views; ``per_view`` is evaluate_views' per-view table."""
    out = {}
    for name in BAND_NAMES:
        idx = [i for i, a in enumerate(angles) if band_of(a) == name]
        if idx:
            # (a view whose agreeing pixels are exact has psnr_silhouettes_agree inf: left out)
            out[name] = {k: _finite_mean([v[i] for i in idx]) for k, v in per_view.items()}
            out[name]["n_views"] = len(idx)
    return out


@torch.no_grad()
def score_subject(portrait: PortraitField, subject: Subject, views: list[int] | None = None, bg: float = 1.0,
                  lpips: bool = True, progress=None) -> dict:
    """Metrics of ``views`` (default: the novel views), with ``by_angle`` bands."""
    from .metrics import evaluate_views, silhouette_scores

    views = views if views is not None else subject.query_indices()
    if not views:
        raise ValueError(f"subject {subject.name}: no views to score (it has only its frontal frame)")
    targets = subject.composite(bg)
    preds, gts, masks = [], [], []
    sil = {k: [] for k in SILHOUETTE_KEYS} if subject.masks is not None else None
    for v in views:
        out = portrait.render(subject.cameras[v])
        preds.append(out["rgb"].cpu().numpy())
        gts.append(targets[v])
        masks.append(subject.masks[v] > 0.5 if subject.masks is not None else None)
        if sil is not None:
            for k, x in silhouette_scores(preds[-1], gts[-1], out["opacity"].cpu().numpy(), subject.masks[v]).items():
                sil[k].append(x)
        if progress is not None:
            progress.update(1)
    m = evaluate_views(preds, gts, masks=None if masks[0] is None else masks, lpips=lpips, device=portrait.device)
    if sil is not None:
        m["per_view"].update(sil)
        m.update({k: _finite_mean(v) for k, v in sil.items()})
    m["views"] = list(views)
    m["angles"] = view_angles(subject, views)
    m["by_angle"] = split_by_angle(m["per_view"], m["angles"])
    return m


#: fit_oracle's ``train``: what an all-view fit from a latent prior may change
ORACLE_TRAIN = ("all", "code", "code+volume")


def fit_oracle(subject: Subject, like: PortraitModel, seconds: float | None = None, seed: int = 0,
               progress: bool = False, lr=None, rays_per_step: int = 512, grid_every: int = 32,
               start: str = "scratch", steps: int | None = None, device="auto", train: str = "all") -> PortraitField:
    """The multi-view oracle: the field fitted to ALL views of ``subject`` for
    ``seconds`` (or exactly ``steps`` steps), in ``like``'s coordinates, on a grid that holds the subject's all-view
    visual hull (no clipping), then scored on the same novel views as the single-view
    result: what the field can hold.

    ``start="scratch"`` (the default): ``like``'s field config without a code, from a
    random initialisation, fitted with Adam at ``lr`` (default 3e-2 grid / 3e-3 MLP) on
    ``rays_per_step`` rays. The preset sweep's fastest setting to 24 dB (1e-1 / 1e-2,
    benchmarks/README.md) went astray on one test subject (subject_077: 18.0 dB after 1,000
    steps at seed 0, 17.3 at seed 1, against 29.5 at 3e-2 / 3e-3) and ended lower on the
    others too (1,000 steps: 31.8 -> 33.0 dB on subject_074, 25.4 -> 26.0 on subject_072);
    1e-2 / 1e-3 on 2,048 rays bought only 9-17 dB in a minute.
    ``start="prior"``: ``like`` (a prior, left untouched) finetuned exactly as from one
    photo (code first, then all weights), but on all views: the gap is then what one view
    costs this prior. ``device``: where it is fitted (see finetune).

    ``train`` (with ``start="prior"`` and ``steps``) limits what the all-view fit may change,
    to show what a latent prior can represent: ``"all"`` (the default) every weight;
    ``"code"`` the subject's code alone, ``steps`` code steps on ``rays_per_step`` rays with
    no pull towards the training codes (the best head the prior's code can describe);
    ``"code+volume"`` the code for half the steps, then the code and the code's feature
    volume (field ``latent_volume_res``) for the rest, every other weight frozen."""
    import copy
    import time

    from tqdm import tqdm

    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"fit_oracle: argument 'steps' must be >= 1, got {steps}")
        seconds = None
    elif seconds is None or not (seconds > 0 and np.isfinite(seconds)):
        raise ValueError(f"fit_oracle: argument 'seconds' must be a finite number > 0, got {seconds}")
    if start not in ("prior", "scratch"):
        raise ValueError(f"fit_oracle: argument 'start' must be 'prior' or 'scratch', got {start!r}")
    if train not in ORACLE_TRAIN:
        raise ValueError(f"fit_oracle: argument 'train' must be one of {', '.join(ORACLE_TRAIN)}, got {train!r}")
    if train != "all":
        if start != "prior" or steps is None:
            raise ValueError(f"fit_oracle: argument 'train' {train!r} needs start='prior' and a number of steps")
        if not getattr(like.field, "latent_dim", 0):
            raise ValueError(f"fit_oracle: argument 'train' {train!r} needs a latent prior (a field with a code)")
        if train == "code+volume" and not like.field.volume_params():
            raise ValueError("fit_oracle: argument 'train' 'code+volume' needs a prior whose code decodes to a "
                             "feature volume (field latent_volume_res)")
    from .train.config import GroupLR
    from .train.data import SubjectRays
    from .train.hull import dilate_cells, subject_hull
    from .train.model import _field_cfg_dict, build_field
    from .train.optim import frozen
    from .train.pretrain import make_optimizer, ray_loss

    dev = resolve_device(device)
    views = list(range(subject.num_views))
    if start == "prior":
        model = copy.deepcopy(like)
        # whatever the prior's own finetune does, the whole subject is in the grid: finetune
        # covers it with the visual hull of the views it fits (all of them), and no opacity
        # penalty on the cells that adds (they are the subject's)
        model.cfg.finetune.cover, model.cfg.finetune.empty_reg = True, 0.0
        kw, fixed = {"seconds": seconds, "steps": steps}, []
        if train != "all":
            fc = model.cfg.finetune
            fc.code_reg, fc.code_rays = 0.0, int(rays_per_step)
            n_code = steps if train == "code" else (steps + 1) // 2
            kw = {"steps": steps - n_code, "code_steps": n_code}
            keep = {id(model.field.latent)}
            if train == "code+volume":
                fc.freeze_volume = False
                keep |= {id(p) for p in model.field.volume_params()}
            fixed = [p for p in model.field.parameters() if id(p) not in keep]
        with frozen(fixed):
            pf = finetune(subject, init=model, views=views, seed=seed, progress=progress, device=dev, **kw)
        # the copy finetune made took the frozen flags: give it the prior's
        for p, q in zip(model.field.parameters(), pf.model.field.parameters()):
            q.requires_grad_(p.requires_grad)
        pf.info["start"], pf.info["train"] = "prior", train
        return pf
    torch.manual_seed(seed)
    fcfg = _field_cfg_dict(like.field)
    fcfg["latent_dim"] = 0  # the same field without a code (nor the code's feature volume)
    fcfg["latent_volume_res"] = 0
    cfg = copy.deepcopy(like.cfg)
    cfg.field = "fast"
    model = PortraitModel(cfg, like.mean_face, field=build_field(fcfg)).to(dev)
    sr = SubjectRays(subject, like.mean_face, like.cfg.coordinates, device=dev)
    # The subject's own visual hull from all its views, dilated: it contains the whole
    # subject (no clipping), and keeps the first steps cheap (a full box of empty cells
    # made 60 s buy ~100 steps and 9-12 dB).
    model.grid.allowed.fill_(1)
    model.grid.fill_(True)
    if sr.has_mask:
        model.grid.restrict_(dilate_cells(model.grid, subject_hull(model.grid, sr), 2))
    opt = make_optimizer(model.field, "adam", lr or GroupLR(3e-2, 3e-3))
    gen = torch.Generator(device=dev).manual_seed(seed)
    model.field.train()
    t0 = time.perf_counter()
    step = 0
    bar = tqdm(desc=f"oracle {subject.name}", unit="step", disable=not progress)
    while (step < steps) if steps is not None else (time.perf_counter() - t0 < seconds):
        loss = ray_loss(model, model.field, sr, views, rays_per_step, gen, model.cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % grid_every == 0:
            model.grid.update(model.density_fn(), fraction=1.0, generator=gen)
        bar.update(1)
    bar.close()
    model.field.eval()
    return PortraitField(model, sr.transform, sr.cameras[sr.frontal_index], 1.0,
                         {"steps": step, "seconds": time.perf_counter() - t0, "subject": subject.name,
                          "start": "scratch"})


def evaluate_prior(data_root, init, split: str = "test", steps: int | None = None, seconds: float | None = None,
                   max_subjects: int | None = None, lpips: bool = True, progress: bool = True,
                   seed: int = 0, oracle_seconds: float | None = None, finetune_kw: dict | None = None,
                   on_subject=None, oracle_start: str = "scratch", device="auto") -> dict:
    """Finetune ``init`` on each held-out subject's frontal view; score its input view
    and its other views (overall and by angle band); with ``oracle_seconds``, also fit
    and score the multi-view oracle. ``on_subject(subject, portrait, metrics)`` is called
    for each (e.g. to save pictures). ``device`` ("auto" | "cpu" | "cuda" | "cuda:N"):
    where the finetunes, oracles and renders run. -> {"subjects": [...], "mean": {...}}."""
    from tqdm import tqdm

    dev = resolve_device(device)

    ds = load_dataset(data_root)
    names = ds.subjects(split)[: max_subjects or None]
    if not names:
        raise ValueError(f"{data_root}: split '{split}' lists no subjects")
    results = []
    for name in tqdm(names, desc=f"eval {Path(str(init)).name}", unit="subject", disable=not progress):
        subj = ds.subject(name)
        if not subj.query_indices():
            raise ValueError(f"{data_root}: subject {name} has only its frontal frame; evaluation needs other views")
        model = PortraitModel.load(init, dev)  # a fresh copy of the prior per subject
        t0 = time.perf_counter()
        pf = finetune(subj, init=model, steps=steps, seconds=seconds, progress=False, seed=seed, device=dev,
                      **(finetune_kw or {}))
        ft_s = time.perf_counter() - t0
        m = score_subject(pf, subj, lpips=lpips)
        inp = score_subject(pf, subj, views=[subj.frontal_index], lpips=False)
        m["input"] = {k: inp[k] for k in ("psnr", "ssim", "psnr_fg", "ssim_fg") if k in inp}
        m.update(subject=name, finetune_s=ft_s, finetune_steps=pf.info["steps"])
        if oracle_seconds:
            orc = fit_oracle(subj, PortraitModel.load(init, dev), oracle_seconds, seed=seed, start=oracle_start,
                             device=dev)
            om = score_subject(orc, subj, lpips=lpips)
            m["oracle"] = {k: om[k] for k in METRIC_KEYS + SILHOUETTE_KEYS if k in om}
            m["oracle"]["steps"] = orc.info["steps"]
            m["oracle_gap_db"] = m["oracle"]["psnr"] - m["psnr"]
        if on_subject is not None:
            on_subject(subj, pf, m)
        results.append(m)
    return {"init": str(init), "split": split, "subjects": results, "mean": summarize(results)}


def summarize(results: list[dict]) -> dict:
    """Means over subjects of every reported number (bands: over the subjects that have them)."""
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    keys = [k for k in METRIC_KEYS + SILHOUETTE_KEYS if k in results[0]]
    out = {k: mean([r[k] for r in results]) for k in keys}
    out["finetune_s"] = mean([r["finetune_s"] for r in results])
    out["input"] = {k: mean([r["input"][k] for r in results]) for k in results[0]["input"]}
    out["by_angle"] = {}
    for band in BAND_NAMES:
        rows = [r["by_angle"][band] for r in results if band in r.get("by_angle", {})]
        if rows:
            out["by_angle"][band] = {k: mean([row[k] for row in rows]) for k in rows[0] if k != "n_views"}
            out["by_angle"][band]["n_views"] = int(sum(row["n_views"] for row in rows))
    if all("oracle" in r for r in results):
        out["oracle"] = {k: mean([r["oracle"][k] for r in results]) for k in results[0]["oracle"] if k != "steps"}
        out["oracle_gap_db"] = mean([r["oracle_gap_db"] for r in results])
    return out


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
