"""pnerf pretrain: learn the portrait prior (meta | joint | random) on a light stage."""
from pathlib import Path

from ._device_arg import add_device_argument, device_from_args

NAME = "pretrain"
HELP = "Pretrain the prior on a multi-view dataset: meta-learning (the paper), joint, or random init."


def add_arguments(p):
    p.add_argument("--data", required=True, help="dataset root (subject folders + splits.json)")
    p.add_argument("--method", choices=["meta", "joint", "latent", "random"], default=None,
                   help="overrides the config's method")
    p.add_argument("--config", default=None, help="YAML training config (see configs/pretrain_meta.yaml)")
    p.add_argument("--out", required=True, help="output checkpoint (.pt)")
    p.add_argument("--coordinates", choices=["canonical", "world"], default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="meta: epochs over the subjects")
    p.add_argument("--steps", type=int, default=None, help="joint and latent: optimisation steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set latent.lr.mlp=0.001 --set field=fast (repeatable; "
                        "VALUE is read as YAML)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long (resumable)")
    p.add_argument("--no-resume", action="store_true", help="ignore an interrupted run's .resume file")
    p.add_argument("--init", default=None,
                   help="start from this prior's weights and grid (continue training); a shipped prior by name: "
                        "meta, latent")
    p.add_argument("--nproc", type=int, default=1,
                   help="train in this many processes on this machine (torch.distributed through torchrun: gloo, or nccl "
                        "with --device cuda, one GPU per process); "
                        "see docs/DISTRIBUTED.md for several machines")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")


def _child_argv(args) -> list[str]:
    """The arguments that each torchrun rank gets after ``-m pnerf_fast.cli pretrain`` (all but --nproc)."""
    out = ["--data", str(args.data), "--out", str(args.out)]
    for flag, v in (("--method", args.method), ("--config", args.config), ("--coordinates", args.coordinates),
                    ("--seed", args.seed), ("--epochs", args.epochs), ("--steps", args.steps),
                    ("--max-seconds", args.max_seconds), ("--init", args.init), ("--device", args.device)):
        if v is not None:
            out += [flag, str(v)]
    for item in args.set:
        out += ["--set", item]
    if args.no_resume:
        out.append("--no-resume")
    if args.quiet:
        out.append("--quiet")
    return out


def run(args):
    import math
    import os

    from .._io import check_output, safe_yaml_load

    device = device_from_args(args)
    if args.max_seconds is not None and not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise ValueError(f"argument --max-seconds: must be a positive number of seconds, got {args.max_seconds}")
    for name, v in (("--epochs", args.epochs), ("--steps", args.steps), ("--nproc", args.nproc)):
        if v is not None and v < 1:
            raise ValueError(f"argument {name}: must be >= 1, got {v}")
    init_file = args.init if args.init not in (None, "latent", "meta") else None
    for name, p in (("--out", args.out), ("--out (its .resume file)", str(args.out) + ".resume")):
        check_output(p, name, [args.data, args.config, init_file])
    from ..train.config import load_train_config
    from ..train.pretrain import pretrain

    over = {}
    if args.method:
        over["method"] = args.method
    if args.coordinates:
        over["coordinates"] = args.coordinates
    if args.seed is not None:
        over["seed"] = args.seed
    if args.epochs is not None:
        over.setdefault("meta", {})["epochs"] = args.epochs
    if args.steps is not None:
        over.setdefault("joint", {})["steps"] = args.steps
        over.setdefault("latent", {})["steps"] = args.steps
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"argument --set: expected KEY=VALUE, got {item!r}")
        value = safe_yaml_load(raw, f"argument --set {item!r}: VALUE")
        node = over
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"argument --set {item!r}: {part} is not a section")
        node[parts[-1]] = value
    cfg = load_train_config(args.config, over)
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data: no such folder: {args.data}")
    from ..train.finetune import prior_path

    init = None if args.init is None else prior_path(args.init)
    from ..train.distributed import launch, world_size_from_env

    under_torchrun = world_size_from_env() > 1
    if args.nproc > 1:
        if under_torchrun:
            raise ValueError("argument --nproc: this process is already one rank of a torchrun job; drop --nproc")
        if cfg.method == "meta" and cfg.meta.batch < args.nproc:
            raise ValueError(f"argument --nproc: the meta batch ({cfg.meta.batch} subjects) must hold at least one "
                             f"subject per process; add --set meta.batch={args.nproc}")
        if cfg.method in ("joint", "latent") and cfg.rays_per_step < args.nproc:
            raise ValueError(f"argument --nproc: {cfg.rays_per_step} rays per step cannot be split over "
                             f"{args.nproc} processes")
        code = launch("pnerf_fast.cli", ["pretrain", *_child_argv(args)], args.nproc)
        if code != 0:
            raise ChildProcessError(f"the {args.nproc}-process run stopped (a rank exited with code {code}; its "
                                    "message is above); run it again to resume from its last checkpoint")
        return 0  # rank 0 said what it wrote
    res = pretrain(args.data, args.out, cfg, resume=not args.no_resume, progress=not args.quiet,
                   max_seconds=args.max_seconds, init=init, device=device)
    if not under_torchrun or int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {res.path} ({cfg.method}, {cfg.coordinates}): {res.visits} visits in {res.seconds:.0f} s")
    return 0
