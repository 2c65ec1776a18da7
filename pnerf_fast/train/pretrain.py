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
    With latent.front_rays > 0 (frontal codes, CAVIA's split of the parameters, first
    order) each step first takes a code step on the subject's frontal view alone
    (front_rays rays, the shared weights frozen), then a shared-weight step on all views
    from that code (detached): the codes hold what one view tells, as at finetune, and
    the decoder learns to complete the head from them (scripts/refit_codes.py starts the
    codes there: configs/pretrain_latent_front.yaml).

random: no pretraining (the initialisation itself, with the mean face).

Occupancy grid: ONE grid in canonical space, shared by all subjects, updated from θ_p
(EMA of θ_p's density at jittered cell points) every ``grid.update_every`` subject
visits (meta) or 16 x that many steps (joint). One shared grid is what canonical
space is for: every face lands in the same region, so their union is small; a grid per
subject would cost 64^3 evaluations per visit and give finetuning nothing to start from.
For latent priors the grid is the (dilated) union of the training subjects' visual
hulls and is not updated: no single code's density would speak for all subjects.
Learning rates come per parameter group (hash-grid tables vs MLPs).

Meta batches (meta.batch = B > 1, and always under torch.distributed): the batched
first-order meta update. The B subjects of a batch all adapt from the same θ_p; each
one's query updates are summed into its own Δ_m, and θ_p <- θ_p + (1/B) Σ_m Δ_m. Every
subject of a batch draws its rays from its own generator, seeded from the run's
generator, so the result does not depend on which rank adapted it. B = 1 in one process
is the sequential loop above, unchanged.

Distributed (torchrun, see distributed.py and docs/DISTRIBUTED.md): every rank holds
the whole model, grid, optimizer state, codes and RNG. joint and latent are
data-parallel: every rank draws the same global batch of rays_per_step rays from the
shared generator and renders its contiguous slice; gradients (dense, the sparse code
row included) are summed with one all-reduce, so N ranks x n/N rays == 1 rank x n
rays. meta splits each batch's subjects over the ranks and all-reduces Σ Δ_m. Rank 0
alone writes the resume file and the output, atomically; the state in them does not
depend on the world size, so a run resumes at any world size.

Faults: a step whose loss or gradient is NaN or infinite is skipped with a warning (no
update); MAX_BAD_STEPS such steps in a row stop the run with NonFiniteLossError (a
ValueError: the CLI exits with code 2). Weights are checked before every save, so a
NaN never reaches a checkpoint.
"""
from __future__ import annotations

import glob
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._device import resolve_device
from ..data.format import load_dataset
from ..face.procrustes import generalized_procrustes
from ..render.rays import Rays
from ..render.renderer import render_rays
from .config import GroupLR, TrainConfig, config_from_dict
from .data import SubjectRays
from .model import PortraitModel, clone_field, load_checkpoint, save_atomic
from .optim import frozen


def mse_to_psnr(mse: float) -> float:
    if not math.isfinite(mse):
        return float("nan")
    return -10.0 * math.log10(max(mse, 1e-10))


# A run stops after this many optimisation steps in a row with a NaN or infinite loss
# (or gradient). Fewer would stop on a single unlucky batch at a high learning rate; a
# field that has gone NaN never recovers, so more would only waste time.
MAX_BAD_STEPS = 5


class NonFiniteLossError(ValueError):
    """Training stopped: the loss or its gradient was NaN or infinite in MAX_BAD_STEPS
    steps in a row (or the weights became non-finite). Nothing non-finite was saved."""


class StepGuard:
    """Counts skipped (non-finite) steps in a row; ``bad()`` warns and raises
    NonFiniteLossError at ``limit``; ``ok()`` resets the count."""

    def __init__(self, where: str, limit: int = MAX_BAD_STEPS, warn: bool = True):
        self.where, self.limit, self.warn = where, limit, warn
        self.in_a_row = 0
        self.skipped = 0

    def ok(self) -> None:
        self.in_a_row = 0

    def bad(self, step, what: str = "loss") -> None:
        self.in_a_row += 1
        self.skipped += 1
        if self.warn:
            warnings.warn(f"{self.where}: step {step}: the {what} is NaN or infinite, the step is skipped "
                          f"({self.in_a_row} in a row; the run stops at {self.limit})", RuntimeWarning, stacklevel=2)
        if self.in_a_row >= self.limit:
            raise NonFiniteLossError(
                f"{self.where}: the loss or its gradient was NaN or infinite in {self.in_a_row} steps in a row "
                f"(the last at step {step}); stopped without saving non-finite weights (lower the learning "
                f"rates, or check the data)")


def grads_finite(params, sparse=()) -> bool:
    """True when every gradient of ``params`` (dense) and ``sparse`` (sparse) is finite.
    One sum per tensor (a NaN or inf anywhere makes it non-finite; so does a sum that
    overflows, which is no usable gradient either): ~1 ms for 3M numbers, where
    isfinite().all() takes 20 times longer on the CPU."""
    sums = [(p.grad._values() if p.grad.is_sparse else p.grad).sum()  # a repeated row adds the same
            for p in (*params, *sparse) if p.grad is not None]
    return not sums or bool(torch.isfinite(torch.stack(sums).sum()))


def check_finite_weights(tensors, where: str) -> None:
    """Refuse to go on (and so to save) with NaN or infinite weights."""
    for t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteLossError(f"{where}: the weights became NaN or infinite; they were not saved")


def _bg_mode(cfg: TrainConfig):
    return (True, 1.0) if cfg.background == "random" else (False, 1.0 if cfg.background == "white" else 0.0)


def ray_loss(model: PortraitModel, field, sr: SubjectRays, views, n, gen, cfg: TrainConfig):
    random_bg, bg = _bg_mode(cfg)
    b = sr.batch(views, n, gen, random_bg=random_bg, bg=bg)
    jitter = torch.rand(n, generator=gen, device=gen.device)
    out = render_rays(field, model.grid, Rays(b.rays_o, b.rays_d, sr.warp_table, jitter=jitter), model.render_cfg,
                      bg=b.bg)
    return torch.mean((out.rgb - b.target) ** 2)


def ray_loss_share(model: PortraitModel, field, sr: SubjectRays, views, n, gen, cfg: TrainConfig, comm):
    """This rank's share of ray_loss: the global batch of ``n`` rays (and jitter) is drawn
    from ``gen`` on every rank, and the rank renders its slice; the shares sum to the
    mean over all n rays. In one process this is ray_loss itself."""
    if not comm.active:
        return ray_loss(model, field, sr, views, n, gen, cfg)
    random_bg, bg = _bg_mode(cfg)
    b = sr.batch(views, n, gen, random_bg=random_bg, bg=bg)
    jitter = torch.rand(n, generator=gen, device=gen.device)
    lo, hi = comm.bounds(n)
    rays = Rays(b.rays_o, b.rays_d, sr.warp_table, jitter=jitter)[lo:hi]
    out = render_rays(field, model.grid, rays, model.render_cfg, bg=b.bg[lo:hi])
    return torch.mean((out.rgb - b.target[lo:hi]) ** 2) * ((hi - lo) / n)


def data_parallel_step(comm, params, sparse, compute, guard: StepGuard, step) -> float | None:
    """Backward of ``compute() -> (loss, mse)`` (this rank's share), and the gradients
    summed over the ranks (one all-reduce; the sparse code gradient's rows too). -> the
    global mse, or None when the step is to be skipped (a non-finite loss or gradient on
    any rank; the gradients are then cleared). ``sparse``: [(param, row indices)]."""
    loss, mse = compute()
    local_ok = bool(torch.isfinite(loss.detach()))
    if local_ok:
        loss.backward()
    if not comm.active:
        loss_ok = local_ok
        ok = local_ok and grads_finite(params, [p for p, _ in sparse])
        value = float(mse.detach()) if local_ok else float("nan")
    else:
        # [has-grad flags..., not-ok, mse] + dense grads + sparse rows, summed in one go
        head = torch.tensor([0.0 if p.grad is None else 1.0 for p in params]
                            + [0.0 if local_ok else 1.0, float(mse.detach()) if local_ok else 0.0],
                            device=(params or [p for p, _ in sparse])[0].device)
        # a row-sparse table gradient (pnerf_fast/train/optim.py) is summed densely here
        dense = [p.grad.to_dense() if p.grad is not None and p.grad.is_sparse else
                 p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        rows = []
        for p, idx in sparse:
            if p.grad is None:
                rows.append(torch.zeros(len(idx), p.shape[1], dtype=p.dtype, device=p.device))
            else:
                g = p.grad.coalesce()
                if not torch.equal(g.indices()[0], idx):
                    raise RuntimeError("data_parallel_step: a sparse gradient touches other rows than announced")
                rows.append(g.values().clone())
        comm.all_reduce_sum_([head, *dense, *rows])
        for p, f, g in zip(params, head[:len(params)].tolist(), dense):
            p.grad = g if f > 0 else None
        for (p, idx), r in zip(sparse, rows):
            p.grad = torch.sparse_coo_tensor(idx[None], r, tuple(p.shape), check_invariants=True)
        value = float(head[len(params) + 1])
        loss_ok = float(head[len(params)]) == 0 and math.isfinite(value)
        ok = loss_ok and grads_finite(params, [p for p, _ in sparse])
    if not ok:
        for p in (*params, *(p for p, _ in sparse)):
            p.grad = None
        guard.bad(step, "loss" if not loss_ok else "gradient")
        return None
    guard.ok()
    return value


def _named_groups(field) -> dict[str, str]:
    """parameter name -> group ('grid' | 'mlp')."""
    ids = {}
    for g, params in field.param_groups().items():
        for p in params:
            ids[id(p)] = g
    return {name: ids.get(id(p), "mlp") for name, p in field.named_parameters()}


def make_optimizer(field, kind: str, lr: GroupLR, sparse: bool = False, fused: bool = True):
    """SGD or Adam (betas 0.9/0.99, eps 1e-15, as instant-ngp) with one lr per parameter
    group. ``sparse``: the hash-grid tables give row-sparse gradients while this
    optimizer lives, and only the rows a step touched are updated, by the fused kernel
    (lazy Adam: pnerf_fast/train/optim.py); the MLPs keep torch's step. Off (the
    default): dense gradients and torch's fused Adam (or its SGD) for everything. Off by default
    because it did not pay on the 2-core CPU: a finetune batch touches 88% of the table
    rows, so the row list (8-byte index + values per row) is larger than the dense
    gradient; benchmarks/README.md, "Step time". ``fused`` (dense Adam only): torch's
    fused step, one pass over each tensor instead of one per operation (about 5x faster
    on the CPU for 3.3 M entries, same update to float rounding); False is torch's
    per-tensor loop, kept for the benchmark's before/after."""
    from .optim import RowSparseAdam, RowSparseSGD, claim_sparse_tables

    groups = [{"params": ps, "lr": getattr(lr, g), "name": g} for g, ps in field.param_groups().items() if ps]
    if kind == "sgd":
        opt = RowSparseSGD(groups, lr=lr.mlp) if sparse else torch.optim.SGD(groups, lr=lr.mlp)
    else:
        adam = {"lr": lr.mlp, "betas": (0.9, 0.99), "eps": 1e-15}
        opt = RowSparseAdam(groups, **adam) if sparse else torch.optim.Adam(groups, fused=bool(fused), **adam)
    claim_sparse_tables(field, opt if sparse else None)
    return opt


def set_lr(opt, lr: GroupLR):
    for g in opt.param_groups:
        g["lr"] = getattr(lr, g["name"])


@torch.no_grad()
def copy_params_(dst, src):
    for a, b in zip(dst.parameters(), src.parameters()):
        a.copy_(b)


@torch.no_grad()
def sgd_step_both_(fast, prior, beta: GroupLR, names: dict[str, str]):
    """θ_m <- θ_m - β g and θ_p <- θ_p - β g with g = the gradient on θ_m. ``prior``: a
    field, or a list of tensors matching its parameters (a meta batch's Δ_m)."""
    targets = prior if isinstance(prior, (list, tuple)) else list(prior.parameters())
    for (name, pf), pp in zip(fast.named_parameters(), targets):
        if pf.grad is None:
            continue
        lr = getattr(beta, names[name])
        pf.add_(pf.grad, alpha=-lr)
        pp.add_(pf.grad, alpha=-lr)


def meta_subject_step(model: PortraitModel, fast, sr: SubjectRays, cfg: TrainConfig, gen: torch.Generator,
                      names: dict[str, str], into: list[torch.Tensor] | None = None,
                      guard: StepGuard | None = None, step=None) -> dict:
    """One subject of the meta loop. Returns support / query losses. θ_m starts from θ_p
    (model.field); the query updates go to θ_p, or, with ``into``, are added to those
    tensors instead (a meta batch's Δ_m; θ_p is then left as it is). A step with a
    non-finite loss or gradient is skipped (``guard`` counts them)."""
    mc = cfg.meta
    prior = model.field
    targets = list(prior.parameters()) if into is None else into
    guard = guard if guard is not None else StepGuard("pretrain")
    copy_params_(fast, prior)
    fast.train()
    n = cfg.rays_per_step
    s_losses, q_losses = [], []
    fparams = list(fast.parameters())

    def backward(views) -> float | None:
        loss = ray_loss(model, fast, sr, views, n, gen, cfg)
        if not bool(torch.isfinite(loss.detach())):
            guard.bad(step, f"loss on subject {sr.name}")
            return None
        loss.backward()
        if not grads_finite(fparams):
            opt.zero_grad(set_to_none=True)
            guard.bad(step, f"gradient on subject {sr.name}")
            return None
        guard.ok()
        return float(loss.detach())

    # Support: N_s steps on D_s with α (SGD, or a fresh Adam per subject).
    opt = make_optimizer(fast, mc.optimizer, mc.alpha)
    for _ in range(mc.n_support):
        opt.zero_grad(set_to_none=True)
        loss = backward(sr.support)
        if loss is None:
            continue
        opt.step()
        s_losses.append(loss)
    # Query: N_q steps on D_q with β, each applied to θ_m and θ_p.
    if mc.optimizer == "adam":
        set_lr(opt, mc.beta)
    for _ in range(mc.n_query):
        opt.zero_grad(set_to_none=True)
        loss = backward(sr.query)
        if loss is None:
            continue
        if mc.optimizer == "sgd":
            sgd_step_both_(fast, targets, mc.beta, names)
        else:  # Adam: θ_p receives the same update (not the raw gradient) as θ_m
            before = [p.detach().clone() for p in fparams]
            opt.step()
            with torch.no_grad():
                for pf, pb, pp in zip(fparams, before, targets):
                    pp.add_(pf - pb)
        q_losses.append(loss)
    return {"support": float(np.mean(s_losses)) if s_losses else float("nan"),
            "query": float(np.mean(q_losses)) if q_losses else float("nan")}


def meta_batch_step(model: PortraitModel, fast, rays, subjects: list[int], cfg: TrainConfig, gen: torch.Generator,
                    names: dict[str, str], comm, guard: StepGuard, step) -> float:
    """The batched first-order meta update over ``subjects`` (indices into ``rays``):
    each adapts from θ_p with its own generator (seeded from ``gen``, so that it does
    not matter which rank adapts it); rank r adapts subjects r, r + N, ...; θ_p <- θ_p +
    mean of their query updates (all-reduced). -> the mean query loss."""
    prior = list(model.field.parameters())
    b = len(subjects)
    seeds = torch.randint(0, 2 ** 62, (b,), generator=gen, device=gen.device).tolist()
    deltas = [torch.zeros_like(p) for p in prior]
    failed, q_sum, q_n = 0.0, 0.0, 0.0
    for j in range(comm.rank, b, comm.world):
        g = torch.Generator(device=gen.device).manual_seed(int(seeds[j]))
        try:
            losses = meta_subject_step(model, fast, rays[subjects[j]], cfg, g, names, into=deltas, guard=guard,
                                       step=step)
        except NonFiniteLossError:
            failed = 1.0  # every rank raises below, after the all-reduce (none is left waiting)
            break
        if math.isfinite(losses["query"]):
            q_sum += losses["query"]
            q_n += 1
    head = torch.tensor([failed, q_sum, q_n], dtype=deltas[0].dtype if deltas else torch.float32,
                        device=gen.device)
    comm.all_reduce_sum_([head, *deltas])
    if float(head[0]) > 0:
        raise NonFiniteLossError(f"pretrain: the loss or its gradient was NaN or infinite in {guard.limit} steps in "
                                 f"a row on a subject of the meta batch at visit {step}; stopped without saving "
                                 "non-finite weights (lower the learning rates, or check the data)")
    if not all(bool(torch.isfinite(d).all()) for d in deltas):
        raise NonFiniteLossError(f"pretrain: the meta update at visit {step} is NaN or infinite; stopped without "
                                 "saving it")
    with torch.no_grad():
        for p, d in zip(prior, deltas):
            p.add_(d, alpha=1.0 / b)
    return float(head[1]) / float(head[2]) if float(head[2]) > 0 else float("nan")


@dataclass
class PretrainResult:
    path: Path
    seconds: float
    visits: int
    last_query_psnr: float | None


def load_training_subjects(data_root, cfg: TrainConfig, split: str = "train", progress: bool = False,
                           device="cpu"):
    ds = load_dataset(data_root)
    names = ds.subjects(split)
    if not names:
        raise ValueError(f"{data_root}: split '{split}' lists no subjects")
    # lazily: the pixels are read on first use into a bounded cache (train/data.py), so
    # memory follows the cache and the rays per step, not the number of subjects
    subjects = [ds.subject(n, load_images=False) for n in names]
    mean_face = generalized_procrustes(np.stack([s.landmarks for s in subjects]))
    rays = [SubjectRays(s, mean_face, cfg.coordinates, scale=cfg.image_scale, device=device) for s in subjects]
    return rays, mean_face


def pretrain(data_root, out_path, cfg: TrainConfig, resume: bool = True, progress: bool = True,
             max_seconds: float | None = None, log=print, max_visits: int | None = None,
             init=None, comm=None, device="auto") -> PretrainResult:
    """Pretrain a prior (cfg.method) on the train split of ``data_root`` and write it to
    ``out_path``, checkpointing every ``cfg.checkpoint_every_s`` seconds (atomically)
    so a killed run resumes where it stopped, losing at most one interval.

    Under torchrun (WORLD_SIZE > 1 in the environment) every rank calls this; it joins
    the process group (gloo on the CPU, nccl on GPUs; ``comm``: an existing
    distributed.Comm instead) and rank 0 alone logs and writes files.

    ``device`` ("auto" | "cpu" | "cuda" | "cuda:N"): where the rays, the model, the grid,
    the codes and the random generator live; under torchrun "cuda" means each rank's
    LOCAL_RANK GPU. The written prior is device-free (saved from the CPU); a resume file
    carries the generator's state, which resumes only on the same device type."""
    from . import distributed

    dev = resolve_device(device)
    if comm is None:
        if dev.type == "cuda" and distributed.world_size_from_env() > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
        comm = distributed.setup(dev)  # one process: Comm(), collectives are no-ops
    return _pretrain(data_root, Path(out_path), cfg, resume, progress, max_seconds, log, max_visits, init, comm, dev)


def _remove_stale_temporaries(path: Path) -> None:
    """save_atomic's temporary files that a killed run left next to ``path``."""
    for p in glob.glob(glob.escape(str(path)) + ".*.tmp"):
        try:
            Path(p).unlink()
        except OSError:
            pass


def _pretrain(data_root, out_path: Path, cfg: TrainConfig, resume, progress, max_seconds, log, max_visits, init,
              comm, dev) -> PretrainResult:
    from tqdm import tqdm

    if not comm.is_main:
        progress = False
        log = lambda *a, **k: None  # noqa: E731
    if comm.active:
        if cfg.method == "meta" and cfg.meta.batch < comm.world:
            raise ValueError(f"config: meta.batch: the meta batch ({cfg.meta.batch} subjects) must hold at least one "
                             f"subject per rank ({comm.world} ranks); for example --set meta.batch={comm.world}")
        if cfg.method in ("joint", "latent") and cfg.rays_per_step < comm.world:
            raise ValueError(f"config: rays_per_step: {cfg.rays_per_step} rays cannot be split over {comm.world} ranks")
    torch.manual_seed(cfg.seed)
    rays, mean_face = load_training_subjects(data_root, cfg, device=dev)
    model = PortraitModel(cfg, mean_face).to(dev)  # initialised on the CPU: the same weights on every device
    if init is not None:
        # Continue from an earlier prior: its weights (and grid); this run's mean face.
        src = PortraitModel.load(init, dev)
        try:
            # A latent field may start from a plain one: its code layers start fresh.
            missing, unexpected = model.field.load_state_dict(src.field.state_dict(), strict=False)
            fresh = {"latent", "density_z.weight", "color_z.weight"}
            missing = [k for k in missing if not k.startswith(("density_z_deep.", "color_z_deep."))]  # zero at start
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
                                        min_fraction=cfg.grid.hull_min_fraction, progress=progress))
        log(f"occupancy grid restricted to the training subjects' visual hull: {model.grid.occupancy:.1%} of cells")
    state = {"visits": 0, "epoch": 0, "pos": 0, "order": None, "seconds": 0.0, "done": False}
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    opt_state = code_opt_state = None
    codes = None
    if cfg.method == "latent":
        if not model.field.latent_dim:
            raise ValueError("config: method 'latent' needs a field with latent_dim > 0 (for example field: fast_latent)")
        codes = torch.nn.Embedding(len(rays), model.field.latent_dim, sparse=True, device=dev)
        with torch.no_grad():
            codes.weight.normal_(0.0, cfg.latent.code_init_std, generator=gen)
            if init is not None and src.codes is not None:
                if tuple(src.codes.shape) == tuple(codes.weight.shape):
                    # Continuing a latent prior on the same subjects: keep their codes.
                    codes.weight.copy_(src.codes)
                    log(f"starting from {init}'s {len(rays)} subject codes")
                elif src.codes.shape[1] != codes.weight.shape[1]:
                    raise ValueError(f"{init}: its codes have {src.codes.shape[1]} numbers; this run's field has "
                                     f"latent_dim {codes.weight.shape[1]}")
                else:  # other subjects (another light stage, say): its weights, fresh codes
                    log(f"{init} holds {src.codes.shape[0]} codes, this run trains {len(rays)} subjects: "
                        "its shared weights, fresh subject codes")
    resume_path = out_path.with_suffix(out_path.suffix + ".resume")
    if comm.is_main:
        for p in (out_path, resume_path):
            _remove_stale_temporaries(p)
    if resume and resume_path.exists():
        # Every rank reads the resume file (a shared file system, as for the data).
        st = load_checkpoint(resume_path)
        try:
            same = config_from_dict(st.get("train_config")).to_dict() == cfg.to_dict()
        except (ValueError, TypeError):
            same = False
        if not same:
            raise ValueError(f"{resume_path}: was written with another config; delete it or pass --no-resume")
        model = PortraitModel.from_state(st, str(resume_path), dev)
        state = st["extra"]["progress"]
        rng_device = st["extra"].get("rng_device", "cpu")
        if rng_device != dev.type:
            raise ValueError(f"{resume_path}: was written by a run on {rng_device}, and its random state does not "
                             f"carry over to {dev.type}; resume with --device {rng_device}, or pass --no-resume")
        gen.set_state(st["extra"]["rng"])
        opt_state = st["extra"].get("optimizer")
        if codes is not None:
            with torch.no_grad():
                codes.weight.copy_(st["extra"]["codes"])
            code_opt_state = st["extra"].get("code_optimizer")
        log(f"resuming from {resume_path}: {state['visits']} visits, {state['seconds']:.0f} s done")
    if state.get("done"):
        if comm.is_main:
            model.save(out_path, extra={"progress": state, "method": cfg.method})
        comm.barrier()
        return PretrainResult(out_path, state["seconds"], state["visits"], state.get("psnr"))

    t_start = time.perf_counter() - state["seconds"]
    last_ckpt = time.perf_counter()
    guard = StepGuard("pretrain", warn=comm.is_main or cfg.method == "meta")

    def weights():
        return [*model.field.parameters(), *([] if codes is None else [codes.weight])]

    def save_resume(opt=None, copt=None):
        if not comm.is_main:
            return
        check_finite_weights(weights(), f"pretrain: {resume_path}")
        state["seconds"] = time.perf_counter() - t_start
        extra = {"progress": state, "rng": gen.get_state(), "rng_device": dev.type,
                 "optimizer": None if opt is None else opt.state_dict()}
        if codes is not None:
            extra["codes"] = codes.weight.detach().clone()
            extra["code_optimizer"] = None if copt is None else copt.state_dict()
        save_atomic(model.state(extra=extra), resume_path)

    def maybe_checkpoint(*opts):
        nonlocal last_ckpt
        if comm.is_main and time.perf_counter() - last_ckpt > cfg.checkpoint_every_s:
            save_resume(*opts)
            last_ckpt = time.perf_counter()

    def grid_update(field):
        g = cfg.grid
        k = state["visits"] // max(g.update_every, 1)
        if k > g.warmup_updates:
            model.grid.update(model.density_fn(field), fraction=1.0, generator=gen)

    def budget_hit():
        if max_visits is not None and state["visits"] >= max_visits:
            return True
        # rank 0's clock decides for everyone
        return max_seconds is not None and comm.broadcast_flag(time.perf_counter() - t_start > max_seconds)
    n_subj = len(rays)
    opt = copt = None
    if cfg.method == "meta":
        fast = clone_field(model.field)
        names = _named_groups(model.field)
        batch = cfg.meta.batch
        batched = batch > 1 or comm.active
        total = cfg.meta.epochs * n_subj
        bar = tqdm(total=total, initial=state["visits"], desc="meta-pretrain", unit="subject", disable=not progress)
        while state["epoch"] < cfg.meta.epochs and not budget_hit():
            if state["order"] is None:
                state["order"] = torch.randperm(n_subj, generator=gen, device=dev).tolist()
            while state["pos"] < n_subj and not budget_hit():
                before = state["visits"]
                if batched:
                    subjects = state["order"][state["pos"]:state["pos"] + batch]
                    q = meta_batch_step(model, fast, rays, subjects, cfg, gen, names, comm, guard, before + 1)
                    losses = {"query": q, "support": float("nan")}
                else:
                    subjects = state["order"][state["pos"]:state["pos"] + 1]
                    losses = meta_subject_step(model, fast, rays[subjects[0]], cfg, gen, names, guard=guard,
                                               step=before + 1)
                state["pos"] += len(subjects)
                state["visits"] += len(subjects)
                state["psnr"] = mse_to_psnr(losses["query"])
                if state["visits"] // cfg.grid.update_every > before // cfg.grid.update_every:
                    grid_update(model.field)
                bar.update(len(subjects))
                bar.set_postfix(epoch=state["epoch"], support_psnr=f"{mse_to_psnr(losses['support']):.2f}",
                                query_psnr=f"{state['psnr']:.2f}", occ=f"{model.grid.occupancy:.2f}")
                maybe_checkpoint()
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
        params = list(model.field.parameters())
        while state["visits"] < jc.steps and not budget_hit():
            sr = rays[int(torch.randint(0, n_subj, (1,), generator=gen, device=dev))]
            opt.zero_grad(set_to_none=True)

            def compute(sr=sr):
                loss = ray_loss_share(model, model.field, sr, list(range(sr.num_views)), cfg.rays_per_step, gen, cfg,
                                      comm)
                return loss, loss
            mse = data_parallel_step(comm, params, (), compute, guard, state["visits"] + 1)
            if mse is not None:
                opt.step()
                state["psnr"] = mse_to_psnr(mse)
            state["visits"] += 1
            if state["visits"] % (16 * cfg.grid.update_every) == 0:
                k = state["visits"] // (16 * cfg.grid.update_every)
                if k > cfg.grid.warmup_updates:
                    model.grid.update(model.density_fn(), fraction=1.0, generator=gen)
            bar.update(1)
            bar.set_postfix(psnr=f"{state.get('psnr', float('nan')):.2f}", occ=f"{model.grid.occupancy:.2f}")
            maybe_checkpoint(opt)
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
        front = lc.front_rays > 0
        bar = tqdm(total=lc.steps, initial=state["visits"], desc="latent-pretrain", unit="step", disable=not progress)
        model.field.train()
        params = list(model.field.parameters())
        while state["visits"] < lc.steps and not budget_hit():
            i = int(torch.randint(0, n_subj, (1,), generator=gen, device=dev))
            sr = rays[i]
            f = decay ** state["visits"]
            for g in opt.param_groups:
                g["lr"] = getattr(lc.lr, g["name"]) * f
            for g in copt.param_groups:
                g["lr"] = lc.lr.latent * f
            opt.zero_grad(set_to_none=True)
            copt.zero_grad(set_to_none=True)
            idx = torch.tensor([i], device=dev)
            zs = []
            if front:
                # the code's step: the frontal view, the shared weights frozen (no gradients
                # for them, so the hash grid's backward is skipped)
                def compute_code(sr=sr, idx=idx):
                    with frozen(params):
                        z = codes(idx)[0]
                        with model.field.code(z):
                            mse = ray_loss_share(model, model.field, sr, sr.support, lc.front_rays, gen, cfg, comm)
                    return (mse + lc.code_reg * torch.mean(z * z) if comm.is_main else mse), mse
                if data_parallel_step(comm, [], [(codes.weight, idx)], compute_code, guard,
                                      state["visits"] + 1) is not None:
                    copt.step()
                copt.zero_grad(set_to_none=True)

            def compute(sr=sr, idx=idx):
                z = codes(idx)[0]
                if front:
                    z = z.detach()  # the shared weights' step: all views from the frontal code
                zs.append(z)
                with model.field.code(z):
                    mse = ray_loss_share(model, model.field, sr, list(range(sr.num_views)), cfg.rays_per_step, gen,
                                         cfg, comm)
                # the code penalty is counted once (by rank 0), like the 1-process loss
                return (mse + lc.code_reg * torch.mean(z * z) if comm.is_main and not front else mse), mse
            mse = data_parallel_step(comm, params, [] if front else [(codes.weight, idx)], compute, guard,
                                     state["visits"] + 1)
            if mse is not None:
                opt.step()
                if not front:
                    copt.step()
                state["psnr"] = mse_to_psnr(mse)
            state["visits"] += 1
            bar.update(1)
            bar.set_postfix(psnr=f"{state.get('psnr', float('nan')):.2f}", code=f"{float(zs[0].detach().norm()):.2f}")
            maybe_checkpoint(opt, copt)
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
    comm.check_in_sync([*weights(), *(t.float() for t in model.grid.state_dict().values())], "weights or grids")
    check_finite_weights(weights(), f"pretrain: {out_path}")
    state["seconds"] = time.perf_counter() - t_start
    state["done"] = finished
    if not finished:
        # Interrupted by a budget: the resume file holds the exact training state; the
        # output is a usable snapshot of it.
        save_resume(opt, copt)
        if comm.is_main:
            model.save(out_path, extra={"progress": state, "method": cfg.method})
    elif comm.is_main:
        if cfg.method not in ("random", "latent"):
            # Final grid from the final weights (a full refresh, no EMA memory of early fog).
            model.grid.mark_from_density(model.density_fn(), threshold=None)
        model.save(out_path, extra={"progress": state, "method": cfg.method})
        if resume_path.exists():
            resume_path.unlink()
    comm.barrier()  # the files are complete when any rank returns
    return PretrainResult(out_path, state["seconds"], state["visits"], state.get("psnr"))


if __name__ == "__main__":
    # This module was torchrun's entry point; the ranks now run the CLI (a layer above
    # training, which this module may not import): say where it went.
    import sys

    print("python -m pnerf_fast.train.pretrain: moved: run `pnerf pretrain ARGS`, or under torchrun "
          "`torchrun ... -m pnerf_fast.cli pretrain ARGS`", file=sys.stderr)
    sys.exit(2)
