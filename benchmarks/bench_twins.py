"""How much of a light-stage head does its frontal view leave open? Twins that differ only there.

    python benchmarks/bench_twins.py --style portrait --split test --twins 8 --json --out X.json
    python benchmarks/bench_twins.py --hidden cranium_back hair_back hair_bottom ...

For each held-out subject of bench_fidelity's light stage, ``--twins`` heads are rendered
that are the subject itself with only the ``--hidden`` parameters drawn again from the
generator's own distribution (conditioned on the hair style). They are scored against the
subject (the same views, PSNR / SSIM / LPIPS and angle bands as ``bench_fidelity.py``):

- ``twin_front``: how different the twins' *frontal* views are from the subject's (PSNR
  whole and foreground). Where it is high, the frontal photo cannot tell them apart;
- ``one_twin``: a single plausible guess (a twin) as the prediction of the novel views;
- ``mean_of_twins``: the pixel mean of the twins, the prediction with the least expected
  squared error when those parameters are all that is unknown. Its MSE overestimates that of
  the exact conditional mean by (1 + 1/K) for K twins; ``psnr_k_inf`` removes that factor,
  view by view.

Where the frontal views of the twins agree (``twin_front`` far above the input view's own
fidelity), ``mean_of_twins`` bounds what any single-image method can reach on the novel
views with those parameters unknown and everything else known. The default ``--hidden`` is
the clothing (the frontal camera of the portrait stage ends near the chin); the back of the
head (``cranium_back``, ``hair_back``, ``hair_bottom``) can be asked for too, and shows how
much of it the frontal view does see.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pnerf_fast.data import rig  # noqa: E402
from pnerf_fast.data.lightstage import STYLES, _split_counts, render_subject, subject_params  # noqa: E402
from pnerf_fast.data.lightstage.params import sample_head, sample_head_portrait  # noqa: E402
from pnerf_fast.evaluate import band_of, camera_angles, split_by_angle  # noqa: E402
from pnerf_fast.metrics import evaluate_views  # noqa: E402

#: the parameters drawn again by default: the clothing, which the frontal camera barely sees
HIDDEN_DEFAULT = ("clothes", "clothes_pattern", "shoulder_width", "neckline")
#: the parameters that may be named in --hidden (HeadShape and HeadAppearance fields drawn per subject)
HIDDEN_CHOICES = ("clothes", "clothes_pattern", "shoulder_width", "neckline", "cranium_back", "hair_back",
                  "hair_bottom", "depth", "ears")
LS_SUBJECTS, LS_SEED, LS_RES, LS_VIEWS = 80, 0, 128, 25  # bench_fidelity's light stage


def twin_params(params, style: str, hidden, seed: int, index: int, k: int):
    """Subject ``params`` with the ``hidden`` HeadShape / HeadAppearance fields taken from another draw of
    the generator (``style``) that has the same hair style: twin ``k`` of subject ``index``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 7919, int(k)]))
    draw = sample_head_portrait if style == "portrait" else sample_head
    for _ in range(10_000):
        other = draw(rng)
        if other.shape.hair_style == params.shape.hair_style:
            break
    else:  # pragma: no cover - every style has probability >= 0.1
        raise RuntimeError(f"no draw with hair style {params.shape.hair_style!r}")
    twin = copy.deepcopy(params)
    for name in hidden:
        part = "shape" if hasattr(twin.shape, name) else "appearance"
        setattr(getattr(twin, part), name, getattr(getattr(other, part), name))
    return twin


def _composite(rgba: np.ndarray, bg: float = 1.0) -> np.ndarray:
    a = rgba[..., 3:4]
    return (rgba[..., :3] * a + bg * (1.0 - a)).astype(np.float32)


def _render(params, res: int, views: int):
    cams = rig.rig_cameras(res, views)
    with torch.no_grad():
        imgs, _ = render_subject(params, cams)
    return np.stack([_composite(x) for x in imgs]), np.stack([x[..., 3] > 0.5 for x in imgs]), cams


def _worker_init():
    torch.set_num_threads(1)


def _render_job(args):
    params, res, views = args
    rgb, mask, _ = _render(params, res, views)
    return rgb, mask


