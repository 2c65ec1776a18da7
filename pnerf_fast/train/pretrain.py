"""Pretraining of the portrait prior over many subjects.

meta (the paper, first-order): subjects are visited one after another. For subject m:
    θ_m <- θ_p
    N_s steps on D_s (the frontal view) with learning rate α:   θ_m <- θ_m - α ∇L_Ds(θ_m)
    N_q steps on D_q (the other views) with learning rate β; each step computes one
    gradient g = ∇L_Dq(θ_m) and applies it to both:             θ_m <- θ_m - β g
                                                                θ_p <- θ_p - β g
    θ_p carries on to subject m+1. Epochs loop over the subjects in a seeded order.
    With optimizer "adam", the inner and query steps use a fresh Adam per subject and the
    query step's update (not the raw gradient) is added to θ_p as well.

joint (the paper's Eq. 5): one model fitted to all subjects' views at once,
    minimising Σ_m L_Ds + L_Dq with random subjects per step.

latent (an auto-decoder, Preface / Cafca): the field is conditioned on a code per
    subject (field latent_dim > 0). Shared weights and the codes are fitted jointly to
    every view of every training subject with Adam (the codes with SparseAdam), under
    a small L2 penalty on the codes, with exponentially decaying learning rates. The
    prior keeps the codes; finetuning starts from their mean and fits the code first.

random: no pretraining (the initialisation itself, with the mean face).

Occupancy grid: ONE grid in canonical space, shared by all subjects, updated from θ_p
(EMA of θ_p's density at jittered cell points) every ``grid.update_every`` subject
visits (meta) or 16 x that many steps (joint). One shared grid is what canonical
space is for: every face lands in the same region, so their union is small; a grid per
subject would cost 64^3 evaluations per visit and give finetuning nothing to start from.
For latent priors the grid is the (dilated) union of the training subjects' visual
hulls and is not updated: no single code's density would speak for all subjects.
Learning rates come per parameter group (hash-grid tables vs MLPs).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.format import load_dataset
from ..face.procrustes import generalized_procrustes
from ..render.renderer import render_rays
from .config import GroupLR, TrainConfig
from .data import SubjectRays
from .model import PortraitModel, clone_field, load_checkpoint, save_atomic


def mse_to_psnr(mse: float) -> float:
    return -10.0 * math.log10(max(mse, 1e-10))


def _bg_mode(cfg: TrainConfig):
    return (True, 1.0) if cfg.background == "random" else (False, 1.0 if cfg.background == "white" else 0.0)


def ray_loss(model: PortraitModel, field, sr: SubjectRays, views, n, gen, cfg: TrainConfig):
    random_bg, bg = _bg_mode(cfg)
    b = sr.batch(views, n, gen, random_bg=random_bg, bg=bg)
    jitter = torch.rand(n, generator=gen)
    out = render_rays(field, model.grid, b.rays_o, b.rays_d, sr.warp_table, None, model.render_cfg, b.bg, jitter)
    return torch.mean((out.rgb - b.target) ** 2)


def _named_groups(field) -> dict[str, str]:
    """parameter name -> group ('grid' | 'mlp')."""
    ids = {}
    for g, params in field.param_groups().items():
        for p in params:
            ids[id(p)] = g
    return {name: ids.get(id(p), "mlp") for name, p in field.named_parameters()}


def make_optimizer(field, kind: str, lr: GroupLR):
    groups = [{"params": ps, "lr": getattr(lr, g), "name": g} for g, ps in field.param_groups().items() if ps]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr.mlp)
    return torch.optim.Adam(groups, lr=lr.mlp, betas=(0.9, 0.99), eps=1e-15)


def set_lr(opt, lr: GroupLR):
    for g in opt.param_groups:
        g["lr"] = getattr(lr, g["name"])


@torch.no_grad()
def copy_params_(dst, src):
    for a, b in zip(dst.parameters(), src.parameters()):
        a.copy_(b)


@torch.no_grad()
def sgd_step_both_(fast, prior, beta: GroupLR, names: dict[str, str]):
    """θ_m <- θ_m - β g and θ_p <- θ_p - β g with g = the gradient on θ_m."""
    for (name, pf), pp in zip(fast.named_parameters(), prior.parameters()):
        if pf.grad is None:
            continue
        lr = getattr(beta, names[name])
        pf.add_(pf.grad, alpha=-lr)
        pp.add_(pf.grad, alpha=-lr)


def meta_subject_step(model: PortraitModel, fast, sr: SubjectRays, cfg: TrainConfig, gen: torch.Generator,
                      names: dict[str, str]) -> dict:
    """One subject of the meta loop. Returns support / query losses."""
    mc = cfg.meta
    prior = model.field
    copy_params_(fast, prior)
    fast.train()
    n = cfg.rays_per_step
    s_losses, q_losses = [], []
    # Support: N_s steps on D_s with α (SGD, or a fresh Adam per subject).
    opt = make_optimizer(fast, mc.optimizer, mc.alpha)
    for _ in range(mc.n_support):
        opt.zero_grad(set_to_none=True)
        loss = ray_loss(model, fast, sr, sr.support, n, gen, cfg)
        loss.backward()
        opt.step()
        s_losses.append(float(loss.detach()))
    # Query: N_q steps on D_q with β, each applied to θ_m and θ_p.
    if mc.optimizer == "adam":
        set_lr(opt, mc.beta)
    for _ in range(mc.n_query):
        opt.zero_grad(set_to_none=True)
        loss = ray_loss(model, fast, sr, sr.query, n, gen, cfg)
        loss.backward()
        if mc.optimizer == "sgd":
            sgd_step_both_(fast, prior, mc.beta, names)
        else:  # Adam: θ_p receives the same update (not the raw gradient) as θ_m
            before = [p.detach().clone() for p in fast.parameters()]
            opt.step()
            with torch.no_grad():
                for pf, pb, pp in zip(fast.parameters(), before, prior.parameters()):
                    pp.add_(pf - pb)
        q_losses.append(float(loss.detach()))
    return {"support": float(np.mean(s_losses)) if s_losses else float("nan"),
            "query": float(np.mean(q_losses)) if q_losses else float("nan")}


@dataclass
class PretrainResult:
    path: Path
    seconds: float
    visits: int
    last_query_psnr: float | None


def load_training_subjects(data_root, cfg: TrainConfig, split: str = "train", progress: bool = False):
    ds = load_dataset(data_root)
    names = ds.subjects(split)
    if not names:
        raise ValueError(f"{data_root}: split '{split}' lists no subjects")
    subjects = [ds.subject(n) for n in names]
    mean_face = generalized_procrustes(np.stack([s.landmarks for s in subjects]))
    rays = [SubjectRays(s, mean_face, cfg.coordinates, scale=cfg.image_scale) for s in subjects]
    return rays, mean_face


def pretrain(data_root, out_path, cfg: TrainConfig, resume: bool = True, progress: bool = True,
             max_seconds: float | None = None, log=print, max_visits: int | None = None,
             init=None) -> PretrainResult:
    """Pretrain a prior (cfg.method) on the train split of ``data_root`` and write it to
    ``out_path``, checkpointing every ``cfg.checkpoint_every_s`` seconds (atomically)
    so a killed run resumes where it stopped, losing at most one interval."""
    from tqdm import tqdm

    out_path = Path(out_path)
    torch.manual_seed(cfg.seed)
    rays, mean_face = load_training_subjects(data_root, cfg)
    model = PortraitModel(cfg, mean_face)
    if init is not None:
        # Continue from an earlier prior: its weights (and grid); this run's mean face.
        src = PortraitModel.load(init)
        try:
            # A latent field may start from a plain one: its code layers start fresh.
            missing, unexpected = model.field.load_state_dict(src.field.state_dict(), strict=False)
            fresh = {"latent", "density_z.weight", "color_z.weight"}
            if unexpected or set(missing) - fresh:
                raise RuntimeError(f"missing keys {sorted(set(missing) - fresh)}, unexpected keys {sorted(unexpected)}")
        except RuntimeError as e:
            raise ValueError(f"{init}: its field does not match this config's field: {e}") from None
        log(f"starting from {init}")
        if cfg.method != "latent":
            model.grid.load_state_dict(src.grid.state_dict())
    if (init is None or cfg.method == "latent") and cfg.grid.hull and all(r.has_mask for r in rays):
        from .hull import union_hull

        model.grid.restrict_(union_hull(model.grid, rays, dilate=cfg.grid.hull_dilate,
                                        min_fraction=cfg.grid.hull_min_fraction))
        log(f"occupancy grid restricted to the training subjects' visual hull: {model.grid.occupancy:.1%} of cells")
    state = {"visits": 0, "epoch": 0, "pos": 0, "order": None, "seconds": 0.0, "done": False}
    gen = torch.Generator().manual_seed(cfg.seed)
    opt_state = code_opt_state = None
    codes = None
    if cfg.method == "latent":
        if not model.field.latent_dim:
            raise ValueError("config: method 'latent' needs a field with latent_dim > 0 (for example field: fast_latent)")
        codes = torch.nn.Embedding(len(rays), model.field.latent_dim, sparse=True)
        with torch.no_grad():
            codes.weight.normal_(0.0, cfg.latent.code_init_std, generator=gen)
            if init is not None and src.codes is not None:
                # Continuing a latent prior on the same subjects: keep their codes.
                if tuple(src.codes.shape) != tuple(codes.weight.shape):
                    raise ValueError(f"{init}: it holds {src.codes.shape[0]} codes of {src.codes.shape[1]} numbers; "
                                     f"this run trains {codes.weight.shape[0]} subjects with latent_dim "
                                     f"{codes.weight.shape[1]} (pass a prior trained on the same train split)")
                codes.weight.copy_(src.codes)
                log(f"starting from {init}'s {len(rays)} subject codes")
    resume_path = out_path.with_suffix(out_path.suffix + ".resume")
    if resume and resume_path.exists():
        st = load_checkpoint(resume_path)
        if st.get("train_config") != cfg.to_dict():
            raise ValueError(f"{resume_path}: was written with another config; delete it or pass --no-resume")
        model = PortraitModel.from_state(st, str(resume_path))
        state = st["extra"]["progress"]
        gen.set_state(st["extra"]["rng"])
        opt_state = st["extra"].get("optimizer")
        if codes is not None:
            with torch.no_grad():
                codes.weight.copy_(st["extra"]["codes"])
            code_opt_state = st["extra"].get("code_optimizer")
        log(f"resuming from {resume_path}: {state['visits']} visits, {state['seconds']:.0f} s done")
    if state.get("done"):
        model.save(out_path, extra={"progress": state, "method": cfg.method})
        return PretrainResult(out_path, state["seconds"], state["visits"], state.get("psnr"))

    t_start = time.perf_counter() - state["seconds"]
    last_ckpt = time.perf_counter()

    def save_resume(opt=None, copt=None):
        state["seconds"] = time.perf_counter() - t_start
        extra = {"progress": state, "rng": gen.get_state(), "optimizer": None if opt is None else opt.state_dict()}
        if codes is not None:
            extra["codes"] = codes.weight.detach().clone()
            extra["code_optimizer"] = None if copt is None else copt.state_dict()
        save_atomic(model.state(extra=extra), resume_path)

    def grid_update(field):
        g = cfg.grid
        k = state["visits"] // max(g.update_every, 1)
        if k > g.warmup_updates:
            model.grid.update(model.density_fn(field), fraction=1.0, generator=gen)

    def budget_hit():
        if max_visits is not None and state["visits"] >= max_visits:
            return True
        return max_seconds is not None and time.perf_counter() - t_start > max_seconds
    n_subj = len(rays)
    if cfg.method == "meta":
        fast = clone_field(model.field)
        names = _named_groups(model.field)
        total = cfg.meta.epochs * n_subj
        bar = tqdm(total=total, initial=state["visits"], desc="meta-pretrain", unit="subject", disable=not progress)
        while state["epoch"] < cfg.meta.epochs and not budget_hit():
            if state["order"] is None:
                state["order"] = torch.randperm(n_subj, generator=gen).tolist()
            while state["pos"] < n_subj and not budget_hit():
                sr = rays[state["order"][state["pos"]]]
                losses = meta_subject_step(model, fast, sr, cfg, gen, names)
                state["pos"] += 1
                state["visits"] += 1
                state["psnr"] = mse_to_psnr(losses["query"])
                if state["visits"] % cfg.grid.update_every == 0:
                    grid_update(model.field)
                bar.update(1)
                bar.set_postfix(epoch=state["epoch"], support_psnr=f"{mse_to_psnr(losses['support']):.2f}",
                                query_psnr=f"{state['psnr']:.2f}", occ=f"{model.grid.occupancy:.2f}")
                if time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
                    save_resume()
                    last_ckpt = time.perf_counter()
            if state["pos"] >= n_subj:
                state["epoch"] += 1
                state["pos"] = 0
                state["order"] = None
        bar.close()
    elif cfg.method == "joint":
        jc = cfg.joint
        opt = make_optimizer(model.field, jc.optimizer, jc.lr)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        bar = tqdm(total=jc.steps, initial=state["visits"], desc="joint-pretrain", unit="step", disable=not progress)
        model.field.train()
        while state["visits"] < jc.steps and not budget_hit():
            sr = rays[int(torch.randint(0, n_subj, (1,), generator=gen))]
            opt.zero_grad(set_to_none=True)
            loss = ray_loss(model, model.field, sr, list(range(sr.num_views)), cfg.rays_per_step, gen, cfg)
            loss.backward()
            opt.step()
            state["visits"] += 1
            state["psnr"] = mse_to_psnr(float(loss.detach()))
            if state["visits"] % (16 * cfg.grid.update_every) == 0:
                k = state["visits"] // (16 * cfg.grid.update_every)
                if k > cfg.grid.warmup_updates:
                    model.grid.update(model.density_fn(), fraction=1.0, generator=gen)
            bar.update(1)
            bar.set_postfix(psnr=f"{state['psnr']:.2f}", occ=f"{model.grid.occupancy:.2f}")
            if time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
                save_resume(opt)
                last_ckpt = time.perf_counter()
        bar.close()
    elif cfg.method == "latent":
        lc = cfg.latent
        opt = make_optimizer(model.field, "adam", lc.lr)
        copt = torch.optim.SparseAdam(list(codes.parameters()), lr=lc.lr.latent, betas=(0.9, 0.99))
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        if code_opt_state is not None:
            copt.load_state_dict(code_opt_state)
        decay = lc.lr_final ** (1.0 / lc.steps)
        bar = tqdm(total=lc.steps, initial=state["visits"], desc="latent-pretrain", unit="step", disable=not progress)
        model.field.train()
        all_views = None
        while state["visits"] < lc.steps and not budget_hit():
            i = int(torch.randint(0, n_subj, (1,), generator=gen))
            sr = rays[i]
            f = decay ** state["visits"]
            for g in opt.param_groups:
                g["lr"] = getattr(lc.lr, g["name"]) * f
            for g in copt.param_groups:
                g["lr"] = lc.lr.latent * f
            z = codes(torch.tensor([i]))[0]
            all_views = list(range(sr.num_views))
            with model.field.code(z):
                mse = ray_loss(model, model.field, sr, all_views, cfg.rays_per_step, gen, cfg)
            loss = mse + lc.code_reg * torch.mean(z * z)
            opt.zero_grad(set_to_none=True)
            copt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            copt.step()
            state["visits"] += 1
            state["psnr"] = mse_to_psnr(float(mse.detach()))
            bar.update(1)
            bar.set_postfix(psnr=f"{state['psnr']:.2f}", code=f"{float(z.detach().norm()):.2f}")
            if time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
                save_resume(opt, copt)
                last_ckpt = time.perf_counter()
        bar.close()
        with torch.no_grad():  # the prior's own code: the mean head
            model.field.latent.copy_(codes.weight.mean(0))
        model.codes = codes.weight.detach().clone()
    # random: nothing to train.
    if cfg.method == "meta":
        finished = state["epoch"] >= cfg.meta.epochs
    elif cfg.method == "joint":
        finished = state["visits"] >= cfg.joint.steps
    elif cfg.method == "latent":
        finished = state["visits"] >= cfg.latent.steps
    else:
        finished = True
    state["seconds"] = time.perf_counter() - t_start
    state["done"] = finished
    if not finished:
        # Interrupted by a budget: the resume file holds the exact training state; the
        # output is a usable snapshot of it.
        save_resume(*((opt, copt) if cfg.method == "latent" else ()))
        model.save(out_path, extra={"progress": state, "method": cfg.method})
    else:
        if cfg.method not in ("random", "latent"):
            # Final grid from the final weights (a full refresh, no EMA memory of early fog).
            model.grid.mark_from_density(model.density_fn(), threshold=None)
        model.save(out_path, extra={"progress": state, "method": cfg.method})
        if resume_path.exists():
            resume_path.unlink()
    return PretrainResult(out_path, state["seconds"], state["visits"], state.get("psnr"))
