"""pnerf eval: the paper's protocol on held-out subjects (frontal in, other views scored)."""
from ._device_arg import add_device_argument, device_from_args

NAME = "eval"
HELP = "Finetune a prior on each held-out subject's frontal view and score all other views (PSNR/SSIM/LPIPS)."


def add_arguments(p):
    p.add_argument("--data", required=True, help="dataset root with splits.json")
    p.add_argument("--init", default=None,
                   help="prior checkpoint, or a shipped prior by name: latent (the classic light stage), portrait "
                        "(the portrait light stage) or meta (the paper's init); default: the one for the data's "
                        "light stage (portrait for --style portrait data, else latent)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--steps", type=int, default=None, help="finetune steps (default: the prior's)")
    p.add_argument("--seconds", type=float, default=None, help="finetune time budget per subject")
    p.add_argument("--max-subjects", type=int, default=None)
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (faster)")
    p.add_argument("--oracle", type=float, default=None, metavar="SECONDS",
                   help="also fit the multi-view oracle (the same field on ALL views) for SECONDS per subject, "
                        "and report the gap to it")
    p.add_argument("--oracle-start", choices=["scratch", "prior"], default="scratch",
                   help="the oracle: a random field fitted to all views (default: what the field can hold), "
                        "or the prior finetuned on all views (what one view costs it)")
    p.add_argument("--json", default=None, help="write the full results (per view, per subject) here")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")


def run(args):
    import math

    from ..evaluate import evaluate_prior, write_json
    from ..train.finetune import dataset_prior_path

    device = device_from_args(args)
    for name, v in (("--seconds", args.seconds), ("--oracle", args.oracle)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"argument {name}: must be a positive number of seconds, got {v}")
    init = dataset_prior_path(args.init, args.data, args.split)
    from .._io import check_output

    if args.steps is not None and args.steps < 0:
        raise ValueError(f"argument --steps: must be >= 0, got {args.steps}")
    if args.max_subjects is not None and args.max_subjects < 1:
        raise ValueError(f"argument --max-subjects: must be >= 1, got {args.max_subjects}")
    check_output(args.json, "--json", [args.data, init])
    res = evaluate_prior(args.data, init, args.split, args.steps, args.seconds, args.max_subjects,
                         lpips=not args.no_lpips, progress=not args.quiet, oracle_seconds=args.oracle,
                         oracle_start=args.oracle_start, device=device)
    if args.json:
        write_json(res, args.json)
    print(format_report(res))
    if args.json:
        print(f"per-view results: {args.json}")
    return 0


def format_report(res: dict) -> str:
    """A table: per subject the input view, the novel views (overall and by angle band)
    and, when fitted, the oracle; then the means."""
    from ..evaluate import BAND_NAMES

    rows = [dict(r, name=r["subject"]) for r in res["subjects"]] + [dict(res["mean"], name="mean")]
    has_lpips = "lpips" in res["mean"]
    has_oracle = "oracle" in res["mean"]
    has_sil = "silhouette_iou" in res["mean"]
    head = ["subject", "input fg", "novel", "novel fg", "SSIM"] + (["LPIPS"] if has_lpips else []) \
        + [f"{b}°" for b in BAND_NAMES] + (["outline IoU", "outline err", "novel elsewhere"] if has_sil else []) \
        + (["oracle", "gap"] if has_oracle else []) + ["finetune s"]
    lines = [" | ".join(head)]
    for r in rows:
        band = [f"{r['by_angle'][b]['psnr']:.2f}" if b in r["by_angle"] else "-" for b in BAND_NAMES]
        cells = [r["name"], f"{r['input']['psnr_fg']:.2f}" if "psnr_fg" in r["input"] else f"{r['input']['psnr']:.2f}",
                 f"{r['psnr']:.2f}", f"{r['psnr_fg']:.2f}" if "psnr_fg" in r else "-", f"{r['ssim']:.4f}"]
        if has_lpips:
            cells.append(f"{r['lpips']:.3f}")
        cells += band
        if has_sil:
            cells += [f"{r['silhouette_iou']:.3f}", f"{100 * r['silhouette_err_share']:.0f}%",
                      f"{r['psnr_silhouettes_agree']:.2f}"]
        if has_oracle:
            cells += [f"{r['oracle']['psnr']:.2f}", f"{r['oracle_gap_db']:.2f}"]
        cells.append(f"{r['finetune_s']:.1f}")
        lines.append(" | ".join(cells))
    n = len(res["subjects"])
    note = ("; outline: the novel views' silhouettes (opacity > 0.5 against alpha > 0.5): their IoU, the "
            "share of the squared error where they disagree, and the PSNR over the pixels where they agree"
            if has_sil else "")
    return f"{n} subjects (PSNR in dB; input = the frontal view re-rendered; novel = the other views{note}):\n" \
        + "\n".join(lines)

