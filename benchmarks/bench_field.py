"""Field benchmarks (imported by bench_kernels.py; also runnable alone):

  hash_encode_fwd_bwd   262,144 points, 16 levels x 2 features, table 2^17: native vs the PyTorch reference
                        (and, where the CPU has AVX-512, `scalar_ms`: native with that path off)
  mlp_fwd_bwd           262,144 rows, 32 -> 64 -> 64 -> 16 (ReLU): fused vs torch (nn.Linear)
  field_fast_fwd_bwd    the "fast" preset, one evaluation (encode, density MLP, SH, color MLP) per
                        sample, fwd+bwd: our default backend choice vs the all-PyTorch path
  field_paper_fwd_bwd   the "paper" preset (NeRF 8x256 trunk) the same way, fewer samples

    python benchmarks/bench_field.py [--json] [--record-backend]

--record-backend writes the faster of fused/torch on mlp_fwd_bwd, with both times, to
benchmarks/mlp_backend.json (a record of the measurement, beside the other results).
The package never reads it: backend "auto" on the CPU is the constant CPU_AUTO in
pnerf_fast/field/backends.py; the record says whether it still agrees.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _timing import native_switch, row, time_ms, time_ms_interleaved  # noqa: E402

from pnerf_fast.field import RadianceField  # noqa: E402
from pnerf_fast.field.backends import CPU_AUTO, resolve_backend  # noqa: E402
from pnerf_fast.field.encoding import SHEncoding  # noqa: E402
from pnerf_fast.field.mlp import MLP  # noqa: E402
from pnerf_fast.geometry import CANONICAL_AABB as AABB  # noqa: E402
from pnerf_fast._native import native  # noqa: E402
from pnerf_fast.ops.hashgrid import hash_encode, level_layout, level_resolutions  # noqa: E402


def _in_box(u):  # [n, 3] in [0, 1) -> points spread over the canonical box
    lo, hi = torch.tensor(AABB[:3]), torch.tensor(AABB[3:])
    return lo + u * (hi - lo)


RECORD_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlp_backend.json")


def bench_hash(n=262144, repeats=5, device="cpu"):
    res = level_resolutions(16, 16, 1024)
    g = torch.Generator().manual_seed(0)
    params = (torch.randn(level_layout(res, 17)[0][-1], 2, generator=g) * 1e-2).to(device).requires_grad_()
    x = _in_box(torch.rand(n, 3, generator=g)).to(device)
    gy = torch.randn(n, 32, generator=g).to(device)

    def run(impl):
        params.grad = None
        hash_encode(x, params, res, 17, AABB, impl=impl).backward(gy)

    extra = {}
    C = native()
    if torch.device(device).type == "cpu" and C is not None and C.hashgrid_simd_supported():
        # the same kernels with their AVX-512 path off (the scalar functors), timed in turns
        # with the default: before/after in one run
        def scalar():
            with native_switch(C.hashgrid_simd_enabled, C.hashgrid_set_simd, False):
                run("native")

        ours, scalar_ms = time_ms_interleaved([lambda: run("native"), scalar], repeats)
        extra["scalar_ms"] = round(scalar_ms, 3)
        extra["simd"] = C.hashgrid_simd_enabled()
    else:
        ours = time_ms(lambda: run("native"), repeats)
    ref = time_ms(lambda: run("torch"), max(2, repeats // 2))
    return row(ours, ref, None, n_points=n, levels=16, features=2, log2_table=17, **extra)


def bench_mlp(n=262144, repeats=5, device="cpu"):
    torch.manual_seed(0)
    m = MLP(32, 16, 64, 2, backend="torch").to(device)
    x = torch.randn(n, 32, device=device, requires_grad=True)
    gy = torch.randn(n, 16, device=device)

    def run(be):
        m.backend = be
        m.zero_grad()
        x.grad = None
        m(x).backward(gy)

    fused = time_ms(lambda: run("fused"), repeats)
    ref = time_ms(lambda: run("torch"), repeats)
    return row(fused, ref, None, n_rows=n, shape="32-64-64-16", flops_per_row=mlp_flops([32, 64, 64, 16], backward=True),
               fused_ms=round(fused, 3), torch_ms_=round(ref, 3),
               faster="fused" if fused < ref else "torch")


def mlp_flops(dims, backward: bool = False) -> int:
    """Nominal FLOPs per row of an MLP with layer widths ``dims``: 2 per multiply-add
    forward; the backward twice that (input and weight gradients)."""
    f = 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return 3 * f if backward else f


def bench_mlp_fwd(n=262144, repeats=5):
    """Forward alone, no grad (what rendering runs): the fused kernel, nn.Linear, and the
    renderer's blocked addmm into kept buffers (pnerf_fast/field/infer.py)."""
    from pnerf_fast.field.infer import FieldEvaluator, _layers

    torch.manual_seed(0)
    m = MLP(32, 16, 64, 2, backend="torch")
    x = torch.randn(n, 32)
    ev, out = FieldEvaluator(None), torch.empty(n, 16)

    def run(be):
        m.backend = be
        with torch.no_grad():
            m(x)

    def blocked():
        layers = _layers(m, None)
        for i in range(0, n, ev.block):
            j = min(i + ev.block, n)
            ev._mlp(x[i:j], layers, None, out[i:j])

    fused = time_ms(lambda: run("fused"), repeats)
    ref = time_ms(lambda: run("torch"), repeats)
    blk = time_ms(blocked, repeats)
    fl = mlp_flops([32, 64, 64, 16]) * n / 1e9
    return row(fused, ref, None, n_rows=n, shape="32-64-64-16", flops_per_row=mlp_flops([32, 64, 64, 16]),
               blocked_addmm_ms=round(blk, 3), blocked_addmm_gflops=round(fl / blk * 1e3, 1),
               torch_gflops=round(fl / ref * 1e3, 1))