#: a view's PSNR counts as at most this in every mean (a twin's view identical to the
#: subject's has an infinite one)
PSNR_CAP = 60.0


def _psnr_of_mse(mse: float) -> float:
    return PSNR_CAP if mse <= 0 else min(float(-10.0 * math.log10(mse)), PSNR_CAP)


def _capped(m: dict) -> dict:
    """evaluate_views' result with every per-view PSNR capped at PSNR_CAP, means recomputed."""
    for k, v in m["per_view"].items():
        if "psnr" in k:
            m["per_view"][k] = [min(float(x), PSNR_CAP) for x in v]
            m[k] = float(np.mean(m["per_view"][k]))
    return m


def twins_subject(gt_rgb, gt_mask, twins, angles, lpips: bool = True) -> dict:
    """Scores for one subject: ``gt_rgb`` [V, H, W, 3] and ``gt_mask`` [V, H, W] with the
    frontal view first; ``twins`` a list of (rgb, mask) pairs of the same shapes."""
    K = len(twins)
    if K < 1:
        raise ValueError("twins is empty")
    front = _capped(evaluate_views([t[0][0] for t in twins], [gt_rgb[0]] * K, masks=[gt_mask[0]] * K, lpips=False))
    stack = np.stack([t[0] for t in twins])  # [K, V, H, W, 3]
    mean = stack.mean(0)
    novel = list(range(1, gt_rgb.shape[0]))
    masks = [gt_mask[v] for v in novel]
    m = _capped(evaluate_views([mean[v] for v in novel], [gt_rgb[v] for v in novel], masks=masks, lpips=lpips))
    mse = [float(np.mean((mean[v] - gt_rgb[v]) ** 2)) for v in novel]
    m["per_view"]["psnr_k_inf"] = [_psnr_of_mse(e / (1.0 + 1.0 / K)) for e in mse]
    m["psnr_k_inf"] = float(np.mean(m["per_view"]["psnr_k_inf"]))
    one = [_capped(evaluate_views([t[0][v] for v in novel], [gt_rgb[v] for v in novel], lpips=False))["per_view"]["psnr"]
           for t in twins]
    one_pv = np.mean(np.asarray(one), 0).tolist()
    m["by_angle"] = split_by_angle(m["per_view"], angles)
    one_band = split_by_angle({"psnr": one_pv}, angles)
    return {
        "twin_front": {"psnr": front["psnr"], "psnr_fg": front["psnr_fg"],
                       "psnr_fg_min": float(np.min(front["per_view"]["psnr_fg"]))},
        "one_twin": {"psnr": float(np.mean(one_pv)), "by_angle": {b: v["psnr"] for b, v in one_band.items()}},
        "mean_of_twins": {k: m[k] for k in ("psnr", "psnr_fg", "ssim", "lpips", "psnr_k_inf") if k in m}
        | {"by_angle": {b: {k: v[k] for k in ("psnr", "psnr_fg", "psnr_k_inf") if k in v} for b, v in m["by_angle"].items()}},
    }


def mean_nested(rows: list[dict]) -> dict:
    """The mean over ``rows`` of every number in them, nested dicts alike (a key some rows lack:
    over those that have it)."""
    out = {}
    for k, v in rows[0].items():
        vals = [r[k] for r in rows if k in r]
        out[k] = mean_nested(vals) if isinstance(v, dict) else float(np.mean(vals))
    return out


