"""Distributed pretraining on torch.distributed (gloo, 2 processes on the CPU, tiny sizes):
N ranks x n/N rays == 1 rank x n rays, for joint, latent and the batched meta update;
rank 0 writes the files; a run cut by N ranks resumes in 1. See docs/DISTRIBUTED.md."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from pnerf_fast.cli import main as cli_main
from pnerf_fast.train.config import load_train_config
from pnerf_fast.train.distributed import Comm
from pnerf_fast.train.model import PortraitModel, clone_field
from pnerf_fast.train.pretrain import (
    _named_groups, load_training_subjects, meta_batch_step, meta_subject_step, pretrain,
)

from test_train import TINY_FIELD, tiny_stage  # noqa: E402  (the tests' tiny field and stage)
# Gradients summed in another order (two partial sums, then the all-reduce) round
# differently; a few Adam steps keep that at ~1e-7 (measured: 2.4e-7 at most).
TOL = {"rtol": 1e-4, "atol": 1e-5}
HELPER = textwrap.dedent("""
    import sys
    import torch
    from pnerf_fast.train.config import load_train_config
    from pnerf_fast.train.pretrain import pretrain
    torch.set_num_threads(1)
    data, out = sys.argv[1], sys.argv[2]
    for name in sys.argv[3:]:
        cfg = load_train_config(f"{out}/{name}.yaml")
        pretrain(data, f"{out}/{name}.pt", cfg, progress=False, log=lambda *a: None, resume=False,
                 max_visits=2 if name.endswith("_cut") else None)
