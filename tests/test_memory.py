"""Bounded memory without changing results: chunked rendering equals one-chunk rendering,
and lazily loaded training subjects equal eagerly loaded ones, bit for bit. (The peaks
themselves are measured by benchmarks/bench_memory.py, not asserted here.)"""
import numpy as np
import pytest
import torch
import yaml

from pnerf_fast.data.format import Dataset, load_dataset
from pnerf_fast.data.lightstage import generate_lightstage
from pnerf_fast.face.procrustes import generalized_procrustes
from pnerf_fast.ops.occgrid import OccupancyGrid
from pnerf_fast.geometry.cameras import Camera, look_at
from pnerf_fast.render.rays import Rays
from pnerf_fast.render.renderer import RenderConfig, render_image, render_rays
from pnerf_fast.train import data as data_mod
from pnerf_fast.train.config import config_from_dict
from pnerf_fast.train.data import SubjectRays
from pnerf_fast.train.model import PortraitModel
from pnerf_fast.train.pretrain import pretrain

from test_train import TINY_FIELD


class Blob(torch.nn.Module):
    """A ball of density from +, * and clamp only: unlike exp or sigmoid (whose vectorised
    and scalar tails round differently), each point's value is the same in a batch of any
    size, so a renderer that treats rays independently gives results independent of chunk."""

    def density(self, x):
        r2 = x[:, 0] * x[:, 0] + x[:, 1] * x[:, 1] + x[:, 2] * x[:, 2]
        return 60.0 * (0.64 - r2).clamp(0, 0.2)

    def forward(self, x, d):
        return self.density(x), (0.5 + 0.3 * x + 0.2 * d).clamp(0, 1)


class SigmoidBlob(torch.nn.Module):
    def density(self, x):
        return 40.0 * torch.sigmoid((0.8 - x.norm(dim=-1)) * 30)

    def forward(self, x, d):
        return self.density(x), torch.sigmoid(3 * x + d)


def _camera(w=23, h=17):
    c2w = look_at(np.array([0.3, 0.2, 4.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    return Camera(fx=30.0, fy=30.0, cx=w / 2, cy=h / 2, width=w, height=h, c2w=c2w)


GRID = ((-1.5,) * 3 + (1.5,) * 3, 32)
TABLE = torch.tensor([[1.1, 0, 0, 0, 1.1, 0, 0, 0, 1.1, 0.05, 0.0, -0.1]])
CFG = RenderConfig(step=0.02, segment=8)


def _old_render_image(field, grid, camera, chunk):
    """render_image as it was: every ray of the camera made up front, outputs concatenated."""
    o, d = camera.rays()
    outs = [render_rays(field, grid, Rays(o, d, TABLE)[i:i + chunk], CFG, bg=0.5)
            for i in range(0, o.shape[0], chunk)]
    H, W = camera.height, camera.width
    return (torch.cat([r.rgb for r in outs]).reshape(H, W, 3).clamp(0, 1),
            torch.cat([r.depth for r in outs]).reshape(H, W), torch.cat([r.opacity for r in outs]).reshape(H, W))


def test_chunked_render_equals_one_chunk(one_thread):
    grid = OccupancyGrid(GRID[0], res=GRID[1])
    field, cam = Blob(), _camera()
    n = cam.width * cam.height
    whole = render_image(field, grid, cam, TABLE, CFG, 0.5, chunk=n)
    assert whole[0].shape == (cam.height, cam.width, 3) and whole[1].shape == whole[2].shape == (cam.height, cam.width)
    assert 0.05 < float(whole[2].mean()) < 0.95  # the ball is in view, and so is background
    with torch.no_grad():
        ref = _old_render_image(field, grid, cam, n)
    for a, b in zip(whole, ref):
        assert torch.equal(a, b)
    for chunk in (1, 7, 64, n - 1, 10 * n):
        seen = []

        class Bar:
            def update(self, k):
                seen.append(k)

        part = render_image(field, grid, cam, TABLE, CFG, 0.5, chunk=chunk, progress=Bar())
        assert sum(seen) == n
        for a, b in zip(part, whole):
            assert torch.equal(a, b), f"chunk={chunk}"


@pytest.mark.parametrize("chunk", [7, 100])
def test_chunked_render_equals_the_former_render_at_the_same_chunk(one_thread, chunk):
    # With a field whose rounding depends on the batch size, the chunk matters (by an ulp),
    # as it always did; at the same chunk the result is the former one, bit for bit.
    grid = OccupancyGrid(GRID[0], res=GRID[1])
    field, cam = SigmoidBlob(), _camera()
    new = render_image(field, grid, cam, TABLE, CFG, 0.5, chunk=chunk)
    with torch.no_grad():
        old = _old_render_image(field, grid, cam, chunk)
    for a, b in zip(new, old):
        assert torch.equal(a, b)


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, "16"])
def test_render_image_rejects_bad_chunk(chunk):
    with pytest.raises(ValueError, match="chunk"):
        render_image(Blob(), OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=8), _camera(), chunk=chunk)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("mem")
    data = root / "stage"
    generate_lightstage(data, subjects=4, res=24, seed=5, views=3, spp=1, progress=False, contact_sheet_path=None)
    return data


@pytest.fixture
def small_cache():
    before = data_mod.cache_bytes()
    yield
    data_mod.set_cache_bytes(before)


