"""Every native kernel on CUDA (impl="native") against the same kernel on the CPU,
forward and backward.

Skipped, with the reason, where torch.cuda.is_available() is False. Where it is True,
a _C built without CUDA kernels FAILS these tests (the `CC` fixture) instead of
quietly running the PyTorch reference on the GPU.

scripts/gpu_check.sh runs them (``pytest -m cuda``).
"""
import pytest
import torch

from pnerf_fast.field import RadianceField
from pnerf_fast.ops.composite import composite
from pnerf_fast.ops.encoding import sh_encode
from pnerf_fast.ops.hashgrid import hash_encode, level_layout, level_resolutions
from pnerf_fast.ops.mlp import mlp_forward
from pnerf_fast.ops.occgrid import cell_positions, ema_update_
from pnerf_fast.ops.raymarch import GridGeometry, MarchConfig, march_rays, ray_aabb_intersect
from pnerf_fast.ops.volume import volume_read
from test_composite import random_packed
from test_raymarch import random_bits, random_rays, random_similarity

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
]

GRID = GridGeometry((-1.5, -1.5, -1.5, 1.5, 1.5, 1.5), levels=2, res=16)
AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


@pytest.fixture(scope="module")
def CC(C):
    """The extension, which must have CUDA kernels when a GPU is present."""
    assert C.compiled_with_cuda(), (
        "a CUDA device is present but pnerf_fast._C was built without CUDA kernels "
        "(BUILD_NO_CUDA=1 or nvcc missing at build time): rebuild it with nvcc")
    return C


def cu(*ts):
    return [t.cuda() if torch.is_tensor(t) else t for t in ts]


