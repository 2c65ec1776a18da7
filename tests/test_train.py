"""Training: the meta update, joint vs meta, checkpoints, resume, finetune. Tiny sizes."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pnerf_fast.data.lightstage import generate_lightstage
from pnerf_fast.train.config import config_from_dict, load_train_config
from pnerf_fast.train.finetune import finetune
from pnerf_fast.train.model import PortraitField, PortraitModel, save_atomic
from pnerf_fast.train.pretrain import (
    _named_groups, load_training_subjects, meta_subject_step, pretrain, ray_loss,
)

TINY_FIELD = {
    "name": "tiny",
    "backend": "torch",
    "encoding": {"type": "hashgrid", "n_levels": 4, "n_features": 2, "log2_table": 10, "base_res": 4, "finest_res": 32},
    "dir_encoding": {"type": "sh", "degree": 2},
    "density_mlp": {"width": 16, "n_hidden": 1, "geo_features": 8},
    "color_mlp": {"width": 16, "n_hidden": 1},
}


def tiny_stage(data):
    """The tests' tiny light stage (4 subjects of seed 3, 4 views at 24²) rendered into ``data``."""
    generate_lightstage(data, subjects=4, res=24, seed=3, views=4, spp=1, progress=False, contact_sheet_path=None,
                        workers=1)
    return data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data = tiny_stage(root / "stage")
    field_yaml = root / "tiny_field.yaml"
    field_yaml.write_text(yaml.safe_dump(TINY_FIELD))
    return {"data": data, "field": str(field_yaml), "root": root}


def tiny_cfg(tiny, **over):
    d = {"field": tiny["field"], "rays_per_step": 128, "image_scale": 1.0, "seed": 0,
         "render": {"step": 0.05}, "grid": {"res": 16, "update_every": 1, "warmup_updates": 0},
         "meta": {"epochs": 1, "n_support": 1, "n_query": 1}, "joint": {"steps": 4},
         "finetune": {"steps": 20, "rays_per_step": 256}, "checkpoint_every_s": 0.0}
    for k, v in over.items():
        if isinstance(v, dict):
            d[k] = {**d.get(k, {}), **v}
        else:
            d[k] = v
    return config_from_dict(d)


def params(field):
    return [p.detach().clone() for p in field.parameters()]


def query_gradient_by_hand(model, fast_init, sr, cfg, gen_state, n_support):
    """Replay meta_subject_step's support steps, then return the query gradient at θ_m."""
    gen = torch.Generator()
    gen.set_state(gen_state)
    fast = copy.deepcopy(fast_init)
    names = _named_groups(fast)
    for _ in range(n_support):
        fast.zero_grad(set_to_none=True)
        ray_loss(model, fast, sr, sr.support, cfg.rays_per_step, gen, cfg).backward()
        with torch.no_grad():
            for name, p in fast.named_parameters():
                if p.grad is not None:
                    p -= getattr(cfg.meta.alpha, names[name]) * p.grad
    fast.zero_grad(set_to_none=True)
    ray_loss(model, fast, sr, sr.query, cfg.rays_per_step, gen, cfg).backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in fast.parameters()], names


@pytest.mark.parametrize("n_support", [0, 1])
def test_meta_step_moves_prior_by_exactly_the_query_gradient(tiny, one_thread, n_support):
    cfg = tiny_cfg(tiny, meta={"n_support": n_support, "n_query": 1})
    rays, mean_face = load_training_subjects(tiny["data"], cfg)
    model = PortraitModel(cfg, mean_face)
    sr = rays[0]
    before = params(model.field)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    g, names = query_gradient_by_hand(model, model.field, sr, cfg, state, n_support)
    fast = copy.deepcopy(model.field)
    gen.set_state(state)
    meta_subject_step(model, fast, sr, cfg, gen, _named_groups(model.field))
    moved = False
    for (name, _), b, gi, a in zip(model.field.named_parameters(), before, g, params(model.field)):
        beta = getattr(cfg.meta.beta, names[name])
        torch.testing.assert_close(a, b - beta * gi, rtol=1e-5, atol=1e-6)
        moved |= bool((a != b).any())
    assert moved


