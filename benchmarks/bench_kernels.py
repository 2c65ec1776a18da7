"""Kernel benchmarks: our native kernels against the PyTorch references (and nerfacc
0.5.3 where its functions run on CPU tensors), in one run, as ratios.

    python benchmarks/bench_kernels.py            # table
    python benchmarks/bench_kernels.py --json     # one JSON object keyed by operation
    python benchmarks/bench_kernels.py --device cuda --json   # the same on a GPU (native CUDA kernels)

Scene: 65,536 rays from a rig camera through a canonical-space occupancy grid
(64^3, a head-sized ellipsoid marked occupied), a similarity warp per batch, step
0.01 with jitter; a smooth analytic density and colour at the samples. Timed:
march + composite forward and backward (gradients to sigma and rgb).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import native_switch, row, time_ms  # noqa: E402

from pnerf_fast.geometry import CANONICAL_AABB  # noqa: E402
from pnerf_fast.geometry.rig import camera_at  # noqa: E402
from pnerf_fast.ops.composite import composite  # noqa: E402
from pnerf_fast.ops.occgrid import OccupancyGrid  # noqa: E402
from pnerf_fast.ops.raymarch import MarchConfig, march_rays  # noqa: E402


def make_scene(n_rays: int, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    res = int(round(n_rays ** 0.5))
    cam = camera_at(20.0, 10.0, res)
    o, d = cam.rays()
    o, d = o[:n_rays].contiguous(), d[:n_rays].contiguous()
    grid = OccupancyGrid(CANONICAL_AABB, levels=1, res=64)
    axes = torch.tensor([0.85, 1.1, 0.95])
    grid.mark_from_density(lambda p: ((p / axes).norm(dim=-1) < 1.0).float(), threshold=0.5)
    ang = torch.tensor(0.1)
    R = torch.tensor([[torch.cos(ang), 0, torch.sin(ang)], [0, 1, 0], [-torch.sin(ang), 0, torch.cos(ang)]])
    table = torch.cat([(1.05 * R).reshape(-1), torch.tensor([0.02, -0.05, 0.03])])[None].contiguous()
    jitter = torch.rand(o.shape[0], generator=g)
    dev = torch.device(device)
    return o.to(dev), d.to(dev), grid.to(dev), table.to(dev), jitter.to(dev)


def field(pos):
    r = (pos / torch.tensor([0.85, 1.1, 0.95], dtype=pos.dtype)).norm(dim=-1)
    sigma = 30.0 * torch.sigmoid((1.0 - r) * 20.0)
    rgb = torch.sigmoid(pos * 2.0)
    return sigma, rgb


def run_march_composite(o, d, grid, table, jitter, impl, sig0, rgb0):
    """March, then composite the (precomputed, identical) field values at the samples:
    the field itself is not part of this benchmark."""
    cfg = MarchConfig(step=0.01)
    s = march_rays(o, d, grid.geometry, grid.bits, cfg, warp_table=table, jitter=jitter, impl=impl, box=grid.occupied_box())
    sig = sig0.detach().requires_grad_()
    rgb = rgb0.detach().requires_grad_()
    r = composite(s.packed_info, sig, rgb, s.t_starts, s.t_ends, impl=impl)
    (r.rgb.sum() + r.opacity.sum()).backward()
    return s


def nerfacc_composite(s, sig, rgb):
    """nerfacc's dense CPU path: pad to [n_rays, max_count], then
    render_weight_from_density + accumulate_along_rays, forward and backward."""
    import nerfacc

    pi = s.packed_info
    N = pi.shape[0]
    counts = pi[:, 1]
    K = int(counts.max())
    ray = s.ray_indices
    dev = sig.device
    pos = torch.arange(s.n_samples, device=dev) - pi[ray, 0]
    ts = torch.zeros(N, K, device=dev)
    te = torch.zeros(N, K, device=dev)
    ts[ray, pos] = s.t_starts
    te[ray, pos] = s.t_ends
    sig_d = torch.zeros(N, K, device=dev).index_put((ray, pos), sig)
    rgb_d = torch.zeros(N, K, 3, device=dev).index_put((ray, pos), rgb)
    w, _, _ = nerfacc.render_weight_from_density(ts, te, sig_d)
    c = nerfacc.accumulate_along_rays(w, rgb_d)
    o = nerfacc.accumulate_along_rays(w, None)
    (c.sum() + o.sum()).backward()


def _pages4k(measure, device):
    """``measure()`` with the march's large CPU outputs on ordinary 4 KiB pages (the
    extension's huge-page advice off, as before session 26); None where it does not apply."""
    from pnerf_fast._native import native

    C = native()
    if torch.device(device).type != "cpu" or C is None or not C.huge_page_outputs():
        return None
    with native_switch(C.huge_page_outputs, C.set_huge_page_outputs, False):
        return measure()


def _extra(pages4k_ms):
    return {} if pages4k_ms is None else {"pages4k_ms": round(pages4k_ms, 3)}


