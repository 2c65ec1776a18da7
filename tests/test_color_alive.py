"""render.color_alive: with gradients, the colour network runs only on the samples before each
ray turned opaque. composite gives the samples after that zero weight and zero gradient and
never reads their colour, so the output and every parameter's gradient must be what the whole
field on every sample gives, while the colour network sees fewer rows."""
from dataclasses import replace

import pytest
import torch

from pnerf_fast.field import RadianceField
from pnerf_fast.field.config import field_config_from_dict
from pnerf_fast.ops.occgrid import OccupancyGrid
from pnerf_fast.render import renderer
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import RenderConfig, render_rays

from test_train import TINY_FIELD

CFG = RenderConfig(step=0.03, t_thresh=1e-3)


def _opaque_field(seed=0, bias=1.0, latent=0):
    """A tiny field whose density is high almost everywhere (its density bias raised), so that
    a ray that crosses the box turns opaque after a few samples."""
    torch.manual_seed(seed)
    cfg = {**TINY_FIELD, "density": {"activation": "trunc_exp", "bias": bias}}
    if latent:
        cfg["latent_dim"] = latent
    f = RadianceField(field_config_from_dict(cfg))
    if latent:
        with torch.no_grad():
            f.latent.normal_()
    return f


def _rays(n=96, seed=1, view_from=None):
    """Rays from a sphere of radius 3: two thirds aimed near the centre (they turn opaque), the
    rest aimed wide (they miss the box, or clip a corner of it and stay partly transparent)."""
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g)
    o = 3.0 * o / o.norm(dim=-1, keepdim=True)
    spread = torch.where(torch.arange(n) % 3 == 2, 2.6, 0.3)[:, None]
    d = torch.nn.functional.normalize(spread * torch.randn(n, 3, generator=g) - o, dim=-1)
    return Rays(o, d, jitter=torch.rand(n, generator=g), view_from=view_from)


def _render_and_grads(field, rays, cfg):
    field.zero_grad(set_to_none=True)
    grid = OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=8)
    out = render_rays(field, grid, rays, cfg, bg=torch.tensor([0.2, 0.5, 0.9]))
    g = torch.Generator().manual_seed(7)
    loss = (out.rgb * torch.rand(out.rgb.shape, generator=g)).sum() + out.depth.sum() * 0.1 + out.opacity.sum()
    loss.backward()
    return out, {k: p.grad.clone() for k, p in field.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("latent,view_from,impl", [(0, None, "auto"), (8, None, "auto"), (0, (0.0, 0.0, 4.0), "auto"),
                                                   (0, None, "torch")])
def test_color_alive_gives_the_same_output_and_gradients(latent, view_from, impl, monkeypatch):
    if impl == "torch":  # both composites through the PyTorch reference, not the kernel
        from functools import partial

        from pnerf_fast.ops.composite import composite

        monkeypatch.setattr(renderer, "composite", partial(composite, impl="torch"))
    field = _opaque_field(latent=latent)
    vf = None if view_from is None else torch.tensor(view_from)
    rays = _rays(view_from=vf)
    calls = []
    color = field.color

    def counting(feat, d):
        calls.append(feat.shape[0])
        return color(feat, d)

    field.color = counting
    ref, g_ref = _render_and_grads(field, rays, replace(CFG, color_alive=False))
    alive, g_alive = _render_and_grads(field, rays, CFG)
    assert ref.n_samples == alive.n_samples
    # the batch mixes rays that turn opaque, rays that stay partly transparent and rays that miss
    assert (ref.opacity > 0.999).sum() > 20 and ((ref.opacity > 0) & (ref.opacity < 0.99)).any()
    assert (ref.opacity == 0).any()
    # the colour network saw fewer rows: many samples lie behind an opaque surface
    assert calls[1] < 0.8 * calls[0], calls
    torch.testing.assert_close(alive.rgb, ref.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(alive.depth, ref.depth, rtol=0, atol=1e-6)
    torch.testing.assert_close(alive.opacity, ref.opacity, rtol=0, atol=1e-6)
    assert set(g_alive) == set(g_ref)
    for k in g_ref:
        torch.testing.assert_close(g_alive[k], g_ref[k], rtol=1e-4, atol=1e-6, msg=k)


def test_color_alive_is_off_without_early_termination_and_for_other_fields():
    field = _opaque_field()
    rays = _rays()
    n = []
    color = field.color
    field.color = lambda feat, d: (n.append(feat.shape[0]), color(feat, d))[1]
    out = render_rays(field, OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=8), rays, replace(CFG, t_thresh=0.0))
    assert n == [out.n_samples]  # no termination: every sample has a colour that counts

    class Wrapped(RadianceField):  # a subclass with its own forward: not split
        def forward(self, x, d):
            return super().forward(x, d)

    assert renderer._splits(field)
    assert not renderer._splits(Wrapped(field_config_from_dict(TINY_FIELD)))
    assert not renderer._splits(torch.nn.Linear(3, 3))
    torch.manual_seed(0)
    wrapped = Wrapped(field_config_from_dict({**TINY_FIELD, "density": {"activation": "trunc_exp", "bias": 4.0}}))
    seen = []
    wrapped.color = lambda feat, d: (seen.append(feat.shape[0]), RadianceField.color(wrapped, feat, d))[1]
    out = render_rays(wrapped, OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=8), rays, CFG)
    assert seen == [out.n_samples]  # its own forward, on every sample
    out.rgb.sum().backward()


def test_render_config_color_alive_from_dict():
    assert RenderConfig.from_dict({}).color_alive is True
    assert RenderConfig.from_dict({"color_alive": False}).color_alive is False
