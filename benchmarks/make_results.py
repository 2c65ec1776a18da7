"""The paper's ablations on the synthetic light stage, by one command:

    python benchmarks/make_results.py --ours pnerf_fast/assets/prior_latent_fast.pt \
        --meta pnerf_fast/assets/prior_meta_fast.pt \
        --short-latent abl_latent.pt --short-world abl_world.pt --short-joint abl_joint.pt --out results/

Every prior is finetuned on the frontal view of each of the 8 held-out test subjects of
bench_fidelity's light stage (`pnerf lightstage --subjects 80 --seed 0`, subject_072..079)
and scored on the 24 other views (`pnerf_fast.evaluate.evaluate_prior`, the protocol of
`pnerf eval`), with ours' finetune settings (every row but the paper's meta init, which
keeps its own SGD finetune).

Rows:
- ours: the shipped latent prior (auto-decoder, canonical coordinates);
- meta (paper init): the shipped meta-learned prior with its own finetune (32 SGD steps,
  its frozen grid);
- random: fresh weights of ours' config, our finetune;
- three priors at an equal, short pretraining budget, on the same 60 subjects, which
  isolate one choice each: latent in canonical coordinates, latent in world coordinates,
  joint pretraining (Eq. 5: one field, no codes) in canonical coordinates;
- two priors at an equal, larger budget (``--equal-latent``, ``--equal-joint``, labelled
  ``--equal-label``): ours' whole recipe and joint pretraining given the same heads and the
  same number of pretraining steps (scripts/ablation_equal.sh).
`--keep-from OLD/ablation.json` takes the rows not run this time (a short prior not given)
from an earlier run, marked † in the table. Writes results/ablation.md, .json and ablation.png, with the paper's own numbers beside
ours (different data: their real light stage vs our synthetic heads).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fidelity import ensure_lightstage  # noqa: E402

from pnerf_fast.evaluate import BAND_NAMES, evaluate_prior, summarize, write_json  # noqa: E402
from pnerf_fast.train.model import PortraitModel  # noqa: E402

PAPER = {  # Gao et al. 2020, real light-stage data: PSNR, SSIM, LPIPS
    "random": (14.99, 0.5763, 0.491),
    "joint": (22.87, 0.7824, 0.215),
    "meta": (23.70, 0.8051, 0.178),
    "ours (paper, full)": (23.92, 0.7688, 0.161),
}


def with_our_finetune(path: str, ours: PortraitModel, out: Path, name: str) -> str:
    """``path``'s prior with ours' finetune settings; a prior without a code gets the code
    steps as ordinary steps, so every row takes the same number of steps."""
    m = PortraitModel.load(path)
    fc = copy.deepcopy(ours.cfg.finetune)
    if not m.field.latent_dim:
        fc.steps += fc.code_steps
        fc.code_steps = 0
    m.cfg.finetune = fc
    p = out / f"_{name}.pt"
    m.save(p)
    return str(p)


def random_prior(ours_path: str, out: Path) -> str:
    """Fresh weights with ours' config, grid and mean face (and no training codes), drawn
    from the config's seed: otherwise the row would depend on what ran before it."""
    m = PortraitModel.load(ours_path)
    with torch.random.fork_rng():
        torch.manual_seed(int(m.cfg.seed))
        fresh = PortraitModel(m.cfg, m.mean_face)
    fresh.grid.load_state_dict(m.grid.state_dict())
    p = out / "_random.pt"
    fresh.save(p)
    return str(p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", required=True, help="the latent prior (canonical)")
    ap.add_argument("--meta", required=True, help="the paper's meta-learned prior (canonical)")
    ap.add_argument("--short-latent", default=None, help="short-budget latent prior, canonical")
    ap.add_argument("--short-world", default=None, help="short-budget latent prior, world coordinates")
    ap.add_argument("--short-joint", default=None, help="short-budget joint prior (no codes), canonical")
    ap.add_argument("--equal-latent", default=None,
                    help="ours' recipe at the equal larger budget (e.g. session 15's 398-head prior)")
    ap.add_argument("--equal-joint", default=None,
                    help="joint pretraining (no codes) on the same heads for the same number of steps")
    ap.add_argument("--equal-label", default="equal",
                    help="the pretraining column of the two equal-budget rows (e.g. '398 heads, 26k steps')")
    ap.add_argument("--ours-from", default=None,
                    help="take the 'ours' row from bench_fidelity's --out JSON (same protocol) instead of re-running")
    ap.add_argument("--keep-from", default=None,
                    help="an earlier run's ablation.json: rows not run this time (a short prior not given) are "
                         "taken from it, marked in the table as kept")
    ap.add_argument("--skip", default="",
                    help="comma-separated rows not to run this time (meta, random): taken from --keep-from")
    ap.add_argument("--data", default="data/bench_fidelity", help="where bench_fidelity renders its light stage")
    ap.add_argument("--max-subjects", type=int, default=None)
    ap.add_argument("--out", default="results")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--style", default="classic", choices=["classic", "portrait"],
                    help="the light stage of the test subjects (default classic: the recorded table's; the short "
                         "priors should be trained on the same style)")
    args = ap.parse_args(argv)
    skip = {k.strip() for k in args.skip.split(",") if k.strip()}
    if skip - {"meta", "random"}:
        print(f"error: --skip takes meta and random (the short and equal rows are skipped by not giving their "
              f"prior), got {','.join(sorted(skip - {'meta', 'random'}))}", file=sys.stderr)
        return 2
    if skip and not args.keep_from:
        print("error: --skip needs --keep-from (where the skipped rows come from)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "_priors"
    tmp.mkdir(exist_ok=True)
    kept = {}
    if args.keep_from:
        try:
            kept = json.loads(Path(args.keep_from).read_text())["details"]
            if not isinstance(kept, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: --keep-from {args.keep_from}: not an ablation.json with its 'details' ({e})",
                  file=sys.stderr)
            return 2
    data = ensure_lightstage(Path(args.data), "test", style=args.style)
    ours = PortraitModel.load(args.ours)

    # row -> (coordinates, pretraining, a function giving the prior file to evaluate)
    specs = {
        "ours (latent codes)": ("canonical", "full", lambda: args.ours),
        "meta (paper init), its SGD finetune": ("canonical", "full", lambda: None if "meta" in skip else args.meta),
        "random": ("canonical", "none", lambda: None if "random" in skip else random_prior(args.ours, tmp)),
        "latent, short": ("canonical", "short",
                          lambda: args.short_latent and with_our_finetune(args.short_latent, ours, tmp, "latent")),
        "latent, short, world": ("world", "short",
                                 lambda: args.short_world and with_our_finetune(args.short_world, ours, tmp, "world")),
        # no code to fit: it gets the code steps as ordinary steps (the same number of steps)
        "joint, short": ("canonical", "short",
                         lambda: args.short_joint and with_our_finetune(args.short_joint, ours, tmp, "joint")),
        "ours' recipe, equal budget": ("canonical", args.equal_label,
                                       lambda: args.equal_latent and with_our_finetune(args.equal_latent, ours, tmp,
                                                                                       "equal_latent")),
        "joint, equal budget": ("canonical", args.equal_label,
                                lambda: args.equal_joint and with_our_finetune(args.equal_joint, ours, tmp,
                                                                               "equal_joint")),
    }
    rows = {}
    # the short rows first (one choice each), the slow random row late, 'ours' last: with
    # --ours-from it is read when bench_fidelity has written it
    order = ["latent, short", "latent, short, world", "joint, short", "ours' recipe, equal budget",
             "joint, equal budget", "meta (paper init), its SGD finetune",
             "random", "ours (latent codes)"]
    for name in order:
        coords, budget, prepare = specs[name]
        if name == "ours (latent codes)" and args.ours_from:
            while not Path(args.ours_from).exists():  # bench_fidelity may still be running
                time.sleep(10)
            r = json.loads(Path(args.ours_from).read_text())["detail"]
            if args.max_subjects:  # the same subjects as the other rows
                r["subjects"] = r["subjects"][: args.max_subjects]
                r["mean"] = summarize(r["subjects"])
        else:
            p = prepare()
            if p is None:
                if name not in kept:
                    continue
                r = dict(kept[name], kept_from=str(args.keep_from))
            else:
                r = evaluate_prior(data, p, "test", max_subjects=args.max_subjects, progress=True)
        if "kept_from" not in r:
            r.update(coordinates=coords, pretraining=budget)
        rows[name] = r
        m = r["mean"]
        print(f"{name:>38}: input fg {m['input']['psnr_fg']:.2f}  PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  "
              f"LPIPS {m['lpips']:.3f}  PSNR_fg {m['psnr_fg']:.2f}  finetune {m['finetune_s']:.1f} s", flush=True)
    for p in tmp.glob("*.pt"):
        p.unlink()
    tmp.rmdir()
    rows = {k: rows[k] for k in specs if k in rows}  # the table's order

    summary = {k: v["mean"] for k, v in rows.items()}
    write_json({"summary": summary, "paper": PAPER, "details": rows}, out / "ablation.json")
    bands = " | ".join(f"{b}° ↑" for b in BAND_NAMES)
    lines = ["# Ablation on the synthetic light stage", "",
             f"{len(rows[next(iter(rows))]['subjects'])} held-out test subjects ("
             f"{'' if len(rows[next(iter(rows))]['subjects']) == 8 else 'the first of '}subject_072..079 of "
             "`pnerf lightstage --subjects 80 --seed 0`); input: the frontal view only; targets: the 24 other views. "
             "Whole image on a white background (PSNR, SSIM, LPIPS: AlexNet) and foreground only (PSNR fg); "
             "'input fg' is the input view re-rendered, foreground PSNR; the angle bands are novel-view PSNR by "
             "angle from the input camera. Every row takes ours' finetune settings but the paper's meta init, which "
             "keeps its own SGD finetune. 'short' rows "
             "share one small pretraining budget and the same 60 training subjects, so they isolate one choice "
             "each. 'equal budget' rows give ours' whole recipe and joint pretraining the same heads and the same "
             "number of pretraining steps. The paper's numbers are on their real light-stage data: only "
             "orderings are comparable.", "",
             f"| initialization | coordinates | pretraining | input fg ↑ | PSNR ↑ | SSIM ↑ | LPIPS ↓ | PSNR fg ↑ | {bands} "
             "| finetune s | paper PSNR / SSIM / LPIPS |",
             "|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(BAND_NAMES) + "---:|---|"]
    for name, r in rows.items():
        m = r["mean"]
        key = "meta" if name.startswith("meta") else "joint" if name.startswith("joint") else \
            "random" if name == "random" else None
        pp = PAPER.get(key) if r["coordinates"] == "canonical" and r["pretraining"] != "short" else None
        paper = f"{pp[0]} / {pp[1]} / {pp[2]}" if pp else "-"
        band = " | ".join(f"{m['by_angle'][b]['psnr']:.2f}" if b in m["by_angle"] else "-" for b in BAND_NAMES)
        lines.append(f"| {name}{' †' if 'kept_from' in r else ''} | {r['coordinates']} | {r['pretraining']} | {m['input']['psnr_fg']:.2f} | "
                     f"{m['psnr']:.2f} | {m['ssim']:.4f} | {m['lpips']:.3f} | {m['psnr_fg']:.2f} | {band} | "
                     f"{m['finetune_s']:.1f} | {paper} |")
    if any("kept_from" in r for r in rows.values()):
        lines += ["", f"† not re-run: kept from {args.keep_from} (an earlier run, with the finetune settings "
                  "and code of its time)."]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    try:
        _plot(summary, out / "ablation.png")
    except Exception as e:  # plotting is a convenience
        print(f"plot skipped: {e}", file=sys.stderr)
    print(f"wrote {out}/ablation.md, ablation.json, ablation.png")
    return 0


def _plot(summary, path):
    """A bar chart drawn with numpy + Pillow (no matplotlib dependency)."""
    from PIL import Image, ImageDraw

    names = list(summary)
    metrics = [("psnr", 0, 30, "PSNR (higher is better)"), ("ssim", 0, 1, "SSIM (higher is better)"),
               ("lpips", 0, 0.6, "LPIPS (lower is better)")]
    panel = 40 + 45 * len(names)
    W, H = panel * len(metrics), 260 + 16 * len(names)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    colors = [(66, 133, 244), (219, 68, 55), (244, 160, 0), (15, 157, 88), (150, 80, 190), (0, 150, 150),
              (120, 120, 120)]
    for j, (key, lo, hi, title) in enumerate(metrics):
        hi = max(hi, 1.1 * max(summary[n][key] for n in names))  # no bar runs off the panel
        x0 = j * panel + 20
        d.text((x0, 5), title, fill="black")
        for i, n in enumerate(names):
            v = summary[n][key]
            h = int(180 * (v - lo) / (hi - lo))
            bx = x0 + 10 + i * 45
            d.rectangle([bx, 220 - h, bx + 35, 220], fill=colors[i % len(colors)])
            d.text((bx, 222 - h - 14), f"{v:.2f}" if key == "psnr" else f"{v:.3f}", fill="black")
    for i, n in enumerate(names):
        y = 240 + 16 * i
        d.rectangle([10, y, 20, y + 10], fill=colors[i % len(colors)])
        d.text((24, y - 2), n, fill="black")
    img.save(path)


if __name__ == "__main__":
    sys.exit(main())
