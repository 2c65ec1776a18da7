"""The renderer's segmented marching, and the finetune / render / eval commands end to end
(tiny sizes)."""
import json
from dataclasses import replace

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import yaml

from pnerf_fast.cli import main as pnerf
from pnerf_fast.data.lightstage import generate_lightstage
from pnerf_fast.ops.occgrid import OccupancyGrid
from pnerf_fast.geometry.cameras import Camera, look_at
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import RenderConfig, render_rays

from pnerf_fast.train.model import save_atomic

from test_train import TINY_FIELD


class Blob(torch.nn.Module):
    """A soft ball of density with position-dependent colour."""

    def density(self, x):
        return 40.0 * torch.sigmoid((0.8 - x.norm(dim=-1)) * 30)

    def forward(self, x, d):
        return self.density(x), torch.sigmoid(3 * x + d)


def rays(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, 4.0]) + 0.3 * torch.randn(n, 3, generator=g)
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, -1.0]) + 0.2 * torch.randn(n, 3, generator=g), dim=1)
    return o, d


def test_segmented_rendering_matches_one_pass():
    grid = OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=32)
    field = Blob()
    o, d = rays()
    table = torch.tensor([[1.1, 0, 0, 0, 1.1, 0, 0, 0, 1.1, 0.05, 0.0, -0.1]])
    with torch.no_grad():
        full = render_rays(field, grid, Rays(o, d, table), RenderConfig(step=0.01, prune=False, t_thresh=1e-6))
        seg = render_rays(field, grid, Rays(o, d, table), RenderConfig(step=0.01, prune=True, segment=8, t_thresh=1e-6))
    assert seg.n_samples < full.n_samples  # rays stopped early
    torch.testing.assert_close(seg.rgb, full.rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(seg.opacity, full.opacity, atol=2e-3, rtol=0)
    # The training path (gradients on), with its pre-pass, stops rays at the same place;
    # without it (the default: cheaper on CPU) it marches every sample; same colours.
    cfg = RenderConfig(step=0.01, prune=True, prune_train=True, segment=8, t_thresh=1e-6)
    train = render_rays(field, grid, Rays(o, d, table), cfg)
    torch.testing.assert_close(train.rgb.detach(), full.rgb, atol=2e-3, rtol=0)
    assert train.n_samples < full.n_samples
    plain = render_rays(field, grid, Rays(o, d, table), RenderConfig(step=0.01, prune=True, segment=8, t_thresh=1e-6))
    torch.testing.assert_close(plain.rgb.detach(), full.rgb, atol=2e-3, rtol=0)
    assert plain.n_samples == full.n_samples


def _tiny_field(latent_dim=0, backend="torch"):
    """TINY_FIELD with a visible density (random tables, a raised density bias)."""
    from pnerf_fast.field.config import field_config_from_dict
    from pnerf_fast.field.field import RadianceField

    torch.manual_seed(0)
    field = RadianceField(field_config_from_dict(dict(TINY_FIELD, backend=backend, latent_dim=latent_dim,
                                                      density={"bias": 1.0}))).eval()
    with torch.no_grad():
        field.encoding.params.uniform_(-1, 1)
        if latent_dim:
            field.latent.normal_()
    return field


@pytest.mark.parametrize("latent_dim,backend", [(0, "torch"), (4, "torch"), (0, "fused")])
def test_fast_inference_matches_the_reference(latent_dim, backend):
    """No-grad rendering with the density pass first and the color network only where the
    weight counts gives the reference's image: threshold 0 skips only samples of weight 0
    (the same sums), 1e-4 drops a negligible part of the color."""
    grid = OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=32)
    field = _tiny_field(latent_dim, backend)
    o, d = rays(300, seed=1)
    table = torch.tensor([[1.1, 0, 0, 0, 1.1, 0, 0, 0, 1.1, 0.05, 0.0, -0.1]])
    base = RenderConfig(step=0.02, segment=8, t_thresh=1e-3)
    with torch.no_grad():
        ref = render_rays(field, grid, Rays(o, d, table), replace(base, fast_infer=False), bg=0.5)
        exact = render_rays(field, grid, Rays(o, d, table), replace(base, color_thresh=0.0), bg=0.5)
        fast = render_rays(field, grid, Rays(o, d, table), replace(base, color_thresh=1e-4), bg=0.5)
    assert 0.2 < float(ref.opacity.mean()) < 0.95 and ref.n_samples == fast.n_samples
    # The torch backend is the same addmm on the same rows; the fused kernel rounds differently.
    tol = 0 if backend == "torch" else 1e-5
    for a, b in ((exact.rgb, ref.rgb), (exact.depth, ref.depth), (exact.opacity, ref.opacity)):
        torch.testing.assert_close(a, b, atol=tol, rtol=0)
    torch.testing.assert_close(fast.rgb, ref.rgb, atol=2e-4, rtol=0)
    torch.testing.assert_close(fast.opacity, ref.opacity, atol=tol, rtol=0)