""")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = tiny_stage(root / "stage")
    (root / "field.yaml").write_text(yaml.safe_dump(TINY_FIELD))
    (root / "field_latent.yaml").write_text(yaml.safe_dump(dict(TINY_FIELD, name="tiny_latent", latent_dim=8)))
    base = {"rays_per_step": 96, "image_scale": 1.0, "seed": 0, "render": {"step": 0.05},
            "grid": {"res": 16, "update_every": 1, "warmup_updates": 0}, "checkpoint_every_s": 0.0}
    cfgs = {
        "joint": {**base, "method": "joint", "field": str(root / "field.yaml"), "joint": {"steps": 4}},
        "latent": {**base, "method": "latent", "field": str(root / "field_latent.yaml"), "latent": {"steps": 4}},
        "meta": {**base, "method": "meta", "field": str(root / "field.yaml"),
                 "meta": {"epochs": 2, "n_support": 1, "n_query": 2, "batch": 2}},
    }
    cfgs["latent_front"] = {**cfgs["latent"], "latent": {"steps": 4, "front_rays": 32}}  # frontal codes
    cfgs["joint_cut"] = cfgs["joint"]
    for name, c in cfgs.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(c))
    return {"root": root, "data": data}


def one_thread_env():
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def runs(tiny):
    """The 1-process runs (in this process) and the 2-process runs (torchrun, gloo)."""
    root, data = tiny["root"], tiny["data"]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("joint", "latent", "latent_front", "meta"):
            pretrain(data, root / f"{name}_1.pt", load_train_config(root / f"{name}.yaml"), progress=False,
                     log=lambda *a: None, resume=False)
    finally:
        torch.set_num_threads(n)
    out2 = root / "two"
    out2.mkdir()
    for name in ("joint", "latent", "latent_front", "meta", "joint_cut"):
        (out2 / f"{name}.yaml").write_text((root / f"{name}.yaml").read_text())
    (root / "helper.py").write_text(HELPER)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(root / "helper.py"), str(data), str(out2), "joint", "latent", "latent_front", "meta",
                           "joint_cut"],
                          env=one_thread_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, out2


def assert_same_model(a: PortraitModel, b: PortraitModel):
    for (name, p), q in zip(a.field.named_parameters(), b.field.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), **TOL, msg=lambda m: f"{name}: {m}")
    assert torch.equal(a.grid.bits, b.grid.bits)
    if a.codes is not None or b.codes is not None:
        torch.testing.assert_close(a.codes, b.codes, **TOL)


@pytest.mark.parametrize("method", ["joint", "latent", "latent_front", "meta"])
def test_two_processes_match_one_with_the_same_effective_batch(runs, tiny, method):
    root, out2 = runs
    one, two = PortraitModel.load(root / f"{method}_1.pt"), PortraitModel.load(out2 / f"{method}.pt")
    assert_same_model(one, two)
    # ... and training moved the weights by far more than the tolerance (the match means something).
    torch.manual_seed(0)  # pretrain's seed: its initial weights
    init = PortraitModel(load_train_config(root / f"{method}.yaml"), one.mean_face)
    moved = max(float((p - q).detach().abs().max()) for p, q in zip(one.field.parameters(), init.field.parameters()))
    assert moved > 100 * TOL["atol"]
    assert not (out2 / f"{method}.pt.resume").exists()  # finished: rank 0 removed it
    assert not list(out2.glob("*.tmp"))


def test_a_run_cut_with_two_processes_resumes_with_one(runs, tiny):
    root, out2 = runs
    resume = out2 / "joint_cut.pt.resume"
    assert resume.exists()  # written by rank 0 when the budget (2 of 4 steps) stopped it
    st = torch.load(resume, weights_only=True)
    assert st["extra"]["progress"]["visits"] == 2
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        msgs = []
        res = pretrain(tiny["data"], out2 / "joint_cut.pt", load_train_config(root / "joint.yaml"), progress=False,
                       log=msgs.append)
    finally:
        torch.set_num_threads(n)
    assert any("resuming" in m for m in msgs) and res.visits == 4
    assert_same_model(PortraitModel.load(root / "joint_1.pt"), PortraitModel.load(out2 / "joint_cut.pt"))


def test_batched_meta_update_is_the_mean_of_the_subjects_query_updates(tiny):
    cfg = load_train_config(tiny["root"] / "meta.yaml")
    rays, mean_face = load_training_subjects(tiny["data"], cfg)
    torch.manual_seed(0)
    model = PortraitModel(cfg, mean_face)
    names = _named_groups(model.field)
    theta = [p.detach().clone() for p in model.field.parameters()]
    gen = torch.Generator().manual_seed(5)
    seeds = torch.randint(0, 2 ** 62, (2,), generator=torch.Generator().manual_seed(5)).tolist()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        deltas = []
        for j in range(2):  # each subject alone, from the same θ_p, into its own Δ_j
            d = [torch.zeros_like(p) for p in theta]
            meta_subject_step(model, clone_field(model.field), rays[j], cfg, torch.Generator().manual_seed(seeds[j]),
                              names, into=d)
            deltas.append(d)
        assert all(torch.equal(p, t) for p, t in zip(model.field.parameters(), theta))  # `into` left θ_p alone
        meta_batch_step(model, clone_field(model.field), rays, [0, 1], cfg, gen, names, Comm(), _guard(), 1)
    finally:
        torch.set_num_threads(n)
    for p, t, d0, d1 in zip(model.field.parameters(), theta, *deltas):
        torch.testing.assert_close(p.detach(), t + (d0 + d1) / 2, rtol=1e-5, atol=1e-7)
    assert any(float(d.abs().max()) > 0 for d in deltas[0])


def _guard():
    from pnerf_fast.train.pretrain import StepGuard

    return StepGuard("test")


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_slices_partition_the_batch(world):
    for n in range(0, 11):
        got = []
        for r in range(world):
            lo, hi = Comm(rank=r, world=world).bounds(n)
            got += list(range(lo, hi))
        assert got == list(range(n))


def test_clear_errors_before_anything_starts(tiny, tmp_path, capsys):
    root, data = tiny["root"], str(tiny["data"])
    assert cli_main(["pretrain", "--data", data, "--config", str(root / "joint.yaml"), "--out",
                     str(tmp_path / "a.pt"), "--nproc", "0"]) == 2
    assert "--nproc" in capsys.readouterr().err
    # a meta batch of 1 subject cannot be split over 2 processes
    assert cli_main(["pretrain", "--data", data, "--config", str(root / "meta.yaml"), "--out",
                     str(tmp_path / "a.pt"), "--nproc", "2", "--set", "meta.batch=1"]) == 2
    err = capsys.readouterr().err
    assert "meta.batch" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="meta.batch"):  # the same check inside pretrain, per rank
        cfg = load_train_config(root / "meta.yaml", {"meta": {"batch": 1}})
        pretrain(data, tmp_path / "b.pt", cfg, progress=False, log=lambda *a: None, comm=Comm(rank=0, world=2))
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


def test_pnerf_pretrain_nproc_2(runs, tiny, tmp_path):
    """The CLI launches torchrun itself; rank 0 alone reports and writes."""
    root = tiny["root"]
    out = tmp_path / "cli.pt"
    proc = subprocess.run([sys.executable, "-m", "pnerf_fast.cli", "pretrain", "--data", str(tiny["data"]),
                           "--config", str(root / "meta.yaml"), "--out", str(out), "--nproc", "2", "--quiet"],
                          env=one_thread_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1
    assert_same_model(PortraitModel.load(root / "meta_1.pt"), PortraitModel.load(out))


def test_the_old_torchrun_module_says_where_the_entry_point_went():
    """``-m pnerf_fast.train.pretrain`` was torchrun's entry point; the ranks now run the CLI
    (training may not import the layer above it): the old path fails loudly, not silently."""
    proc = subprocess.run([sys.executable, "-m", "pnerf_fast.train.pretrain", "--data", "x", "--out", "y.pt"],
                          env=one_thread_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "-m pnerf_fast.cli pretrain" in proc.stderr, proc.stderr[-2000:]