def close(a, b, rtol=1e-5, atol=1e-5, what=""):
    torch.testing.assert_close(b.cpu(), a, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------- rays and marching
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ray_aabb(CC, dtype):
    o, d = random_rays(5000, seed=3, dtype=dtype)
    a = ray_aabb_intersect(o, d, AABB, impl="native")
    b = ray_aabb_intersect(*cu(o, d), AABB, impl="native")
    assert torch.equal(a[2], b[2].cpu())
    close(a[0], b[0], what="near")
    close(a[1], b[1], what="far")


def march_kwargs(n, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return dict(grid_bits=random_bits(GRID, seed=seed), warp_table=random_similarity(seed, n=3, dtype=dtype),
                warp_index=torch.randint(0, 3, (n,), generator=g), jitter=torch.rand(n, generator=g, dtype=dtype),
                t_min=torch.rand(n, generator=g, dtype=dtype), t_max=3 + torch.rand(n, generator=g, dtype=dtype) * 5)


@pytest.mark.parametrize("cone", [0.0, 0.01])
def test_march_float64_same_samples(CC, cone):
    n = 3000
    o, d = random_rays(n, seed=2, dtype=torch.float64)
    kw = march_kwargs(n, 1, torch.float64)
    cfg = MarchConfig(step=0.03, cone_angle=cone, max_samples=64)
    a = march_rays(o, d, GRID, cfg=cfg, impl="native", **kw)
    b = march_rays(*cu(o, d), GRID, cfg=cfg, impl="native", **{k: cu(v)[0] for k, v in kw.items()})
    assert b.positions.is_cuda
    assert torch.equal(a.packed_info, b.packed_info.cpu())
    assert torch.equal(a.ray_indices, b.ray_indices.cpu())
    for name in ("t_starts", "t_ends", "positions", "dirs"):
        close(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9, what=name)


def test_march_float32_close(CC):
    # float32 steps may land on the other side of a cell wall (nvcc contracts a*b+c into
    # FMAs), so only almost every ray has the same samples.
    n = 4000
    o, d = random_rays(n, seed=5)
    kw = march_kwargs(n, 2, torch.float32)
    a = march_rays(o, d, GRID, cfg=MarchConfig(step=0.03), impl="native", **kw)
    b = march_rays(*cu(o, d), GRID, cfg=MarchConfig(step=0.03), impl="native", **{k: cu(v)[0] for k, v in kw.items()})
    same = (a.packed_info[:, 1] == b.packed_info[:, 1].cpu())
    assert same.float().mean() > 0.995
    assert abs(a.n_samples - b.n_samples) <= 0.002 * a.n_samples + 2


# ---------------------------------------------------------------- compositing
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_composite_forward_backward(CC, dtype):
    pi, sig, rgb, ts, te = random_packed(700, 40, dtype=dtype, seed=11)
    outs = []
    for dev in ("cpu", "cuda"):
        s = sig.to(dev).requires_grad_()
        c = rgb.to(dev).requires_grad_()
        r = composite(pi.to(dev), s, c, ts.to(dev), te.to(dev), impl="native")
        g = torch.Generator().manual_seed(1)
        w = [torch.randn(r.rgb.shape, generator=g, dtype=dtype), torch.randn(r.depth.shape, generator=g, dtype=dtype),
             torch.randn(r.opacity.shape, generator=g, dtype=dtype)]
        ((r.rgb * w[0].to(dev)).sum() + (r.depth * w[1].to(dev)).sum() + (r.opacity * w[2].to(dev)).sum()).backward()
        outs.append((r, s.grad, c.grad))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for name, x, y in zip(outs[0][0]._fields, outs[0][0], outs[1][0]):
        close(x.detach(), y.detach(), rtol=tol, atol=tol, what=name)
    close(outs[0][1], outs[1][1], rtol=tol, atol=tol, what="grad sigmas")
    close(outs[0][2], outs[1][2], rtol=tol, atol=tol, what="grad rgbs")


# ---------------------------------------------------------------- hash grid
def test_hashgrid_forward_backward_params_and_positions(CC):
    res = level_resolutions(8, 4, 64)
    rows = level_layout(res, 12)[0][-1]
    g = torch.Generator().manual_seed(0)
    params = torch.randn(rows, 2, generator=g)
    x = torch.rand(3000, 3, generator=g) * 3 - 1.5
    gy = torch.randn(3000, len(res) * 2, generator=g)
    outs = []
    for dev in ("cpu", "cuda"):
        p = params.to(dev).requires_grad_()
        xx = x.to(dev).requires_grad_()
        y = hash_encode(xx, p, res, 12, AABB, impl="native")
        y.backward(gy.to(dev))
        outs.append((y.detach(), p.grad, xx.grad))
    close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6, what="encoding")
    close(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-4, what="grad params")  # atomics add in another order
    close(outs[0][2], outs[1][2], rtol=1e-3, atol=1e-3, what="grad positions")


# ---------------------------------------------------------------- fused MLP
def layers(dims, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = [torch.randn(b, a, generator=g, dtype=dtype) / a ** 0.5 for a, b in zip(dims[:-1], dims[1:])]
    B = [torch.randn(b, generator=g, dtype=dtype) * 0.1 for b in dims[1:]]
    return W, B


# [32, 64, 16] and [32, 64, 64, 16]: the fast preset's two MLPs (smallest scratch capacities);
# 8 layers of 128: the largest scratch, and a gradient too big for shared memory (global slots).
@pytest.mark.parametrize("dims,act", [([32, 64, 16], None), ([32, 64, 64, 16], "sigmoid"), ([5, 16, 16, 3], "relu"),
                                      ([100] + [128] * 7 + [40], "sigmoid")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_forward_backward(CC, dims, act, dtype):
    W, B = layers(dims, dtype)
    n = 5000  # not a multiple of the 4 rows a thread takes
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, dims[0], generator=g, dtype=dtype)
    gy = torch.randn(n, dims[-1], generator=g, dtype=dtype)
    outs = []
    for dev in ("cpu", "cuda"):
        ws = [w.to(dev).requires_grad_() for w in W]
        bs = [b.to(dev).requires_grad_() for b in B]
        xx = x.to(dev).requires_grad_()
        y = mlp_forward(xx, ws, bs, act, impl="native")
        y.backward(gy.to(dev))
        outs.append([y.detach(), xx.grad] + [w.grad for w in ws] + [b.grad for b in bs])
    tol = 2e-4 if dtype == torch.float32 else 1e-9
    for i, (a, b) in enumerate(zip(outs[0], outs[1])):
        scale = max(1.0, float(a.abs().max()))
        close(a, b, rtol=tol, atol=tol * scale, what=f"output {i} (0: y, 1: grad x, then grad W, grad b)")


def test_field_fused_on_cuda_matches_cpu(CC):
    torch.manual_seed(0)
    f = RadianceField("fast")
    f.set_backend("fused")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4096, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(4096, 3, generator=g), dim=1)
    outs = []
    for dev in ("cpu", "cuda"):
        f.to(dev)
        f.zero_grad(set_to_none=True)
        s, c = f(x.to(dev), d.to(dev))
        (s.sum() + c.sum()).backward()
        outs.append((s.detach().cpu(), c.detach().cpu(), {k: p.grad.cpu() for k, p in f.named_parameters() if p.grad is not None}))
    close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-4, what="sigma")
    close(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-4, what="rgb")
    for k, v in outs[0][2].items():
        close(v, outs[1][2][k], rtol=1e-3, atol=1e-3 * max(1.0, float(v.abs().max())), what=f"grad {k}")


# ---------------------------------------------------------------- SH encoding
def test_sh_encoding_forward(CC):
    # The native SH kernel is forward-only (a dirs gradient runs the reference), so there
    # is no backward to compare.
    d = torch.nn.functional.normalize(torch.randn(5000, 3), dim=1)
    for deg in (1, 2, 3, 4):
        close(sh_encode(d, deg, impl="native"), sh_encode(d.cuda(), deg, impl="native"), rtol=1e-5, atol=1e-6, what=f"degree {deg}")


# ---------------------------------------------------------------- feature volume
def test_volume_read(CC):
    from test_volume import BOX, points
    vol = torch.randn(6, 4, 9, 7, generator=torch.Generator().manual_seed(0))
    x = points(5000, seed=1)
    close(volume_read(x, vol, BOX, impl="native"), volume_read(*cu(x, vol), BOX, impl="native"), what="volume_read")


# ---------------------------------------------------------------- occupancy grid
def test_occgrid_positions_and_update(CC):
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(GRID.n_cells, generator=g)[:3000]
    jit = torch.rand(3000, 3, generator=g)
    a = cell_positions(GRID, idx, jit, impl="native")
    b = cell_positions(GRID, idx.cuda(), jit.cuda(), device="cuda", impl="native")
    close(a, b, rtol=1e-6, atol=1e-6, what="cell positions")
    close(cell_positions(GRID, impl="native"), cell_positions(GRID, device="cuda", impl="native"), what="centres")
    d0 = torch.rand(GRID.n_cells, generator=g)
    new = torch.rand(3000, generator=g) * 2
    outs = []
    for dev in ("cpu", "cuda"):
        dens = d0.to(dev).clone()
        bits = torch.zeros(GRID.n_cells, dtype=torch.uint8, device=dev)
        ema_update_(dens, bits, idx.to(dev), new.to(dev), 0.9, 0.5, impl="native")
        outs.append((dens.cpu(), bits.cpu()))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])


def test_debug_checks_on_cuda(CC):
    dens = torch.rand(GRID.n_cells, device="cuda")
    bits = torch.zeros(GRID.n_cells, dtype=torch.uint8, device="cuda")
    dup = torch.tensor([3, 5, 3], device="cuda")
    far = torch.tensor([GRID.n_cells], device="cuda")
    prev = CC.debug_checks()
    try:
        CC.set_debug_checks(True)
        with pytest.raises(RuntimeError, match="unique"):
            CC.occ_update(dens, bits, dup, torch.zeros(3, device="cuda"), 0.9, 0.1)
        with pytest.raises(RuntimeError, match="'indices' must be in"):
            CC.occ_update(dens, bits, far, torch.zeros(1, device="cuda"), 0.9, 0.1)
        pi, sig, rgb, ts, te = cu(*random_packed(50, 10, seed=1))
        bad = pi.clone()
        bad[-1, 1] += 5
        with pytest.raises(RuntimeError, match="packed_info"):
            CC.composite_forward(bad, sig, rgb, ts, te, 1e-4)
    finally:
        CC.set_debug_checks(prev)
