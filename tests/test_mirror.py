"""The face's plane of symmetry and the mirrored rays that finetune adds: a second,
virtual view of a single photo from the mirrored camera."""
import numpy as np
import pytest
import torch

from pnerf_fast.data.format import load_dataset
from pnerf_fast.face.landmarks import MIRROR_PAIRS, TEMPLATE, mirror_matrix, symmetry_plane
from pnerf_fast.face.procrustes import SimilarityTransform
from pnerf_fast.train import finetune as ft
from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_train import tiny  # noqa: F401  (fixture)


def _random_similarity(seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return SimilarityTransform(float(rng.uniform(0.5, 2.0)), q, rng.normal(size=3))


def _swapped(points):
    out = points.copy()
    for i, j in MIRROR_PAIRS:
        out[i], out[j] = points[j], points[i]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_symmetry_plane_of_a_moved_symmetric_face(seed):
    """The template is symmetric about x = 0; moved by any similarity, its plane moves
    with it, and the reflection swaps every left landmark with its right one."""
    tr = _random_similarity(seed)
    pts = tr.apply(TEMPLATE)
    n, d = symmetry_plane(pts)
    want = tr.rotation @ np.array([1.0, 0.0, 0.0])
    assert abs(abs(n @ want) - 1) < 1e-9
    assert np.allclose(pts[[j for _, j in MIRROR_PAIRS]] @ n - d, -(pts[[i for i, _ in MIRROR_PAIRS]] @ n - d))
    m = mirror_matrix(pts)
    assert np.allclose(m @ m, np.eye(4), atol=1e-12)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(-1.0)
    mirrored = pts @ m[:3, :3].T + m[:3, 3]
    assert np.allclose(mirrored, _swapped(pts), atol=1e-9)


def test_symmetry_plane_needs_landmarks():
    with pytest.raises(ValueError, match="landmarks"):
        symmetry_plane(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        symmetry_plane(np.zeros_like(TEMPLATE))


def test_mirrored_rays_pass_through_mirrored_points():
    pts = _random_similarity(3).apply(TEMPLATE)
    m = torch.as_tensor(mirror_matrix(pts), dtype=torch.float64)
    a, b = m[:3, :3], m[:3, 3]
    g = torch.Generator().manual_seed(0)
    o = torch.randn(10, 3, generator=g, dtype=torch.float64)
    d = torch.nn.functional.normalize(torch.randn(10, 3, generator=g, dtype=torch.float64), dim=1)
    o0, d0 = o.clone(), d.clone()
    o2, d2 = ft._mirror_rays(o, d, a, b, 6)
    assert torch.equal(o, o0) and torch.equal(d, d0)  # a copy: the batch's own rays are untouched
    assert not torch.equal(o2, o)
    assert torch.equal(o2[6:], o[6:]) and torch.equal(d2[6:], d[6:])
    t = 0.7
    assert torch.allclose(o2[:6] + t * d2[:6], (o[:6] + t * d[:6]) @ a.T + b)
    assert torch.allclose(d2.norm(dim=1), torch.ones(10, dtype=torch.float64))
    o3, _ = ft._mirror_rays(o, d, a, b, 0)
    assert o3 is o


def test_finetune_mirrors_a_fraction_of_the_rays_until_mirror_stop(latent_prior, tiny, monkeypatch):  # noqa: F811
    """With ``mirror`` f, f of each step's rays are the input's rays reflected across the
    subject's plane of symmetry, in the code stage and in the first ``mirror_stop`` of
    stage 2; never for multi-view fits (``views``), and not at all by default."""
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    m = torch.as_tensor(mirror_matrix(subj.landmarks), dtype=torch.float32)
    real = ft.render_rays
    seen = []

    c = torch.as_tensor(np.asarray(subj.cameras[subj.frontal_index].c2w)[:3, 3], dtype=torch.float32)
    c_mirrored = c @ m[:3, :3].T + m[:3, 3]
    assert float((c - c_mirrored).norm()) > 0.05  # the subject's yaw puts its camera off the plane

    def spy(field, grid, rays, *args, **kw):
        # pinhole rays start at the camera's centre; mirrored ones at its reflection
        seen.append(float(((rays.origins - c_mirrored).norm(dim=1) < 1e-4).float().mean()))
        return real(field, grid, rays, *args, **kw)

    monkeypatch.setattr(ft, "render_rays", spy)
    model = PortraitModel.load(latent_prior)
    model.cfg.finetune.mirror, model.cfg.finetune.mirror_stop = 0.25, 0.5
    ft.finetune(subj, init=model, steps=4, code_steps=2, rays_per_step=64, progress=False)
    assert seen == pytest.approx([0.25, 0.25, 0.25, 0.25, 0.0, 0.0], abs=1e-6)

    seen.clear()
    ft.finetune(subj, init=latent_prior, steps=2, code_steps=1, rays_per_step=64, progress=False)
    assert seen == [0.0, 0.0, 0.0]
    seen.clear()
    model = PortraitModel.load(latent_prior)
    model.cfg.finetune.mirror = 0.5
    ft.finetune(subj, init=model, steps=2, code_steps=0, rays_per_step=64, views=[0, 1], progress=False)
    assert seen == [0.0, 0.0]

    model = PortraitModel.load(latent_prior)
    for bad in (1.0, 1.5):
        model.cfg.finetune.mirror = bad
        with pytest.raises(ValueError, match="mirror"):
            ft.finetune(subj, init=model, steps=1, progress=False)


def test_mirrored_rays_loss_is_the_silhouette_plus_weighted_colour():
    from pnerf_fast.render.renderer import RenderOutput
    from pnerf_fast.train.data import RayBatch

    g = torch.Generator().manual_seed(1)
    n, m = 8, 3
    rgb, target = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    opacity, alpha = torch.rand(n, generator=g), torch.rand(n, generator=g)
    out = RenderOutput(rgb, torch.zeros(n), opacity, 0)
    batch = RayBatch(torch.zeros(n, 3), torch.zeros(n, 3), target, torch.zeros(n, 3), alpha)
    err = ((rgb - target) ** 2).mean(1)
    sil = (opacity - alpha) ** 2
    mse, loss = ft._photo_loss(out, batch, 0, 0.3)
    assert torch.allclose(mse, err.mean()) and torch.equal(mse, loss)
    for w in (0.0, 0.3, 1.0):
        mse, loss = ft._photo_loss(out, batch, m, w)
        assert torch.allclose(mse, err[m:].mean())  # only the real rays are reported
        want = (err[m:].sum() + (w * err[:m].mean() + sil[:m].mean()) * m) / n
        assert torch.allclose(loss, want)


def test_only_rays_through_the_head_are_mirrored():
    """With ``mirror_radius`` the mirrored rays are those passing near the head's centre
    (the skull and hair), never the ones through the shoulders below; they come first."""
    from types import SimpleNamespace

    from pnerf_fast.train.data import RayBatch

    tr = _random_similarity(4)
    subj = SimpleNamespace(landmarks=tr.apply(TEMPLATE))
    mirror = ft._mirror_of(subj, 0.5, 1.35)
    centre = tr.apply(ft.HEAD_CENTRE)
    below = tr.apply((0.0, -2.5, 0.0))          # the chest: 2.7 template units under the centre
    cam = tr.apply((0.0, 0.2, 8.0))
    targets = [centre, below, centre, below]
    o = torch.as_tensor(np.stack([cam] * 4), dtype=torch.float32)
    d = torch.nn.functional.normalize(torch.as_tensor(np.stack(targets) - cam, dtype=torch.float32), dim=1)
    colours = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    b = RayBatch(o, d, colours, torch.zeros(4, 3), torch.ones(4))
    out, k = mirror.batch(b, 3)
    assert k == 2  # only two rays pass through the head's ball
    assert torch.equal(out.target[:2], colours[[0, 2]]) and torch.equal(out.target[2:], colours[[1, 3]])
    assert torch.allclose(out.rays_o[:2], o[:2] @ mirror.a.T + mirror.b)
    assert torch.equal(out.rays_o[2:], o[2:])
    everything = ft._mirror_of(subj, 0.5, 0.0)
    assert everything.batch(b, 3)[1] == 3
    with pytest.raises(ValueError, match="mirror_radius"):
        ft._mirror_of(subj, 0.5, -1.0)


def test_mirror_argument_of_the_api_and_the_cli(latent_prior, tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    """``finetune(mirror=f)`` and ``pnerf finetune --mirror f`` override the prior's
    setting; a value outside [0, 1) is refused, naming the argument."""
    from test_fuzz import run_bad

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    seen = []
    orig = ft._mirror_rays

    def mirror_spy(o, d, a, b, count):
        seen.append(count)
        return orig(o, d, a, b, count)

    monkeypatch.setattr(ft, "_mirror_rays", mirror_spy)
    pf = ft.finetune(subj, init=latent_prior, steps=2, code_steps=0, rays_per_step=40, mirror=0.5, progress=False)
    assert seen == [20, 20] and pf.model.cfg.finetune.mirror == 0.5  # the tiny prior's mirror_stop is 1
    for bad in (1.0, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="mirror"):
            ft.finetune(subj, init=latent_prior, steps=1, mirror=bad, progress=False)
    for bad in ("1", "-0.5", "nan"):
        run_bad(["finetune", subj.path, "--init", latent_prior, "--out", tmp_path / "p.pt", "--mirror", bad],
                capsys, "--mirror")
