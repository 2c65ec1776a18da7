"""pnerf finetune: adapt the prior to one frontal image (subject folder or photo)."""
from ._device_arg import add_device_argument, device_from_args

NAME = "finetune"
HELP = "Finetune the prior on one frontal image: a subject folder or a photo (aligned on the fly)."


def add_arguments(p):
    p.add_argument("source", help="subject folder (its frontal frame is used) or a photo")
    p.add_argument("--init", default=None,
                   help="prior checkpoint, or a shipped prior by name: portrait (the portrait light stage; the default "
                        "for photos), latent (the classic light stage; the default for its subjects) or meta "
                        "(the paper's init)")
    p.add_argument("--out", required=True, help="output portrait checkpoint (.pt)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps on all weights, after the code fit (default: the prior's)")
    p.add_argument("--code-steps", type=int, default=None,
                   help="steps on the subject's latent code alone, first (latent priors; default: the prior's)")
    p.add_argument("--res", type=int, default=None, help="photos: crop side in pixels (default 256)")
    p.add_argument("--seconds", type=float, default=None, help="time budget in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mirror", type=float, default=None,
                   help="fraction of rays mirrored across the face's symmetry plane (a second, virtual view; "
                        "default: the prior's, 0 = off; helps symmetric light-stage heads, costs real photos "
                        "input fidelity)")
    p.add_argument("--preview", default=None, help="also render the frontal view to this PNG")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")


def run(args):
    import math

    from ..api import finetune

    device = device_from_args(args)
    for name, v, lo in (("--steps", args.steps, 0), ("--code-steps", args.code_steps, 0), ("--res", args.res, 32)):
        if v is not None and v < lo:
            raise ValueError(f"argument {name}: must be >= {lo}, got {v}")
    if args.res is not None and args.res > 2048:
        raise ValueError(f"argument --res: must be <= 2048, got {args.res}")
    if args.mirror is not None and not (math.isfinite(args.mirror) and 0 <= args.mirror < 1):
        raise ValueError(f"argument --mirror: must be a fraction in [0, 1), got {args.mirror}")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ValueError(f"argument --seconds: must be a positive number, got {args.seconds}")
    from .._io import check_output

    if not args.source.strip():
        raise ValueError("argument source: must not be empty")
    from ..train.finetune import SHIPPED_PRIORS

    init = args.init if args.init is not None and args.init not in SHIPPED_PRIORS else None
    check_output(args.out, "--out", [args.source, init])
    check_output(args.preview, "--preview", [args.source, init, args.out])
    if args.preview and not args.preview.lower().endswith(".png"):
        raise ValueError(f"argument --preview: must end in .png, got {args.preview!r}")
    portrait = finetune(args.source, init=args.init, steps=args.steps, seconds=args.seconds, seed=args.seed,
                        progress=not args.quiet, code_steps=args.code_steps, res=args.res, mirror=args.mirror,
                        device=device)
    portrait.save(args.out)
    i = portrait.info
    print(f"finetuned {i['subject']}: {i['steps']} steps in {i['seconds']:.1f} s "
          f"(frontal PSNR {i['frontal_psnr']:.2f} dB) -> {args.out}")
    if args.preview:
        from ..render.video import save_png

        out = portrait.render(portrait.frontal_camera)
        save_png(args.preview, out["rgb"].cpu().numpy())
        print(f"preview: {args.preview}")
    return 0
