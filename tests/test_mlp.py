import pytest
import torch

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


# ---------------------------------------------------------------- one checkpoint layout, tcnn
class FakeTcnnNetwork(torch.nn.Module):
    """tiny-cuda-nn's tcnn.Network as its sources describe it, in PyTorch (any device): an
    Identity encoding that pads the input to a multiple of 16 with ones, then bias-free
    row-major [out, in] weight matrices stored one after another in ``params``, ReLU
    between them, the output padded to 16 and sliced back, fp16 out."""

    def __init__(self, n_input_dims, n_output_dims, network_config, seed=1337):
        super().__init__()
        up = lambda n: (n + 15) // 16 * 16  # noqa: E731
        w, L = network_config["n_neurons"], network_config["n_hidden_layers"]
        if network_config["otype"] == "FullyFusedMLP":
            assert w in (16, 32, 64, 128) and L >= 1
        else:
            assert network_config["otype"] == "CutlassMLP" and w % 16 == 0
        self.n_input_dims, self.n_output_dims, self.in_pad = n_input_dims, n_output_dims, up(n_input_dims)
        self.shapes = [(up(n_output_dims), self.in_pad)] if L == 0 else \
            [(w, self.in_pad)] + [(w, w)] * (L - 1) + [(up(n_output_dims), w)]
        g = torch.Generator().manual_seed(seed)
        self.params = torch.nn.Parameter(torch.randn(sum(r * c for r, c in self.shapes), generator=g) * 0.1)
        self.out_act = network_config["output_activation"]

    def forward(self, x):
        assert x.dtype == torch.float32 and x.shape[1] == self.n_input_dims
        h = torch.cat([x, torch.ones(x.shape[0], self.in_pad - self.n_input_dims, device=x.device)], 1)
        off = 0
        for i, (r, c) in enumerate(self.shapes):
            h = h @ self.params[off : off + r * c].view(r, c).t()
            off += r * c
            if i < len(self.shapes) - 1:
                h = torch.relu(h)
        h = {"None": h, "ReLU": torch.relu(h), "Sigmoid": torch.sigmoid(h)}[self.out_act]
        return h[:, : self.n_output_dims].half()


@pytest.fixture
def fake_tcnn(monkeypatch):
    import sys
    import types

    from pnerf_fast.field import backends
    from pnerf_fast.field import mlp as mlp_mod

    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Network=FakeTcnnNetwork))
    # Pretend the tensors' device is one tcnn runs on (the fake runs on the CPU).
    monkeypatch.setattr(mlp_mod, "resolve_backend", lambda name, device=None: "tcnn" if name in ("auto", "tcnn") else name)
    yield
    backends.clear_cache()


@pytest.mark.parametrize("shape", [(32, 16, 64, 1), (32, 3, 64, 2), (5, 4, 16, 0), (20, 8, 128, 2)])
def test_tcnn_layout_round_trip(shape):
    from pnerf_fast.field.tcnn_layout import TcnnSpec, pack, unpack

    in_dim, out_dim, width, n_hidden = shape
    spec = TcnnSpec(in_dim, out_dim, width, n_hidden, "sigmoid")
    W, B = layers([in_dim] + [width] * n_hidden + [out_dim])
    flat = pack(W, B, spec)
    assert flat.shape == (spec.n_params,)
    W2, B2 = unpack(flat, spec)
    for a, b in zip(W + B, W2 + B2):
        assert torch.equal(a, b)
    # widths: 64 + the constant unit runs as a 128-wide FullyFusedMLP; 128 + 1 needs CutlassMLP
    assert spec.otype == ("CutlassMLP" if (n_hidden == 0 or width == 128) else "FullyFusedMLP")
    with pytest.raises(ValueError, match="'flat'"):
        unpack(flat[1:], spec)


@pytest.mark.parametrize("shape", [(32, 16, 64, 1), (32, 3, 64, 2), (5, 4, 16, 0)])
def test_tcnn_backend_runs_the_same_weights(fake_tcnn, shape):
    in_dim, out_dim, width, n_hidden = shape
    torch.manual_seed(0)
    ref = MLP(in_dim, out_dim, width, n_hidden, "torch", "sigmoid")
    m = MLP(in_dim, out_dim, width, n_hidden, "auto", "sigmoid")
    m.load_state_dict(ref.state_dict())  # one layout: a torch/fused checkpoint loads as is
    assert m.active_backend("cpu") == "tcnn"
    assert set(m.state_dict()) == set(ref.state_dict())
    x = torch.randn(300, in_dim)
    shift = torch.randn(width if n_hidden else out_dim) * 0.1
    y_ref, y = ref(x, shift), m(x, shift)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=2e-3)  # fp16 out
    g = torch.randn_like(y)
    (y_ref * g).sum().backward()
    (y * g).sum().backward()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-2, atol=2e-2, msg=lambda s: f"{name}: {s}")
    # the tcnn network is not a submodule: its own (random) parameters are never saved or trained
    assert all(not n.startswith("_tcnn") for n, _ in m.named_parameters())


def test_auto_is_resolved_once_per_device(C, monkeypatch):
    from pnerf_fast.field import backends

    backends.clear_cache()
    calls = []
    orig = backends._fused_ok
    monkeypatch.setattr(backends, "_fused_ok", lambda dev: (calls.append(dev), orig(dev))[1])
    m = make_mlp(32, 16, 64, 1)
    x = torch.randn(10, 32)
    for _ in range(3):
        m(x)
    assert len(calls) == 1 and m.active_backend("cpu") == backends.CPU_AUTO == "fused"
    backends.clear_cache()
    # nothing in the package records measurements: the choice is a constant, not a file
    from pathlib import Path

    assert not list((Path(backends.__file__).parent).glob("*.json"))


def test_bench_field_records_into_benchmarks(tmp_path):
    import importlib
    import os
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    sys.path.insert(0, bench)
    try:
        bf = importlib.import_module("bench_field")
    finally:
        sys.path.remove(bench)
    assert os.path.dirname(bf.RECORD_FILE) == bench
    rec = bf.record_backend({"faster": "torch", "fused_ms": 2.0, "torch_ms_": 1.0}, 2, path=str(tmp_path / "r.json"))
    assert (tmp_path / "r.json").exists() and rec["agrees"] is False


@pytest.mark.parametrize("prior,expect", [("latent", "torch"), ("meta", "fused")])
def test_shipped_priors_keep_their_cpu_backend(C, prior, expect):
    # The latent prior's config names "torch"; the meta prior's says "auto", which on the CPU
    # is the fused kernel, as it was when the choice was read from the package's json: the
    # same code path as before, so the same (bit-identical) outputs.
    from pnerf_fast.api import load_prior

    f = load_prior(prior).field
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2000, 3, generator=g) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(2000, 3, generator=g), dim=1)
    mlps = [m for m in f.modules() if isinstance(m, MLP)]
    assert mlps and all(m.active_backend("cpu") == expect for m in mlps)
    with torch.no_grad():
        s_cfg, c_cfg = f(x, d)
        f.set_backend(expect)
        s_exp, c_exp = f(x, d)
    assert torch.equal(s_cfg, s_exp) and torch.equal(c_cfg, c_exp)