def test_joint_and_meta_differ_as_the_equations_say(tiny, one_thread):
    """With N_s = 0 the meta update is an SGD step on L_Dq alone at θ_p; a joint step
    uses every view (L_Ds + L_Dq), and with N_s = 1 meta's gradient is taken at the
    adapted weights, so both differ from it."""
    cfg0 = tiny_cfg(tiny, meta={"n_support": 0, "n_query": 1})
    rays, mean_face = load_training_subjects(tiny["data"], cfg0)
    model = PortraitModel(cfg0, mean_face)
    sr = rays[1]
    start = copy.deepcopy(model.field.state_dict())
    gen = torch.Generator().manual_seed(9)
    state = gen.get_state()
    meta_subject_step(model, copy.deepcopy(model.field), sr, cfg0, gen, _named_groups(model.field))
    meta0 = params(model.field)

    model.field.load_state_dict(start)
    cfg1 = tiny_cfg(tiny, meta={"n_support": 1, "n_query": 1})
    gen.set_state(state)
    # Same query batch as above: the support step consumes the generator first, so
    # replay by hand with the support batch drawn from a separate stream.
    g_at_prior, names = query_gradient_by_hand(model, model.field, sr, cfg0, state, 0)
    model.field.load_state_dict(start)
    gen = torch.Generator().manual_seed(9)
    meta_subject_step(model, copy.deepcopy(model.field), sr, cfg1, gen, _named_groups(model.field))
    meta1 = params(model.field)
    base = [v.clone() for v in start.values()]
    d0 = torch.cat([(a - b).reshape(-1) for a, b in zip(meta0, params_from_state(model, start))])
    d1 = torch.cat([(a - b).reshape(-1) for a, b in zip(meta1, params_from_state(model, start))])
    assert d0.abs().sum() > 0 and d1.abs().sum() > 0
    assert not torch.allclose(d0, d1)

    # Joint: one step on all views differs from the query-only step.
    model.field.load_state_dict(start)
    gen = torch.Generator().manual_seed(9)
    loss_all = ray_loss(model, model.field, sr, list(range(sr.num_views)), cfg0.rays_per_step, gen, cfg0)
    gj = torch.autograd.grad(loss_all, list(model.field.parameters()), allow_unused=True)
    gj = torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1) for x, p in zip(gj, model.field.parameters())])
    gq = torch.cat([x.reshape(-1) for x in g_at_prior])
    assert not torch.allclose(gj, gq)


def params_from_state(model, state):
    names = [n for n, _ in model.field.named_parameters()]
    return [state[n] for n in names]


def test_checkpoint_round_trip(tiny, tmp_path):
    cfg = tiny_cfg(tiny)
    rays, mean_face = load_training_subjects(tiny["data"], cfg)
    model = PortraitModel(cfg, mean_face)
    model.grid.bits[::3] = 0
    path = tmp_path / "m.pt"
    model.save(path)
    other = PortraitModel.load(path)
    x = torch.rand(50, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=1)
    with torch.no_grad():
        for a, b in zip(model.field(x, d), other.field(x, d)):
            torch.testing.assert_close(a, b)
    assert torch.equal(model.grid.bits, other.grid.bits)
    np.testing.assert_allclose(other.mean_face, mean_face)
    assert other.cfg.to_dict() == cfg.to_dict()


def test_resume_after_interruption_continues_where_it_stopped(tiny, tmp_path, one_thread):
    cfg = tiny_cfg(tiny, meta={"epochs": 2, "n_support": 1, "n_query": 1})
    full = pretrain(tiny["data"], tmp_path / "full.pt", cfg, progress=False, log=lambda *a: None)
    # Interrupted after 2 visits (a .resume file stays), then resumed to the end.
    part = pretrain(tiny["data"], tmp_path / "cut.pt", cfg, progress=False, log=lambda *a: None, max_visits=2)
    assert part.visits == 2
    assert (tmp_path / "cut.pt.resume").exists()
    msgs = []
    rest = pretrain(tiny["data"], tmp_path / "cut.pt", cfg, progress=False, log=msgs.append)
    assert any("resuming" in m for m in msgs)
    assert rest.visits == full.visits == 2 * 2  # 2 epochs x 2 train subjects
    assert not (tmp_path / "cut.pt.resume").exists()
    a, b = PortraitModel.load(tmp_path / "full.pt"), PortraitModel.load(tmp_path / "cut.pt")
    for (n, p), q in zip(a.field.named_parameters(), b.field.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")


def test_finetune_improves_the_frontal_view(tiny, tmp_path):
    from pnerf_fast.data.format import load_dataset

    def psnr(a, b):
        return float(-10 * torch.log10(((a - b) ** 2).mean()))

    cfg = tiny_cfg(tiny, method="random")
    prior = pretrain(tiny["data"], tmp_path / "rand.pt", cfg, progress=False, log=lambda *a: None)
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    model = PortraitModel.load(prior.path)
    pf0 = PortraitField(model, __import__("pnerf_fast.face.procrustes", fromlist=["x"]).canonical_transform(subj.landmarks, model.mean_face), subj.cameras[subj.frontal_index])
    target = torch.as_tensor(subj.composite(1.0)[subj.frontal_index])
    before = psnr(pf0.render(subj.cameras[subj.frontal_index])["rgb"], target)
    pf = finetune(subj, init=prior.path, steps=40, progress=False, seed=1)
    after = psnr(pf.render(subj.cameras[subj.frontal_index])["rgb"], target)
    assert after > before + 1.0, (before, after)
    # Save and load give the same renders.
    pf.save(tmp_path / "pf.pt")
    again = PortraitField.load(tmp_path / "pf.pt")
    torch.testing.assert_close(again.render(subj.cameras[0])["rgb"], pf.render(subj.cameras[0])["rgb"])


def test_clear_errors(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        finetune(tiny["data"] / "subject_000", init=tmp_path / "missing.pt", progress=False)
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    with pytest.raises(ValueError, match="not a pnerf_fast checkpoint"):
        PortraitModel.load(junk)
    # A checkpoint whose weights do not match its field config.
    cfg = tiny_cfg(tiny)
    rays, mean_face = load_training_subjects(tiny["data"], cfg)
    st = PortraitModel(cfg, mean_face).state()
    st["field_config"]["density_mlp"]["width"] = 32
    bad = tmp_path / "bad.pt"
    save_atomic(st, bad)
    with pytest.raises(ValueError, match="do not match"):
        PortraitModel.load(bad)
    # A prior is not a finetuned portrait.
    good = tmp_path / "prior.pt"
    PortraitModel(cfg, mean_face).save(good)
    with pytest.raises(ValueError, match="not a finetuned portrait"):
        PortraitField.load(good)
    with pytest.raises(FileNotFoundError, match="no subject folder or photo"):
        finetune(tmp_path / "nothing_here", init=good, progress=False)
    with pytest.raises(ValueError, match="meta.n_query"):
        config_from_dict({"meta": {"n_query": 0}})
    with pytest.raises(ValueError, match="meta.alpah: unknown key"):
        config_from_dict({"meta": {"alpah": {}}})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_train_config(tmp_path / "none.yaml")
    with pytest.raises(ValueError, match="steps"):
        finetune(tiny["data"] / "subject_000", init=good, steps=-1, progress=False)


def test_adam_meta_variant_applies_the_query_update_to_the_prior(tiny, one_thread):
    cfg = tiny_cfg(tiny, meta={"optimizer": "adam", "n_support": 1, "n_query": 2,
                               "alpha": {"grid": 1e-2, "mlp": 1e-3}, "beta": {"grid": 1e-2, "mlp": 1e-3}})
    rays, mean_face = load_training_subjects(tiny["data"], cfg)
    model = PortraitModel(cfg, mean_face)
    before = params(model.field)
    fast = copy.deepcopy(model.field)
    # θ_m after the support step, replayed by hand with the same batch.
    from pnerf_fast.train.pretrain import make_optimizer

    fast_probe = copy.deepcopy(model.field)
    opt = make_optimizer(fast_probe, "adam", cfg.meta.alpha)
    g1 = torch.Generator().manual_seed(2)
    ray_loss(model, fast_probe, rays[0], rays[0].support, cfg.rays_per_step, g1, cfg).backward()
    opt.step()
    after_support = params(fast_probe)
    gen = torch.Generator().manual_seed(2)
    meta_subject_step(model, fast, rays[0], cfg, gen, _named_groups(model.field))
    # θ_p moved by exactly what the query steps moved θ_m: θ_p' - θ_p = θ_m' - θ_m(after support).
    for b, a, s, f in zip(before, params(model.field), after_support, params(fast)):
        torch.testing.assert_close(a - b, f - s, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, params(model.field)))


REPO_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("pretrain_*.yaml"))


