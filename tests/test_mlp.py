import pytest
import torch

from conftest import requires_cuda
from pnerf_fast.field.backends import available_backends, resolve_backend, tcnn_available
from pnerf_fast.field.mlp import MLP, make_mlp
from pnerf_fast.ops.encoding import frequency_encode, sh_encode
from pnerf_fast.ops.mlp import mlp_forward


def layers(dims, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = [torch.randn(b, a, generator=g, dtype=dtype) / a**0.5 for a, b in zip(dims[:-1], dims[1:])]
    B = [torch.randn(b, generator=g, dtype=dtype) * 0.1 for b in dims[1:]]
    return W, B


@pytest.mark.parametrize("dims", [[32, 64, 16], [5, 16, 16, 3], [64, 128, 128, 128, 1], [27, 64, 64, 64, 64, 40]])
@pytest.mark.parametrize("act", [None, "relu", "sigmoid"])
def test_forward_backward_match_reference(C, dims, act):
    W, B = layers(dims)
    x = torch.randn(301, dims[0], generator=torch.Generator().manual_seed(1))  # not a multiple of the block
    gy = torch.randn(301, dims[-1], generator=torch.Generator().manual_seed(2))
    res = []
    for impl in ("native", "torch"):
        xx = x.clone().requires_grad_()
        ws = [w.clone().requires_grad_() for w in W]
        bs = [b.clone().requires_grad_() for b in B]
        y = mlp_forward(xx, ws, bs, act, impl=impl)
        y.backward(gy)
        res.append([y, xx.grad] + [w.grad for w in ws] + [b.grad for b in bs])
    # fp32: the kernel sums products in a different order (register tiles, FMA), so
    # compare with rtol 1e-5 plus a small atol for entries that cancel to ~0
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5)


def test_gradcheck_float64(C):
    W, B = layers([6, 16, 16, 4], dtype=torch.float64)
    x = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    ws = [w.requires_grad_() for w in W]
    bs = [b.requires_grad_() for b in B]
    f = lambda x, *p: mlp_forward(x, p[:3], p[3:], "sigmoid", impl="native")
    assert torch.autograd.gradcheck(f, (x, *ws, *bs), eps=1e-6, atol=1e-6)


def test_backend_switch_same_weights(C):
    torch.manual_seed(0)
    m = make_mlp(32, 16, 64, 2, backend="torch", output_activation="sigmoid")
    x = torch.randn(200, 32)
    y_torch = m(x)
    m.backend = "fused"
    assert m.active_backend("cpu") == "fused"
    y_fused = m(x)
    torch.testing.assert_close(y_fused, y_torch, rtol=1e-5, atol=1e-6)
    # state dicts are interchangeable between backends
    m2 = make_mlp(32, 16, 64, 2, backend="fused", output_activation="sigmoid")
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2(x), y_torch, rtol=1e-5, atol=1e-6)


def test_backend_resolution(C):
    assert "torch" in available_backends("cpu") and "fused" in available_backends("cpu")
    assert resolve_backend("auto", "cpu") in ("torch", "fused")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("cudnn", "cpu")
    with pytest.raises(ValueError, match="'backend'"):
        make_mlp(4, 4, 16, 1, backend="cudnn")
    # too wide for the fused kernel: explicit "fused" is an error naming the width, auto falls back
    with pytest.raises(ValueError, match="width"):
        make_mlp(4, 4, 256, 1, backend="fused")
    assert make_mlp(4, 4, 256, 1, backend="auto").active_backend("cpu") == "torch"


def test_tcnn_error_is_clear():
    if tcnn_available():
        pytest.skip("tiny-cuda-nn is installed here")
    with pytest.raises(RuntimeError, match="tcnn"):
        make_mlp(32, 16, 64, 1, backend="tcnn")
    assert "tcnn" not in available_backends()


def test_errors_name_the_argument(C):
    W, B = layers([8, 16, 4])
    with pytest.raises(ValueError, match="'x'"):
        mlp_forward(torch.randn(3, 7), W, B)
    with pytest.raises(ValueError, match="'output_activation'"):
        mlp_forward(torch.randn(3, 8), W, B, "tanh")
    with pytest.raises(ValueError, match="'width'"):
        MLP(8, 4, 0, 1)
    with pytest.raises(RuntimeError, match="'grad_y'"):
        from pnerf_fast.ops.mlp import pack_params

        pf, pb, dims = pack_params(W, B)
        C.mlp_backward(torch.randn(3, 5), torch.randn(3, 8), pf, pb, dims, 4, 0, True)


def test_sh_encoding(C):
    d = torch.nn.functional.normalize(torch.randn(500, 3), dim=1)
    for deg in (1, 2, 3, 4):
        a = sh_encode(d, deg, impl="native")
        b = sh_encode(d, deg, impl="torch")
        assert a.shape == (500, deg * deg)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # orthonormality: the mean of Y_i Y_j over uniform directions is delta_ij / (4 pi)
    d = torch.nn.functional.normalize(torch.randn(400000, 3, dtype=torch.float64), dim=1)
    Y = sh_encode(d, 4, impl="torch")
    gram = Y.T @ Y / d.shape[0] * 4 * torch.pi
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="'degree'"):
        sh_encode(d, 5)


def test_frequency_encoding():
    x = torch.tensor([[0.5, -1.0, 2.0]])
    y = frequency_encode(x, 3)
    assert y.shape == (1, 3 * 7)
    torch.testing.assert_close(y[0, :3], x[0])
    torch.testing.assert_close(y[0, 3:6], torch.sin(x[0]))
    torch.testing.assert_close(y[0, 6:9], torch.cos(x[0]))
    torch.testing.assert_close(y[0, -3:], torch.cos(4 * x[0]))


@requires_cuda
def test_cuda_fused_matches_cpu(C):
    if not C.compiled_with_cuda():
        pytest.skip("extension built without CUDA")
    W, B = layers([32, 64, 64, 16])
    x = torch.randn(1000, 32)
    a = mlp_forward(x, W, B, "sigmoid", impl="torch")
    b = mlp_forward(x.cuda(), [w.cuda() for w in W], [b.cuda() for b in B], "sigmoid", impl="native").cpu()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
