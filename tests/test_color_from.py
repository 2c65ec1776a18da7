"""Rays.view_from / PortraitField.color_from: a portrait fitted to one view colours every
sample as that view's camera saw it (the direction from the camera's centre to the
sample), in all three render paths; the input view itself renders as before."""
import numpy as np
import pytest
import torch

from pnerf_fast.data.format import load_dataset
from pnerf_fast.ops.occgrid import OccupancyGrid
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import RenderConfig, render_rays
from pnerf_fast.train.finetune import finetune
from pnerf_fast.train.model import PortraitField
from pnerf_fast.train.pretrain import pretrain

from test_train import tiny, tiny_cfg  # noqa: F401  (fixture)


class DirBall(torch.nn.Module):
    """A dense ball whose colour is its direction input, (d + 1) / 2: what a render gets
    is what directions the field was given. Records the (x, d) pairs it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def density(self, x):
        return 30.0 * (x.norm(dim=-1) < 0.8).to(x.dtype)

    def forward(self, x, d):
        self.seen.append((x.detach().clone(), d.detach().clone()))
        return self.density(x), (d + 1) / 2


def _side_rays(n=64):
    """Parallel rays from +x towards -x through the ball (a "side view")."""
    g = torch.linspace(-0.6, 0.6, 8)
    y, z = torch.meshgrid(g, g, indexing="xy")
    o = torch.stack([torch.full((n,), 3.0), y.reshape(-1), z.reshape(-1)], 1)
    d = torch.tensor([-1.0, 0.0, 0.0]).expand_as(o).contiguous()
    return o, d


@pytest.mark.parametrize("path", ["grad", "segmented fast", "segmented reference"])
def test_every_render_path_colours_along_the_direction_from_view_from(path):
    field, grid = DirBall(), OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=8)
    o, d = _side_rays()
    eye = torch.tensor([0.0, 0.0, 3.0])  # a "frontal camera" on +z
    cfg = RenderConfig(step=0.05, fast_infer=path != "segmented reference")
    with torch.set_grad_enabled(path == "grad"):
        along = render_rays(field, grid, Rays(o, d), cfg, bg=0.0)
        field.seen.clear()
        seen = render_rays(field, grid, Rays(o, d, view_from=eye), cfg, bg=0.0)
    assert field.seen, "the field was not evaluated"
    for x, dirs in field.seen:
        torch.testing.assert_close(dirs, torch.nn.functional.normalize(x - eye, dim=-1))
    # along the rays every hit pixel is (d + 1) / 2 = (0, 0.5, 0.5); from the eye on +z the
    # blue channel (z) is below 0.5 wherever the ball is
    hit = along.opacity > 0.99
    assert hit.sum() > 10
    torch.testing.assert_close(along.rgb[hit], torch.tensor([0.0, 0.5, 0.5]).expand(int(hit.sum()), 3), atol=2e-3,
                               rtol=0)
    assert (seen.rgb[hit, 2] < 0.5 - 0.1).all()
    # the geometry is the same: only the colour's direction input moved
    torch.testing.assert_close(seen.opacity, along.opacity)
    # rays that come from the eye itself render as before
    o2 = eye.expand(5, 3).contiguous()
    d2 = torch.nn.functional.normalize(torch.tensor([[0.1, 0.0, -1.0], [0.0, 0.2, -1.0], [0.0, 0.0, -1.0],
                                                     [-0.1, -0.1, -1.0], [0.2, 0.1, -1.0]]), dim=-1)
    with torch.set_grad_enabled(path == "grad"):
        a = render_rays(field, grid, Rays(o2, d2), cfg)
        b = render_rays(field, grid, Rays(o2, d2, view_from=eye), cfg)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="view_from"):
        Rays(o, d, view_from=torch.zeros(2))


def test_a_single_view_portrait_colours_as_its_camera_saw(tiny, tmp_path):
    cfg = tiny_cfg(tiny, method="random")
    prior = pretrain(tiny["data"], tmp_path / "rand.pt", cfg, progress=False, log=lambda *a: None)
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    pf = finetune(subj, init=prior.path, steps=6, progress=False, seed=1)
    f = subj.frontal_index
    np.testing.assert_allclose(pf.color_from, pf.transform.apply(subj.cameras[f].c2w[:3, 3]), rtol=1e-12)
    with_eye = {v: pf.render(subj.cameras[v])["rgb"] for v in range(len(subj.cameras))}
    eye = pf.color_from
    pf.color_from = None
    along = {v: pf.render(subj.cameras[v])["rgb"] for v in range(len(subj.cameras))}
    # the input view: the same directions (up to rounding), the same picture
    torch.testing.assert_close(with_eye[f], along[f], atol=1e-4, rtol=0)
    # another view: the colour network now sees the input camera's directions
    assert max(float((with_eye[v] - along[v]).abs().max()) for v in range(len(subj.cameras)) if v != f) > 1e-3
    # saved and loaded with the portrait
    pf.color_from = eye
    pf.save(tmp_path / "pf.pt")
    again = PortraitField.load(tmp_path / "pf.pt")
    assert again.color_from == pytest.approx(eye)
    side = next(v for v in range(len(subj.cameras)) if v != f)
    torch.testing.assert_close(again.render(subj.cameras[side])["rgb"], with_eye[side])
    for bad in ([1.0, 2.0], [1.0, float("nan"), 0.0], "front", {"x": 1}, object(), [1.0, [2.0], 3.0]):
        with pytest.raises(ValueError, match="color_from"):
            pf.color_from = bad
    # a damaged checkpoint names the field
    from pnerf_fast.train.model import save_atomic

    st = torch.load(tmp_path / "pf.pt", weights_only=True)
    for bad in ("front", [1.0, 2.0], [1.0, float("inf"), 0.0], [True, 0.0, 0.0], [10 ** 400, 0.0, 0.0], {"x": 1}):
        st["extra"]["portrait"]["color_from"] = bad
        save_atomic(st, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="color_from"):
            PortraitField.load(tmp_path / "bad.pt")
    # a fit to several views renders along the rays (as the multi-view oracle does)
    multi = finetune(subj, init=prior.path, steps=2, progress=False, seed=1, views=list(range(len(subj.cameras))))
    assert multi.color_from is None
