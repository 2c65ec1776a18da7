import pytest
import torch

from conftest import requires_cuda
from pnerf_fast.field.encoding import HashGridEncoding
from pnerf_fast.ops.hashgrid import hash_encode, level_layout, level_resolutions

AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


def make(n_levels=8, F=2, log2=12, base=4, finest=64, dtype=torch.float32, seed=0):
    res = level_resolutions(n_levels, base, finest)
    rows = level_layout(res, log2)[0][-1]
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(rows, F, generator=g, dtype=dtype)
    return res, params


def points(n, lo=-1.5, hi=1.5, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g, dtype=dtype) * (hi - lo) + lo


def test_layout_dense_then_hashed():
    res = level_resolutions(16, 16, 1024)
    assert res[0] == 16 and res[-1] == 1024 and all(a < b for a, b in zip(res, res[1:]))
    offsets, dense = level_layout(res, 17)
    assert dense[0] and not dense[-1]
    assert offsets[1] == 17**3  # dense level: exactly (R+1)^3 rows
    assert offsets[-1] - offsets[-2] == 2**17


@pytest.mark.parametrize("F", [1, 2, 4])
def test_forward_matches_reference(C, F):
    res, params = make(F=F)
    x = points(3000, -1.7, 1.7)
    a = hash_encode(x, params, res, 12, AABB, impl="native")
    b = hash_encode(x, params, res, 12, AABB, impl="torch")
    assert a.shape == (3000, len(res) * F)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backward_matches_reference(C):
    res, params = make()
    x = points(2000)
    g = torch.randn(2000, len(res) * 2, generator=torch.Generator().manual_seed(4))
    grads = []
    for impl in ("native", "torch"):
        p = params.clone().requires_grad_()
        xx = x.clone().requires_grad_()
        hash_encode(xx, p, res, 12, AABB, impl=impl).backward(g)
        grads.append((p.grad, xx.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)  # sums of 8*L*F terms scaled by R


def test_gradcheck_float64(C):
    res, params = make(n_levels=3, F=2, log2=8, base=2, finest=16, dtype=torch.float64)
    x = points(12, -1.4, 1.4, dtype=torch.float64).requires_grad_()
    p = params.clone().requires_grad_()
    f = lambda x, p: hash_encode(x, p, res, 8, AABB, impl="native")
    assert torch.autograd.gradcheck(f, (x, p), eps=1e-6, atol=1e-5)


def test_outside_box_is_clamped(C):
    res, params = make()
    inside = torch.tensor([[1.5, 0.3, -1.5], [0.2, -0.4, 1.5]])
    outside = torch.tensor([[2.7, 0.3, -9.0], [0.2, -0.4, 1.6]])
    for impl in ("native", "torch"):
        a = hash_encode(inside, params, res, 12, AABB, impl=impl)
        b = hash_encode(outside, params, res, 12, AABB, impl=impl)
        torch.testing.assert_close(a, b)
        x = outside.clone().requires_grad_()
        hash_encode(x, params, res, 12, AABB, impl=impl).sum().backward()
        # clamped axes get no position gradient, the free ones do
        assert x.grad[0, 0] == 0 and x.grad[0, 2] == 0 and x.grad[1, 2] == 0
        assert x.grad[0, 1] != 0 and x.grad[1, 0] != 0


def test_hash_collisions_share_rows(C):
    # A tiny table (2^4 rows) at a fine level: many distinct vertices map to one row, so
    # a gradient pushed through one point reaches the features of far-away points.
    res = [64]
    T = 4
    params = torch.zeros(2**T, 1, requires_grad=True)
    x = points(500)
    out = hash_encode(x, params, res, T, AABB, impl="native")
    assert level_layout(res, T)[1] == [False]
    out[0].sum().backward()
    touched = (params.grad[:, 0] != 0).sum().item()
    assert 1 <= touched <= 8
    with torch.no_grad():
        p2 = params + params.grad  # change only the rows point 0 touched
    moved = (hash_encode(x, p2, res, T, AABB, impl="native") != out).any(dim=1)
    assert moved.sum() > 50  # collisions: most other points share those rows
    # and the native kernel accumulates colliding gradients exactly like the reference
    g = torch.randn(500, 1)
    grads = []
    for impl in ("native", "torch"):
        p = torch.randn(2**T, 1).requires_grad_()
        hash_encode(x, p, res, T, AABB, impl=impl).backward(g)
        grads.append(p.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)


def test_errors_name_the_argument(C):
    res, params = make()
    with pytest.raises(ValueError, match="'x'"):
        hash_encode(torch.rand(4, 2), params, res, 12, AABB)
    with pytest.raises(ValueError, match="'params'"):
        hash_encode(torch.rand(4, 3), params[:-1], res, 12, AABB)
    with pytest.raises(ValueError, match="'x'"):
        hash_encode(torch.rand(4, 3, dtype=torch.float64), params, res, 12, AABB)
    with pytest.raises(RuntimeError, match="'params'"):
        C.hashgrid_forward(torch.rand(4, 3), params[:-1].contiguous(), res, 12, list(AABB))
    with pytest.raises(ValueError, match="'n_features'"):
        HashGridEncoding(n_features=9)


def test_module_out_dim_and_dtype():
    enc = HashGridEncoding(n_levels=4, n_features=2, log2_table=10, base_res=4, finest_res=32)
    y = enc(points(7))
    assert y.shape == (7, enc.out_dim) == (7, 8)


@requires_cuda
def test_cuda_matches_cpu(C):
    if not C.compiled_with_cuda():
        pytest.skip("extension built without CUDA")
    res, params = make()
    x = points(1000)
    a = hash_encode(x, params, res, 12, AABB)
    b = hash_encode(x.cuda(), params.cuda(), res, 12, AABB).cpu()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
