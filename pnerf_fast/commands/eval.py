"""pnerf eval: the paper's protocol on held-out subjects (frontal in, other views scored)."""
NAME = "eval"
HELP = "Finetune a prior on each held-out subject's frontal view and score all other views (PSNR/SSIM/LPIPS)."


def add_arguments(p):
    p.add_argument("--data", required=True, help="dataset root with splits.json")
    p.add_argument("--init", default=None, help="prior checkpoint (default: the shipped meta prior)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--steps", type=int, default=None, help="finetune steps (default: the prior's)")
    p.add_argument("--seconds", type=float, default=None, help="finetune time budget per subject")
    p.add_argument("--max-subjects", type=int, default=None)
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (faster)")
    p.add_argument("--json", default=None, help="write the full results (per view, per subject) here")
    p.add_argument("--quiet", action="store_true")


def run(args):
    from ..evaluate import evaluate_prior, write_json
    from ..train.finetune import default_prior_path

    init = args.init or default_prior_path()
    res = evaluate_prior(args.data, init, args.split, args.steps, args.seconds, args.max_subjects,
                         lpips=not args.no_lpips, progress=not args.quiet)
    if args.json:
        write_json(res, args.json)
    m = res["mean"]
    print(f"{len(res['subjects'])} subjects, mean over their novel views:")
    for k, v in m.items():
        print(f"  {k:>10}: {v:.4f}")
    if args.json:
        print(f"per-view results: {args.json}")
    return 0
