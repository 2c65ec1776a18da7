"""pnerf lightstage: render a synthetic light-stage dataset."""

NAME = "lightstage"
HELP = "Render a synthetic light-stage dataset: N distinct parametric heads x the camera rig (deterministic)."


def add_arguments(p):
    p.add_argument("--out", required=True, help="output dataset root (subject_000/ ..., splits.json)")
    p.add_argument("--subjects", type=int, default=40, help="number of subjects (default 40)")
    p.add_argument("--res", type=int, default=128, help="image size in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed; subject i depends only on (seed, i)")
    p.add_argument("--views", type=int, default=25, help="cameras per subject, index 0 frontal (default 25)")
    p.add_argument("--spp", type=int, default=4, help="anti-aliasing samples per pixel (default 4)")
    p.add_argument("--splits", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST",
                   help="fractions (or counts) of train/val/test subjects, in that order (default 0.8,0.1,0.1)")
    p.add_argument("--style", choices=["classic", "portrait"], default="classic",
                   help="classic (default; the shipped priors were trained on it): parametric cartoon heads under "
                        "even light; portrait: real proportions, varied hair, shoulders and clothes, expressions, "
                        "glasses, beards and per-subject lighting")
    p.add_argument("--workers", type=int, default=2, help="worker processes (one torch thread each; default 2)")
    p.add_argument("--no-contact-sheet", action="store_true", help="do not write OUT/contact_sheet.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from ..data.lightstage import generate_lightstage

    try:
        splits = tuple(float(v) for v in args.splits.split(","))
    except ValueError:
        raise ValueError(f"argument --splits: expected three numbers like 0.8,0.1,0.1, got {args.splits!r}") from None
    if len(splits) != 3:
        raise ValueError(f"argument --splits: expected three numbers like 0.8,0.1,0.1, got {args.splits!r}")

    t = generate_lightstage(
        args.out,
        subjects=args.subjects,
        res=args.res,
        seed=args.seed,
        views=args.views,
        spp=args.spp,
        workers=args.workers,
        splits=splits,
        progress=not args.quiet,
        contact_sheet_path=None if args.no_contact_sheet else "contact_sheet.png",
        style=args.style,
    )
    n_img = t["subjects"] * t["views"]
    print(
        f"wrote {t['subjects']} {t['style']} subjects x {t['views']} views at {t['res']}x{t['res']} ({n_img} images, {t['spp']} spp) "
        f"to {args.out} in {t['total_s']:.1f} s wall ({t['per_subject_s']:.2f} s/subject; "
        f"render {t['render_s']:.1f} s + write {t['write_s']:.1f} s summed over {t['workers']} worker(s))"
    )
    return 0