def bench_field_render(n=65536, repeats=5):
    """The fast preset's no-grad evaluation of every sample (density and color), as the
    reference renderer runs it (field(x, d)) and through the renderer's evaluator."""
    from pnerf_fast.field.infer import FieldEvaluator

    torch.manual_seed(0)
    f = RadianceField("fast").eval()
    g = torch.Generator().manual_seed(1)
    x = _in_box(torch.rand(n, 3, generator=g))
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    ev, every = FieldEvaluator(f), torch.arange(n)

    def fast():
        ev.geometry(x, d)
        ev.color(every, d)

    def ref():
        with torch.no_grad():
            f(x, d)

    ours = time_ms(fast, repeats)
    return row(ours, time_ms(ref, repeats), None, n_samples=n, mlp_backend=resolve_backend("auto", "cpu"),
               note="torch column: field(x, d) under no_grad, the reference renderer's call (our kernels, not all-torch)")


def _all_torch(field: RadianceField):
    field.set_backend("torch")
    if hasattr(field.encoding, "impl"):
        field.encoding.impl = "torch"
    if isinstance(field.dir_encoding, SHEncoding):
        field.dir_encoding.impl = "torch"


def _ours(field: RadianceField):
    field.set_backend("auto")
    if hasattr(field.encoding, "impl"):
        field.encoding.impl = "auto"
    if isinstance(field.dir_encoding, SHEncoding):
        field.dir_encoding.impl = "auto"


def bench_field(preset, n, repeats=5, device="cpu"):
    torch.manual_seed(0)
    f = RadianceField(preset).to(device)
    g = torch.Generator().manual_seed(1)
    x = _in_box(torch.rand(n, 3, generator=g)).to(device)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1).to(device)
    gs, gc = torch.randn(n, generator=g).to(device), torch.randn(n, 3, generator=g).to(device)

    def run():
        f.zero_grad(set_to_none=True)
        s, c = f(x, d)
        torch.autograd.backward([s, c], [gs, gc])

    _ours(f)
    ours = time_ms(run, repeats)
    _all_torch(f)
    ref = time_ms(run, max(2, repeats // 2))
    return row(ours, ref, None, n_samples=n, mlp_backend=resolve_backend("auto", device))


def field_benchmarks(args) -> dict:
    repeats = getattr(args, "repeats", 5)
    dev = torch.device(getattr(args, "device", "cpu"))
    scale = getattr(args, "scale", None) or (4 if dev.type == "cuda" else 1)  # bigger batches on a GPU
    n = lambda base: max(64, int(base * scale))  # noqa: E731
    return {
        "hash_encode_fwd_bwd": bench_hash(n(262144), repeats, dev),
        "mlp_fwd_bwd": bench_mlp(n(262144), repeats, dev),
        "field_fast_fwd_bwd": bench_field("fast", n(65536), repeats, dev),
        "field_paper_fwd_bwd": bench_field("paper", n(16384), repeats, dev),
        # the renderer's no-grad evaluation (its blocked addmm path is the CPU's)
        **({"mlp_fwd_nograd": bench_mlp_fwd(repeats=repeats),
            "field_fast_render_fwd": bench_field_render(65536, repeats)} if dev.type == "cpu" else {}),
    }


def record_backend(mlp_row: dict, threads: int, path: str = RECORD_FILE) -> dict:
    rec = {
        "backend": mlp_row["faster"],
        "cpu_auto_in_package": CPU_AUTO,
        "agrees": mlp_row["faster"] == CPU_AUTO,
        "fused_ms": mlp_row["fused_ms"],
        "torch_ms": mlp_row["torch_ms_"],
        "benchmark": "mlp_fwd_bwd: 262144 rows, 32-64-64-16, fwd+bwd, median",
        "threads": threads,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    with open(path, "w") as f:
        f.write(json.dumps(rec, indent=2) + "\n")
    if not rec["agrees"]:
        print(f"note: {rec['backend']} was faster here, but backend 'auto' on the CPU is {CPU_AUTO!r} "
              "(pnerf_fast/field/backends.py: CPU_AUTO)", file=sys.stderr)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record-backend", action="store_true", help="write benchmarks/mlp_backend.json")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--scale", type=float, default=None, help="batch sizes times this (default 1 on the CPU, 4 on a GPU)")
    args = ap.parse_args(argv)
    if args.record_backend and torch.device(args.device).type != "cpu":
        ap.error("--record-backend records the CPU choice; run it with --device cpu")
    torch.set_num_threads(args.threads)
    res = field_benchmarks(args)
    if args.record_backend:
        res["_recorded"] = record_backend(res["mlp_fwd_bwd"], args.threads)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
