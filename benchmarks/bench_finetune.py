"""Finetune benchmarks, in one run, on the held-out synthetic test subjects (128x128).

A. Initialisations (the paper's ablation, as learning curves): mean novel-view PSNR
   (all 24 non-frontal views, white background, whole image) against seconds of
   single-view finetuning, for the meta prior, a joint prior and random init.
   Target: the shipped (meta) prior reaches >= 24 dB within 60 s.
B. Field presets: the time for the fast preset (hash grid) and the paper preset
   (positional-encoding 8x256 MLP) to reach 24 dB when fitted from random init to all
   25 views of one test subject (PSNR on every third view), in one run. Target: fast >= 20x
   sooner. Each preset uses its own batch size and Adam rates (PRESET_FIT), the best of a
   small sweep for each (benchmarks/README.md), so neither is handicapped by the other's.
   The fair ratio (each preset at the best of a wider sweep, seeds, no evaluation in the
   clock) is benchmarks/bench_presets.py's.

    python benchmarks/bench_finetune.py --json            # prints one JSON object
    python benchmarks/bench_finetune.py --data DIR --meta PRIOR --joint PRIOR
    python benchmarks/bench_finetune.py --step-bench --json   # C only (below)

C. Step time (--step-bench): ms per finetune step, before (dense table gradient, torch's
   per-tensor Adam / SGD loop over every table entry), after (row-sparse table gradient and
   the fused lazy step, pnerf_fast/train/optim.py) and fused (dense table gradient, torch's
   fused Adam: the default since session 13), in one run, interleaved step by step on the
   same batches: (1) stage 2 of the shipped latent prior's finetune on the shipped
   demo subject (its rays per step, Adam); (2) the fast preset fitted from random init
   (part B's 512 rays, Adam); (3) the meta prior's SGD finetune. Plus a profile of the
   new step.
D. Stop-depth cache (--stop-cache-bench): ms and samples per step of the latent prior's
   finetune stage 2 (as in C.1, dense tables) without and with ``finetune.stop_cache``,
   interleaved step by step on the same batches, the cache warm (filled by a no-grad render
   of the input view, then the warm-up steps), in two states of the occupancy grid: as the
   cover leaves it (stage 2's first 32 steps, C.1's state) and after one refresh from the
   field (what ``update_grid`` does every 32 steps; the rest of stage 2). Plus a whole
   default finetune (both stages, cold cache) without and with it.
E. Adam (--adam-bench): whole default finetunes of the shipped latent prior on the demo
   subject with torch's per-tensor Adam loop ("loop", the default before session 13) and
   its fused step ("fused", the default now), ABBA, with the frontal PSNR of each.
F. Hash-grid SIMD (--simd-bench): the same whole default finetunes with the hash grid's
   AVX-512 path off ("scalar") and on ("simd", the default where the CPU has it), ABBA;
   the two give the same bits, so the frontal PSNRs must agree exactly.

G. Colour only before opacity (--color-alive-bench): ms per training step with the colour
   network on every marched sample ("off") and only on those before each ray turned opaque
   ("on", ``render.color_alive``, the default: the same output and gradients), twin copies
   stepped in turns on the same batches, for the fast preset from random init (256 rays, the
   fast side of bench_presets' ratio), the shipped latent prior on all views (2,048 rays: a
   pretraining step's work) and the paper preset (32 rays).

The clock excludes the time spent evaluating (renders of the 24 views).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pnerf_fast.data.format import load_dataset, load_subject  # noqa: E402
from pnerf_fast.train.finetune import SHIPPED_PRIORS, finetune  # noqa: E402
from pnerf_fast.train.model import PortraitField, PortraitModel  # noqa: E402


def novel_view_psnr(pf: PortraitField, subj, views) -> float:
    from pnerf_fast.metrics import psnr

    gt = subj.composite(1.0)
    vals = [psnr(pf.render(subj.cameras[v])["rgb"], torch.as_tensor(gt[v])) for v in views]
    return float(np.mean(vals))


def curve_for(init_model_fn, subjects, budget_s: float, eval_every_s: float, views_per_eval: int | None):
    """Mean (over subjects) novel-view PSNR at checkpoints in seconds."""
    marks = list(np.arange(0.0, budget_s + 1e-9, eval_every_s))
    per_subject = []
    for subj in subjects:
        views = subj.query_indices()
        if views_per_eval:
            views = views[:: max(1, len(views) // views_per_eval)][:views_per_eval]
        model = init_model_fn()
        curve = {}
        tf = _transform(model, subj)
        front = subj.cameras[subj.frontal_index]
        # rendered as finetune's portrait renders: coloured as the frontal camera saw (color_from)
        pf = PortraitField(model, tf, front, color_from=tf.apply(front.position))
        curve[0.0] = novel_view_psnr(pf, subj, views)
        pending = [m for m in marks if m > 0]

        def cb(step, elapsed, field):
            while pending and elapsed >= pending[0]:
                m = pending.pop(0)
                curve[m] = novel_view_psnr(pf, subj, views)

        finetune(subj, init=model, seconds=budget_s, steps=None, progress=False, callback=cb)
        # Marks not reached before the budget ended: evaluate the final state for them.
        for m in pending:
            curve[m] = novel_view_psnr(pf, subj, views)
        per_subject.append([curve[m] for m in marks])
    mean = np.mean(np.array(per_subject), axis=0)
    return [float(m) for m in marks], [float(x) for x in mean]


def _transform(model, subj):
    from pnerf_fast.face.procrustes import SimilarityTransform, canonical_transform

    if model.cfg.coordinates == "canonical":
        return canonical_transform(subj.landmarks, model.mean_face)
    return SimilarityTransform.identity()


def value_at(seconds, psnr, t):
    return float(np.interp(t, seconds, psnr))


def time_to(seconds, psnr, target):
    for i, p in enumerate(psnr):
        if p >= target:
            if i == 0:
                return 0.0
            s0, s1, p0, p1 = seconds[i - 1], seconds[i], psnr[i - 1], psnr[i]
            return float(s0 + (target - p0) / max(p1 - p0, 1e-9) * (s1 - s0))
    return None


# Per preset: rays per step, Adam rates, seconds between evaluations. Chosen by the sweep in
# benchmarks/README.md ("Presets"): the fastest setting to 24 dB for each preset then. Session 30's
# wider sweep (bench_presets.py) found fast 256 rays at 2e-1 / 2e-2 and paper 32 rays at 1e-3 faster
# today; these are kept so that part B and the step bench stay comparable with their earlier runs.
PRESET_FIT = {
    "fast": {"rays": 512, "lr": {"grid": 1e-1, "mlp": 1e-2}, "eval_every": 1.0},
    "paper": {"rays": 256, "lr": {"grid": 1e-2, "mlp": 2e-3}, "eval_every": 2.0},
}


def preset_setup(preset: str, subj, lr: dict | None = None, render: dict | None = None):
    """A random-init field of ``preset`` for ``subj`` (its own landmarks as the mean face, the
    occupancy grid restricted to the subject's hull), Adam at the joint pretraining rates or ``lr``
    = {"grid": .., "mlp": ..}, and ``render`` overrides (e.g. {"prune_train": True}).
    -> (model, SubjectRays, optimizer, PortraitField)."""
    from pnerf_fast.train.config import config_from_dict
    from pnerf_fast.train.data import SubjectRays
    from pnerf_fast.train.hull import subject_hull
    from pnerf_fast.train.pretrain import make_optimizer

    cfg = config_from_dict({"field": preset, "grid": {"res": 64}, **({"joint": {"lr": lr}} if lr else {}),
                            **({"render": render} if render else {})})
    model = PortraitModel(cfg, np.asarray(subj.landmarks))  # mean face = the subject's own
    sr = SubjectRays(subj, model.mean_face, "canonical")
    model.grid.restrict_(subject_hull(model.grid, sr))
    opt = make_optimizer(model.field, "adam", cfg.joint.lr)
    return model, sr, opt, PortraitField(model, sr.transform)


def preset_step(model, sr, opt, views, rays: int, gen) -> float:
    """One Adam step on ``rays`` random rays of ``views``; -> the batch's MSE (before the step)."""
    from pnerf_fast.render.rays import Rays
    from pnerf_fast.render.renderer import render_rays

    b = sr.batch(views, rays, gen)
    bundle = Rays(b.rays_o, b.rays_d, sr.warp_table, jitter=torch.rand(rays, generator=gen))
    out = render_rays(model.field, model.grid, bundle, model.render_cfg, bg=b.bg)
    loss = torch.mean((out.rgb - b.target) ** 2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def preset_fit(preset: str, subj, budget_s: float, target: float, eval_every_s: float, rays: int, seed: int = 0,
               lr: dict | None = None):
    """Fit a random-init field of ``preset`` to all views of ``subj`` with Adam (the joint
    pretraining rates, or ``lr`` = {"grid": .., "mlp": ..}); PSNR over every third view at
    checkpoints; the training seconds to reach ``target``."""
    from pnerf_fast.metrics import psnr

    model, sr, opt, pf = preset_setup(preset, subj, lr)
    gen = torch.Generator().manual_seed(seed)
    views = list(range(sr.num_views))
    gt = subj.composite(1.0)
    seconds, curve, steps = [0.0], [], [0]

    def evaluate():
        model.field.eval()
        v = float(np.mean([psnr(pf.render(subj.cameras[i])["rgb"], torch.as_tensor(gt[i])) for i in views[::3]]))
        model.field.train()
        return v

    curve.append(evaluate())
    t_train = 0.0
    next_eval = eval_every_s
    step = 0
    while t_train < budget_s:
        t0 = time.perf_counter()
        preset_step(model, sr, opt, views, rays, gen)
        t_train += time.perf_counter() - t0
        step += 1
        if t_train >= next_eval:
            seconds.append(t_train)
            steps.append(step)
            curve.append(evaluate())
            next_eval += eval_every_s
            if curve[-1] >= target:
                break
    return {"seconds": seconds, "psnr": curve, "steps": steps, "time_to_target": time_to(seconds, curve, target),
            "ms_per_step": 1000 * t_train / max(step, 1)}


STEP_VARIANTS = {"before": {"sparse": False, "fused": False}, "after": {"sparse": True},
                 "fused": {"sparse": False, "fused": True}}


def _step_pair(make_model, batch_fn, kind, lr, steps: int, warmup: int = 3):
    """ms/step of the same training step with each of STEP_VARIANTS (make_optimizer's
    arguments): dense tables + torch's per-tensor optimizer loop ("before"), row-sparse
    tables + the fused lazy step ("after"), dense tables + torch's fused Adam ("fused"),
    interleaved, the order rotating every step."""
    from pnerf_fast.render.rays import Rays
    from pnerf_fast.render.renderer import render_rays
    from pnerf_fast.train.pretrain import grads_finite, make_optimizer

    runs = {}
    for name, kw in STEP_VARIANTS.items():
        model = make_model()
        model.field.train()
        opt = make_optimizer(model.field, kind, lr, **kw)
        runs[name] = (model, opt, list(model.field.parameters()), torch.Generator().manual_seed(0))
    times = {k: [] for k in runs}
    samples = {k: [] for k in runs}

    def one(name):
        model, opt, params, gen = runs[name]
        sr, views, n = batch_fn(model)
        b = sr.batch(views, n, gen, random_bg=sr.has_mask)
        t0 = time.perf_counter()
        rays = Rays(b.rays_o, b.rays_d, sr.warp_table, jitter=torch.rand(n, generator=gen))
        out = render_rays(model.field, model.grid, rays, model.render_cfg, bg=b.bg)
        loss = torch.mean((out.rgb - b.target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads_finite(params)  # finetune checks every step
        opt.step()
        return time.perf_counter() - t0, out.n_samples

    names = list(runs)
    for i in range(warmup + steps):
        for name in names[i % len(names):] + names[: i % len(names)]:
            dt, ns = one(name)
            if i >= warmup:
                times[name].append(dt * 1000)
                samples[name].append(ns)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"before_ms": round(med["before"], 1), "after_ms": round(med["after"], 1),
            "ratio": round(med["after"] / med["before"], 3), "fused_ms": round(med["fused"], 1),
            "fused_ratio": round(med["fused"] / med["before"], 3), "steps": steps,
            "samples_per_step": {k: int(np.mean(v)) for k, v in samples.items()}, "_runs": runs, "_one": one}


def step_benchmark(steps: int = 12, profile_steps: int = 5, log=print) -> dict:
    """Part C (see the module docstring)."""
    from pnerf_fast.train.config import GroupLR, config_from_dict
    from pnerf_fast.train.data import SubjectRays
    from pnerf_fast.train.finetune import as_subject
    from pnerf_fast.train.hull import cover_subject_, subject_hull

    subj = as_subject(ROOT / "pnerf_fast" / "assets" / "demo_subject")
    result = {}
    latent = PortraitModel.load(SHIPPED_PRIORS["latent"])
    fc = latent.cfg.finetune
    sr_l = SubjectRays(subj, latent.mean_face, latent.cfg.coordinates)

    def latent_model():
        m = PortraitModel.load(SHIPPED_PRIORS["latent"])
        cover_subject_(m.grid, sr_l, views=sr_l.support)
        return m

    def fast_model():
        cfg = config_from_dict({"field": "fast", "grid": {"res": 64}})
        m = PortraitModel(cfg, np.asarray(subj.landmarks))
        sr = SubjectRays(subj, m.mean_face, "canonical")
        m.grid.restrict_(subject_hull(m.grid, sr))
        m._sr = sr
        return m

    meta = PortraitModel.load(SHIPPED_PRIORS["meta"])
    sr_m = SubjectRays(subj, meta.mean_face, meta.cfg.coordinates)
    cases = {
        "latent_finetune_stage2": (latent_model, lambda m: (sr_l, sr_l.support, fc.rays_per_step), fc.optimizer,
                                   fc.lr or latent.cfg.meta.alpha),
        "fast_preset_fit": (fast_model, lambda m: (m._sr, list(range(m._sr.num_views)), PRESET_FIT["fast"]["rays"]),
                            "adam", GroupLR(**PRESET_FIT["fast"]["lr"])),
        "meta_finetune_sgd": (lambda: PortraitModel.load(SHIPPED_PRIORS["meta"]),
                              lambda m: (sr_m, sr_m.support, meta.cfg.finetune.rays_per_step),
                              meta.cfg.finetune.optimizer, meta.cfg.finetune.lr or meta.cfg.meta.alpha),
    }
    prof_case = None
    for name, (mk, batch_fn, kind, lr) in cases.items():
        r = _step_pair(mk, batch_fn, kind, lr, steps)
        one = r.pop("_one")
        r.pop("_runs")
        r["optimizer"] = kind
        result[name] = r
        log(f"{name}: before {r['before_ms']} ms/step, after (sparse) {r['after_ms']} ms/step (x{r['ratio']}), "
            f"fused Adam {r['fused_ms']} ms/step (x{r['fused_ratio']}), {r['samples_per_step']['after']} samples/step")
        if prof_case is None:
            prof_case = one
    if profile_steps:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(profile_steps):
                prof_case("after")
        rows = []
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]:
            rows.append({"op": e.key, "share": round(e.self_cpu_time_total / total, 3),
                         "ms_per_step": round(e.self_cpu_time_total / 1000 / profile_steps, 2)})
        result["profile_after_latent_finetune_stage2"] = rows
        log("profile of the new step (self time): " + ", ".join(f"{r['op']} {100 * r['share']:.0f}%" for r in rows))
    return result


def stop_cache_benchmark(steps: int = 12, margin: float | None = None, warmup: int = 3, whole: bool = True,
                         log=print) -> dict:
    """Part D (see the module docstring)."""
    from pnerf_fast.render.rays import Rays
    from pnerf_fast.render.renderer import render_rays
    from pnerf_fast.train.data import SubjectRays
    from pnerf_fast.train.finetune import _StopCache, as_subject
    from pnerf_fast.train.hull import cover_subject_
    from pnerf_fast.train.pretrain import grads_finite, make_optimizer

    subj = as_subject(ROOT / "pnerf_fast" / "assets" / "demo_subject")
    latent = PortraitModel.load(SHIPPED_PRIORS["latent"])
    fc = latent.cfg.finetune
    margin = fc.stop_margin if margin is None else margin
    sr = SubjectRays(subj, latent.mean_face, latent.cfg.coordinates)
    view, n = sr.support[0], fc.rays_per_step
    result = {"margin_steps": margin, "rays_per_step": n, "pixels": sr.hw[0] * sr.hw[1]}
    for state in ("covered", "refreshed"):
        runs = {}
        for name in ("before", "after"):
            m = PortraitModel.load(SHIPPED_PRIORS["latent"])
            cover_subject_(m.grid, sr, views=sr.support)
            if state == "refreshed":
                m.grid.update(m.density_fn(), fraction=1.0, generator=torch.Generator().manual_seed(0))
            m.field.train()
            cache = None
            if name == "after":
                cache = _StopCache(sr.hw[0] * sr.hw[1], margin * m.render_cfg.step, sr.warp_table, "cpu")
                t0 = time.perf_counter()
                cache.fill(m.field, m.grid, sr, view, m.render_cfg)
                result.setdefault("fill_s", {})[state] = round(time.perf_counter() - t0, 2)
            opt = make_optimizer(m.field, fc.optimizer, fc.lr or m.cfg.meta.alpha)
            runs[name] = (m, opt, list(m.field.parameters()), torch.Generator().manual_seed(0), cache)

        def one(name):
            m, opt, params, gen, cache = runs[name]
            b = sr.batch([view], n, gen, random_bg=sr.has_mask)
            t0 = time.perf_counter()
            jitter = torch.rand(n, generator=gen)
            if cache is None:
                out = render_rays(m.field, m.grid, Rays(b.rays_o, b.rays_d, sr.warp_table, jitter=jitter), m.render_cfg,
                                  bg=b.bg)
            else:  # as finetune does: limited to each pixel's stop depth, misses marched again
                out = cache.render(m.field, m.grid, b, m.render_cfg, jitter)
            loss = torch.mean((out.rgb - b.target) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grads_finite(params)
            opt.step()
            return time.perf_counter() - t0, out.n_samples, float(loss.detach())

        times, samples, losses = ({k: [] for k in runs} for _ in range(3))
        for i in range(warmup + steps):
            for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
                dt, ns, lo = one(name)
                if i >= warmup:
                    times[name].append(dt * 1000)
                    samples[name].append(ns)
                    losses[name].append(lo)
        med = {k: float(np.median(v)) for k, v in times.items()}
        c = runs["after"][4].counts
        r = {"before_ms": round(med["before"], 1), "after_ms": round(med["after"], 1),
             "ratio": round(med["after"] / med["before"], 3), "steps": steps,
             "samples_per_step": {k: int(np.mean(v)) for k, v in samples.items()},
             "mean_loss": {k: float(np.mean(v)) for k, v in losses.items()},
             "rays_limited": round(c["limited"] / max(c["rays"], 1), 3), "rays_marched_again": c["again"]}
        result[state] = r
        log(f"stage 2, grid {state}: without {r['before_ms']} ms/step ({r['samples_per_step']['before']} samples), "
            f"with the cache {r['after_ms']} ms/step ({r['samples_per_step']['after']} samples), x{r['ratio']}; "
            f"{100 * r['rays_limited']:.0f}% of rays limited, {r['rays_marched_again']} marched again")
    if whole:
        def cache_on(name, m):
            m.cfg.finetune.stop_cache = name == "after"
            m.cfg.finetune.stop_margin = margin
            return contextlib.nullcontext()

        rows, last = _abba_finetunes(subj, "before", "after", cache_on)
        rows["after_counts"] = last["after"].info["stop_cache"]
        result["whole_finetune_s"] = rows
        log(f"whole default finetune: without {rows['before']} s, with the cache {rows['after']} s; "
            f"frontal PSNR {rows['before_psnr']} / {rows['after_psnr']}; {rows['after_counts']}")
    return result


def _abba_finetunes(subj, a: str, b: str, setup):
    """Whole default finetunes of the shipped latent prior on ``subj``, variants a, b, b, a
    (ABBA: the machine's drift cancels); ``setup(name, model)`` configures the fresh prior and
    returns the context the finetune runs in. -> ({name: [s, s], name_psnr: [dB, dB]}, {name:
    its last portrait})."""
    rows, last = {}, {}
    for name in (a, b, b, a):
        m = PortraitModel.load(SHIPPED_PRIORS["latent"])
        with setup(name, m):
            t0 = time.perf_counter()
            pf = finetune(subj, init=m, progress=False)
        rows.setdefault(name, []).append(round(time.perf_counter() - t0, 2))
        rows.setdefault(f"{name}_psnr", []).append(round(pf.info["frontal_psnr"], 3))
        last[name] = pf
    return rows, last


def adam_benchmark(log=print) -> dict:
    """Part E (see the module docstring)."""
    import functools

    import pnerf_fast.train.finetune as ft
    from pnerf_fast.train.finetune import as_subject

    subj = as_subject(ROOT / "pnerf_fast" / "assets" / "demo_subject")
    finetune(subj, init=PortraitModel.load(SHIPPED_PRIORS["latent"]), steps=2, code_steps=2, progress=False)  # warm

    @contextlib.contextmanager
    def adam(name, m):  # finetune's make_optimizer with fused on or off
        shipped = ft.make_optimizer
        ft.make_optimizer = functools.partial(shipped, fused=name == "fused")
        try:
            yield
        finally:
            ft.make_optimizer = shipped

    rows, _ = _abba_finetunes(subj, "loop", "fused", adam)
    rows["ratio"] = round(sum(rows["fused"]) / sum(rows["loop"]), 3)
    log(f"whole default finetune: Adam loop {rows['loop']} s, fused {rows['fused']} s (x{rows['ratio']}); "
        f"frontal PSNR {rows['loop_psnr']} / {rows['fused_psnr']}")
    return {"whole_finetune_s": rows}


def simd_benchmark(log=print) -> dict:
    """Part F (see the module docstring)."""
    from pnerf_fast._native import native
    from pnerf_fast.train.finetune import as_subject

    C = native()
    if C is None or not C.hashgrid_simd_supported():
        raise SystemExit("--simd-bench: this CPU (or build) has no AVX-512 hash-grid path to compare")
    subj = as_subject(ROOT / "pnerf_fast" / "assets" / "demo_subject")
    finetune(subj, init=PortraitModel.load(SHIPPED_PRIORS["latent"]), steps=2, code_steps=2, progress=False)  # warm
    from _timing import native_switch

    def simd(name, m):
        return native_switch(C.hashgrid_simd_enabled, C.hashgrid_set_simd, name == "simd")

    rows, _ = _abba_finetunes(subj, "scalar", "simd", simd)
    rows["ratio"] = round(sum(rows["simd"]) / sum(rows["scalar"]), 3)
    log(f"whole default finetune: hash grid scalar {rows['scalar']} s, AVX-512 {rows['simd']} s (x{rows['ratio']}); "
        f"frontal PSNR {rows['scalar_psnr']} / {rows['simd_psnr']}")
    return {"whole_finetune_s": rows}


def color_alive_benchmark(steps: int = 60, warmup: int = 10, log=print) -> dict:
    """Part G (see the module docstring)."""
    import copy
    import dataclasses

    from pnerf_fast.train.config import GroupLR
    from pnerf_fast.train.data import SubjectRays
    from pnerf_fast.train.finetune import as_subject
    from pnerf_fast.train.pretrain import make_optimizer

    subj = as_subject(ROOT / "pnerf_fast" / "assets" / "demo_subject")
    views = list(range(len(subj.cameras)))

    def fast_fit():
        model, sr, opt, _ = preset_setup("fast", subj, {"grid": 2e-1, "mlp": 2e-2})
        return model, sr, opt

    def prior_fit():  # the shipped latent prior, all weights on all views: a pretraining step's work
        model = PortraitModel.load(SHIPPED_PRIORS["latent"])
        sr = SubjectRays(subj, model.mean_face, "canonical")
        return model, sr, make_optimizer(model.field, "adam", GroupLR(3e-3, 6e-4, 3e-3))

    out = {}
    for name, make, rays in (("fast preset, random init", fast_fit, 256), ("latent prior, all views", prior_fit, 2048),
                             ("paper preset, random init", lambda: preset_setup("paper", subj, {"grid": 1e-2, "mlp": 1e-3})[:3], 32)):
        torch.manual_seed(0)
        model, sr, opt = make()
        twins = {}
        for variant, on in (("off", False), ("on", True)):
            m, o = copy.deepcopy((model, opt))  # one memo: the optimizer's copy steps the model's copy
            m.render_cfg = dataclasses.replace(m.render_cfg, color_alive=on)
            twins[variant] = {"model": m, "opt": o, "gen": torch.Generator().manual_seed(0), "ms": [], "mse": []}
        for k in range(warmup + steps):
            for variant in (("off", "on") if k % 2 == 0 else ("on", "off")):
                t = twins[variant]
                t0 = time.perf_counter()
                mse = preset_step(t["model"], sr, t["opt"], views, rays, t["gen"])
                if k >= warmup:
                    t["ms"].append(1000 * (time.perf_counter() - t0))
                    t["mse"].append(mse)
        row = {v: {"median_ms": float(np.median(t["ms"])), "mean_ms": float(np.mean(t["ms"])),
                   "mean_batch_psnr": float(np.mean([-10 * math.log10(max(x, 1e-12)) for x in t["mse"]]))}
               for v, t in twins.items()}
        row["rays"] = rays
        row["speedup"] = row["off"]["mean_ms"] / row["on"]["mean_ms"]
        out[name] = row
        log(f"{name}, {rays} rays: colour on every sample {row['off']['mean_ms']:.1f} ms/step, only before the "
            f"ray turns opaque {row['on']['mean_ms']:.1f} ms/step (x{row['speedup']:.2f}); batch PSNR "
            f"{row['off']['mean_batch_psnr']:.2f} / {row['on']['mean_batch_psnr']:.2f}")
    return {"color_alive": out, "steps": steps, "subject": "demo_subject"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="light-stage root (default: regenerate the 4 test subjects of "
                                                   "`pnerf lightstage --subjects 40 --res 128 --seed 0` into a temp dir)")
    ap.add_argument("--meta", default=str(SHIPPED_PRIORS["meta"]), help="meta prior (default: the shipped one)")
    ap.add_argument("--joint", default=None, help="joint prior checkpoint (skipped when absent)")
    ap.add_argument("--budget", type=float, default=60.0, help="finetune seconds per subject")
    ap.add_argument("--eval-every", type=float, default=10.0)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--views", type=int, default=None, help="novel views per evaluation (default all 24)")
    ap.add_argument("--preset-budget", type=float, default=300.0, help="seconds per preset in part B")
    ap.add_argument("--skip-presets", action="store_true")
    ap.add_argument("--step-bench", action="store_true", help="only part C: ms/step before/after the sparse tables")
    ap.add_argument("--step-count", type=int, default=12, help="measured steps per variant in part C (and D)")
    ap.add_argument("--stop-cache-bench", action="store_true",
                    help="only part D: ms/step of finetune stage 2 without/with the stop-depth cache")
    ap.add_argument("--stop-margin", type=float, default=None, help="part D's margin in render steps "
                                                                     "(default: the prior's finetune.stop_margin)")
    ap.add_argument("--no-whole", action="store_true", help="part D without the whole finetunes")
    ap.add_argument("--adam-bench", action="store_true",
                    help="only part E: whole default finetunes with torch's Adam loop and its fused step")
    ap.add_argument("--simd-bench", action="store_true",
                    help="only part F: whole default finetunes with the hash grid's AVX-512 path off and on")
    ap.add_argument("--color-alive-bench", action="store_true",
                    help="only part G: ms/step with the colour network on every sample and only before each ray "
                    "turns opaque (render.color_alive)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", default=None, help="write the curves as a PNG here (needs matplotlib)")
    ap.add_argument("--replot", default=None, metavar="JSON",
                    help="only redraw --plot from a saved --json output, without measuring")
    args = ap.parse_args(argv)
    if args.replot:
        if not args.plot:
            ap.error("--replot needs --plot PATH")
        plot_curves(json.loads(Path(args.replot).read_text()), args.plot)
        return 0
    torch.set_num_threads(args.threads)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    single_parts = {  # flag -> the one part it runs
        "stop_cache_bench": lambda: stop_cache_benchmark(args.step_count, args.stop_margin, whole=not args.no_whole,
                                                         log=log),
        "simd_bench": lambda: simd_benchmark(log=log),
        "adam_bench": lambda: adam_benchmark(log=log),
        "step_bench": lambda: step_benchmark(args.step_count, log=log),
        "color_alive_bench": lambda: color_alive_benchmark(log=log),
    }
    for flag, run_part in single_parts.items():
        if getattr(args, flag):
            result = run_part()
            result["_meta"] = {"threads": torch.get_num_threads()}
            if args.json:
                print(json.dumps(result, indent=2))
            return 0

    if args.data is None:
        from pnerf_fast.data.lightstage import generate_lightstage

        import tempfile

        args.data = tempfile.mkdtemp(prefix="pnerf_bench_")
        log(f"rendering the light stage into {args.data} ...")
        generate_lightstage(args.data, subjects=40, res=128, seed=0, progress=False, contact_sheet_path=None)
    ds = load_dataset(args.data)
    subjects = [ds.subject(n) for n in ds.subjects("test")[: args.subjects]]
    log(f"{len(subjects)} held-out subjects: {[s.name for s in subjects]}")

    result = {}
    inits = {"meta": lambda: PortraitModel.load(args.meta)}
    if args.joint and Path(args.joint).exists():
        inits["joint"] = lambda: PortraitModel.load(args.joint)
    else:
        result["joint"] = None

    def random_model():
        m = PortraitModel.load(args.meta)  # same config, grid and mean face; fresh weights
        fresh = PortraitModel(m.cfg, m.mean_face)
        fresh.grid.load_state_dict(m.grid.state_dict())
        return fresh

    inits["random"] = random_model
    for name, fn in inits.items():
        t0 = time.perf_counter()
        secs, ps = curve_for(fn, subjects, args.budget, args.eval_every, args.views)
        result[name] = {"seconds": secs, "psnr": ps, "psnr_at_60s": value_at(secs, ps, 60.0) if secs[-1] >= 60 else None}
        log(f"{name:>7}: " + "  ".join(f"{s:.0f}s {p:.2f}" for s, p in zip(secs, ps)) + f"   ({time.perf_counter() - t0:.0f} s wall)")

    # Render speed: frames per second at 256x256 of a finetuned portrait (meta prior).
    from pnerf_fast.render.paths import orbit

    pf = finetune(subjects[0], init=PortraitModel.load(args.meta), progress=False)
    cams = orbit(4, 256)
    pf.render(cams[0])  # warm-up
    t0 = time.perf_counter()
    for c in cams[1:]:
        pf.render(c)
    fps = (len(cams) - 1) / (time.perf_counter() - t0)
    result["render_fps_256"] = fps
    log(f"render: {fps:.2f} frames/s at 256x256")

    if not args.skip_presets:
        subj = subjects[0]
        fits = {}
        for preset in ("fast", "paper"):
            p = PRESET_FIT[preset]
            fits[preset] = preset_fit(preset, subj, args.preset_budget, 24.0, p["eval_every"], p["rays"], lr=p["lr"])
            fits[preset]["settings"] = p
            log(f"{preset:>7} fit: time to 24 dB = {fits[preset]['time_to_target']}")
        tf, tp = fits["fast"]["time_to_target"], fits["paper"]["time_to_target"]
        result["time_to_24db"] = {"fast": tf, "paper": tp}
        result["preset_curves"] = fits
        if tf and tp:
            result["speedup_fast_vs_paper"] = tp / tf
        elif tf and not tp:
            # The paper preset did not get there within its budget: a lower bound.
            result["speedup_fast_vs_paper"] = None
            result["speedup_fast_vs_paper_lower_bound"] = args.preset_budget / tf
        else:
            result["speedup_fast_vs_paper"] = None
    result["_meta"] = {"threads": torch.get_num_threads(), "subjects": [s.name for s in subjects],
                       "budget_s": args.budget, "meta_prior": args.meta, "joint_prior": args.joint}
    if args.plot:
        try:
            plot_curves(result, args.plot)
            log(f"wrote {args.plot}")
        except ImportError as e:
            log(f"plot skipped ({e}); pip install matplotlib")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def plot_curves(result: dict, path: str) -> None:
    """Left: novel-view PSNR vs finetune seconds per init. Right: the preset fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_presets = "preset_curves" in result
    fig, axes = plt.subplots(1, 2 if has_presets else 1, figsize=(10 if has_presets else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    for name in ("meta", "joint", "random"):
        r = result.get(name)
        if r:
            ax.plot(r["seconds"], r["psnr"], marker="o", label=name)
    ax.axhline(24.0, color="gray", ls="--", lw=1, label="target 24 dB")
    ax.set_xlabel("finetune seconds (frontal view only, 2 CPU threads)")
    ax.set_ylabel("mean novel-view PSNR (dB)")
    ax.set_title("initialisation")
    ax.legend()
    if has_presets:
        ax = axes[0, 1]
        for name, r in result["preset_curves"].items():
            (line,) = ax.plot(r["seconds"], r["psnr"], marker=".", label=f"{name} preset")
            if r.get("time_to_target"):
                ax.axvline(r["time_to_target"], color=line.get_color(), ls=":", lw=1)
        ax.axhline(24.0, color="gray", ls="--", lw=1)
        if max(r["seconds"][-1] for r in result["preset_curves"].values()) > 60:
            ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("seconds fitting all 25 views from random init")
        ax.set_ylabel("PSNR on the fitted views (dB)")
        ax.set_title("field presets: time to 24 dB")
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