def run(style: str = "portrait", split: str = "test", twins: int = 16, hidden=HIDDEN_DEFAULT, res: int = LS_RES,
        views: int = LS_VIEWS, subjects: list[int] | None = None, seed: int = LS_SEED, workers: int = 2,
        lpips: bool = True, progress: bool = True) -> dict:
    if style not in STYLES:
        raise ValueError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    bad = [h for h in hidden if h not in HIDDEN_CHOICES]
    if bad:
        raise ValueError(f"--hidden: {bad[0]!r} is not one of {', '.join(HIDDEN_CHOICES)}")
    if twins < 1:
        raise ValueError(f"--twins must be >= 1, got {twins}")
    if views < 2:
        raise ValueError(f"--views must be >= 2 (the frontal view and at least one novel view), got {views}")
    if subjects is None:
        n_train, n_val, n_test = _split_counts(LS_SUBJECTS, (0.8, 0.1, 0.1))
        first, count = {"val": (n_train, n_val), "test": (n_train + n_val, n_test)}[split]
        subjects = list(range(first, first + count))
    jobs, owners = [], []
    for i in subjects:
        p = subject_params(seed, i, style)
        jobs.append((p, res, views))
        owners.append((i, -1))
        for k in range(twins):
            jobs.append((twin_params(p, style, hidden, seed, i, k), res, views))
            owners.append((i, k))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="head", desc="twins")
    t0 = time.perf_counter()
    renders = {}
    if workers <= 1:
        for o, j in zip(owners, jobs):
            renders[o] = _render_job(j)
            if bar is not None:
                bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
            for o, r in zip(owners, ex.map(_render_job, jobs)):
                renders[o] = r
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    render_s = time.perf_counter() - t0
    cams = rig.rig_cameras(res, views)
    angles = camera_angles(cams[0], cams[1:])
    rows = {}
    for i in subjects:
        gt_rgb, gt_mask = renders[(i, -1)]
        rows[f"subject_{i:03d}"] = twins_subject(gt_rgb, gt_mask, [renders[(i, k)] for k in range(twins)], angles,
                                                   lpips=lpips)
        rows[f"subject_{i:03d}"]["hair_style"] = subject_params(seed, i, style).shape.hair_style
    mean = mean_nested([{k: v for k, v in r.items() if k != "hair_style"} for r in rows.values()])
    return {"style": style, "split": split, "subjects": list(rows), "twins": twins, "hidden": list(hidden),
            "res": res, "views": views, "seed": seed, "bands": sorted({band_of(a) for a in angles}),
            "render_s": render_s, "mean": mean, "per_subject": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--style", default="portrait", help=f"light stage style: {', '.join(STYLES)} (default portrait)")
    ap.add_argument("--split", default="test", choices=("val", "test"),
                    help="bench_fidelity's held-out subjects (80 subjects, seed 0): val = 64..71, test = 72..79")
    ap.add_argument("--subjects", type=int, nargs="+", default=None, help="subject indices instead of --split")
    ap.add_argument("--twins", type=int, default=16, help="twins per subject (default 16)")
    ap.add_argument("--hidden", nargs="+", default=list(HIDDEN_DEFAULT),
                    help=f"the parameters drawn again (default {' '.join(HIDDEN_DEFAULT)}; choices {' '.join(HIDDEN_CHOICES)})")
    ap.add_argument("--res", type=int, default=LS_RES)
    ap.add_argument("--views", type=int, default=LS_VIEWS)
    ap.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    ap.add_argument("--no-lpips", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.res < 8:
        ap.error(f"--res must be >= 8, got {args.res}")
    if args.workers < 1:
        ap.error(f"--workers must be >= 1, got {args.workers}")
    try:
        res = run(args.style, args.split, args.twins, tuple(args.hidden), args.res, args.views, args.subjects,
                  workers=args.workers, lpips=not args.no_lpips, progress=not args.json)
    except ValueError as e:
        ap.error(str(e))
    text = json.dumps(res, indent=1, allow_nan=True)
    if args.out:
        from pnerf_fast.evaluate import write_json

        write_json(res, args.out)
    if args.json:
        print(text)
    else:
        m = res["mean"]
        print(f"twins' frontal views vs the subject's: {m['twin_front']['psnr']:.2f} dB whole, "
              f"{m['twin_front']['psnr_fg']:.2f} dB fg")
        print(f"novel views, one twin as the guess: {m['one_twin']['psnr']:.2f} dB")
        mt = m["mean_of_twins"]
        print(f"novel views, mean of {res['twins']} twins: {mt['psnr']:.2f} dB (K->inf {mt['psnr_k_inf']:.2f}), "
              f"fg {mt['psnr_fg']:.2f}" + (f", LPIPS {mt['lpips']:.3f}" if "lpips" in mt else ""))
        for b, v in mt["by_angle"].items():
            print(f"  {b}: {v['psnr']:.2f} dB (K->inf {v['psnr_k_inf']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