def kernel_benchmarks(n_rays: int = 65536, repeats: int = 5, device="cpu") -> dict:
    o, d, grid, table, jitter = make_scene(n_rays, device=device)
    out = {}
    cfg = MarchConfig(step=0.01)
    box = grid.occupied_box()
    # warm-up 3: the first calls of a process also pay for the kernel finding free 2 MiB
    # pages for the huge-page outputs (benchmarks/README.md, "Session 26")
    march = lambda impl: march_rays(o, d, grid.geometry, grid.bits, cfg, warp_table=table,  # noqa: E731
                                    jitter=jitter, impl=impl, box=box)
    march_ours = time_ms(lambda: march("native"), repeats, warmup=3)
    march_4k = _pages4k(lambda: time_ms(lambda: march("native"), repeats, warmup=3), device)
    march_torch = time_ms(lambda: march("torch"), max(2, repeats // 2), warmup=3)
    s = march_rays(o, d, grid.geometry, grid.bits, cfg, warp_table=table, jitter=jitter, box=box)
    out["march_fwd"] = row(march_ours, march_torch, None, n_rays=n_rays, n_samples=s.n_samples, **_extra(march_4k))

    sig0, rgb0 = field(s.positions)

    def comp(impl):
        sig = sig0.detach().requires_grad_()
        rgb = rgb0.detach().requires_grad_()
        r = composite(s.packed_info, sig, rgb, s.t_starts, s.t_ends, impl=impl)
        (r.rgb.sum() + r.opacity.sum()).backward()

    comp_ours = time_ms(lambda: comp("native"), repeats)
    comp_torch = time_ms(lambda: comp("torch"), repeats)
    try:
        comp_nerfacc = time_ms(lambda: nerfacc_composite(s, sig0.detach().requires_grad_(), rgb0.detach().requires_grad_()), repeats)
    except Exception as e:  # nerfacc missing or broken on this machine
        print(f"nerfacc unavailable: {e}", file=sys.stderr)
        comp_nerfacc = None
    out["composite_fwd_bwd"] = row(comp_ours, comp_torch, comp_nerfacc, n_samples=s.n_samples)

    mc = lambda impl: run_march_composite(o, d, grid, table, jitter, impl, sig0, rgb0)  # noqa: E731
    mc_ours = time_ms(lambda: mc("native"), repeats, warmup=3)
    mc_4k = _pages4k(lambda: time_ms(lambda: mc("native"), repeats, warmup=3), device)
    mc_torch = time_ms(lambda: mc("torch"), max(2, repeats // 2), warmup=3)
    out["march_composite_fwd_bwd"] = row(
        mc_ours, mc_torch, None, n_rays=n_rays, n_samples=s.n_samples, **_extra(mc_4k),
        note="nerfacc cannot march on CPU tensors (OccGridEstimator.sampling needs CUDA); see composite_fwd_bwd for its dense compositing",
    )
    return out


# The machine's roof (shared/METHOD-NOTES.md, 2 CPU cores): SGEMM at 4096^3, and the fast
# preset's field forward + backward at ~60 kFLOP per sample on that SGEMM rate.
ROOF = {"sgemm_gflops": 148.0, "field_fast_fwd_bwd_samples_per_s": 2.5e6}


def add_rates(results: dict) -> None:
    """Per row: ``samples_per_s`` (samples, points or rows per second of our kernel) and,
    where FLOPs are counted (the MLP rows: ``flops_per_row``), ``gflops`` and its share of
    the SGEMM roof."""
    for r in results.values():
        n = next((r[k] for k in ("n_samples", "n_points", "n_rows") if k in r), None)
        if not n or not r.get("ours_ms"):
            continue
        r["samples_per_s"] = round(n / (r["ours_ms"] / 1e3))
        if r.get("flops_per_row"):
            r["gflops"] = round(r["flops_per_row"] * n / (r["ours_ms"] / 1e3) / 1e9, 1)
            r["gflops_of_roof"] = round(r["gflops"] / ROOF["sgemm_gflops"], 3)
    if "field_fast_fwd_bwd" in results and "samples_per_s" in results["field_fast_fwd_bwd"]:
        r = results["field_fast_fwd_bwd"]
        r["samples_of_roof"] = round(r["samples_per_s"] / ROOF["field_fast_fwd_bwd_samples_per_s"], 3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--rays", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["kernels", "field"], default=None)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from pnerf_fast._native import native

    if native() is None:
        print("error: pnerf_fast._C is not built; benchmarks compare it against the references", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            print(f"error: --device {args.device}: torch.cuda.is_available() is False", file=sys.stderr)
            return 2
        if not native().compiled_with_cuda():
            print("error: --device cuda: pnerf_fast._C was built without CUDA kernels", file=sys.stderr)
            return 2
    results = {}
    if args.only in (None, "kernels"):
        results.update(kernel_benchmarks(args.rays, args.repeats, dev))
    if args.only in (None, "field"):
        try:
            from bench_field import field_benchmarks
        except ImportError:
            field_benchmarks = None
        if field_benchmarks is not None:
            results.update(field_benchmarks(args))
    add_rates(results)
    results["_meta"] = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(dev),
                        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                        "roof": ROOF if dev.type == "cpu" else None}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'operation':<28}{'ours ms':>10}{'torch ms':>11}{'nerfacc ms':>12}{'speedup':>9}{'samples/s':>12}{'GFLOP/s':>9}")
        for k, v in results.items():
            if k.startswith("_"):
                continue
            f = lambda x: "-" if x is None else f"{x:.1f}"
            print(f"{k:<28}{f(v['ours_ms']):>10}{f(v['torch_ms']):>11}{f(v['nerfacc_ms']):>12}{f(v['speedup_vs_torch']):>8}x"
                  f"{v.get('samples_per_s', 0) / 1e6:>11.2f}M{f(v.get('gflops')):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