@pytest.mark.parametrize("path", REPO_CONFIGS, ids=lambda p: p.name)
def test_repository_pretrain_configs_validate_and_build(path):
    """Every pretraining config in configs/ loads, validates and builds its model (the
    commands in README/results/README.md use them)."""
    cfg = load_train_config(path)
    presets = {p.stem for p in (Path(__file__).resolve().parents[1] / "pnerf_fast" / "configs").glob("*.yaml")}
    assert cfg.method in ("meta", "joint", "latent") and cfg.field in presets  # a field preset the package ships
    m = PortraitModel(cfg, np.zeros((24, 3)))
    assert sum(p.numel() for p in m.field.parameters()) > 0
    assert (m.field.latent_dim > 0) == (cfg.method == "latent")


def test_repository_has_pretrain_configs():
    assert {p.name for p in REPO_CONFIGS} >= {"pretrain_meta.yaml", "pretrain_meta_paper.yaml", "pretrain_latent.yaml"}


def test_cpu_runs_are_bit_reproducible_at_a_fixed_thread_count(tiny, tmp_path):
    """Same seed, same thread count (2, from conftest) -> bit-identical weights, through our
    native kernels (fused MLP, hash grid): the README promises it, since no CPU kernel uses
    atomics."""
    fused = dict(TINY_FIELD, backend="fused")
    (tmp_path / "fused.yaml").write_text(yaml.safe_dump(fused))
    cfg = tiny_cfg(tiny, field=str(tmp_path / "fused.yaml"), meta={"epochs": 1, "n_support": 2, "n_query": 2})
    assert torch.get_num_threads() >= 2
    runs = []
    for k in range(2):
        pretrain(tiny["data"], tmp_path / f"p{k}.pt", cfg, progress=False, log=lambda *a: None)
        subj = tiny["data"] / "subject_000"
        runs.append(finetune(subj, init=tmp_path / f"p{k}.pt", steps=5, progress=False, seed=2))
    a, b = (PortraitModel.load(tmp_path / f"p{k}.pt") for k in range(2))
    for (n, p), q in zip(a.field.named_parameters(), b.field.parameters()):
        assert torch.equal(p, q), n
    fa, fb = (list(r.model.field.parameters()) for r in runs)
    assert all(torch.equal(p, q) for p, q in zip(fa, fb))
    assert not all(torch.equal(p, q) for p, q in zip(fa, a.field.parameters()))  # finetune moved them
