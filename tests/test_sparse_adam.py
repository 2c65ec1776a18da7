"""The row-sparse table gradient (hash-grid backward) and the fused row-sparse optimizer
step (pnerf_fast/ops/sparse_adam.py, pnerf_fast/train/optim.py) against torch."""
import copy

import pytest
import torch

from conftest import requires_cuda
from pnerf_fast.field.encoding import HashGridEncoding
from pnerf_fast.ops.hashgrid import SparseGradBuffer, hash_encode, level_layout, level_resolutions
from pnerf_fast.ops.sparse_adam import bias_table, sparse_adam_step_
from pnerf_fast.train.optim import RowSparseAdam, RowSparseSGD, claim_sparse_tables

AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
BETAS, EPS = (0.9, 0.99), 1e-15


def grid(dtype=torch.float32, n_levels=6, log2=10, base=4, finest=48, F=2, seed=0):
    res = level_resolutions(n_levels, base, finest)
    rows = level_layout(res, log2)[0][-1]
    params = torch.randn(rows, F, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 0.1
    return res, log2, params


def points(n, seed, dtype=torch.float32, lo=-1.2, hi=1.2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g, dtype=dtype) * (hi - lo) + lo


def table_grad(res, log2, params, x, g, sparse):
    p = params.clone().requires_grad_()
    hash_encode(x, p, res, log2, AABB, impl="native", sparse_grad=sparse).backward(g)
    return p.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_backward_equals_dense(C, one_thread, dtype):
    """The sparse gradient is the dense one on its rows (exactly: the same sums in the same
    order), zero elsewhere, its rows are exactly those some corner touched, and the
    buffer is all zero again afterwards (repeated calls give the same)."""
    res, log2, params = grid(dtype)
    buf = SparseGradBuffer()
    for seed in (1, 2):  # twice through the same buffer
        x = points(300, seed, dtype)
        g = torch.randn(300, len(res) * 2, generator=torch.Generator().manual_seed(seed + 10), dtype=dtype)
        dense = table_grad(res, log2, params, x, g, None)
        sp = table_grad(res, log2, params, x, g, buf)
        assert sp.is_sparse and sp.shape == params.shape
        rows = sp._indices()[0]
        assert bool((rows[1:] > rows[:-1]).all())  # ascending, unique
        torch.testing.assert_close(sp.to_dense(), dense, rtol=0, atol=0)
        # touched = every corner row of every point: the rows whose one-hot gradient shows up
        ones = table_grad(res, log2, params, x, torch.ones_like(g), None)
        assert set(rows.tolist()) == set(torch.nonzero(ones.abs().sum(1) > 0)[:, 0].tolist())
        assert int(buf.acc.count_nonzero()) == 0 and int(buf.touched.count_nonzero()) == 0
    assert rows.numel() < params.shape[0]  # the test exercises untouched rows


def test_sparse_backward_finite_differences_float64(C):
    """gradcheck wants a strided gradient, so the sparse one is checked by central
    differences of <g, f(p)> on touched entries (and on untouched ones: zero), float64."""
    res, log2, params = grid(torch.float64, n_levels=3, log2=8, base=2, finest=12)
    x = points(10, 3, torch.float64)
    g = torch.randn(10, len(res) * 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    sp = table_grad(res, log2, params, x, g, SparseGradBuffer()).to_dense()
    L = lambda pp: float((hash_encode(x, pp, res, log2, AABB, impl="native") * g).sum())  # noqa: E731
    touched = torch.nonzero(sp.abs().sum(1) > 0)[:, 0]
    untouched = torch.nonzero(sp.abs().sum(1) == 0)[:, 0]
    assert touched.numel() > 8 and untouched.numel() > 0
    for r in [*touched[:: max(1, touched.numel() // 8)].tolist(), *untouched[:3].tolist()]:
        for f in range(2):
            d = torch.zeros_like(params)
            d[r, f] = 1e-6
            num = (L(params + d) - L(params - d)) / 2e-6
            assert abs(num - float(sp[r, f])) < 1e-7, (r, f, num, float(sp[r, f]))


def _two_params(dtype, seed=0):
    res, log2, params = grid(dtype, seed=seed)
    mlp = torch.randn(8, 5, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return res, log2, params, mlp


def _loss(res, log2, table, mlp, x, buf):
    h = hash_encode(x, table, res, log2, AABB, impl="native", sparse_grad=buf)
    w = h[:, :8] @ mlp
    return (torch.sin(3 * w) ** 2).sum() + (h ** 2).sum()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_adam_matches_torch_on_touched_rows(C, one_thread, dtype, tol):
    """The same points every step: the touched rows follow torch.optim.Adam (all rows'
    step counts equal the global one), the others never move; the MLP weights, stepped by
    torch inside RowSparseAdam, match too."""
    res, log2, params, mlp = _two_params(dtype)
    x = points(200, 5, dtype)
    ref = [params.clone().requires_grad_(), mlp.clone().requires_grad_()]
    new = [params.clone().requires_grad_(), mlp.clone().requires_grad_()]
    o_ref = torch.optim.Adam([{"params": [ref[0]], "lr": 3e-2}, {"params": [ref[1]]}], lr=1e-2, betas=BETAS, eps=EPS)
    o_new = RowSparseAdam([{"params": [new[0]], "lr": 3e-2}, {"params": [new[1]]}], lr=1e-2, betas=BETAS, eps=EPS)
    buf = SparseGradBuffer()
    for _ in range(12):
        for ps, opt, b in ((ref, o_ref, None), (new, o_new, buf)):
            opt.zero_grad(set_to_none=True)
            _loss(res, log2, ps[0], ps[1], x, b).backward()
            opt.step()
        assert new[0].grad.is_sparse and not ref[0].grad.is_sparse
    rows = new[0].grad._indices()[0]
    untouched = torch.ones(params.shape[0], dtype=torch.bool)
    untouched[rows] = False
    assert untouched.any() and bool((new[0][untouched] == params[untouched]).all())
    torch.testing.assert_close(new[0][rows], ref[0][rows], rtol=tol, atol=tol)
    torch.testing.assert_close(new[1], ref[1], rtol=tol, atol=tol)
    st = o_new.state[new[0]]
    assert bool((st["row_step"][rows] == 12).all()) and bool((st["row_step"][untouched] == 0).all())
    torch.testing.assert_close(st["exp_avg"][rows], o_ref.state[ref[0]]["exp_avg"][rows], rtol=tol, atol=tol)


def test_lazy_adam_untouched_rows_keep_their_moments(C, one_thread):
    """Different points each step: every row moves only when touched, its moments are
    frozen in between and its bias correction counts its own steps. Checked against the
    pure-PyTorch reference, and row by row against a one-row torch.optim.Adam fed only
    that row's nonzero steps."""
    dtype = torch.float64
    res, log2, params, mlp = _two_params(dtype)
    p = params.clone().requires_grad_()
    opt = RowSparseAdam([p], lr=5e-2, betas=BETAS, eps=EPS)
    buf = SparseGradBuffer()
    ref_p = params.clone()
    ref_m, ref_v = torch.zeros_like(params), torch.zeros_like(params)
    ref_t = torch.zeros(params.shape[0], dtype=torch.int32)
    history = []  # (rows, grad) per step
    for k in range(8):
        x = points(60, 100 + k, dtype)
        opt.zero_grad(set_to_none=True)
        _loss(res, log2, p, mlp, x, buf).backward()
        rows, values = p.grad._indices()[0].clone(), p.grad._values().clone()
        history.append((rows, values))
        opt.step()
        sparse_adam_step_(ref_p, rows, values, ref_m, ref_v, ref_t, bias_table(*BETAS, 4), 5e-2, *BETAS, EPS,
                          impl="torch")  # table shorter than the steps: the pow fallback too
    st = opt.state[p]
    torch.testing.assert_close(p.detach(), ref_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st["exp_avg_sq"], ref_v, rtol=1e-12, atol=1e-12)
    assert torch.equal(st["row_step"], ref_t) and int(st["step"]) == 8
    counts = torch.zeros(params.shape[0], dtype=torch.int32)
    for rows, _ in history:
        counts[rows] += 1
    assert torch.equal(st["row_step"], counts) and int(counts.min()) == 0 and bool(((counts > 0) & (counts < 8)).any())
    # a few rows touched in some but not all steps, against torch.optim.Adam on that row alone
    some = torch.nonzero((counts > 0) & (counts < 8))[:5, 0].tolist()
    for r in some:
        q = params[r].clone().requires_grad_()
        o = torch.optim.Adam([q], lr=5e-2, betas=BETAS, eps=EPS)
        for rows, values in history:
            hit = torch.nonzero(rows == r)
            if hit.numel():
                q.grad = values[int(hit[0, 0])].clone()
                o.step()
        torch.testing.assert_close(p.detach()[r], q.detach(), rtol=1e-12, atol=1e-12)


def test_sgd_is_exact(C, one_thread):
    res, log2, params, mlp = _two_params(torch.float64)
    x = points(100, 7, torch.float64)
    ref, new = params.clone().requires_grad_(), params.clone().requires_grad_()
    o_ref, o_new = torch.optim.SGD([ref], lr=0.5), RowSparseSGD([new], lr=0.5)
    buf = SparseGradBuffer()
    for k in range(3):
        for p, o, b in ((ref, o_ref, None), (new, o_new, buf)):
            o.zero_grad(set_to_none=True)
            _loss(res, log2, p, mlp, points(100, 20 + k, torch.float64), b).backward()
            o.step()
    torch.testing.assert_close(new, ref, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="plain SGD"):
        o = RowSparseSGD([new], lr=0.1, momentum=0.9)
        new.grad = None
        _loss(res, log2, new, mlp, x, buf).backward()
        o.step()


def test_two_backward_passes_and_state_dict(C, one_thread):
    """Two encodes in one loss give an uncoalesced sum (coalesced by the step); the state
    round-trips through state_dict, and a torch.optim.Adam state is picked up."""
    res, log2, params, mlp = _two_params(torch.float64)
    enc = HashGridEncoding(n_levels=len(res), n_features=2, log2_table=log2, base_res=4, finest_res=48).double()
    with torch.no_grad():
        enc.params.copy_(params)
    ref = copy.deepcopy(enc)
    opt = RowSparseAdam(enc.parameters(), lr=1e-2, betas=BETAS, eps=EPS)
    o_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, betas=BETAS, eps=EPS)
    assert claim_sparse_tables(enc, opt) == 1 and not ref.sparse.active  # a copy starts unclaimed
    x1, x2 = points(50, 1, torch.float64), points(50, 1, torch.float64)  # the same points: all rows every step
    for e, o in ((enc, opt), (ref, o_ref)):
        for _ in range(3):
            o.zero_grad(set_to_none=True)
            ((e(x1) ** 2).sum() + (e(x2) ** 3).sum()).backward()
            o.step()
    assert enc.params.grad.is_sparse
    rows = enc.params.grad.coalesce().indices()[0]
    torch.testing.assert_close(enc.params[rows], ref.params[rows], rtol=1e-12, atol=1e-12)
    sd = opt.state_dict()
    opt2 = RowSparseAdam(enc.parameters(), lr=1e-2, betas=BETAS, eps=EPS)
    opt2.load_state_dict(sd)
    assert torch.equal(opt2.state[enc.params]["row_step"], opt.state[enc.params]["row_step"])
    opt3 = RowSparseAdam(ref.parameters(), lr=1e-2, betas=BETAS, eps=EPS)
    opt3.load_state_dict(o_ref.state_dict())  # a torch.optim.Adam state
    claim_sparse_tables(ref, opt3)
    for e, o in ((enc, opt2), (ref, opt3)):
        o.zero_grad(set_to_none=True)
        (e(x1) ** 2).sum().backward()
        o.step()
    torch.testing.assert_close(enc.params[rows], ref.params[rows], rtol=1e-12, atol=1e-12)
    assert bool((opt3.state[ref.params]["row_step"][rows] == 4).all())


def test_sparse_only_while_the_optimizer_lives(C):
    enc = HashGridEncoding(n_levels=3, n_features=2, log2_table=8, base_res=2, finest_res=8)
    opt = RowSparseAdam(enc.parameters(), lr=1e-2)
    claim_sparse_tables(enc, opt)
    enc(points(10, 0)).sum().backward()
    assert enc.params.grad.is_sparse
    del opt
    enc.params.grad = None
    enc(points(10, 0)).sum().backward()
    assert not enc.params.grad.is_sparse


@requires_cuda
def test_cuda_matches_cpu(C):
    if not C.compiled_with_cuda():
        pytest.skip("extension built without CUDA")
    res, log2, params, mlp = _two_params(torch.float32)
    out = []
    for dev in ("cpu", "cuda"):
        p = params.clone().to(dev).requires_grad_()
        opt = RowSparseAdam([p], lr=1e-2, betas=BETAS, eps=EPS)
        buf = SparseGradBuffer()
        for k in range(3):
            opt.zero_grad(set_to_none=True)
            _loss(res, log2, p, mlp.to(dev), points(100, k).to(dev), buf).backward()
            opt.step()
        out.append(p.detach().cpu())
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)


def test_make_optimizer_fused_adam_matches_the_loop(one_thread):
    """make_optimizer's dense Adam is torch's fused step by default; it makes the same
    updates as torch's per-tensor loop (fused=False) to float rounding, leaves a frozen
    parameter alone, and takes over the loop's state (a resume of an older run)."""
    from test_train import TINY_FIELD

    from pnerf_fast.field import RadianceField
    from pnerf_fast.field.config import field_config_from_dict
    from pnerf_fast.train.config import GroupLR
    from pnerf_fast.train.pretrain import make_optimizer

    torch.manual_seed(0)
    f_loop = RadianceField(field_config_from_dict(TINY_FIELD))
    f_fused = copy.deepcopy(f_loop)
    lr = GroupLR(grid=1e-2, mlp=1e-3)
    o_loop = make_optimizer(f_loop, "adam", lr, fused=False)
    o_fused = make_optimizer(f_fused, "adam", lr)
    assert o_fused.defaults["fused"] and not o_loop.defaults["fused"]
    frozen_name = next(n for n, _ in f_loop.named_parameters())
    start = {n: p.detach().clone() for n, p in f_fused.named_parameters()}
    before = start[frozen_name]
    x, d = points(256, 3), torch.nn.functional.normalize(points(256, 4), dim=-1)

    def steps(f, o, k, freeze=True):
        p0 = dict(f.named_parameters())[frozen_name]
        p0.requires_grad_(not freeze)
        for _ in range(k):
            o.zero_grad(set_to_none=True)
            sigma, rgb = f(x, d)
            (sigma.mean() + (rgb ** 2).mean()).backward()
            o.step()
        p0.requires_grad_(True)

    def same_weights(fa, fb):
        for (n, a), (_, b) in zip(fa.named_parameters(), fb.named_parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")

    steps(f_loop, o_loop, 5)
    steps(f_fused, o_fused, 5)
    assert torch.equal(dict(f_fused.named_parameters())[frozen_name], before)  # frozen: untouched
    same_weights(f_loop, f_fused)
    moved = [n for n, p in f_fused.named_parameters() if not torch.equal(p, start[n])]
    assert moved and frozen_name not in moved
    o_resumed = make_optimizer(f_fused, "adam", lr)
    o_resumed.load_state_dict(copy.deepcopy(o_loop.state_dict()))  # the loop's moments (a copy: load shares tensors)
    steps(f_loop, o_loop, 2, freeze=False)
    steps(f_fused, o_resumed, 2, freeze=False)
    same_weights(f_loop, f_fused)
