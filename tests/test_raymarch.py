import math

import numpy as np
import pytest
import torch

from pnerf_fast.ops.raymarch import GridGeometry, MarchConfig, march_rays, ray_aabb_intersect, ray_scale

GRID = GridGeometry((-1.5, -1.5, -1.5, 1.5, 1.5, 1.5), levels=2, res=16)


def random_rays(n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.4 + torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
    d = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.25 + torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    return o.to(dtype), d.to(dtype)


def random_similarity(seed, n=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))
        if torch.det(q) < 0:
            q[:, 0] = -q[:, 0]
        s = 0.8 + 0.4 * torch.rand((), generator=g, dtype=torch.float64)
        t = torch.randn(3, generator=g, dtype=torch.float64) * 0.2
        rows.append(torch.cat([(s * q).reshape(-1), t]))
    return torch.stack(rows).to(dtype)


def random_bits(grid, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(grid.n_cells, generator=g) < p).to(torch.uint8)


def assert_same_samples(a, b, rtol=1e-5, atol=1e-6):
    assert torch.equal(a.packed_info, b.packed_info)
    assert torch.equal(a.ray_indices, b.ray_indices)
    for name in ("t_starts", "t_ends", "positions", "dirs"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_ray_aabb_matches_reference_and_geometry(C):
    o, d = random_rays(2000, seed=1)
    o[:5] = torch.tensor([0.1, 0.2, 4.0])
    d[:5] = torch.tensor([0.0, 0.0, -1.0])  # axis-aligned: zero components
    o[5:10] = torch.tensor([3.0, 0.0, 4.0])  # off to the side, parallel: misses
    d[5:10] = torch.tensor([0.0, 0.0, -1.0])
    aabb = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    n1, f1, h1 = ray_aabb_intersect(o, d, aabb, impl="native")
    n2, f2, h2 = ray_aabb_intersect(o, d, aabb, impl="torch")
    assert torch.equal(h1, h2)
    torch.testing.assert_close(n1, n2)
    torch.testing.assert_close(f1, f2)
    assert not h1[5:10].any()
    torch.testing.assert_close(n1[:5], torch.full((5,), 3.0))
    torch.testing.assert_close(f1[:5], torch.full((5,), 5.0))
    # Entry and exit points lie on the box surface.
    for t in (n1[h1], f1[h1]):
        p = o[h1] + d[h1] * t[:, None]
        assert torch.allclose(p.abs().max(dim=1).values, torch.ones(int(h1.sum())), atol=1e-4)


@pytest.mark.parametrize("cone", [0.0, 0.02])
@pytest.mark.parametrize("seed", [0, 1])
def test_march_matches_reference(C, cone, seed):
    o, d = random_rays(1500, seed=seed)
    cfg = MarchConfig(step=0.04, cone_angle=cone, max_step=0.2)
    kw = dict(grid_bits=random_bits(GRID, seed=seed), cfg=cfg, warp_table=random_similarity(seed), jitter=torch.rand(1500))
    a = march_rays(o, d, GRID, impl="native", **kw)
    b = march_rays(o, d, GRID, impl="torch", **kw)
    assert a.n_samples > 1000
    assert_same_samples(a, b)


def test_per_ray_warp_and_float64(C):
    o, d = random_rays(800, seed=3, dtype=torch.float64)
    table = random_similarity(4, n=5, dtype=torch.float64)
    idx = torch.randint(0, 5, (800,), generator=torch.Generator().manual_seed(0))
    kw = dict(grid_bits=random_bits(GRID, seed=2), cfg=MarchConfig(step=0.03), warp_table=table, warp_index=idx)
    a = march_rays(o, d, GRID, impl="native", **kw)
    b = march_rays(o, d, GRID, impl="torch", **kw)
    assert a.positions.dtype == torch.float64
    assert_same_samples(a, b, rtol=1e-12, atol=1e-12)


def test_warp_geometry(C):
    """Samples are the warped world points: A (o + t d) + t0 at the world midpoint."""
    o, d = random_rays(300, seed=5)
    table = random_similarity(9)
    s = march_rays(o, d, GRID, None, MarchConfig(step=0.05), warp_table=table)
    A, t = table[0, :9].reshape(3, 3), table[0, 9:]
    mid_w = 0.5 * (s.t_starts + s.t_ends)
    world = o[s.ray_indices] + d[s.ray_indices] * mid_w[:, None]
    torch.testing.assert_close(world @ A.T + t, s.positions, atol=1e-4, rtol=1e-4)
    # World step = canonical step / scale.
    scale = ray_scale(d, table, None)
    torch.testing.assert_close((s.t_ends - s.t_starts) * scale[s.ray_indices], torch.full((s.n_samples,), 0.05), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(s.dirs.norm(dim=1), torch.ones(s.n_samples))


def test_identity_warp_equals_no_warp(C):
    o, d = random_rays(500, seed=6)
    ident = torch.tensor([[1.0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]])
    bits = random_bits(GRID, seed=4)
    a = march_rays(o, d, GRID, bits, MarchConfig(step=0.05), warp_table=ident)
    b = march_rays(o, d, GRID, bits, MarchConfig(step=0.05))
    assert_same_samples(a, b)


def test_occupied_box_keeps_every_occupied_sample(C):
    from pnerf_fast.ops.occgrid import OccupancyGrid

    grid = OccupancyGrid(GRID.aabb, levels=2, res=16)
    grid.mark_from_density(lambda p: ((p - torch.tensor([0.3, -0.2, 0.1])).norm(dim=-1) < 0.6).float(), threshold=0.5)
    box = grid.occupied_box()
    assert all(box[i + 3] - box[i] < 1.6 for i in range(3))
    o, d = random_rays(600, seed=12)
    kw = dict(grid_bits=grid.bits, cfg=MarchConfig(step=0.01), jitter=torch.rand(600))
    a = march_rays(o, d, GRID, box=box, **kw)
    b = march_rays(o, d, GRID, **kw)
    assert_same_samples(a, march_rays(o, d, GRID, box=box, impl="torch", **kw))
    # Same coverage: the occupied length along each ray agrees to within a step or two.
    la = torch.zeros(600).index_add(0, a.ray_indices, a.t_ends - a.t_starts)
    lb = torch.zeros(600).index_add(0, b.ray_indices, b.t_ends - b.t_starts)
    assert (la - lb).abs().max() <= 0.021


def test_segment_limits_match_reference_and_clip(C):
    o, d = random_rays(700, seed=13)
    g = torch.Generator().manual_seed(1)
    t_min = 3.0 + torch.rand(700, generator=g)
    t_max = t_min + 0.5 + torch.rand(700, generator=g)
    kw = dict(grid_bits=random_bits(GRID, seed=5), cfg=MarchConfig(step=0.02), warp_table=random_similarity(3),
              jitter=torch.rand(700, generator=g), t_min=t_min, t_max=t_max)
    a = march_rays(o, d, GRID, impl="native", **kw)
    assert_same_samples(a, march_rays(o, d, GRID, impl="torch", **kw))
    assert a.n_samples > 0
    assert (a.t_starts >= t_min[a.ray_indices] - 1e-5).all()
    assert (0.5 * (a.t_starts + a.t_ends) < t_max[a.ray_indices] + 1e-5).all()
    with pytest.raises(ValueError, match="'t_min'"):
        march_rays(o, d, GRID, t_min=torch.zeros(3))


@pytest.mark.parametrize("max_samples", [0, 7])
def test_fill_starts_at_first_sample(C, max_samples):
    """A head-like grid: one compact occupied blob, long empty runs in front of and
    around it. The fill pass starts at the step the count pass found first and skips
    rays with no samples; it must give the reference's samples exactly."""
    bits = torch.zeros(GRID.n_cells, dtype=torch.uint8)
    cells = bits[: GRID.res ** 3].view(GRID.res, GRID.res, GRID.res)
    cells[6:10, 5:11, 7:9] = 1
    o, d = random_rays(1200, seed=21)
    kw = dict(grid_bits=bits, cfg=MarchConfig(step=0.015, max_samples=max_samples), warp_table=random_similarity(4),
              jitter=torch.rand(1200))
    a = march_rays(o, d, GRID, impl="native", **kw)
    b = march_rays(o, d, GRID, impl="torch", **kw)
    hit = (a.packed_info[:, 1] > 0).sum()
    assert 0 < hit < 1200  # some rays hit the blob, some miss it
    assert_same_samples(a, b)


@pytest.mark.parametrize("max_samples", [0, 5])
def test_full_blocks_match_reference(C, max_samples):
    """A solid blob fills whole 4^3 blocks of level 0: the march keeps every sample inside
    such a block up to the block's exit without looking a cell up (grid.h, the block
    summary's value 2), and must still give the reference's samples."""
    bits = torch.zeros(GRID.n_cells, dtype=torch.uint8)
    cells = bits[: GRID.res ** 3].view(GRID.res, GRID.res, GRID.res)
    i = torch.arange(GRID.res, dtype=torch.float32) + 0.5 - GRID.res / 2
    r2 = (i[:, None, None] / 6.5) ** 2 + (i[None, :, None] / 7.0) ** 2 + (i[None, None, :] / 5.5) ** 2
    cells[r2 < 1.0] = 1
    blocks = cells.view(4, 4, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(64, 64)
    assert (blocks.amin(1) == 1).sum() >= 4 and ((blocks.amax(1) == 1) & (blocks.amin(1) == 0)).sum() >= 10
    o, d = random_rays(1500, seed=31)
    kw = dict(grid_bits=bits, cfg=MarchConfig(step=0.013, max_samples=max_samples), warp_table=random_similarity(5),
              jitter=torch.rand(1500, generator=torch.Generator().manual_seed(2)))
    a = march_rays(o, d, GRID, impl="native", **kw)
    b = march_rays(o, d, GRID, impl="torch", **kw)
    assert a.n_samples > (20000 if max_samples == 0 else 2000)
    assert_same_samples(a, b)


def test_skipping_equals_dense_stepping(C):
    """Empty-cell jumps emit exactly the occupied samples of plain stepping."""
    o, d = random_rays(400, seed=8)
    bits = random_bits(GRID, p=0.05, seed=8)
    a = march_rays(o, d, GRID, bits, MarchConfig(step=0.01))
    full = march_rays(o, d, GRID, None, MarchConfig(step=0.01))
    from pnerf_fast.ops.raymarch import grid_cells_torch

    keep = bits[grid_cells_torch(full.positions, GRID).clamp_min(0)].bool()
    torch.testing.assert_close(a.t_starts, full.t_starts[keep])
    assert torch.equal(a.ray_indices, full.ray_indices[keep])


def test_edge_cases(C):
    cfg = MarchConfig(step=0.05)
    # Empty batch.
    e = torch.zeros(0, 3)
    s = march_rays(e, e, GRID, None, cfg)
    assert s.n_samples == 0 and s.packed_info.shape == (0, 2)
    # Rays that miss the box: zero samples.
    o = torch.tensor([[10.0, 10.0, 10.0]]).repeat(4, 1)
    d = torch.tensor([[0.0, 0.0, 1.0]]).repeat(4, 1)
    s = march_rays(o, d, GRID, None, cfg)
    assert s.n_samples == 0 and torch.all(s.packed_info[:, 1] == 0)
    # All-empty grid: zero samples for rays that do hit the box.
    o, d = random_rays(100)
    s = march_rays(o, d, GRID, torch.zeros(GRID.n_cells, dtype=torch.uint8), cfg)
    assert s.n_samples == 0
    # max_samples caps each ray.
    s = march_rays(o, d, GRID, None, MarchConfig(step=0.01, max_samples=7))
    assert int(s.packed_info[:, 1].max()) == 7
    # Non-contiguous rays are accepted.
    o2 = torch.cat([o, o], 1)[:, ::2]
    assert not o2.is_contiguous()
    a = march_rays(o2, d, GRID, None, cfg)
    b = march_rays(o2.contiguous(), d, GRID, None, cfg)
    assert_same_samples(a, b)


def test_bad_arguments_are_named(C):
    o, d = random_rays(10)
    with pytest.raises(ValueError, match="'rays_d'"):
        march_rays(o, d[:, :2], GRID)
    with pytest.raises(ValueError, match="'rays_d'"):
        march_rays(o, d.double(), GRID)
    with pytest.raises(ValueError, match="'warp_table'"):
        march_rays(o, d, GRID, warp_table=torch.zeros(1, 9))
    with pytest.raises(ValueError, match="'grid_bits'"):
        march_rays(o, d, GRID, grid_bits=torch.ones(5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="'warp_index'"):
        march_rays(o, d, GRID, warp_index=torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="step"):
        MarchConfig(step=0)
    with pytest.raises(RuntimeError, match="'warp_index'"):
        C.march_rays(o, d, torch.zeros(2, 12), torch.full((10,), 5, dtype=torch.long), None, None, None, None,
                     list(GRID.aabb), list(GRID.outer_box()), 2, 16, 0.0, 1e10, 0.05, 0.0, 0.1, 0, 100)
    with pytest.raises(RuntimeError, match="'rays_d' must have dtype"):
        C.march_rays(o.double(), d, None, None, None, None, None, None, list(GRID.aabb), list(GRID.outer_box()), 2, 16, 0.0, 1e10, 0.05, 0.0, 0.1, 0, 100)


def test_huge_page_outputs_change_nothing(C):
    """Large CPU outputs (>= 2 MiB) go on memory advised for transparent huge pages
    (csrc/ops/memory.cpp): the same samples and compositing, bit for bit, as on ordinary
    pages, and tensors that behave as any other (written, kept after the march's others
    die, freed)."""
    from pnerf_fast.ops.composite import composite

    o, d = random_rays(20000, seed=7)
    cfg = MarchConfig(step=0.005)
    kw = dict(grid_bits=random_bits(GRID, p=0.6, seed=7), cfg=cfg, warp_table=random_similarity(7), jitter=torch.rand(20000))
    was = C.huge_page_outputs()
    runs = {}
    try:
        for on in (False, True):
            C.set_huge_page_outputs(on)
            assert C.huge_page_outputs() == on
            s = march_rays(o, d, GRID, impl="native", **kw)
            assert s.positions.numel() * 4 >= 2 << 20  # big enough to take the huge-page path
            if on:  # and it took it: 2 MiB-aligned memory of its own
                assert s.positions.data_ptr() % (2 << 20) == 0
            sig = (s.positions.norm(dim=1) * 3).detach().requires_grad_()
            rgb = torch.sigmoid(s.positions).detach().requires_grad_()
            r = composite(s.packed_info, sig, rgb, s.t_starts, s.t_ends, impl="native")
            (r.rgb.sum() + r.opacity.sum()).backward()
            runs[on] = (s, r.rgb.detach(), sig.grad, rgb.grad)
    finally:
        C.set_huge_page_outputs(was)
    (a, ca, gsa, gra), (b, cb, gsb, grb) = runs[False], runs[True]
    assert_same_samples(a, b, rtol=0, atol=0)
    assert torch.equal(ca, cb) and torch.equal(gsa, gsb) and torch.equal(gra, grb)
    pos = b.positions
    del runs, b
    pos.mul_(2.0)  # still writable after the rest of its march is gone
    assert torch.equal(pos, a.positions * 2.0)
