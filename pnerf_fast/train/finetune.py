"""Finetuning a prior on ONE frontal image, in canonical space.

Every setting comes from the prior's stored ``finetune`` section, so each prior finetunes
the way it was tuned:
- the latent prior (the default): the grid is united with the input mask's visual cone,
  then the code alone is fitted (the field stays a head of the prior's manifold), then all
  weights with Adam (the input view gets sharp), the grid refreshed from the field;
- the paper's meta prior: the meta inner loop's SGD and rates, its grid kept as it is.
A fixed step budget or a time budget; frontal-view PSNR is a misleading stopping signal
(a higher one went with worse novel views), so there is none.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from .._device import resolve_device
from ..data.format import Subject, load_subject
from ..face.landmarks import TEMPLATE, mirror_matrix
from ..face.procrustes import canonical_transform
from ..ops.occgrid import cell_positions
from ..ops.raymarch import ray_scale
from ..render.rays import Rays
from ..render.renderer import RenderOutput, render_image, render_rays
from .config import GroupLR
from .data import RayBatch, SubjectRays
from .hull import cover_subject_
from .model import PortraitField, PortraitModel
from .optim import frozen
from .pretrain import MAX_BAD_STEPS, StepGuard, check_finite_weights, grads_finite, make_optimizer, mse_to_psnr

PHOTO_RES = 256  # photos are cropped to PHOTO_RES x PHOTO_RES for finetuning
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


ASSETS = Path(__file__).resolve().parents[1] / "assets"
# The priors that ship with the package, by name: ``--init latent`` / ``portrait`` / ``meta``.
SHIPPED_PRIORS = {
    "latent": ASSETS / "prior_latent_fast.pt",      # auto-decoder, the classic light stage's heads
    "portrait": ASSETS / "prior_portrait_fast.pt",  # the same, the portrait light stage (people-like)
    "meta": ASSETS / "prior_meta_fast.pt",          # the paper's meta-learned initialisation
}
DEFAULT_PRIOR = "latent"    # the default for the classic light stage's subjects
PHOTO_PRIOR = "portrait"    # the default for photos and the portrait light stage's subjects


def default_prior_name(subject: Subject | None = None) -> str:
    """The shipped prior a fit of ``subject`` starts from when none is named: for a photo
    (finetune's own alignment, or a folder that `pnerf align` wrote) or a subject of the
    portrait light stage, the prior trained on the portrait light stage (real
    proportions, hair, shoulders); for anything else (the classic light stage's heads),
    the classic one."""
    meta = subject.meta if subject is not None else {}
    people = meta.get("source") == "photo" or meta.get("style") == "portrait"
    return PHOTO_PRIOR if people else DEFAULT_PRIOR


def default_prior_path(subject: Subject | None = None) -> Path:
    return SHIPPED_PRIORS[default_prior_name(subject)]


def prior_path(init, subject: Subject | None = None) -> Path:
    """A prior checkpoint from a path, a shipped prior's name ("latent", "portrait",
    "meta"), or None (the shipped prior for ``subject``: ``default_prior_name``)."""
    if init is None:
        return default_prior_path(subject)
    if isinstance(init, str) and init in SHIPPED_PRIORS:
        return SHIPPED_PRIORS[init]
    return Path(init)


def dataset_prior_path(init, data_root, split: str) -> Path:
    """``prior_path`` for fitting a dataset's ``split``: with ``init`` None, the shipped
    prior for its first subject (whose meta says which light stage made it); the classic
    one when the data cannot be read (the evaluation then reports what is wrong with it)."""
    if init is not None:
        return prior_path(init)
    from ..data.format import load_dataset

    try:
        ds = load_dataset(data_root)
        names = ds.subjects(split)
        first = ds.subject(names[0], load_images=False) if names else None
    except (OSError, ValueError, KeyError, TypeError):
        first = None
    return prior_path(None, first)


def as_subject(source, res: int = PHOTO_RES) -> Subject:
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
    from ..data.photo import photo_subject
    from ..face.align import align_photo

    return photo_subject(align_photo(photo, res=res), name)


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
    code_steps: int | None = None,
    res: int | None = None,
    views: list[int] | None = None,
    mirror: float | None = None,
    device="auto",
) -> PortraitField:
    """Finetune a prior on the frontal view of ``source`` (subject folder, photo path,
    image array or Subject). ``init``: a checkpoint path, a shipped prior's name, a
    PortraitModel, or None for the shipped prior that suits the source: a photo (or a
    folder that `pnerf align` wrote) starts from the portrait light stage's prior, a
    light-stage subject from the classic one's (``default_prior_path``).

    Two stages, from the prior's ``finetune`` config:
    1. (latent priors) ``code_steps`` Adam steps on the subject's code alone, from the
       training codes' mean, with a pull towards their distribution: the field stays a
       plausible head while it takes on the subject's shape and colours;
    2. ``steps`` steps on all weights (the prior's optimizer and rates), optionally pulled
       towards the prior (``prior_pull``).
    With ``mirror`` f (default 0: off), f of the rays of the code stage and of the
    first ``mirror_stop`` of stage 2 are the input's rays reflected across the face's plane
    of symmetry (from its landmarks): a virtual view from the mirrored camera, scored on
    its silhouette plus ``mirror_rgb`` times its colour; single-view fits only.
    With ``spread`` w > 0, stage 2 adds w times each input ray's depth spread (the weighted
    variance of where it ends times its opacity, canonical units^2) inside the mask: one
    surface per ray, no ghost layers that only the input view cannot see; single-view fits
    only.
    With ``cover``, the occupancy grid is first united with the visual cone of the input
    mask, so no part of the subject is clipped; with ``update_grid`` it is refreshed from
    the field every 32 steps of stage 2 (never outside that union).

    ``steps`` (stage 2) and ``code_steps`` override the prior's; ``seconds`` is a time
    budget for both stages together (stage 1 keeps its share, code_steps / all steps).
    ``mirror`` overrides the prior's ``finetune.mirror`` (for light-stage-like captures of
    a symmetric head; it costs real photos input fidelity, see the README).
    ``res``: the side a photo is cropped to (default 256). ``views``: the subject's views
    to fit (default: its input view; the multi-view oracle passes all of them, and the
    grid is then covered by their visual hull). ``callback(step, elapsed_s,
    field)`` runs after every step (for learning curves); time spent inside it is not
    counted in ``elapsed_s`` nor in the ``seconds`` budget. ``device`` ("auto": CUDA when
    available and compiled, else the CPU; "cpu", "cuda", "cuda:N"): where every tensor of
    the fit lives (rays, images, warp table, grid, generator, field); a PortraitModel
    ``init`` is copied there (the caller's model is left as it was), and the returned
    portrait lives there too.
    With ``stop_cache`` (single-view fits only), each input pixel keeps the depth where its
    ray last turned opaque, and its next ray in either stage is marched only that far plus
    ``stop_margin`` render steps (mirrored rays are marched in full); a ray not opaque by
    then is marched again in full in the same step, so every ray renders as without the
    cache (``_StopCache``).

    A step whose loss or gradient is NaN or infinite is skipped with a RuntimeWarning (no
    update; it counts as a step); MAX_BAD_STEPS (5) in a row raise NonFiniteLossError (a
    ValueError), and so does a field that ends with non-finite weights: finetune never
    returns (so never saves) a NaN."""
    from tqdm import tqdm

    dev = resolve_device(device)
    subject = as_subject(source, res=res or PHOTO_RES)
    if isinstance(init, PortraitModel):
        # A copy: the fit changes every weight, the grid and the config, and a caller that
        # finetunes several subjects from one loaded prior must start each from the prior.
        model = copy.deepcopy(init).to(dev)
    else:
        model = PortraitModel.load(prior_path(init, subject), dev)
    if model.mean_face is None and model.cfg.coordinates == "canonical":
        raise ValueError("the init checkpoint has no mean face, which canonical coordinates need")
    if mirror is not None:
        if isinstance(mirror, bool) or not isinstance(mirror, (int, float)) or not 0 <= mirror < 1:
            raise ValueError(f"finetune: argument 'mirror' must be a fraction in [0, 1), got {mirror!r}")
        model.cfg.finetune.mirror = float(mirror)
    fc = model.cfg.finetune
    if not (fc.grid_down >= 0 and np.isfinite(fc.grid_down)):
        raise ValueError(f"finetune.grid_down must be a finite length >= 0, got {fc.grid_down!r}")
    if not (fc.spread >= 0 and np.isfinite(fc.spread)):
        raise ValueError(f"finetune.spread must be a finite weight >= 0, got {fc.spread!r}")
    if not (fc.rim >= 0 and np.isfinite(fc.rim)):
        raise ValueError(f"finetune.rim must be a finite weight >= 0, got {fc.rim!r}")
    if not isinstance(fc.stop_cache, bool):
        raise ValueError(f"finetune.stop_cache must be true or false, got {fc.stop_cache!r}")
    if isinstance(fc.anchor, bool) or not (0 <= fc.anchor < 1):
        raise ValueError(f"finetune.anchor must be a fraction in [0, 1) (some rays stay real), got {fc.anchor!r}")
    for key in ("anchor_rgb", "anchor_depth"):
        if not (getattr(fc, key) >= 0 and np.isfinite(getattr(fc, key))):
            raise ValueError(f"finetune.{key} must be a finite weight >= 0, got {getattr(fc, key)!r}")
    if not (fc.stop_margin >= 1 and np.isfinite(fc.stop_margin)):
        raise ValueError(f"finetune.stop_margin must be a finite number of render steps >= 1, got {fc.stop_margin!r}")
    default_steps = steps is None and seconds is None
    if default_steps:
        steps = fc.steps
    if steps is not None and steps < 0:
        raise ValueError(f"finetune: argument 'steps' must be >= 0, got {steps}")
    if seconds is not None and not (seconds > 0 and np.isfinite(seconds)):
        raise ValueError(f"finetune: argument 'seconds' must be a finite number > 0, got {seconds}")
    n_code = fc.code_steps if code_steps is None else int(code_steps)
    if n_code < 0:
        raise ValueError(f"finetune: argument 'code_steps' must be >= 0, got {code_steps}")
    field = model.field
    if not field.latent_dim:
        n_code = 0
    lr = lr or fc.lr or model.cfg.meta.alpha
    opt_kind = optimizer or fc.optimizer
    n = rays_per_step or fc.rays_per_step
    sr = SubjectRays(subject, model.mean_face, model.cfg.coordinates, device=dev)
    if default_steps and fc.steps_res > 0:  # more pixels to fit: more steps
        steps = int(round(steps * min(4.0, max(1.0, max(sr.hw) / fc.steps_res))))
    if views is not None:
        views = [int(v) for v in views]
        if not views or not all(0 <= v < sr.num_views for v in views):
            raise ValueError(f"finetune: argument 'views' must list views of {subject.name} "
                             f"(0..{sr.num_views - 1}), got {views}")
    fit_views = views if views is not None else sr.support
    model.lower_grid_floor_(fc.grid_down)  # the neck goes on below the canonical box
    new_cells = None  # cells the cover added, which the prior never learned
    if fc.cover and sr.has_mask:
        new_cells = cover_subject_(model.grid, sr, views=fit_views, carve=fc.carve)
        if new_cells.numel() == 0 or fc.empty_reg <= 0:
            new_cells = None
    field.train()
    gen = torch.Generator(device=dev).manual_seed(seed)
    random_bg = sr.has_mask
    bg = 1.0
    if steps is not None and seconds is None:
        total = n_code + steps
        code_seconds = None
    else:
        total = None if steps is None else n_code + steps
        n_all = n_code + (steps if steps is not None else fc.steps)
        code_seconds = seconds * n_code / max(n_all, 1)
    bar = tqdm(total=total, desc="finetune", unit="step", disable=not progress)
    clock = _Clock()
    psnr = float("nan")

    mirrorer = _mirror_of(subject, fc.mirror, fc.mirror_radius, dev) if views is None else None
    mirroring = True
    spreading = False  # stage 2 of a single-view fit with finetune.spread
    spread_frame = _spread_frame(sr, dev) if (fc.spread > 0 or fc.rim > 0) and views is None else None
    rim_free = None  # [pixels]: how transparent the code stage left each input ray (finetune.rim)
    stops = None  # the input pixels' stop depths (finetune.stop_cache): single-view fits only
    if fc.stop_cache and views is None and len(fit_views) == 1:
        stops = _StopCache(sr.hw[0] * sr.hw[1], fc.stop_margin * model.render_cfg.step, sr.warp_table, dev)

    anchor = None  # virtual side views of the code stage's head (finetune.anchor)
    anchoring = False

    def render_loss(n=n):
        """-> (the photometric MSE, the loss to minimise)"""
        a = int(round(n * fc.anchor)) if anchor is not None and anchoring else 0
        b = sr.batch(fit_views, n - a, gen, random_bg=random_bg, bg=bg)
        m = int(round(n * fc.mirror)) if mirrorer is not None and mirroring else 0
        if m:
            b, m = mirrorer.batch(b, m)
        if a:  # [mirrored | anchor | real]: the anchor rays are skipped like the mirrored ones
            ab, a_depth = anchor.batch(a, gen, random_bg, bg)
            b = _insert(b, ab, m)
        skip = m + a
        values_of = (lambda o, d: _spread_values(o, d, *spread_frame)) if spreading or rim_free is not None else None
        jitter = torch.rand(n, generator=gen, device=dev)
        if stops is None:
            out = render_rays(field, model.grid, Rays(b.rays_o, b.rays_d, sr.warp_table, jitter=jitter),
                              model.render_cfg, bg=b.bg,
                              sample_values=None if values_of is None else values_of(b.rays_o, b.rays_d))
        else:
            out = stops.render(field, model.grid, b, model.render_cfg, jitter, values_of, skip)
        anchor_loss = anchor.loss(out, b, m, a_depth, fc.anchor_rgb, fc.anchor_depth) if a else None
        mse, mse_loss = _photo_loss(out, b, m, fc.mirror_rgb, a, anchor_loss)
        if spreading:
            mse_loss = mse_loss + fc.spread * _spread_loss(out, b.alpha, skip)
        if rim_free is not None:
            mse_loss = mse_loss + fc.rim * _rim_loss(out, b.alpha * rim_free[b.pixel], skip)
        if new_cells is None:
            return mse, mse_loss
        pick = new_cells[torch.randint(0, new_cells.numel(), (n,), generator=gen, device=dev)]
        x = cell_positions(model.grid.geometry, pick, torch.rand(n, 3, generator=gen, device=dev), device=dev)
        opacity = 1 - torch.exp(-field.density(x) * model.render_cfg.step)
        return mse, mse_loss + fc.empty_reg * opacity.mean()

    guard = StepGuard("finetune", limit=MAX_BAD_STEPS)

    def backward_ok(loss, params) -> bool:
        """loss.backward() unless the loss is non-finite; False: skip this step."""
        if not bool(torch.isfinite(loss.detach())):
            guard.bad(step + 1)
            return False
        loss.backward()
        if not grads_finite(params):
            guard.bad(step + 1, "gradient")
            return False
        guard.ok()
        return True

    def after_step(step, mse, stage):
        nonlocal psnr
        if np.isfinite(mse):  # a skipped step keeps the last good value
            psnr = mse_to_psnr(mse)
        bar.update(1)
        bar.set_postfix(stage=stage, loss=f"{mse:.4f}", psnr=f"{psnr:.2f}")
        if callback is not None:
            with clock.paused():
                field.eval()
                callback(step, clock.elapsed(), field)
                field.train()

    step = 0
    # Stage 1: the code alone.
    if n_code:
        codes = model.codes
        mu = field.latent.detach().clone() if codes is None else codes.mean(0)
        var = torch.ones_like(mu) if codes is None or codes.shape[0] < 2 else codes.var(0).clamp_min(1e-8)
        with torch.no_grad():
            field.latent.copy_(mu)
        zopt = torch.optim.Adam([field.latent], lr=fc.code_lr, betas=(0.9, 0.99))
        # Only the code learns here: no gradients for the shared weights (the hash grid's
        # backward pass is most of a step's cost).
        with frozen([p for p in field.parameters() if p is not field.latent]):
            while step < n_code and not (code_seconds is not None and clock.elapsed() >= code_seconds):
                mse, loss = render_loss(fc.code_rays or n)
                z = field.latent
                loss = loss + fc.code_reg * torch.mean((z - mu) ** 2 / var)
                zopt.zero_grad(set_to_none=True)  # the frozen weights never get a gradient
                if backward_ok(loss, [field.latent]):
                    zopt.step()
                step += 1
                after_step(step, float(mse.detach()), "code")
    if spread_frame is not None and fc.rim > 0:
        rim_free = _transparency(field, model, sr, fit_views[0])
    if fc.anchor > 0 and n_code and views is None and len(fit_views) == 1:
        anchor = _anchor_of(subject, model, sr, fit_views[0])
    # Stage 2: all weights (but the code's feature volume with freeze_volume, and the
    # coarsest hash-grid levels with keep_levels).
    with frozen(field.volume_params() if fc.freeze_volume else []), _kept_levels(field, fc.keep_levels):
        opt = make_optimizer(field, opt_kind, lr)
        prior = [p.detach().clone() for p in field.parameters()] if fc.prior_pull > 0 else None
        params = [p for p in field.parameters() if p.requires_grad]
        t_stage2 = clock.elapsed()
        k = 0
        while True:
            if steps is not None and k >= steps:
                break
            if seconds is not None and clock.elapsed() >= seconds:
                break
            if steps is not None:
                done = k / max(steps, 1)
            else:  # stage 2's share of the budget
                done = (clock.elapsed() - t_stage2) / max(seconds - t_stage2, 1e-9)
            mirroring = done < fc.mirror_stop
            anchoring = done < fc.anchor_stop
            spreading = spread_frame is not None and done < fc.spread_stop
            mse, loss = render_loss()
            opt.zero_grad(set_to_none=True)
            if backward_ok(loss, params):
                opt.step()
                if prior is not None:
                    _pull_(opt, field, prior, fc.prior_pull)
            k += 1
            step += 1
            if fc.update_grid and k % 32 == 0:
                model.grid.update(model.density_fn(), fraction=1.0, generator=gen)
            after_step(step, float(mse.detach()), "all")
    bar.close()
    field.eval()
    check_finite_weights(list(field.parameters()), f"finetune: {subject.name}")
    info = {"steps": step, "code_steps": min(step, n_code), "seconds": clock.elapsed(), "frontal_psnr": psnr,
            "subject": subject.name}
    if stops is not None:
        info["stop_cache"] = stops.counts
    if anchor is not None:
        info["anchor_rays"] = len(anchor)
    # one view: colour novel views as its camera saw them (PortraitField.color_from)
    eye = sr.transform.apply(sr.cameras[fit_views[0]].position) if len(fit_views) == 1 else None
    return PortraitField(model, sr.transform, sr.cameras[sr.frontal_index], bg, info, eye)


@contextlib.contextmanager
def _kept_levels(field, n: int):
    """Inside the block the hash grid's coarsest ``n`` levels get no gradient (their table
    rows are dropped from it, dense or row-sparse), so no optimizer moves them; 0 or a
    field without a hash grid: nothing changes."""
    enc = getattr(field, "encoding", None)
    if not n or not hasattr(enc, "offsets"):
        yield
        return
    if n > enc.n_levels:
        raise ValueError(f"finetune.keep_levels: the field's hash grid has {enc.n_levels} levels, got {n}")
    first = int(enc.offsets[n])  # the first row of level n
    handle = enc.params.register_hook(lambda g: _without_rows(g, first))
    try:
        yield
    finally:
        handle.remove()


def _without_rows(g: torch.Tensor, first: int) -> torch.Tensor:
    """A table gradient ``g`` [rows, F] (dense, or row-sparse COO) without its rows < ``first``."""
    if g.is_sparse:
        g = g.coalesce()
        keep = g.indices()[0] >= first
        return torch.sparse_coo_tensor(g.indices()[:, keep], g.values()[keep], g.shape, is_coalesced=True,
                                       check_invariants=False)
    g = g.clone()
    g[:first] = 0
    return g


class _StopCache:
    """Per-pixel stop depths of a single-view fit (``finetune.stop_cache``).

    Every step's rays are pixels of one image, so each pixel keeps the world depth where its
    ray last stopped (``RenderOutput.stop``: the t_end of its last sample before the
    transmittance fell below the renderer's threshold, from that step's own forward pass),
    +inf until known. A ray is marched to its pixel's depth plus ``margin`` (canonical
    units, a few render steps: the jitter moves samples by up to one step, and the field
    moves a little between visits); the samples it skips are behind the opaque surface, with
    zero weight and zero gradient. A limited ray that is not opaque by its limit (the surface
    moved back) is marched again in full in the same step (``render``), so every ray renders
    as it would without the cache. After the step each real ray's pixel takes its new stop
    depth, or +inf where the ray did not become opaque (background: the occupancy grid skips
    its empty space anyway)."""

    def __init__(self, n_pixels: int, margin: float, warp_table, device):
        self.depth = torch.full((n_pixels,), float("inf"), device=device)  # [pixels] world
        self.margin = float(margin)
        self.warp_table = warp_table
        # real rays rendered, of those limited by a known depth, of those marched again in
        # full (not opaque by the limit); kept on the device: no sync per step
        self._counts = torch.zeros(3, dtype=torch.long, device=device)

    @property
    def counts(self) -> dict:
        return dict(zip(("rays", "limited", "again"), self._counts.tolist()))

    def render(self, field, grid, b: RayBatch, cfg, jitter, values_of=None, skip: int = 0):
        """render_rays of batch ``b`` (its first ``skip`` rays mirrored: no limit, no update)
        with each ray limited to its pixel's depth, then the rays not opaque by their limit
        again in full; updates the cache. ``values_of(rays_o, rays_d)`` -> render_rays'
        ``sample_values`` for those rays, or None. -> RenderOutput (n_samples: both passes)."""
        t_max = self.t_max(b, skip)
        vals = None if values_of is None else values_of(b.rays_o, b.rays_d)
        rays = Rays(b.rays_o, b.rays_d, self.warp_table, jitter=jitter, t_max=t_max)
        out = render_rays(field, grid, rays, cfg, bg=b.bg, sample_values=vals, stop_depth=True)
        again = torch.nonzero((t_max < 1e10) & ~torch.isfinite(out.stop))[:, 0]
        if again.numel():
            redo = dataclasses.replace(rays[again], t_max=None)
            bg = b.bg[again] if torch.is_tensor(b.bg) and b.bg.ndim == 2 else b.bg
            vals = None if values_of is None else values_of(redo.origins, redo.directions)
            full = render_rays(field, grid, redo, cfg, bg=bg, sample_values=vals, stop_depth=True)
            out = RenderOutput(*(None if x is None else x.index_put((again,), y)
                                 for x, y in zip((out.rgb, out.depth, out.opacity), (full.rgb, full.depth, full.opacity))),
                               out.n_samples + full.n_samples,
                               None if out.extra is None else out.extra.index_put((again,), full.extra),
                               out.stop.index_put((again,), full.stop))
        self.update(b.pixel, out.stop, t_max, skip, again.numel())
        return out

    def t_max(self, b: RayBatch, skip: int = 0) -> torch.Tensor:
        """[n] world: how far to march each ray of ``b``; its first ``skip`` rays (mirrored:
        not their pixel's ray) without limit."""
        t = self.depth[b.pixel] + self.margin / ray_scale(b.rays_d, self.warp_table, None)
        if skip:
            t[:skip] = float("inf")
        return torch.where(torch.isfinite(t), t, torch.full_like(t, 1e10))

    @torch.no_grad()
    def fill(self, field, grid, sr: SubjectRays, view: int, cfg, chunk: int = 16384) -> None:
        """Every pixel's stop depth as ``field`` renders ``view`` now (no gradients, no
        jitter): a warm cache at once, for about the cost of rendering the view."""
        b = sr.view_batch(view)
        for i in range(0, self.depth.shape[0], chunk):
            out = render_rays(field, grid, Rays(b.rays_o, b.rays_d, sr.warp_table)[i:i + chunk], cfg, stop_depth=True)
            self.depth[i:i + chunk] = out.stop

    @torch.no_grad()
    def update(self, pixel: torch.Tensor, stop: torch.Tensor, t_max: torch.Tensor, skip: int = 0,
               again: int = 0) -> None:
        """Store the stop depths [n] of a batch's real rays (after the first ``skip``)."""
        pixel, stop, limited = pixel[skip:], stop[skip:], t_max[skip:] < 1e10
        self.depth[pixel] = stop.to(self.depth.dtype)
        self._counts[0] += pixel.numel()
        self._counts[1] += limited.sum()
        self._counts[2] += again


#: The head's centre in landmark template units (``face.landmarks.TEMPLATE``: eye corners
#: at x = +-0.45, chin at y = -0.85): behind the eyes, between the chin and the skull's top.
HEAD_CENTRE = (0.0, 0.2, 0.0)


class _Mirror:
    """The world-space reflection x -> A x + b across a subject's face's plane of symmetry,
    and the ball (world centre, radius) that rays must pass through to be mirrored."""

    def __init__(self, subject: Subject, radius: float, device):
        m = torch.as_tensor(mirror_matrix(subject.landmarks), dtype=torch.float32, device=device)
        self.a, self.b = m[:3, :3], m[:3, 3]
        self.radius = None
        if radius > 0:
            centre, to_world = _head_centre(subject)
            self.centre = torch.as_tensor(centre, dtype=torch.float32, device=device)
            self.radius = radius * to_world

    def batch(self, b: RayBatch, count: int) -> tuple[RayBatch, int]:
        """-> (the batch with its first k rays mirrored, k): k = ``count``, or fewer when
        fewer rays pass through the head's ball (those are put first)."""
        if self.radius is not None:
            along = _nearest_t(b.rays_o, b.rays_d, self.centre)[:, None]
            near = (self.centre - b.rays_o - along * b.rays_d).norm(dim=1) < self.radius
            order = torch.cat([torch.nonzero(near)[:, 0], torch.nonzero(~near)[:, 0]])
            count = min(count, int(near.sum()))
            b = RayBatch(*(None if t is None else t[order] for t in (b.rays_o, b.rays_d, b.target, b.bg, b.alpha, b.pixel)))
        o, d = _mirror_rays(b.rays_o, b.rays_d, self.a, self.b, count)
        return RayBatch(o, d, b.target, b.bg, b.alpha, b.pixel), count


def _head_centre(subject: Subject) -> tuple[np.ndarray, float]:
    """(the world position of HEAD_CENTRE for ``subject``'s landmarks, the template-to-world
    length scale)."""
    back = canonical_transform(subject.landmarks, TEMPLATE).inverse()
    return back.apply(HEAD_CENTRE), float(back.scale)


def _nearest_t(rays_o, rays_d, point):
    """[n]: the ray parameter t at which each ray o + t d passes nearest ``point`` [3]."""
    return ((point - rays_o) * rays_d).sum(1) / (rays_d * rays_d).sum(1)


def _spread_frame(sr: SubjectRays, device) -> tuple[float, torch.Tensor]:
    """(world -> canonical length scale, the canonical origin in world [3]): what
    _spread_values needs of a subject, made once per fit."""
    centre = torch.as_tensor(sr.transform.inverse().apply(np.zeros(3)), dtype=torch.float32, device=device)
    return float(sr.transform.scale), centre


def _spread_values(rays_o, rays_d, scale: float, centre: torch.Tensor):
    """-> render_rays' ``sample_values`` for the spread: each sample's canonical distance
    from its ray's point nearest the head's centre (``_spread_frame``), squared (channel
    0) and plain (channel 1). Any per-ray centre gives the same variance; a near one keeps
    float32 exact."""
    c = _nearest_t(rays_o, rays_d, centre.to(rays_o.dtype))

    def values(ray, t):
        off = scale * (t - c[ray])
        return torch.stack([off * off, off, torch.zeros_like(t)], 1)

    return values


def _spread_loss(out, mask, skip: int = 0):
    """mean over the rays (after the first ``skip``, mirrored ones) of mask * the ray's
    sum of w * (t - its mean depth)^2 (the variance of where it ends times its opacity),
    from ``out.extra``'s per-ray sums of w * off^2 and w * off: sum w off^2 - (sum w
    off)^2 / opacity."""
    e = out.extra[skip:]
    spread = e[:, 0] - e[:, 1] ** 2 / out.opacity[skip:].clamp_min(1e-6)
    return torch.mean(mask[skip:] * spread.clamp_min(0))


def _rim_loss(out, weight, skip: int = 0):
    """mean over the rays (after the first ``skip``, mirrored ones) of weight * opacity *
    the squared canonical distance of the ray's mean depth from its point nearest the
    head's centre (``out.extra``'s channel 1 is the sum of w * that signed distance)."""
    e = out.extra[skip:, 1]
    return torch.mean(weight[skip:] * e * e / out.opacity[skip:].clamp_min(1e-6))


@torch.no_grad()
def _transparency(field, model, sr: SubjectRays, view: int) -> torch.Tensor:
    """[pixels]: 1 - the opacity of each ray of ``view`` as ``field`` renders it now."""
    opacity = render_image(field, model.grid, sr.cameras[view], sr.warp_table, model.render_cfg)[2]
    return (1 - opacity.reshape(-1)).clamp(0, 1)


def _mirror_of(subject: Subject, fraction: float, radius: float = 0.0, device="cpu"):
    """The subject's _Mirror, or None when ``fraction`` is 0 or it has no landmarks."""
    if not fraction > 0 or subject.landmarks is None:
        return None
    if not fraction < 1:
        raise ValueError(f"finetune.mirror must be a fraction in [0, 1) (some rays stay real), got {fraction}")
    if not radius >= 0:
        raise ValueError(f"finetune.mirror_radius must be >= 0, got {radius}")
    return _Mirror(subject, float(radius), device)


def _photo_loss(out, batch, mirrored: int, rgb_weight: float, anchored: int = 0, anchor_loss=None):
    """-> (the real rays' colour MSE, the loss). The first ``mirrored`` rays are mirrored:
    their loss is their opacity's squared error against the mask plus ``rgb_weight``
    times their colour's; the next ``anchored`` (finetune.anchor) have the mean loss
    ``anchor_loss`` (Anchor.loss) and are not in the MSE; each ray weighs the same."""
    err = (out.rgb - batch.target) ** 2
    if not mirrored and not anchored:
        mse = err.mean()
        return mse, mse
    n = err.shape[0]
    k = mirrored + anchored
    mse = err[k:].mean()
    total = (n - k) * mse
    if anchored:
        total = total + anchored * anchor_loss
    if mirrored:
        mirror = rgb_weight * err[:mirrored].mean() + torch.mean((out.opacity[:mirrored] - batch.alpha[:mirrored]) ** 2)
        total = total + mirrored * mirror
    return mse, total / n


def _insert(b: RayBatch, extra: RayBatch, at: int) -> RayBatch:
    """``b`` with the rays of ``extra`` inserted before its ray ``at``."""
    cat = lambda x, y: torch.cat([x[:at], y, x[at:]])  # noqa: E731
    return RayBatch(*(None if x is None else cat(x, y) for x, y in
                      zip((b.rays_o, b.rays_d, b.target, b.bg, b.alpha, b.pixel),
                          (extra.rays_o, extra.rays_d, extra.target, extra.bg, extra.alpha, extra.pixel))))


def _anchor_of(subject: Subject, model: PortraitModel, sr: SubjectRays, view: int, yaws=None):
    """The finetune.anchor views of ``model`` as it is now, around ``subject``'s head
    (``yaws``: the virtual views' turns from ``view``, degrees; default ANCHOR_YAWS), or
    None when they keep no ray."""
    from .anchor import ANCHOR_YAWS, Anchor

    centre, _ = _head_centre(subject)
    up = sr.transform.rotation.T @ np.array([0.0, 1.0, 0.0])
    tol = 0.1 / float(sr.transform.scale)  # 0.1 canonical units (the head's radius is ~1)
    anchor = Anchor(model.field, model.grid, model.render_cfg, sr.warp_table, model.density_fn(), sr.cameras[view],
                    centre, up, yaws=ANCHOR_YAWS if yaws is None else yaws, tol=tol,
                    world_to_canonical=float(sr.transform.scale))
    return anchor if len(anchor) else None


def _mirror_rays(rays_o, rays_d, a, b, count: int):
    """The first ``count`` rays reflected by x -> A x + b (their colours stay: under the
    face's symmetry the mirrored ray sees what the original one saw)."""
    if count <= 0:
        return rays_o, rays_d
    o, d = rays_o.clone(), rays_d.clone()
    o[:count] = rays_o[:count] @ a.T + b
    d[:count] = rays_d[:count] @ a.T
    return o, d


@torch.no_grad()
def _pull_(opt, field, prior, strength: float) -> None:
    """θ <- θ - lr * strength * (θ - θ_p), per parameter group's lr (decoupled L2 to θ_p)."""
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for p, p0 in zip(field.parameters(), prior):
        a = lr_of.get(id(p), 0.0) * strength
        if a:
            p.sub_(p - p0, alpha=min(a, 1.0))


class _Clock:
    """Elapsed seconds, minus the time spent inside ``paused()`` blocks."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.excluded = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.excluded

    @contextlib.contextmanager
    def paused(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.excluded += time.perf_counter() - t
