"""Rendering speed and fidelity of a finetuned portrait: the reference no-grad path (the
whole field on every sample) against the fast one (density first, color only where the
compositing weight counts, blocked evaluation into kept buffers), in one run, the
variants interleaved frame by frame so that the machine's load falls on all alike.

    python benchmarks/bench_render.py --json                       # the shipped demo subject
    python benchmarks/bench_render.py --model demo_out/photo_portrait.pt --json

Without ``--model`` the shipped demo subject (pnerf_fast/assets/demo_subject) is
finetuned on its frontal view from the meta prior (what bench_finetune.py's
``render_fps_256`` renders) and from the default latent prior. Frames: the 256x256
orbit of bench_finetune.py. Fidelity: PSNR of each variant's frames against the
reference's, and, for the light-stage subject, against the ground truth of its
frontal view and of its widest side view, at the subject's resolution.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def psnr(a, b) -> float:
    mse = float(((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)) ** 2).mean())
    return float("inf") if mse == 0 else -10 * np.log10(mse)


SCALAR_HASH = "fast (default chunk), scalar hash grid"


def simd_supported() -> bool:
    from pnerf_fast._native import native

    c = native()
    return c is not None and c.hashgrid_simd_supported()


def variants(cfg, thresholds, segments, chunks, scalar_hash=False, stops=()):
    """name -> (render config, rays per chunk; None: the renderer's default).
    ``stops``: transmittance thresholds for early ray termination (``t_thresh``) to try
    besides the model's.
    ``scalar_hash``: one more variant, the default one with the hash grid's AVX-512 path
    switched off (the scalar functors; the same frames bit for bit), to measure that
    path before and after in one run."""
    out = {"reference": (replace(cfg, fast_infer=False), 1 << 14)}
    for th in thresholds:
        out[f"fast w>{th:g}"] = (replace(cfg, fast_infer=True, color_thresh=th), 1 << 14)
    # what PortraitField.render does when no chunk is given (render.renderer.default_chunk)
    out["fast (default chunk)"] = (replace(cfg, fast_infer=True), None)
    for sg in segments:
        out[f"fast w>{cfg.color_thresh:g} segment {sg}"] = (replace(cfg, fast_infer=True, segment=sg), 1 << 14)
    for ch in chunks:
        sg = segments[0] if segments else cfg.segment
        out[f"fast w>{cfg.color_thresh:g} segment {sg} chunk {ch}"] = (replace(cfg, fast_infer=True, segment=sg), ch)
    for tt in stops:
        out[f"fast, stop at T<{tt:g}"] = (replace(cfg, fast_infer=True, t_thresh=tt), None)
    if scalar_hash:
        out[SCALAR_HASH] = (replace(cfg, fast_infer=True), None)
    return out


def finer_grid(model, res: int, samples_per_cell: int = 4):
    """A one-level occupancy grid of ``res``^3 over the model's grid box: a cell is occupied
    where the model's grid cell at its centre is and the field's density at
    ``samples_per_cell`` jittered points reaches the grid's threshold, grown by one cell."""
    from pnerf_fast.ops.occgrid import OccupancyGrid
    from pnerf_fast.train.hull import dilate_cells

    g = model.grid
    fine = OccupancyGrid(g.geometry.aabb, 1, res, threshold=g.threshold).to(g.bits.device)
    fine.copy_cells_from_(g)
    coarse = fine.bits.clone()
    fine.mark_from_density(model.density_fn(), threshold=g._thresh(), samples_per_cell=samples_per_cell,
                           generator=torch.Generator(device=g.bits.device).manual_seed(0))
    fine.bits.copy_(dilate_cells(fine, fine.bits, 1).to(torch.uint8) * coarse)
    return fine


def _render(pf, name, cam, v, ch, grids=None):
    """One frame; the scalar-hash variant runs with the AVX-512 path off, a variant in
    ``grids`` with that occupancy grid in place of the model's."""
    if grids and name in grids:
        keep = pf.model.grid
        pf.model.grid = grids[name]
        try:
            return pf.render(cam, cfg=v, chunk=ch)
        finally:
            pf.model.grid = keep
    if name != SCALAR_HASH:
        return pf.render(cam, cfg=v, chunk=ch)
    from _timing import native_switch
    from pnerf_fast._native import native

    c = native()
    with native_switch(c.hashgrid_simd_enabled, c.hashgrid_set_simd, False):
        return pf.render(cam, cfg=v, chunk=ch)


def bench_portrait(pf, subject, args) -> dict:
    from pnerf_fast.render.paths import orbit

    cfg = pf.model.render_cfg
    vs = variants(cfg, args.thresholds, args.segments, args.chunks, scalar_hash=args.scalar_hash and simd_supported(),
                  stops=args.stops)
    grids = {}
    for r in args.grid_res:
        name = f"fast, grid {r}^3"
        vs[name] = (replace(cfg, fast_infer=True), None)
        grids[name] = finer_grid(pf.model, r)
    cams = orbit(args.frames + 1, args.res)
    times = {k: [] for k in vs}
    cpu = {k: [] for k in vs}
    frames = {k: [] for k in vs}
    for k, (v, ch) in vs.items():
        _render(pf, k, cams[0], v, ch, grids)  # warm-up (buffers, caches)
    for rep in range(args.repeats):
        for c in cams[1:]:
            for k, (v, ch) in vs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                out = _render(pf, k, c, v, ch, grids)
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
                if rep == 0:
                    frames[k].append(out["rgb"])
    ref_ms = statistics.median(times["reference"]) * 1e3
    ref_cpu = statistics.median(cpu["reference"]) * 1e3
    res = {}
    for k in vs:
        ms = statistics.median(times[k]) * 1e3
        cms = statistics.median(cpu[k]) * 1e3
        # cpu_ms: CPU seconds of this process per frame (all threads): what a frame costs
        # whatever else the machine runs; wall-clock ms and fps move with the load.
        res[k] = {"ms": round(ms, 1), "fps": round(1e3 / ms, 2), "speedup": round(ref_ms / ms, 2),
                  "cpu_ms": round(cms, 1), "cpu_speedup": round(ref_cpu / cms, 2),
                  "psnr_vs_reference": round(min(psnr(a, b) for a, b in zip(frames[k], frames["reference"])), 2),
                  "max_abs_vs_reference": float(max((a - b).abs().max() for a, b in zip(frames[k], frames["reference"])))}
    if subject is not None:
        gt = subject.composite(pf.background)
        q = subject.query_indices()
        from pnerf_fast.evaluate import view_angles

        wide = q[int(np.argmax(view_angles(subject, q)))]
        for k, (v, ch) in vs.items():
            for name, view in (("frontal", subject.frontal_index), ("widest", wide)):
                img = _render(pf, k, subject.cameras[view], v, ch, grids)["rgb"]
                res[k][f"psnr_gt_{name}"] = round(psnr(img, gt[view]), 4)
        for k in vs:
            for name in ("frontal", "widest"):
                res[k][f"psnr_gt_{name}_delta"] = round(res[k][f"psnr_gt_{name}"] - res["reference"][f"psnr_gt_{name}"], 4)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=None, help="a finetuned portrait (.pt); repeatable")
    ap.add_argument("--subject", default=None, help="with --model: the subject folder whose ground truth to score against")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--frames", type=int, default=3, help="timed orbit frames (after one warm-up frame)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--thresholds", type=float, nargs="*", default=[0.0, 1e-4, 1e-3])
    ap.add_argument("--segments", type=int, nargs="*", default=[16],
                    help="more variants: samples per ray per segment (the default config has 8)")
    ap.add_argument("--chunks", type=int, nargs="*", default=[1 << 16])
    ap.add_argument("--no-scalar-hash", dest="scalar_hash", action="store_false",
                    help="leave out the variant with the hash grid's AVX-512 path off")
    ap.add_argument("--stops", type=float, nargs="*", default=[],
                    help="variants that end each ray at these transmittances (render t_thresh) instead of the model's")
    ap.add_argument("--grid-res", type=int, nargs="*", default=[],
                    help="variants rendered through a finer occupancy grid of this resolution, built from the field "
                         "(4 jittered points per cell, the model's threshold, grown by a cell) inside the model's")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if any(not 0 < t < 1 for t in args.stops):
        ap.error(f"--stops: transmittances in (0, 1), got {args.stops}")
    if any(r < 1 for r in args.grid_res):
        ap.error(f"--grid-res: resolutions >= 1, got {args.grid_res}")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    from pnerf_fast.api import finetune, load, load_prior
    from pnerf_fast.data.format import load_subject

    result = {"threads": torch.get_num_threads(), "res": args.res, "load_avg": os.getloadavg()[0],
              "hash_simd": simd_supported(), "portraits": {}}
    portraits = []
    if args.model:
        subj = load_subject(args.subject) if args.subject else None
        portraits = [(Path(m).stem, lambda m=m: (load(m), subj)) for m in args.model]
    else:
        subj = load_subject(ROOT / "pnerf_fast" / "assets" / "demo_subject")
        for prior in ("meta", "latent"):
            portraits.append((f"demo_subject_{prior}",
                              lambda p=prior: (finetune(subj, init=load_prior(p), progress=False), subj)))
    for name, make in portraits:
        pf, subject = make()
        log(f"{name}: rendering")
        r = bench_portrait(pf, subject, args)
        result["portraits"][name] = r
        for k, v in r.items():
            log(f"  {k:>36}: {v['fps']:6.2f} frames/s ({v['speedup']:.2f}x), {v['cpu_ms']:7.0f} CPU ms/frame "
                f"({v['cpu_speedup']:.2f}x), PSNR vs reference {v['psnr_vs_reference']:.1f} dB"
                + (f", vs GT frontal {v['psnr_gt_frontal']:.3f} / widest {v['psnr_gt_widest']:.3f} dB" if "psnr_gt_frontal" in v else ""))
    result["load_avg_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
