"""Refit a latent prior's training codes from each subject's frontal view alone, by the
finetune's own code stage (pnerf_fast/train/refit.py), to continue pretraining it with
frontal codes (configs/pretrain_latent_front.yaml):

    python scripts/refit_codes.py PRIOR.pt LS_TRAIN OUT.pt
    pnerf pretrain --data LS_TRAIN --init OUT.pt --config configs/pretrain_latent_front.yaml ...

LS_TRAIN must be the light stage the prior was trained on (its 'train' split gives the
codes' order), or with --extend that light stage with subjects added (the same seed, a
larger --subjects: subject i depends only on (seed, i)), whose added subjects get codes
fitted from their frontal views while the first ones keep theirs. Prints how far the
prior's own codes moved (norm of the change / norm of the code; 0 with --extend).
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="the latent prior (a pnerf_fast checkpoint)")
    ap.add_argument("data", help="the light stage it was trained on")
    ap.add_argument("dst", help="where to write the prior with refitted codes")
    ap.add_argument("--code-steps", type=int, default=None, help="code steps per subject (default: the prior's "
                    "finetune.code_steps)")
    ap.add_argument("--extend", action="store_true", help="DATA lists more training subjects than the prior has "
                    "codes (its light stage with subjects added: the same seed, a larger --subjects): keep the "
                    "prior's codes for the first ones, fit only the added ones")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--jobs", type=int, default=1, help="fit the subjects in this many processes of one thread "
                    "each (say, the number of cores; each subject's fit is independent)")
    args = ap.parse_args(argv)

    import torch

    from pnerf_fast.train.model import PortraitModel, derived_extra, load_checkpoint
    from pnerf_fast.train.refit import refit_codes, with_codes

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.code_steps is not None and args.code_steps < 1:
        print(f"error: --code-steps must be >= 1, got {args.code_steps}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        st = load_checkpoint(args.src)
        old = PortraitModel.from_state(st, args.src, "cpu")
        codes = refit_codes(old, args.data, code_steps=args.code_steps, extend=args.extend,
                            jobs=args.jobs)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    new = with_codes(old, codes)
    n_old = old.codes.shape[0]
    moved = ((codes[:n_old] - old.codes).norm(dim=1) / old.codes.norm(dim=1).clamp_min(1e-12))
    new.save(args.dst, extra=derived_extra(st, codes_refit_from=str(args.src)))
    print(json.dumps({"subjects": int(codes.shape[0]), "fitted": int(codes.shape[0] - (n_old if args.extend else 0)),
                      "code_change_rel_mean": float(moved.mean()),
                      "code_change_rel_max": float(moved.max())}))
    print("wrote", args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
