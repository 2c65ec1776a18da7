"""pnerf finetune: adapt the prior to one frontal image (subject folder or photo)."""
NAME = "finetune"
HELP = "Finetune the prior on one frontal image: a subject folder or a photo (aligned on the fly)."


def add_arguments(p):
    p.add_argument("source", help="subject folder (its frontal frame is used) or a photo")
    p.add_argument("--init", default=None, help="prior checkpoint (default: the shipped meta prior)")
    p.add_argument("--out", required=True, help="output portrait checkpoint (.pt)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the prior's)")
    p.add_argument("--seconds", type=float, default=None, help="time budget in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", default=None, help="also render the frontal view to this PNG")
    p.add_argument("--quiet", action="store_true")


def run(args):
    from ..api import finetune

    portrait = finetune(args.source, init=args.init, steps=args.steps, seconds=args.seconds, seed=args.seed,
                        progress=not args.quiet)
    portrait.save(args.out)
    i = portrait.info
    print(f"finetuned {i['subject']}: {i['steps']} steps in {i['seconds']:.1f} s "
          f"(frontal PSNR {i['frontal_psnr']:.2f} dB) -> {args.out}")
    if args.preview:
        from ..render.video import save_png

        out = portrait.render(portrait.frontal_camera)
        save_png(args.preview, out["rgb"].numpy())
        print(f"preview: {args.preview}")
    return 0
