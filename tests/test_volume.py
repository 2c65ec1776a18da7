"""ops.volume.volume_read: the native trilinear read of the code's feature volume against
grid_sample (align_corners=True, zero padding), and the field's no-grad path through it."""
import pytest
import torch

from pnerf_fast.ops.volume import volume_read
from test_grow import VOL, build_field

BOX = (-1.5, -1.2, -1.0, 1.5, 1.4, 0.8)


def points(n, seed, dtype=torch.float32):
    """Inside the box, outside it (some far), on its faces and exactly on vertices."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(BOX[:3], dtype=torch.float64), torch.tensor(BOX[3:], dtype=torch.float64)
    x = lo + (hi - lo) * (torch.rand(n, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2)
    x[: n // 10] = lo + (hi - lo) * torch.rand(n // 10, 3, generator=g, dtype=torch.float64) * 50 - 25
    k = n // 10
    x[k: 2 * k, 0] = lo[0]
    x[2 * k: 3 * k, 1] = hi[1]
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 5, 5, 4), (2, 7, 3, 1), (6, 4, 9, 7)])
def test_native_read_is_grid_sample(C, dtype, shape):
    g = torch.Generator().manual_seed(sum(shape))
    vol = torch.randn(*shape, generator=g, dtype=dtype)
    x = points(3000, seed=shape[2], dtype=dtype)
    # exactly on vertices too
    R = torch.tensor(shape[:3], dtype=torch.float64)
    lo, hi = torch.tensor(BOX[:3], dtype=torch.float64), torch.tensor(BOX[3:], dtype=torch.float64)
    ijk = torch.stack([torch.randint(0, int(r), (200,), generator=g) for r in shape[:3]], 1)
    x = torch.cat([x, (lo + (hi - lo) * ijk / (R - 1)).to(dtype)])
    ref = volume_read(x, vol, BOX, impl="torch")
    out = volume_read(x, vol, BOX, impl="native")
    tol = 2e-5 if dtype == torch.float32 else 1e-11
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    assert (ref[: 300].abs().sum(1) == 0).float().mean() > 0.5  # far points read zeros
    on = out[-200:]
    torch.testing.assert_close(on, vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]], rtol=tol, atol=tol)
    assert torch.isfinite(volume_read(torch.tensor([[float("nan"), 0, 0], [1e30, -1e30, 0]], dtype=dtype), vol, BOX,
                                      impl="native")).all()


def test_field_reads_the_volume_natively_without_grad_and_alike_with_grad(C):
    field = build_field(VOL)
    with torch.no_grad():
        field.volume_basis.normal_()
        field.volume_mean.normal_()
    x = points(2000, seed=4) * 0.6
    with torch.no_grad():
        fast = field.volume_features(x)
        assert field._volume_cl[0] is field._volume(field._code())  # the channels-last copy is kept
    slow = field.volume_features(x)  # grid_sample, differentiable
    assert slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=2e-5, atol=2e-5)
    with torch.no_grad():  # a new code: a new volume, a new copy
        field.latent.add_(1.0)
        moved = field.volume_features(x)
    assert (moved - fast).abs().max() > 1e-3
    torch.testing.assert_close(moved, field.volume_features(x).detach(), rtol=2e-5, atol=2e-5)


def test_bad_arguments_name_themselves():
    vol = torch.zeros(3, 3, 3, 2)
    with pytest.raises(ValueError, match="'x'"):
        volume_read(torch.zeros(4, 2), vol, BOX)
    with pytest.raises(ValueError, match="'vol'"):
        volume_read(torch.zeros(4, 3), torch.zeros(1, 3, 3, 2), BOX)
    with pytest.raises(ValueError, match="'box'"):
        volume_read(torch.zeros(4, 3), vol, (0, 0, 0, 1, -1, 1))
    with pytest.raises(ValueError, match="'impl'"):
        volume_read(torch.zeros(4, 3), vol, BOX, impl="fast")