def test_fast_inference_of_a_forward_only_field_is_exact():
    """A field with only forward(x, d) (no geometry/color split): every sample evaluated,
    colors picked where the weight > 0, bit for bit the reference."""
    grid = OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=32)
    o, d = rays()
    with torch.no_grad():
        ref = render_rays(Blob(), grid, Rays(o, d), RenderConfig(step=0.01, segment=8, fast_infer=False))
        new = render_rays(Blob(), grid, Rays(o, d), RenderConfig(step=0.01, segment=8, color_thresh=0.0))
    assert torch.equal(new.rgb, ref.rgb) and torch.equal(new.depth, ref.depth)


def test_a_ray_bundle_checks_its_shapes_and_slices_per_ray():
    """Rays: per-ray tensors must have one row per ray; rays[idx] picks those rows (the
    warp table is shared), and a bundle rendered in slices is the bundle rendered whole
    (within float rounding: the vectorised math rounds by batch)."""
    o, d = rays()
    n = o.shape[0]
    table = torch.tensor([[1.1, 0, 0, 0, 1.1, 0, 0, 0, 1.1, 0.05, 0.0, -0.1]])
    with pytest.raises(ValueError, match=r"Rays: t_max must have shape \[%d\]" % n):
        Rays(o, d, t_max=torch.ones(n + 1))
    with pytest.raises(ValueError, match="Rays: origins and directions"):
        Rays(o, d[:, :2])
    r = Rays(o, d, table, jitter=torch.rand(n), t_max=torch.full((n,), 9.0))
    half = r[n // 2:]
    assert len(half) == n - n // 2 and half.warp_table is table and torch.equal(half.jitter, r.jitter[n // 2:])
    grid = OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=32)
    cfg = RenderConfig(step=0.01, segment=8)
    with torch.no_grad():
        whole = render_rays(Blob(), grid, r, cfg, bg=0.5)
        parts = [render_rays(Blob(), grid, r[i:i + 7], cfg, bg=0.5) for i in range(0, n, 7)]
    assert torch.allclose(whole.rgb, torch.cat([p.rgb for p in parts]), atol=1e-6)  # (float rounding per batch)


@pytest.fixture(scope="module")
def tiny_portrait(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "stage"
    generate_lightstage(data, subjects=3, res=24, seed=4, views=3, spp=1, progress=False, contact_sheet_path=None)
    field_yaml = root / "tiny_field.yaml"
    field_yaml.write_text(yaml.safe_dump(TINY_FIELD))
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"field": str(field_yaml), "rays_per_step": 64, "image_scale": 1.0,
                                   "render": {"step": 0.05}, "grid": {"res": 16},
                                   "finetune": {"steps": 2, "rays_per_step": 64}}))
    prior = root / "prior.pt"
    assert pnerf(["pretrain", "--data", str(data), "--method", "random", "--config", str(cfg), "--out", str(prior), "--quiet"]) == 0
    model = root / "portrait.pt"
    assert pnerf(["finetune", str(data / "subject_002"), "--init", str(prior), "--out", str(model), "--quiet"]) == 0
    return {"root": root, "data": data, "prior": prior, "model": model}


