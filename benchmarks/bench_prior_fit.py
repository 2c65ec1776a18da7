"""How well does a latent prior hold its own training subjects?

    python benchmarks/bench_prior_fit.py --data data/ls_train --priors A.pt B.pt --json

Each training subject is rendered from all its views with the code that pretraining
learned for it (no finetune), and scored (PSNR whole image and foreground, by angle band
from the frontal camera). This is the prior's representational fit of heads: the novel
views of a single-image finetune, whose far side comes from the prior, cannot be expected
much above it. Several priors are scored on the same subjects in one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pnerf_fast.data.format import load_dataset  # noqa: E402
from pnerf_fast.evaluate import score_subject, summarize  # noqa: E402
from pnerf_fast.train.data import SubjectRays  # noqa: E402
from pnerf_fast.train.model import PortraitField, PortraitModel  # noqa: E402


def prior_fit(prior_path, data_root, subjects: int = 4, split: str = "train") -> dict:
    model = PortraitModel.load(prior_path)
    if model.codes is None:
        raise ValueError(f"{prior_path}: holds no training codes (not a latent prior)")
    ds = load_dataset(data_root)
    names = ds.subjects(split)
    if len(names) != model.codes.shape[0]:
        raise ValueError(f"{data_root}: split '{split}' lists {len(names)} subjects, but {prior_path} holds "
                         f"{model.codes.shape[0]} codes: pass the data it was pretrained on")
    pick = np.linspace(0, len(names) - 1, subjects).round().astype(int).tolist()
    rows = []
    for i in pick:
        subj = ds.subject(names[i])
        sr = SubjectRays(subj, model.mean_face, model.cfg.coordinates)
        pf = PortraitField(model, sr.transform, sr.cameras[sr.frontal_index], 1.0)
        with model.field.code(model.codes[i]):
            m = score_subject(pf, subj, views=list(range(subj.num_views)), lpips=False)
        m["subject"] = names[i]
        m["input"] = {"psnr": m["per_view"]["psnr"][subj.frontal_index]}
        m["finetune_s"] = 0.0
        rows.append(m)
    mean = summarize(rows)
    return {"prior": str(prior_path), "subjects": [r["subject"] for r in rows],
            "psnr": mean["psnr"], "psnr_fg": mean.get("psnr_fg"),
            "by_angle": {b: v["psnr"] for b, v in mean["by_angle"].items()},
            "per_subject": {r["subject"]: r["psnr"] for r in rows}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the light stage the priors were pretrained on")
    ap.add_argument("--priors", nargs="+", required=True)
    ap.add_argument("--subjects", type=int, default=4, help="training subjects scored (spread over the split)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = {"priors": [prior_fit(p, args.data, args.subjects) for p in args.priors]}
    out["bench_s"] = time.perf_counter() - t0
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
