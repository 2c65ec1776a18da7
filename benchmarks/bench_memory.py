"""Peak memory (RSS) of rendering and of pretraining's data, each measured in a fresh
subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, one torch thread).

A. Rendering: one frame of a finetuned portrait (the demo subject, finetuned briefly; or
   --portrait) at 512², 1024² and 2048², through ``PortraitField.render`` (what `pnerf
   render` calls per frame), default chunk.
B. Pretraining data: ``load_training_subjects`` at N training subjects, and a few
   pretraining steps (the shipped latent prior's config), with
   - ``eager``: subjects listed with their images (pretrain.py as it is: every image
     decoded to float before any SubjectRays is built);
   - ``lazy``: subjects listed with ``load_images=False`` (the proposed one-line change
     in pretrain.load_training_subjects, applied here by patching Dataset.subject), so
     SubjectRays reads pixels on demand into a cache of bounded size.
   The N-subject datasets are made of the subject folders of one small light stage, linked
   N times (memory depends on the pixels, not on which heads they show).

    python benchmarks/bench_memory.py --json                # prints one JSON object
    python benchmarks/bench_memory.py --res 512 1024 --subjects 100 1000 --eager-max 300
    python benchmarks/bench_memory.py --baseline-data OLD_data.py   # also the former SubjectRays

Eager loading grows by ~7 MB a subject at 128² (it would need ~7.6 GB at 1,000), so it is
measured only up to --eager-max subjects; the rest is a linear extrapolation (marked so).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --------------------------------------------------------------------------- children


def child_portrait(a):
    import pnerf_fast

    p = pnerf_fast.finetune(ROOT / "pnerf_fast" / "assets" / "demo_subject", steps=60, code_steps=30, progress=False)
    p.save(a["out"])
    return {}


def child_render(a):
    import pnerf_fast
    from pnerf_fast.render import paths

    p = pnerf_fast.load(a["portrait"])
    cam = paths.orbit(1, a["res"])[0]
    base = _rss_mb()
    t = time.perf_counter()
    out = p.render(cam, chunk=a["chunk"])
    return {"res": a["res"], "chunk": a["chunk"], "base_mb": round(base), "peak_mb": round(_rss_mb()),
            "seconds": round(time.perf_counter() - t, 1), "opacity_mean": round(float(out["opacity"].mean()), 4)}


def child_pretrain(a):
    import torch

    from pnerf_fast.data.format import Dataset
    from pnerf_fast.train import data as data_mod
    from pnerf_fast.train import pretrain as pt
    from pnerf_fast.train.model import PortraitModel

    cfg = PortraitModel.load(ROOT / "pnerf_fast" / "assets" / "prior_latent_fast.pt").cfg
    if a["mode"] == "lazy":
        real = Dataset.subject
        Dataset.subject = lambda self, name, load_images=True: real(self, name, load_images=False)
    if a.get("baseline_data"):
        import importlib.util

        spec = importlib.util.spec_from_file_location("pnerf_fast.train._baseline_data", a["baseline_data"])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        pt.SubjectRays = mod.SubjectRays
    base = _rss_mb()
    t = time.perf_counter()
    res = {"subjects": a["subjects"], "mode": a["mode"] + ("-baseline" if a.get("baseline_data") else ""),
           "what": a["what"], "base_mb": round(base)}
    if a["what"] == "load":
        rays, _ = pt.load_training_subjects(a["root"], cfg)
        assert len(rays) == a["subjects"]
    else:
        torch.manual_seed(0)
        out = Path(a["work"]) / f"prior_{a['mode']}_{a['subjects']}.pt"
        for p in (out, Path(str(out) + ".resume")):
            p.unlink(missing_ok=True)
        pt.pretrain(a["root"], out, cfg, resume=False, progress=False, log=lambda *x: None, max_visits=a["steps"])
        res["steps"] = a["steps"]
        res["rays_per_step"] = cfg.rays_per_step
    res["peak_mb"] = round(_rss_mb())
    res["seconds"] = round(time.perf_counter() - t, 1)
    if a["mode"] == "lazy":
        res["subject_loads"] = data_mod._CACHE.loads
        res["cache_budget_mb"] = data_mod.cache_bytes() >> 20
    return res


CHILDREN = {"portrait": child_portrait, "render": child_render, "pretrain": child_pretrain}


# --------------------------------------------------------------------------- parent


def run_child(kind: str, **args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps({"kind": kind, **args})],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{kind} {args}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def fake_stage(src: Path, n: int, work: Path) -> Path:
    """A dataset of n training subjects: src's subject folders, linked round-robin."""
    from pnerf_fast.data.format import write_splits

    root = work / f"stage_{n}"
    if (root / "splits.json").exists():
        return root
    subs = sorted(p for p in src.iterdir() if (p / "transforms.json").exists())
    if not subs:
        raise ValueError(f"{src}: no subject folders")
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n + 2):
        name = f"subject_{i:05d}"
        link = root / name
        if not link.exists():
            link.symlink_to(subs[i % len(subs)].resolve(), target_is_directory=True)
        names.append(name)
    write_splits(root, names[:n], names[n:n + 1], names[n + 1:])
    return root


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="(the default) print one JSON object; progress goes to stderr")
    ap.add_argument("--work", default="/tmp/pnerf_bench_memory", help="scratch folder (portrait, datasets)")
    ap.add_argument("--portrait", default=None, help="a finetuned portrait .pt (default: finetune the demo subject)")
    ap.add_argument("--res", type=int, nargs="*", default=[512, 1024, 2048])
    ap.add_argument("--chunk", type=int, default=1 << 14)
    ap.add_argument("--stage", default=None, help="a light stage to build the N-subject datasets from "
                                                  "(default: make 10 subjects at 128²)")
    ap.add_argument("--subjects", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--eager-max", type=int, default=300, help="measure eager loading only up to this many subjects")
    ap.add_argument("--steps", type=int, default=5, help="pretraining steps per measurement (0: loading only)")
    ap.add_argument("--baseline-data", default=None, help="a former pnerf_fast/train/data.py to measure too (eager)")
    args = ap.parse_args(argv)
    if args.child is not None:
        a = json.loads(args.child)
        import torch

        torch.set_num_threads(1)
        print(json.dumps(CHILDREN[a.pop("kind")](a)))
        return 0
    for name, vals, lo in (("--res", args.res, 8), ("--subjects", args.subjects, 1)):
        if any(v < lo for v in vals):
            raise SystemExit(f"argument {name}: values must be >= {lo}, got {vals}")
    if args.chunk < 1 or args.steps < 0 or args.eager_max < 0:
        raise SystemExit("arguments --chunk >= 1, --steps >= 0, --eager-max >= 0")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"threads": 1, "rss": "ru_maxrss of a fresh process (MB = MiB)", "render": [], "pretrain": []}

    if args.res:
        portrait = args.portrait or str(work / "demo_portrait.pt")
        if not Path(portrait).exists():
            run_child("portrait", out=portrait)
        for r in args.res:
            m = run_child("render", portrait=portrait, res=r, chunk=args.chunk)
            print(f"render {r}²: peak {m['peak_mb']} MB (after loading {m['base_mb']} MB)", file=sys.stderr)
            result["render"].append(m)

    if args.subjects:
        if args.stage:
            src = Path(args.stage)
        else:
            src = work / "stage_src"
            if not (src / "splits.json").exists():
                from pnerf_fast.data.lightstage import generate_lightstage

                generate_lightstage(src, subjects=10, res=128, seed=3, progress=False, contact_sheet_path=None)
        whats = ["load"] + (["steps"] if args.steps else [])
        for n in args.subjects:
            root = fake_stage(src, n, work)
            modes = ["lazy"] + (["eager"] if n <= args.eager_max else [])
            for mode in modes:
                for what in whats:
                    m = run_child("pretrain", root=str(root), subjects=n, mode=mode, what=what, steps=args.steps,
                                  work=str(work))
                    print(f"pretrain {what} {n} subjects {mode}: peak {m['peak_mb']} MB", file=sys.stderr)
                    result["pretrain"].append(m)
            if args.baseline_data and n <= args.eager_max:
                m = run_child("pretrain", root=str(root), subjects=n, mode="eager", what="load", steps=args.steps,
                              work=str(work), baseline_data=str(Path(args.baseline_data).resolve()))
                print(f"pretrain load {n} subjects eager, former SubjectRays: peak {m['peak_mb']} MB", file=sys.stderr)
                result["pretrain"].append(m)
        # Eager loading is linear in the subjects: extrapolate past --eager-max.
        for mode in ("eager", "eager-baseline"):
            pts = sorted((m["subjects"], m["peak_mb"]) for m in result["pretrain"]
                         if m["mode"] == mode and m["what"] == "load")
            if len(pts) >= 2:
                (n0, p0), (n1, p1) = pts[0], pts[-1]
                slope = (p1 - p0) / (n1 - n0)
                for n in args.subjects:
                    if n > args.eager_max:
                        result["pretrain"].append({"subjects": n, "mode": mode, "what": "load",
                                                   "peak_mb": round(p1 + slope * (n - n1)), "extrapolated": True,
                                                   "mb_per_subject": round(slope, 2)})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