@pytest.mark.parametrize("path,suffix", [("orbit", ".gif"), ("dolly-zoom", ".mp4"), ("grid", "")])
def test_render_command_writes_rgb_and_depth(tiny_portrait, path, suffix):
    out = tiny_portrait["root"] / f"{path}{suffix}"
    assert pnerf(["render", str(tiny_portrait["model"]), "--path", path, "--frames", "4", "--res", "24",
                  "--out", str(out), "--quiet"]) == 0
    if suffix:
        frames = imageio.mimread(out)
        depth = imageio.mimread(out.with_name(out.stem + "_depth" + suffix))
        assert frames[0].shape[:2] == (24, 24) and depth[0].shape[:2] == (24, 24)
        if suffix == ".mp4":
            assert len(frames) == 4 and len(depth) == 4
        else:  # GIF writers merge identical consecutive frames (an untrained depth map is all background)
            assert 1 <= len(depth) <= 4 and len(frames) >= 2
    else:
        assert len(list(out.glob("*.png"))) >= 2
        assert len(list((tiny_portrait["root"] / f"{path}_depth").glob("*.png"))) >= 2


def test_eval_command_writes_per_view_json(tiny_portrait):
    js = tiny_portrait["root"] / "eval.json"
    assert pnerf(["eval", "--data", str(tiny_portrait["data"]), "--init", str(tiny_portrait["prior"]), "--steps", "1",
                  "--no-lpips", "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    subj = res["subjects"][0]
    assert len(subj["per_view"]["psnr"]) == 2  # 3 views: the frontal one is the input
    assert 0 < res["mean"]["psnr"] < 60 and 0 <= res["mean"]["ssim"] <= 1


def test_cli_errors_name_the_problem(tiny_portrait, capsys):
    assert pnerf(["render", str(tiny_portrait["prior"]), "--out", str(tiny_portrait["root"] / "x.mp4"), "--quiet"]) == 2
    assert "not a finetuned portrait" in capsys.readouterr().err
    assert pnerf(["render", str(tiny_portrait["model"]), "--frames", "0", "--out", str(tiny_portrait["root"] / "y.mp4")]) == 2
    assert "--frames" in capsys.readouterr().err
    assert pnerf(["pretrain", "--data", str(tiny_portrait["root"] / "nope"), "--out", "z.pt"]) == 2
    assert "--data" in capsys.readouterr().err


def test_render_colors_option(tiny_portrait):
    """--colors ray renders along the rays, --colors input as the input camera saw (the
    saved default of a single-view portrait); the same picture as the portrait's own renders."""
    from pnerf_fast.render.paths import orbit
    from pnerf_fast.train.model import PortraitField

    pf = PortraitField.load(tiny_portrait["model"], device="cpu")  # (the CLI renders where "auto" says)
    assert pf.color_from is not None  # finetuned on one view
    cam = orbit(4, 24)[1]
    frames = {}
    for colors in ("input", "ray"):
        out = tiny_portrait["root"] / f"colors_{colors}"
        assert pnerf(["render", str(tiny_portrait["model"]), "--frames", "4", "--res", "24", "--colors", colors,
                      "--no-depth", "--out", str(out), "--quiet"]) == 0
        frames[colors] = imageio.imread(sorted(out.glob("*.png"))[1])
    want_input = (pf.render(cam)["rgb"].numpy() * 255 + 0.5).astype(np.uint8)
    pf.color_from = None
    want_ray = (pf.render(cam)["rgb"].numpy() * 255 + 0.5).astype(np.uint8)
    assert not np.array_equal(want_input, want_ray)  # the two really differ here
    assert np.array_equal(frames["input"], want_input) and np.array_equal(frames["ray"], want_ray)
    # an old portrait (no color_from saved) takes its frontal camera's centre with --colors input
    st = torch.load(tiny_portrait["model"], weights_only=True)
    del st["extra"]["portrait"]["color_from"]
    old = tiny_portrait["root"] / "old.pt"
    save_atomic(st, old)
    assert PortraitField.load(old).color_from is None
    out = tiny_portrait["root"] / "colors_old"
    assert pnerf(["render", str(old), "--frames", "4", "--res", "24", "--colors", "input", "--no-depth",
                  "--out", str(out), "--quiet"]) == 0
    assert np.array_equal(imageio.imread(sorted(out.glob("*.png"))[1]), want_input)
    # ... and one that records no input camera cannot
    st["extra"]["portrait"]["frontal_camera"] = None
    save_atomic(st, old)
    assert pnerf(["render", str(old), "--frames", "2", "--res", "24", "--colors", "input", "--no-depth",
                  "--out", str(tiny_portrait["root"] / "colors_none"), "--quiet"]) == 2
