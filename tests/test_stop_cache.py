"""finetune.stop_cache: a single-view fit keeps each input pixel's stop depth (where its
ray turned opaque) and marches the pixel's next ray only that far plus a margin. The
samples it skips lie behind the opaque surface, where composite gives them zero weight and
zero gradient, so a step renders and learns what it would without the cache."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from pnerf_fast.data.format import load_dataset
from pnerf_fast.ops.occgrid import OccupancyGrid
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import RenderConfig, render_rays
from pnerf_fast.train import finetune as ft
from pnerf_fast.train.config import config_from_dict
from pnerf_fast.train.data import RayBatch
from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_train import tiny  # noqa: F401  (fixture)

CFG = RenderConfig(step=0.05, t_thresh=1e-3)


class Ball(torch.nn.Module):
    """A dense ball of radius ``r`` about ``centre`` (sigma 60 inside, 0 outside), coloured by
    a learnable linear map of position: a field whose opaque surface is known."""

    def __init__(self, r=0.8, centre=(0.0, 0.0, 0.0)):
        super().__init__()
        self.r = r
        self.centre = torch.tensor(centre)
        self.lin = torch.nn.Linear(3, 3)
        self.scale = torch.nn.Parameter(torch.tensor(1.0))  # sigma's scale: a density gradient

    def density(self, x):
        inside = ((x - self.centre).norm(dim=-1) < self.r).to(x.dtype)
        return 60.0 * self.scale * inside

    def forward(self, x, d):
        return self.density(x), torch.sigmoid(self.lin(x))


def _rays(n_side=9, half=1.2):
    """A lattice of parallel rays from z = 3 towards -z: the middle ones hit the ball, the
    corner ones miss it."""
    u = torch.linspace(-half, half, n_side)
    x, y = torch.meshgrid(u, u, indexing="xy")
    o = torch.stack([x.reshape(-1), y.reshape(-1), torch.full((n_side * n_side,), 3.0)], 1)
    d = torch.tensor([0.0, 0.0, -1.0]).expand_as(o).contiguous()
    return o, d


def _grid():
    return OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=8)


def test_stop_depth_is_where_each_ray_turns_opaque_in_both_render_paths():
    torch.manual_seed(0)
    field, grid = Ball(), _grid()
    o, d = _rays()
    jitter = torch.rand(o.shape[0])
    with torch.enable_grad():
        train = render_rays(field, grid, Rays(o, d, jitter=jitter), CFG, stop_depth=True)
    with torch.no_grad():
        infer = render_rays(field, grid, Rays(o, d, jitter=jitter), CFG, stop_depth=True)
    hit = (o[:, :2].norm(dim=1) < 0.7)  # well inside the ball's silhouette
    miss = (o[:, :2].norm(dim=1) > 0.85)
    assert hit.sum() > 10 and miss.sum() > 10
    for out in (train, infer):
        assert torch.isfinite(out.stop[hit]).all() and torch.isinf(out.stop[miss]).all()
        front = 3.0 - torch.sqrt(0.8 ** 2 - (o[hit, :2] ** 2).sum(1))  # where the ray enters the ball
        # sigma * step = 3 a sample: T falls below 1e-3 within the third or fourth sample inside
        assert ((out.stop[hit] >= front + 2 * CFG.step) & (out.stop[hit] < front + 5 * CFG.step)).all()
    assert torch.equal(torch.isfinite(train.stop), torch.isfinite(infer.stop))
    # the segmented path continues each ray's jittered samples from one segment to the next
    # (no new jitter at a boundary), so it marches the single march's samples
    assert torch.allclose(train.stop[hit], infer.stop[hit], atol=1e-5)
    for segment in (2, 3, 16):
        with torch.no_grad():
            other = render_rays(field, grid, Rays(o, d, jitter=jitter), replace(CFG, segment=segment), stop_depth=True)
        assert torch.allclose(other.stop[hit], train.stop[hit], atol=1e-5), segment
        assert torch.allclose(other.rgb, infer.rgb, atol=1e-4), segment
    with torch.no_grad():
        a = render_rays(field, grid, Rays(o, d), CFG, stop_depth=True).stop
    with torch.enable_grad():
        b = render_rays(field, grid, Rays(o, d), CFG, stop_depth=True).stop
    assert torch.allclose(a[hit], b[hit], atol=1e-5)
    assert render_rays(field, grid, Rays(o, d, jitter=jitter), CFG).stop is None  # only when asked


def test_a_limit_past_the_stop_depth_changes_nothing_but_the_samples():
    """t_max = stop + a step under another jitter: the same colour, opacity and gradients
    of a loss on them, with fewer samples; a limit before the stop changes the colour."""
    torch.manual_seed(1)
    field, grid = Ball(), _grid()
    o, d = _rays()
    full0 = render_rays(field, grid, Rays(o, d, jitter=torch.rand(o.shape[0])), CFG, stop_depth=True)
    stop = full0.stop
    jitter = torch.rand(o.shape[0])
    target = torch.rand(o.shape[0], 3)

    def run(t_max):
        field.zero_grad()
        out = render_rays(field, grid, Rays(o, d, jitter=jitter, t_max=t_max), CFG)
        loss = ((out.rgb - target) ** 2).mean() + out.opacity.mean()
        loss.backward()
        return out, [p.grad.clone() for p in field.parameters()]

    full, g_full = run(None)
    limit = torch.where(torch.isfinite(stop), stop + CFG.step, torch.full_like(stop, 1e10))
    cut, g_cut = run(limit)
    assert cut.n_samples < 0.9 * full.n_samples  # (the rays that miss the ball cross the whole box)
    assert torch.allclose(cut.rgb, full.rgb, atol=1e-6) and torch.allclose(cut.opacity, full.opacity, atol=1e-6)
    for a, b in zip(g_cut, g_full):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    short, _ = run(torch.where(torch.isfinite(stop), stop - 4 * CFG.step, torch.full_like(stop, 1e10)))
    assert (short.rgb - full.rgb).abs().max() > 0.05  # the check can fail


def _batch(o, d, pixel):
    n = o.shape[0]
    return RayBatch(o, d, torch.zeros(n, 3), torch.ones(n, 3), torch.ones(n), pixel)


def test_a_ray_not_opaque_by_its_limit_is_marched_again_and_reset():
    """The ball moves back: the cached depths end the rays in front of it. Those rays are
    marched again in full in the same step (so they render as without the cache) and their
    pixels take the new depth; where the ball is gone their pixels go back to +inf."""
    field, grid = Ball(), _grid()
    o, d = _rays()
    n = o.shape[0]
    pixel = torch.arange(n)
    cache = ft._StopCache(n, 2 * CFG.step, None, "cpu")
    b = _batch(o, d, pixel)
    jitter = torch.rand(n, generator=torch.Generator().manual_seed(2))
    first = cache.render(field, grid, b, CFG, jitter)
    known = torch.isfinite(cache.depth)
    assert torch.equal(known, torch.isfinite(first.stop)) and known.sum() > 10
    assert cache.counts == {"rays": n, "limited": 0, "again": 0}
    old = cache.depth.clone()

    field.centre = torch.tensor([0.0, 0.0, -0.6])  # the surface 0.6 further back
    field.r = 0.8
    plain = render_rays(field, grid, Rays(o, d, jitter=jitter), CFG, stop_depth=True)
    limited = render_rays(field, grid, Rays(o, d, jitter=jitter, t_max=cache.t_max(b)), CFG)
    assert (limited.rgb - plain.rgb).abs().max() > 0.1  # the bare limit would be wrong here
    out = cache.render(field, grid, b, CFG, jitter)
    assert torch.allclose(out.rgb, plain.rgb, atol=1e-6) and torch.allclose(out.opacity, plain.opacity, atol=1e-6)
    again = cache.counts["again"]
    assert cache.counts["limited"] == int(known.sum()) and again > 10
    hit_now = torch.isfinite(plain.stop)
    assert torch.allclose(cache.depth[hit_now], plain.stop[hit_now]) and (cache.depth[hit_now & known] > old[hit_now & known]).all()
    assert torch.isinf(cache.depth[~hit_now]).all()

    field.r = 0.0  # nothing left: every pixel goes back to no limit
    cache.render(field, grid, b, CFG, jitter)
    assert torch.isinf(cache.depth).all()


def test_mirrored_rays_are_not_limited_and_leave_the_cache_alone():
    field, grid = Ball(), _grid()
    o, d = _rays(5)
    n = o.shape[0]
    cache = ft._StopCache(n, 2 * CFG.step, None, "cpu")
    cache.depth[:] = 2.5  # a (wrong) depth for every pixel
    b = _batch(o, d, torch.arange(n))
    t = cache.t_max(b, skip=3)
    assert (t[:3] == 1e10).all() and torch.allclose(t[3:], torch.full((n - 3,), 2.5 + 2 * CFG.step))
    cache.render(field, grid, b, CFG, torch.zeros(n), skip=3)
    assert (cache.depth[:3] == 2.5).all() and not (cache.depth[3:] == 2.5).all()
    assert cache.counts["rays"] == n - 3


def _subject(tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    return ds.subject(ds.subjects("test")[0])


def _fit(latent_prior, subj, cache, views=None, margin=2.0):  # noqa: F811
    model = PortraitModel.load(latent_prior)
    model.cfg.finetune.stop_cache = cache
    model.cfg.finetune.stop_margin = margin
    model.cfg.finetune.spread = 0.3  # with per-sample values, as the shipped prior fits
    # the tiny prior is a faint head (opacity < 0.2): a denser one (sigma x e^4) is opaque
    # on its middle rays, so that rays do stop and the cache has something to skip
    model.field.cfg.density.bias += 4.0
    pf = ft.finetune(subj, init=model, steps=8, code_steps=4, rays_per_step=256, views=views, progress=False)
    return pf


def test_finetune_with_the_cache_learns_what_it_learns_without(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    plain, cached = _fit(latent_prior, subj, False), _fit(latent_prior, subj, True)
    c = cached.info["stop_cache"]
    assert "stop_cache" not in plain.info
    assert c["rays"] == 12 * 256 and c["limited"] > 0.1 * c["rays"], c  # the cache was used
    assert cached.info["frontal_psnr"] == pytest.approx(plain.info["frontal_psnr"], abs=0.05)
    diffs = [float((a - b).detach().abs().max() / (b.detach().abs().max() + 1e-8))
             for a, b in zip(cached.model.field.parameters(), plain.model.field.parameters())]
    assert max(diffs) < 1e-3, diffs


def test_the_cache_is_for_single_view_fits_only(latent_prior, tiny):  # noqa: F811
    subj = _subject(tiny)
    assert "stop_cache" not in _fit(latent_prior, subj, True, views=[0, 1]).info


def test_stop_cache_settings_are_validated(latent_prior, tiny):  # noqa: F811
    for bad in (0.5, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finetune.stop_margin"):
            config_from_dict({"finetune": {"stop_margin": bad}})
    with pytest.raises(ValueError, match="finetune.stop_cache"):
        config_from_dict({"finetune": {"stop_cache": 1}})
    cfg = config_from_dict({"finetune": {"stop_cache": True, "stop_margin": 1}})
    assert cfg.finetune.stop_cache is True and cfg.finetune.stop_margin == 1.0
    subj = _subject(tiny)
    model = PortraitModel.load(latent_prior)
    for bad in (0.0, np.nan):
        model.cfg.finetune.stop_margin = bad
        with pytest.raises(ValueError, match="finetune.stop_margin"):
            ft.finetune(subj, init=model, steps=1, progress=False)
    model.cfg.finetune.stop_margin = 4.0
    model.cfg.finetune.stop_cache = "yes"
    with pytest.raises(ValueError, match="finetune.stop_cache"):
        ft.finetune(subj, init=model, steps=1, progress=False)
