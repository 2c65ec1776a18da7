"""The preset ratio, measured fairly: each field preset at its own best setting of a sweep,
seconds of training to 24 dB on all views (issue 17, part 5).

A field of each preset ("fast": hash grid and 64-wide MLPs; "paper": frequency encoding and the
8x256 MLP) is fitted from random init to all 25 views of one held-out light-stage subject, with
Adam, for every setting of a sweep (rays per step x learning rates x the opacity pre-pass for
training, ``render.prune_train``). The score is bench_finetune.py part B's: mean PSNR over every
third view, white background, whole image; the clock counts training steps only.

Evaluating a paper-preset field costs about a minute on one core (9 views through the 8x256 MLP),
far more than the fit itself, so the fit does not stop to evaluate. It trains while it saves a
snapshot of the field's weights every ``snap`` seconds of training (outside the clock), until the
running mean of its own batch PSNR is ``margin`` dB over the target or its budget ends. Then the
first snapshot over the target is searched for among the saved ones, starting from where the batch
PSNR crossed (galloping, then bisection; the curve is taken to cross once), and the time is
interpolated between it and the snapshot before:
- every setting is searched with a cheap proxy score: the same views, on a fixed random
  1/``proxy_div`` of their pixels;
- the best ``top`` settings of each preset by the proxy are searched again with the exact score,
  and the best one is fitted again with ``seeds`` more seeds (exact score), so the ratio comes with
  its seed-to-seed range.

    python benchmarks/bench_presets.py --data DIR --threads 1 --json > benchmarks/presets.json
    python benchmarks/bench_presets.py --quick ...      # two settings per preset (a smoke run)
    python benchmarks/bench_presets.py --pair 256:2e-1/2e-2:0 32:1e-2/1e-3:0 --seeds 2 ...   # head to head
    python benchmarks/bench_presets.py --only paper --rays 32,64 --lr 1e-2/5e-4,1e-2/1e-3 ...   # one preset,
                                                        # other batch sizes and rates
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_finetune import preset_setup, preset_step  # noqa: E402

TARGET = 24.0
CONFIRM_MARGIN = 0.5  # a fit stops once its proxy score is this far over the target

# rays per step, Adam rates (grid / MLP; the paper preset has no grid), prune_train. The rates are
# part B's sweep (benchmarks/README.md, "Presets") around each preset's best; the paper rates stop at
# 3e-3 because 4e-3 diverged there. The rays end one halving past each preset's best: a first run
# (session 30) had fast 256..1024 and paper 128..512, and both were best at their smallest batch.
SWEEP = {
    "fast": {"rays": (128, 256, 512),
             "lr": ((5e-2, 5e-3), (1e-1, 1e-2), (2e-1, 2e-2)),
             "prune_train": (False, True), "snap": 0.1, "budget": 20.0},
    "paper": {"rays": (64, 128, 256),
              "lr": ((1e-2, 1e-3), (1e-2, 2e-3), (1e-2, 3e-3)),
              "prune_train": (True, False), "snap": 0.5, "budget": 120.0},
}
QUICK = {"fast": {"rays": (512,), "lr": ((1e-1, 1e-2),), "prune_train": (False, True)},
         "paper": {"rays": (256,), "lr": ((1e-2, 2e-3),), "prune_train": (True, False)}}


def settings(preset: str, quick: bool = False, rays: tuple | None = None, lr: tuple | None = None):
    sw = dict(SWEEP[preset], **(QUICK[preset] if quick else {}), **({"rays": rays} if rays else {}),
              **({"lr": lr} if lr else {}))
    for rays in sw["rays"]:
        for g, m in sw["lr"]:
            for pt in sw["prune_train"]:
                yield {"rays": rays, "lr": {"grid": g, "mlp": m}, "prune_train": pt}


def psnr_db(mse: float) -> float:
    return float(-10.0 * np.log10(max(mse, 1e-12)))


class Scorer:
    """Mean PSNR over every third view of ``sr``: exact (every pixel) or on a fixed random
    1/``div`` of each view's pixels (the proxy). The rays and targets are gathered once."""

    def __init__(self, sr, div: int = 1, seed: int = 1234):
        P = sr.hw[0] * sr.hw[1]
        gen = torch.Generator().manual_seed(seed)
        pixels = None if div <= 1 else torch.randperm(P, generator=gen)[: P // div]
        self.rays = []  # (rays_o, rays_d, target) per scored view
        for v in list(range(sr.num_views))[::3]:
            b = sr.view_batch(v, bg=1.0)
            o, d, tgt = b.rays_o, b.rays_d, b.target
            self.rays.append((o, d, tgt) if pixels is None else (o[pixels], d[pixels], tgt[pixels]))

    def __call__(self, pf) -> float:
        from pnerf_fast.metrics import psnr

        pf.model.field.eval()
        try:
            with torch.no_grad():
                vals = [psnr(pf.render_rays(o, d).rgb[None], tgt[None]) for o, d, tgt in self.rays]
        finally:
            pf.model.field.train()
        return float(np.mean(vals))


def lr_factor(decay, step: int) -> float:
    """A setting's rate multiplier at ``step`` (0-based): 1 without ``decay``; with ``decay`` =
    (factor, steps), factor ** (step / steps) up to step ``steps``, then factor."""
    if not decay:
        return 1.0
    factor, steps = decay
    return float(factor ** (min(step, steps) / steps))


def fit_with_snapshots(preset: str, subj, setting: dict, snap: float, budget: float, margin: float = 1.0,
                       seed: int = 0, ema: float = 0.9, confirm=None, confirm_every: int = 5):
    """Train; -> dict(times, steps, batch_psnr (running mean at each snapshot), states, ms_per_step,
    model, pf, sr). Snapshot 0 is the initial field (t = 0). Once the running batch PSNR is
    ``margin`` over the target, ``confirm(pf, sr)`` (outside the clock; every ``confirm_every``
    snapshots at most) decides whether to stop: the batch PSNR of a few hundred rays is noisy."""
    render = {"prune_train": setting["prune_train"], "color_alive": setting.get("color_alive", True)}
    model, sr, opt, pf = preset_setup(preset, subj, setting["lr"], render)
    gen = torch.Generator().manual_seed(seed)
    views = list(range(sr.num_views))
    base_lr = [g["lr"] for g in opt.param_groups]
    decay = setting.get("decay")  # (factor, steps): each rate times lr_factor(decay, step)

    def state():
        return {k: v.detach().clone() for k, v in model.field.state_dict().items()}

    times, steps, bpsnr, states = [0.0], [0], [float("nan")], [state()]
    t_train, step, run_mse, next_snap, next_confirm = 0.0, 0, None, snap, 0
    while t_train < budget:
        t0 = time.perf_counter()
        if decay:
            f = lr_factor(decay, step)
            for g, lr0 in zip(opt.param_groups, base_lr):
                g["lr"] = lr0 * f
        mse = preset_step(model, sr, opt, views, setting["rays"], gen)
        t_train += time.perf_counter() - t0
        step += 1
        if not np.isfinite(mse):
            break
        run_mse = mse if run_mse is None else ema * run_mse + (1 - ema) * mse
        if t_train >= next_snap:
            times.append(t_train)
            steps.append(step)
            bpsnr.append(psnr_db(run_mse))
            states.append(state())
            next_snap += snap
            if step >= 20 and bpsnr[-1] >= TARGET + margin and len(states) - 1 >= next_confirm:
                if confirm is None or confirm(pf, sr):
                    break
                next_confirm = len(states) - 1 + confirm_every
    return {"times": times, "steps": steps, "batch_psnr": bpsnr, "states": states,
            "ms_per_step": 1000 * t_train / max(step, 1), "model": model, "pf": pf, "sr": sr}


def first_crossing(n: int, score, target: float, guess: int):
    """The first index i of 0..n-1 with score(i) >= target, for a score that crosses once and
    starts below (index 0): gallop from ``guess``, then bisect. -> (lo, hi, {i: score}) with
    hi = that index and lo = hi - 1, or None when the last index is below (or n < 2). On a curve
    that dips under the target again after first crossing it, this finds a crossing near
    ``guess``, which may be later than the first."""
    memo = {}

    def f(i):
        if i not in memo:
            memo[i] = score(i)
        return memo[i]

    if n < 2 or f(n - 1) < target:
        return None
    g = min(max(guess, 1), n - 1)
    if f(g) >= target:
        hi, step = g, 1
        lo = hi - step
        while lo > 0 and f(lo) >= target:
            hi, step = lo, step * 2
            lo = max(hi - step, 0)
    else:
        lo, step = g, 1
        hi = min(lo + step, n - 1)
        while f(hi) < target:
            lo, step = hi, step * 2
            hi = min(lo + step, n - 1)
    while hi - lo > 1:
        m = (lo + hi) // 2
        if f(m) >= target:
            hi = m
        else:
            lo = m
    f(lo)
    return lo, hi, memo


def crossing_time(fit: dict, scorer: Scorer, target: float = TARGET, guess: int | None = None):
    """Seconds of training to ``target`` under ``scorer``, interpolated between the two snapshots
    around its first crossing; -> (seconds or None, hi index, {index: score})."""
    model, pf, states = fit["model"], fit["pf"], fit["states"]
    live = {k: v.clone() for k, v in model.field.state_dict().items()}

    def score(i):
        model.field.load_state_dict(states[i])
        return scorer(pf)

    if guess is None:
        bp = fit["batch_psnr"]
        guess = next((i for i in range(1, len(bp)) if bp[i] >= target), len(bp) - 1)
    try:
        found = first_crossing(len(states), score, target, guess)
    finally:
        model.field.load_state_dict(live)
    if found is None:
        return None, None, {}
    lo, hi, memo = found
    t0, t1, p0, p1 = fit["times"][lo], fit["times"][hi], memo[lo], memo[hi]
    if p0 >= target:  # only when snapshot 0, the untrained field, is already over the target
        return 0.0, lo, memo
    return float(t0 + (target - p0) / max(p1 - p0, 1e-9) * (t1 - t0)), hi, memo


def run_setting(preset, subj, setting, scorer_for, seed, log, exact=False):
    sw = SWEEP[preset]
    t0 = time.perf_counter()
    proxy = []  # the proxy scorer, made once the fit has its rays

    def confirm(pf, sr):  # stop once the proxy is safely over the target
        if not proxy:
            proxy.append(scorer_for(sr, proxy=True))
        return proxy[0](pf) >= TARGET + CONFIRM_MARGIN

    fit = fit_with_snapshots(preset, subj, setting, sw["snap"], sw["budget"], seed=seed, confirm=confirm)
    wall_fit = time.perf_counter() - t0
    proxy = proxy[0] if proxy else scorer_for(fit["sr"], proxy=True)
    t_proxy, hi, memo = crossing_time(fit, proxy)
    row = {**setting, "seed": seed, "ms_per_step": fit["ms_per_step"], "snapshots": len(fit["states"]),
           "trained_s": fit["times"][-1], "steps": fit["steps"][-1], "final_batch_psnr": fit["batch_psnr"][-1],
           "proxy_s_to_target": t_proxy, "proxy_evals": len(memo), "steps_to_target": fit["steps"][hi] if hi else None}
    if exact and t_proxy is not None:
        ex = scorer_for(fit["sr"], proxy=False)
        t_exact, hi_e, memo_e = crossing_time(fit, ex, guess=hi)
        row.update(s_to_target=t_exact, exact_evals=len(memo_e), proxy_steps_to_target=row["steps_to_target"],
                   steps_to_target=fit["steps"][hi_e] if hi_e else None,
                   exact_scores={f"{fit['times'][i]:.2f}": round(v, 3) for i, v in sorted(memo_e.items())})
    log(f"{preset:>5} {setting['rays']:>4} rays lr {setting['lr']['grid']:.0e}/{setting['lr']['mlp']:.0e} "
        f"prune_train {int(setting['prune_train'])}"
        + (f" decay {setting['decay'][0]:g}@{setting['decay'][1]}" if setting.get("decay") else "")
        + f" seed {seed}: {fit['ms_per_step']:.0f} ms/step, proxy "
        f"{t_proxy if t_proxy is None else round(t_proxy, 2)} s"
        + (f", exact {row.get('s_to_target') and round(row['s_to_target'], 2)} s" if exact else "")
        + f" ({time.perf_counter() - t0:.0f} s wall, fit {wall_fit:.0f})")
    return row, fit


def setting_of(row: dict) -> dict:
    """The setting a result row was fitted with (to fit it again)."""
    return {k: row[k] for k in ("rays", "lr", "prune_train", "color_alive", "decay") if k in row}


def parse_setting(ap, text: str) -> dict:
    """RAYS:GRID/MLP:PRUNE_TRAIN[:FACTOR@STEPS] -> a setting (``ap.error`` on anything else). The
    optional last field decays both rates exponentially, to FACTOR times their start at step STEPS
    (and held there)."""
    try:
        rays, lr, pt, *rest = text.split(":")
        g, m = (float(x) for x in lr.split("/"))
        if pt not in ("0", "1") or len(rest) > 1:
            raise ValueError(pt)
        out = {"rays": int(rays), "lr": {"grid": g, "mlp": m}, "prune_train": pt == "1"}
        if rest:
            f, n = rest[0].split("@")
            out["decay"] = (float(f), int(n))
    except ValueError:
        ap.error(f"--pair/--seeds-of: a setting is RAYS:GRID/MLP:PRUNE_TRAIN[:FACTOR@STEPS] with PRUNE_TRAIN 0 or 1 "
                 f"(e.g. 256:2e-1/2e-2:0 or 256:4e-1/4e-2:0:0.1@200), got {text!r}")
    if out["rays"] < 1 or not (0 < g < math.inf and 0 < m < math.inf):
        ap.error(f"--pair/--seeds-of: rays must be >= 1 and both rates finite and > 0, got {text!r}")
    if "decay" in out and not (0 < out["decay"][0] < math.inf and out["decay"][1] >= 1):
        ap.error(f"--pair/--seeds-of: a decay FACTOR@STEPS needs 0 < FACTOR < inf and STEPS >= 1, got {text!r}")
    return out


def seed_summary(rows: list) -> dict:
    """One setting's fits over seeds: the seconds to the target of those that reached it, their mean
    and median, how many ``missed`` (did not reach it in their budget), and each fit's ms/step and
    steps to the target."""
    t = [r["s_to_target"] for r in rows if r.get("s_to_target") is not None]
    return {"s_to_target": t, "mean_s": float(np.mean(t)) if t else None,
            "median_s": float(np.median(t)) if t else None, "missed": len(rows) - len(t),
            "ms_per_step": [r["ms_per_step"] for r in rows], "steps_to_target": [r["steps_to_target"] for r in rows]}


def head_to_head(subj, pair, seeds: int, scorer_for, log) -> dict:
    """The fast and the paper setting, seeds 0..seeds-1, alternating (fast, paper, fast, ...) so
    that the machine's load drifts over both alike; exact crossings."""
    rows = {"fast": [], "paper": []}
    for seed in range(seeds):
        for preset, setting in zip(("fast", "paper"), pair):
            rows[preset].append(run_setting(preset, subj, setting, scorer_for, seed, log, exact=True)[0])
    summary = {p: {"setting": s, **seed_summary(rows[p])} for p, s in zip(("fast", "paper"), pair)}
    t = {p: summary[p]["s_to_target"] for p in rows}
    if t["fast"] and t["paper"] and not any(summary[p]["missed"] for p in t):
        summary["ratio_mean"] = summary["paper"]["mean_s"] / summary["fast"]["mean_s"]
        summary["ratio_range"] = [min(t["paper"]) / max(t["fast"]), max(t["paper"]) / min(t["fast"])]
    return {"target_db": TARGET, "subject": subj.name, "pair": rows, "summary": summary}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="light-stage root (default: render `pnerf lightstage --subjects 40 "
                    "--res 128 --seed 0` into a temporary folder)")
    ap.add_argument("--subject", default="subject_036", help="the subject fitted (default: part B's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--proxy-div", type=int, default=8, help="the proxy scores 1/N of each view's pixels")
    ap.add_argument("--top", type=int, default=2, help="settings per preset searched with the exact score")
    ap.add_argument("--seeds", type=int, default=2, help="extra seeds for each preset's best setting")
    ap.add_argument("--quick", action="store_true", help="two settings per preset, no extra seeds")
    ap.add_argument("--only", choices=("fast", "paper"), default=None, help="sweep one preset only")
    ap.add_argument("--rays", default=None, help="rays per step to sweep instead of the built-in ones, "
                    "comma-separated (e.g. 32,64)")
    ap.add_argument("--lr", default=None, help="Adam rates to sweep instead of the built-in ones, GRID/MLP "
                    "pairs, comma-separated (e.g. 1e-2/5e-4,1e-2/1e-3)")
    ap.add_argument("--pair", nargs=2, default=None, metavar=("FAST", "PAPER"),
                    help="no sweep: the two settings head to head, RAYS:GRID/MLP:PRUNE_TRAIN[:FACTOR@STEPS] each "
                    "(e.g. 256:2e-1/2e-2:0 32:1e-2/1e-3:0; FACTOR@STEPS decays both rates exponentially to FACTOR "
                    "times their start by step STEPS), with seeds 0..--seeds, the presets alternating, exact score")
    ap.add_argument("--seeds-of", nargs=2, default=None, metavar=("PRESET", "SETTING"),
                    help="no sweep: one preset's setting (as in --pair) fitted with seeds 0..--seeds, exact score, "
                    "to see its seed-to-seed spread")
    ap.add_argument("--color-alive", type=int, choices=(0, 1), default=1,
                    help="render.color_alive for every fit (1, the default: the colour network only on the samples "
                    "before each ray turns opaque; 0: on every sample, as before session 31)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.proxy_div < 1 or args.top < 1 or args.seeds < 0:
        ap.error("--threads, --proxy-div and --top must be >= 1, --seeds >= 0")
    rays = None
    if args.rays is not None:
        try:
            rays = tuple(int(r) for r in args.rays.split(","))
        except ValueError:
            ap.error(f"--rays: comma-separated integers, got {args.rays!r}")
        if not rays or min(rays) < 1:
            ap.error(f"--rays: every count must be >= 1, got {args.rays!r}")
    lrs = None
    if args.lr is not None:
        try:
            lrs = tuple(tuple(float(x) for x in pair.split("/")) for pair in args.lr.split(","))
        except ValueError:
            ap.error(f"--lr: comma-separated GRID/MLP pairs of numbers, got {args.lr!r}")
        if any(len(p) != 2 or not all(0 < x < math.inf for x in p) for p in lrs):
            ap.error(f"--lr: each entry is GRID/MLP, both finite and > 0, got {args.lr!r}")
    if args.seeds_of and args.pair:
        ap.error("--seeds-of and --pair: give one of them")
    if args.seeds_of:
        if args.seeds_of[0] not in SWEEP:
            ap.error(f"--seeds-of: PRESET must be one of {', '.join(SWEEP)}, got {args.seeds_of[0]!r}")
        seeds_of = parse_setting(ap, args.seeds_of[1])
    pair = [parse_setting(ap, x) for x in args.pair] if args.pair else None
    torch.set_num_threads(args.threads)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    from pnerf_fast.data.format import load_dataset

    if args.data is None:
        import tempfile

        from pnerf_fast.data.lightstage import generate_lightstage

        args.data = tempfile.mkdtemp(prefix="pnerf_presets_")
        log(f"rendering the light stage into {args.data} ...")
        generate_lightstage(args.data, subjects=40, res=128, seed=0, progress=False, contact_sheet_path=None)
    ds = load_dataset(args.data)
    if args.subject not in ds.subjects("test") + ds.subjects("val") + ds.subjects("train"):
        ap.error(f"--subject: {args.subject!r} is not in {args.data}")
    subj = ds.subject(args.subject)
    if args.proxy_div > subj.cameras[0].height * subj.cameras[0].width:
        ap.error(f"--proxy-div: at most the pixels of a view ({subj.cameras[0].height * subj.cameras[0].width}), "
                 f"got {args.proxy_div}")

    def scorer_for(sr, proxy):
        return Scorer(sr, args.proxy_div if proxy else 1)

    t_all = time.perf_counter()
    alive = {"color_alive": bool(args.color_alive)}
    if args.seeds_of:
        preset = args.seeds_of[0]
        setting = {**seeds_of, **alive}
        rows = [run_setting(preset, subj, setting, scorer_for, seed, log, exact=True)[0] for seed in range(args.seeds + 1)]
        result = {"target_db": TARGET, "subject": subj.name, "preset": preset, "setting": setting, "rows": rows,
                  **seed_summary(rows)}
        result["_meta"] = {"threads": torch.get_num_threads(), "data": str(args.data), "wall_s": time.perf_counter() - t_all}
        print(json.dumps(result, indent=2)) if args.json else log(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
        return 0
    if args.pair:
        result = head_to_head(subj, [{**x, **alive} for x in pair], args.seeds + 1, scorer_for, log)
        result["_meta"] = {"threads": torch.get_num_threads(), "data": str(args.data), "wall_s": time.perf_counter() - t_all}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            log(json.dumps(result["summary"], indent=2))
        return 0
    result = {"target_db": TARGET, "subject": args.subject, "sweep": {}, "best": {}}
    for preset in (args.only,) if args.only else ("fast", "paper"):
        rows = []
        for s in settings(preset, args.quick, rays, lrs):
            s = {**s, **alive}
            row, fit = run_setting(preset, subj, s, scorer_for, 0, log)
            rows.append(row)
            del fit
        ranked = sorted((r for r in rows if r["proxy_s_to_target"] is not None), key=lambda r: r["proxy_s_to_target"])
        exact_rows = []
        for r in ranked[: args.top]:  # fitted again (same seed, same batches): the snapshots are not kept
            s = setting_of(r)
            exact_rows.append(run_setting(preset, subj, s, scorer_for, 0, log, exact=True)[0])
        exact_rows = [r for r in exact_rows if r.get("s_to_target") is not None]
        best = min(exact_rows, key=lambda r: r["s_to_target"]) if exact_rows else None
        seeds = []
        if best and not args.quick:
            s = setting_of(best)
            for seed in range(1, args.seeds + 1):
                seeds.append(run_setting(preset, subj, s, scorer_for, seed, log, exact=True)[0])
        result["sweep"][preset] = {"proxy": rows, "exact": exact_rows, "seeds": seeds}
        times = [r["s_to_target"] for r in ([best] if best else []) + seeds if r.get("s_to_target") is not None]
        result["best"][preset] = None if not best else {
            "setting": setting_of(best), "s_to_target": best["s_to_target"],
            "seeds_missed": sum(r.get("s_to_target") is None for r in seeds),
            "s_to_target_seeds": times, "ms_per_step": best["ms_per_step"]}
    bf, bp = result["best"].get("fast"), result["best"].get("paper")
    if bf and bp:
        tf, tp = bf["s_to_target_seeds"], bp["s_to_target_seeds"]
        result["ratio_paper_over_fast"] = bp["s_to_target"] / bf["s_to_target"]
        result["ratio_mean_seeds"] = float(np.mean(tp) / np.mean(tf))
        result["ratio_range_seeds"] = [min(tp) / max(tf), max(tp) / min(tf)]
    result["_meta"] = {"threads": torch.get_num_threads(), "data": str(args.data), "proxy_div": args.proxy_div,
                       "quick": args.quick, "only": args.only, "rays": rays, "lr": lrs, "wall_s": time.perf_counter() - t_all}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        log(json.dumps({k: result[k] for k in ("best",)}, indent=2))
        log(f"ratio: {result.get('ratio_paper_over_fast')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
