"""The AVX-512 hash-grid path (csrc/cpu/hashgrid_avx512.cpp) against the scalar functors:
the same bits, forward and backward (dense and row-sparse), on dense and hashed levels,
points outside the box, and point counts that are not multiples of its 16 lanes."""
import pytest
import torch

from pnerf_fast.ops.hashgrid import bitmap_words, level_layout, level_resolutions

AABB = [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]


@pytest.fixture
def simd(C):
    if not C.hashgrid_simd_supported():
        pytest.skip("this CPU has no AVX-512F: only the scalar hash-grid path exists here")
    was = C.hashgrid_simd_enabled()
    yield C
    C.hashgrid_set_simd(was)


def _case(n, F=2, n_levels=10, log2=12, finest=200, seed=0, spread=1.8):
    res = level_resolutions(n_levels, 4, finest)
    rows = level_layout(res, log2)[0][-1]
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(rows, F, generator=g)
    x = (torch.rand(n, 3, generator=g) * 2 - 1) * spread  # some points outside the box
    x[: min(n, 5)] = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5], [0.0, 0.0, 0.0], [1.5, -1.5, 0.3],
                                   [-2.0, 0.1, 9.0]])[: min(n, 5)]  # faces, corners, far out
    gy = torch.randn(n, len(res) * F, generator=g)
    gy[::3] = 0  # rows with no gradient are skipped by both paths
    return res, log2, params, x, gy


def _both(C, fn):
    out = []
    for on in (False, True):
        C.hashgrid_set_simd(on)
        out.append(fn())
    return out


def test_switch(simd):
    simd.hashgrid_set_simd(False)
    assert not simd.hashgrid_simd_enabled()
    simd.hashgrid_set_simd(True)
    assert simd.hashgrid_simd_enabled()


@pytest.mark.parametrize("n", [1, 15, 16, 17, 531, 4096 + 3])
def test_forward_same_bits(simd, n):
    res, log2, params, x, _ = _case(n)
    layout_dense = level_layout(res, log2)[1]
    assert any(layout_dense) and not all(layout_dense)  # both kinds of level are covered
    calls = simd.hashgrid_simd_calls()
    a, b = _both(simd, lambda: simd.hashgrid_forward(x, params, res, log2, AABB))
    assert torch.equal(a, b)
    assert simd.hashgrid_simd_calls() == calls + (1 if n >= 16 else 0)  # it ran (not for < 16 points)
    # into a kept buffer too (the renderer's call)
    out = torch.full_like(a, float("nan"))
    simd.hashgrid_set_simd(True)
    simd.hashgrid_forward(x, params, res, log2, AABB, out=out)
    assert torch.equal(out, a)


@pytest.mark.parametrize("n", [7, 16, 1000 + 5])
def test_backward_same_bits(simd, n):
    res, log2, params, x, gy = _case(n, seed=n)
    calls = simd.hashgrid_simd_calls()
    (ga, xa), (gb, xb) = _both(simd, lambda: simd.hashgrid_backward(gy, x, params, res, log2, AABB, True, True))
    assert simd.hashgrid_simd_calls() == calls + 1  # the table backward took the path once
    assert torch.equal(ga, gb) and torch.equal(xa, xb)
    assert ga.abs().sum() > 0


def test_sparse_backward_same_bits(simd):
    res, log2, params, x, gy = _case(2000, seed=3)
    acc = torch.zeros_like(params)
    touched = torch.zeros(bitmap_words(res, log2), dtype=torch.long)

    def run():
        return simd.hashgrid_backward_sparse(gy, x, params, res, log2, AABB, acc, touched, False)

    (ra, va, _), (rb, vb, _) = _both(simd, run)
    assert torch.equal(ra, rb) and torch.equal(va, vb) and ra.numel() > 0
    assert not acc.any() and not touched.any()  # both leave the buffers all zero
    # and the rows are those of the dense gradient
    simd.hashgrid_set_simd(True)
    gp, _ = simd.hashgrid_backward(gy, x, params, res, log2, AABB, True, False)
    nz = gp.abs().sum(1).nonzero().squeeze(1)
    assert set(nz.tolist()) <= set(ra.tolist())
    assert torch.equal(gp[ra], va)


def test_other_feature_counts_and_doubles_stay_scalar(simd):
    # F = 4 and float64 have no AVX-512 path: the switch must change nothing there.
    for F, dtype in ((4, torch.float32), (2, torch.float64)):
        res, log2, params, x, _ = _case(100, F=F)
        params, x = params.to(dtype), x.to(dtype)
        calls = simd.hashgrid_simd_calls()
        a, b = _both(simd, lambda: simd.hashgrid_forward(x, params, res, log2, AABB))
        assert torch.equal(a, b)
        assert simd.hashgrid_simd_calls() == calls


def test_nan_points_read_cell_zero(simd):
    """A NaN coordinate takes cell 0 on both paths (the clamp sends NaN to 0), instead of
    an index cast from NaN."""
    res, log2, params, x, _ = _case(40)
    x[3, 1] = float("nan")
    x[20, 0] = float("nan")
    a, b = _both(simd, lambda: simd.hashgrid_forward(x, params, res, log2, AABB))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    x0 = x.clone()
    x0[3, 1] = AABB[1]
    x0[20, 0] = AABB[0]  # the box's low face: u = 0
    simd.hashgrid_set_simd(False)
    assert torch.equal(a, simd.hashgrid_forward(x0, params, res, log2, AABB))