def _fields(sr):
    return [sr.rays_o, sr.rays_d, sr.rgb, sr.alpha]


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_lazy_subject_equals_eager_and_reloads_after_eviction(stage, scale, small_cache):
    ds = load_dataset(stage)
    names = ds.names[:3]
    mean_face = generalized_procrustes(np.stack([ds.subject(n, load_images=False).landmarks for n in names]))
    eager = [SubjectRays(ds.subject(n), mean_face, scale=scale) for n in names]
    lazy = [SubjectRays(ds.subject(n, load_images=False), mean_face, scale=scale) for n in names]
    data_mod.set_cache_bytes(0)  # only the subject in use stays built
    for e, z in zip(eager, lazy):
        assert z.lazy and not e.lazy
        assert (z.name, z.hw, z.num_views, z.has_mask, z.support, z.query) == \
            (e.name, e.hw, e.num_views, e.has_mask, e.support, e.query)
        assert torch.equal(z.warp_table, e.warp_table)
        for a, b in zip(_fields(z), _fields(e)):
            assert torch.equal(a, b)
        ge, gz = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        be, bz = e.batch(e.query, 300, ge), z.batch(z.query, 300, gz)
        for k in ("rays_o", "rays_d", "target", "bg", "alpha"):
            assert torch.equal(getattr(bz, k), getattr(be, k)), k
        assert torch.equal(z.view_image(1, 0.3), e.view_image(1, 0.3))
        assert torch.equal(z.view_mask(0), e.view_mask(0))
    # A zero budget evicted all but the last one used; the first one is read again.
    assert lazy[-1]._data is not None and all(z._data is None for z in lazy[:-1])
    loads = data_mod._CACHE.loads
    assert torch.equal(lazy[0].rgb, eager[0].rgb)
    assert data_mod._CACHE.loads == loads + 1 and lazy[-1]._data is None
    # A budget that holds them all keeps them all.
    data_mod.set_cache_bytes(1 << 30)
    for z in lazy:
        z.rgb
    assert all(z._data is not None for z in lazy)
    # Subjects filmed by the same rig share their rays.
    assert lazy[1].rays_o.data_ptr() == lazy[2].rays_o.data_ptr()


def test_lazy_subject_needs_a_folder_to_load_from(stage):
    s = load_dataset(stage).subject(load_dataset(stage).names[0], load_images=False)
    s.path = str(stage / "no_such_subject")
    with pytest.raises(ValueError, match="images were not loaded"):
        SubjectRays(s, None, coordinates="world")


def test_cache_budget_rejects_bad_values(small_cache):
    for bad in (-1, 1.5, None, True):
        with pytest.raises(ValueError, match="cache size"):
            data_mod.set_cache_bytes(bad)


def test_pretraining_on_lazy_subjects_is_bit_identical(stage, tmp_path, monkeypatch, one_thread, small_cache):
    """The change proposed for load_training_subjects (list subjects with load_images=False)
    trains the same prior, bit for bit, even when every step re-reads its subject."""
    field_yaml = tmp_path / "tiny_field.yaml"
    field_yaml.write_text(yaml.safe_dump(TINY_FIELD))
    cfg = config_from_dict({"field": str(field_yaml), "method": "joint", "rays_per_step": 128, "image_scale": 0.5,
                            "seed": 0, "render": {"step": 0.05}, "grid": {"res": 16, "update_every": 1, "warmup_updates": 0},
                            "joint": {"steps": 6}, "checkpoint_every_s": 0.0})
    quiet = dict(progress=False, log=lambda *a: None)
    pretrain(stage, tmp_path / "eager.pt", cfg, **quiet)
    real = Dataset.subject
    monkeypatch.setattr(Dataset, "subject", lambda self, name, load_images=True: real(self, name, load_images=False))
    data_mod.set_cache_bytes(0)
    before = data_mod._CACHE.loads
    pretrain(stage, tmp_path / "lazy.pt", cfg, **quiet)
    assert data_mod._CACHE.loads > before  # it did load lazily
    a, b = PortraitModel.load(tmp_path / "eager.pt"), PortraitModel.load(tmp_path / "lazy.pt")
    for (n, p), q in zip(a.field.named_parameters(), b.field.parameters()):
        assert torch.equal(p, q), n
    assert torch.equal(a.grid.bits, b.grid.bits)


def test_default_chunk_is_the_whole_small_frame_and_bounded_for_large_ones(one_thread):
    from pnerf_fast.render.renderer import LARGE_FRAME_CHUNK, WHOLE_FRAME, default_chunk

    assert default_chunk(256 * 256) == 256 * 256 == WHOLE_FRAME
    assert default_chunk(100) == 100
    assert default_chunk(257 * 256) == LARGE_FRAME_CHUNK < 257 * 256
    assert default_chunk(2048 * 2048) == LARGE_FRAME_CHUNK
    grid = OccupancyGrid(GRID[0], res=GRID[1])
    field, cam = Blob(), _camera()
    n = cam.width * cam.height
    seen = []

    class Bar:
        def update(self, k):
            seen.append(k)

    auto = render_image(field, grid, cam, TABLE, CFG, 0.5, progress=Bar())
    assert seen == [n]  # one chunk
    for a, b in zip(auto, render_image(field, grid, cam, TABLE, CFG, 0.5, chunk=7)):
        assert torch.equal(a, b)
