import pytest
import torch

from pnerf_fast.ops.composite import composite


def random_packed(n_rays, max_count, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_count + 1, (n_rays,), generator=g)
    offsets = torch.cumsum(counts, 0) - counts
    S = int(counts.sum())
    steps = torch.rand(S, generator=g, dtype=torch.float64) * 0.1 + 0.01
    t_starts = torch.rand(S, generator=g, dtype=torch.float64) * 3
    t_ends = t_starts + steps
    sig = torch.rand(S, generator=g, dtype=torch.float64) * 20
    rgb = torch.rand(S, 3, generator=g, dtype=torch.float64)
    cast = lambda t: t.to(dtype=dtype, device=device)
    return torch.stack([offsets, counts], 1).to(device), cast(sig), cast(rgb), cast(t_starts), cast(t_ends)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t_thresh", [1e-4, 0.3])
def test_forward_matches_reference(C, seed, t_thresh):
    pi, sig, rgb, ts, te = random_packed(300, 40, seed=seed)
    a = composite(pi, sig, rgb, ts, te, t_thresh=t_thresh, impl="native")
    b = composite(pi, sig, rgb, ts, te, t_thresh=t_thresh, impl="torch")
    for name, x, y in zip(a._fields, a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_early_termination_zeroes_late_samples(C):
    # One ray with huge density: after the first sample T ~ 0, so the rest get no weight.
    pi = torch.tensor([[0, 4]])
    sig = torch.tensor([1e4, 1.0, 1.0, 1.0])
    rgb = torch.rand(4, 3)
    ts = torch.tensor([0.0, 0.1, 0.2, 0.3])
    te = ts + 0.1
    r = composite(pi, sig, rgb, ts, te, t_thresh=1e-4)
    assert r.weights[0] == pytest.approx(1.0)
    assert torch.all(r.weights[1:] == 0) and torch.all(r.trans[1:] == 0)
    torch.testing.assert_close(r.rgb[0], rgb[0])


@pytest.mark.parametrize("huge_pages", [False, True])
def test_samples_outside_every_ray_are_zero(C, huge_pages):
    """Samples that no ray's segment covers get weight, transmittance and gradients 0, on
    ordinary memory (zeroed by torch) and on fresh huge-page memory (zeroed by the kernel):
    the outputs are large enough (>= 2 MiB) for the huge-page path."""
    S = 1 << 20
    counts = torch.full((S // 64,), 32, dtype=torch.long)
    pi = torch.stack([torch.arange(S // 64) * 64, counts], 1)  # every second run of 32 is a gap
    g = torch.Generator().manual_seed(3)
    sig = (torch.rand(S, generator=g) * 5).requires_grad_()
    rgb = torch.rand(S, 3, generator=g).requires_grad_()
    ts = torch.arange(S, dtype=torch.float32) % 64 * 0.01
    was = C.huge_page_outputs()
    try:
        C.set_huge_page_outputs(huge_pages)
        r = composite(pi, sig, rgb, ts, ts + 0.01, impl="native")
        (r.rgb.sum() + r.opacity.sum()).backward()
    finally:
        C.set_huge_page_outputs(was)
    gap = (torch.arange(S) % 64) >= 32
    for name, t in (("weights", r.weights), ("trans", r.trans), ("sigma grad", sig.grad), ("rgb grad", rgb.grad)):
        assert torch.all(t[gap] == 0), name
        assert torch.all(t[~gap].reshape(-1, 32, *t.shape[1:])[:, 0] != 0), name  # covered samples were written


def test_backward_matches_reference(C):
    pi, sig, rgb, ts, te = random_packed(200, 30, seed=5)
    grads = []
    for impl in ("native", "torch"):
        s = sig.clone().requires_grad_()
        c = rgb.clone().requires_grad_()
        r = composite(pi, s, c, ts, te, impl=impl)
        g = torch.Generator().manual_seed(3)
        loss = (r.rgb * torch.randn(r.rgb.shape, generator=g)).sum() + (r.depth * 0.3).sum() - r.opacity.sum()
        loss.backward()
        grads.append((s.grad, c.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-6)


def test_gradcheck_float64(C):
    pi, sig, rgb, ts, te = random_packed(6, 5, dtype=torch.float64, seed=7)
    sig = (sig * 0.2).requires_grad_()
    rgb = rgb.requires_grad_()

    def f(s, c):
        r = composite(pi, s, c, ts, te, t_thresh=0.0, impl="native")
        return r.rgb, r.depth, r.opacity

    assert torch.autograd.gradcheck(f, (sig, rgb), eps=1e-6, atol=1e-6)


def test_edge_cases(C):
    # Empty batch.
    e = torch.zeros(0)
    r = composite(torch.zeros(0, 2, dtype=torch.long), e, torch.zeros(0, 3), e, e)
    assert r.rgb.shape == (0, 3) and r.weights.shape == (0,)
    # Rays with zero samples give zero colour and opacity.
    pi = torch.tensor([[0, 0], [0, 2], [2, 0]])
    r = composite(pi, torch.ones(2), torch.ones(2, 3), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    assert r.opacity[0] == 0 and r.opacity[2] == 0 and r.opacity[1] > 0
    # Non-contiguous inputs are accepted (made contiguous).
    pi, sig, rgb, ts, te = random_packed(50, 8, seed=9)
    rgb_nc = torch.cat([rgb, rgb], 1)[:, ::2]
    assert not rgb_nc.is_contiguous()
    a = composite(pi, sig, rgb_nc, ts, te)
    b = composite(pi, sig, rgb_nc.contiguous(), ts, te)
    torch.testing.assert_close(a.rgb, b.rgb)


def test_bad_arguments_are_named(C):
    pi, sig, rgb, ts, te = random_packed(10, 5)
    with pytest.raises(ValueError, match="'rgbs'"):
        composite(pi, sig, rgb[:, :2], ts, te)
    with pytest.raises(ValueError, match="'t_ends'"):
        composite(pi, sig, rgb, ts, te.double())
    with pytest.raises(ValueError, match="'packed_info'"):
        composite(pi.int(), sig, rgb, ts, te)
    with pytest.raises(ValueError, match="'sigmas'"):
        composite(pi, sig[:, None], rgb, ts, te)
    # The C++ layer names the argument too.
    with pytest.raises(RuntimeError, match="'t_starts'"):
        C.composite_forward(pi, sig, rgb, ts[:-1], te, 1e-4)


def test_packed_info_preconditions(C):
    # Segments out of [0, S) are always rejected on the CPU; overlapping segments in
    # debug mode (PNERF_DEBUG_CHECKS=1 or _C.set_debug_checks(True)).
    pi, sig, rgb, ts, te = random_packed(50, 10, seed=1)
    bad = pi.clone()
    bad[-1, 1] += 5
    with pytest.raises(RuntimeError, match="'packed_info'"):
        C.composite_forward(bad, sig, rgb, ts, te, 1e-4)
    neg = pi.clone()
    neg[0, 0] = -1
    with pytest.raises(RuntimeError, match="'packed_info'"):
        C.composite_forward(neg, sig, rgb, ts, te, 1e-4)
    overlap = pi.clone()
    i = int(torch.nonzero(pi[:-1, 1] > 0)[0])
    overlap[i + 1] = pi[i]  # a second ray over the same (non-empty) samples
    prev = C.debug_checks()
    try:
        C.set_debug_checks(False)
        C.composite_forward(overlap, sig, rgb, ts, te, 1e-4)
        C.set_debug_checks(True)
        with pytest.raises(RuntimeError, match="overlapping"):
            C.composite_forward(overlap, sig, rgb, ts, te, 1e-4)
        C.composite_forward(pi, sig, rgb, ts, te, 1e-4)
    finally:
        C.set_debug_checks(prev)
