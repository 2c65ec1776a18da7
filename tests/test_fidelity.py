"""Single-image fidelity machinery, at tiny sizes: the latent-conditioned field and its
auto-decoder pretraining, the code fit at finetune, the grid that covers the whole
subject (a head 1.3x larger than its landmarks say), the angle bands and the oracle."""
import numpy as np
import pytest
import torch
import yaml

from pnerf_fast.data.format import load_dataset
from pnerf_fast.evaluate import (BAND_NAMES, band_of, evaluate_prior, fit_oracle, score_subject, split_by_angle,
                                 view_angles)
from pnerf_fast.field import RadianceField
from pnerf_fast.field.config import field_config_from_dict
from pnerf_fast.train.data import SubjectRays
from pnerf_fast.train.finetune import finetune
from pnerf_fast.train.hull import cover_subject_, subject_hull
from pnerf_fast.train.model import PortraitField, PortraitModel
from pnerf_fast.train.pretrain import pretrain, ray_loss

from test_train import TINY_FIELD, tiny, tiny_cfg  # noqa: F401  (fixtures)

TINY_LATENT = {**TINY_FIELD, "name": "tiny_latent", "latent_dim": 8}


@pytest.fixture(scope="module")
def latent_prior(tiny, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("latent")
    fy = root / "tiny_latent.yaml"
    fy.write_text(yaml.safe_dump(TINY_LATENT))
    cfg = tiny_cfg(tiny, method="latent", field=str(fy), latent={"steps": 30},
                   grid={"hull_min_fraction": 0.01},
                   finetune={"optimizer": "adam", "lr": {"grid": 1e-2, "mlp": 1e-3, "latent": 0.0},
                             "code_steps": 10, "code_reg": 0.0, "steps": 5, "cover": True,
                             "update_grid": True})
    out = root / "prior.pt"
    pretrain(tiny["data"], out, cfg, progress=False, log=lambda *a: None)
    return out


def test_latent_field_code_changes_output_and_gets_gradient():
    f = RadianceField(field_config_from_dict(TINY_LATENT))
    x = torch.rand(64, 3) - 0.5
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    s0, c0 = f(x, d)
    with torch.no_grad():
        f.latent.normal_()
    s1, c1 = f(x, d)
    assert not torch.allclose(c0, c1) and not torch.allclose(s0, s1)
    (s1.sum() + c1.sum()).backward()
    assert f.latent.grad is not None and f.latent.grad.abs().sum() > 0
    assert set(f.param_groups()) == {"grid", "mlp", "latent"}
    # an explicit code overrides the field's own, and is differentiable
    z = torch.zeros(8, requires_grad=True)
    with f.code(z):
        s2, _ = f(x, d)
    s2.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="argument 'z'"):
        with f.code(torch.zeros(3)):
            pass


def test_latent_bias_shift_equals_concatenated_input():
    """The code enters as b0 + W_z z: the same as an MLP over [enc(x), z]."""
    f = RadianceField(field_config_from_dict(TINY_LATENT))
    with torch.no_grad():
        f.latent.normal_()
    x = torch.rand(32, 3) - 0.5
    enc = f.encoding(x)
    l0 = f.density_net.layers[0]
    W = torch.cat([l0.weight, f.density_z.weight], dim=1)
    h = torch.relu(torch.cat([enc, f.latent.expand(32, -1)], dim=1) @ W.t() + l0.bias)
    for layer in f.density_net.layers[1:-1]:
        h = torch.relu(layer(h))
    ref = f.density_net.layers[-1](h)[:, 0]
    got, _ = f._geometry(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_latent_pretrain_keeps_codes_and_a_mean_code(latent_prior, tiny):  # noqa: F811
    m = PortraitModel.load(latent_prior)
    n_train = len(load_dataset(tiny["data"]).subjects("train"))
    assert m.codes is not None and m.codes.shape == (n_train, 8)
    torch.testing.assert_close(m.field.latent.detach(), m.codes.mean(0))
    assert m.codes.std(0).abs().sum() > 0  # the codes were learned apart


def test_code_fit_lowers_the_input_view_loss(latent_prior, tiny):  # noqa: F811
    """Stage 1 of finetune (the code alone) lowers the loss on the input view, and
    leaves every shared weight untouched."""
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    model = PortraitModel.load(latent_prior)
    shared0 = [p.detach().clone() for n, p in model.field.named_parameters() if n != "latent"]
    sr = SubjectRays(subj, model.mean_face, "canonical")
    gen = torch.Generator().manual_seed(5)

    def loss(m):
        g = torch.Generator().manual_seed(11)
        with torch.no_grad():
            return float(ray_loss(m, m.field, sr, sr.support, 512, g, m.cfg))

    before = loss(model)
    pf = finetune(subj, init=model, steps=0, code_steps=40, progress=False)
    after = loss(pf.model)
    assert pf.info["code_steps"] == 40
    assert after < before
    shared1 = [p.detach() for n, p in pf.model.field.named_parameters() if n != "latent"]
    assert all(torch.equal(a, b) for a, b in zip(shared0, shared1))
    assert not torch.equal(pf.model.field.latent.detach(), model.codes.mean(0))
    # the shared weights, frozen during the code stage, learn again afterwards
    assert all(p.requires_grad for p in pf.model.field.parameters())
    del gen


def test_finetune_leaves_the_init_model_alone(latent_prior, tiny):  # noqa: F811
    """finetune copies a PortraitModel init: the caller's prior keeps its weights, grid
    and config, so two subjects finetuned from one loaded prior each start from it."""
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    model = PortraitModel.load(latent_prior)
    state0 = {k: v.clone() for k, v in model.state_dict().items()}
    bits0 = model.grid.bits.clone()
    a = finetune(subj, init=model, steps=3, code_steps=2, mirror=0.25, seed=0, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state0.items())
    assert torch.equal(model.grid.bits, bits0)
    assert model.cfg.finetune.mirror != 0.25
    assert a.model is not model
    b = finetune(subj, init=model, steps=3, code_steps=2, mirror=0.25, seed=0, progress=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    assert not torch.equal(sa["field.latent"], state0["field.latent"])  # the fit did change its copy


def test_finetune_views_argument(latent_prior, tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    with pytest.raises(ValueError, match="views"):
        finetune(subj, init=latent_prior, steps=1, views=[subj.num_views], progress=False)
    with pytest.raises(ValueError, match="views"):
        finetune(subj, init=latent_prior, steps=1, views=[], progress=False)
    pf = finetune(subj, init=latent_prior, steps=2, code_steps=1, views=[0, 1], progress=False)
    assert pf.info["steps"] == 3


def test_grid_covers_a_head_larger_than_its_landmarks(tiny):  # noqa: F811
    """A subject whose head is 1.3x larger than its landmarks imply lands 1.3x larger in
    canonical space. The finetune grid (prior grid + the input mask's cone) must contain
    the whole head: every cell of its all-view visual hull."""
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    lm = subj.landmarks
    c = lm.mean(0)
    subj.landmarks = c + (lm - c) / 1.3  # the face shrinks, the head does not: the head is 1.3x
    model = PortraitModel(tiny_cfg(tiny), load_training_mean(tiny))
    g = model.grid
    # a prior grid that only holds a small head: the cells near the canonical centre
    pos = torch.stack(torch.meshgrid(*[torch.arange(g.geometry.res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    small = ((pos.float() - g.geometry.res / 2).norm(dim=1) < g.geometry.res * 0.12)
    g.restrict_(small)
    sr = SubjectRays(subj, model.mean_face, "canonical")
    # the head's visual hull from all views, where the input camera sees (the rest of
    # the box is never seen in the input and stays the prior's)
    hull_all = subject_hull(g, sr)[: g.geometry.res ** 3] & in_frame(g, sr, sr.frontal_index)
    assert (hull_all & ~small).sum() > 0  # the small grid clips this head
    added = cover_subject_(g, sr)
    assert added.numel() > 0
    assert not bool(small.reshape(-1)[added].any())  # only cells that were not there
    covered = g.bits.bool()[: g.geometry.res ** 3]
    assert bool((hull_all & ~covered).sum() == 0)
    assert bool((g.allowed.bool() >= g.bits.bool()).all())
    # updates never drop below the union either: cells stay allowed
    assert bool(g.allowed.bool()[: g.geometry.res ** 3][hull_all].all())


def test_union_hull_shows_progress_and_the_same_cells(tiny, capsys):  # noqa: F811
    """Pretraining's hull union reads every training subject's masks (minutes for a thousand
    heads): with ``progress`` it shows a bar over the subjects, and gives the same cells."""
    from pnerf_fast.train.hull import union_hull

    ds = load_dataset(tiny["data"])
    model = PortraitModel(tiny_cfg(tiny), load_training_mean(tiny))
    rays = [SubjectRays(ds.subject(n), model.mean_face, "canonical") for n in ds.subjects("train")[:2]]
    quiet = union_hull(model.grid, rays, dilate=1, min_fraction=0.5)
    assert capsys.readouterr().err == ""
    shown = union_hull(model.grid, rays, dilate=1, min_fraction=0.5, progress=True)
    err = capsys.readouterr().err
    assert "visual hulls" in err and "2/2" in err, err
    assert torch.equal(quiet, shown) and 0 < int(shown.sum()) < shown.numel()


def test_carve_empties_what_the_input_view_sees_as_background(tiny):  # noqa: F811
    """cover with carve: the head's cells stay (the cone, dilated), every cell whose
    neighbourhood the input view sees only as background goes, and cells outside the
    input frame are kept (nothing there was seen)."""
    from pnerf_fast.train.hull import dilate_cells

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    model = PortraitModel(tiny_cfg(tiny), load_training_mean(tiny))
    g = model.grid
    n0 = g.geometry.res ** 3
    g.bits.fill_(1)
    g.allowed.fill_(1)
    sr = SubjectRays(subj, model.mean_face, "canonical")
    cone = subject_hull(g, sr, sr.support)[:n0]
    seen = in_frame(g, sr, sr.frontal_index)
    cover_subject_(g, sr, dilate=1, carve=True)
    bits = g.bits.bool()[:n0]
    assert bool(bits[cone].all())  # the subject is all there
    background = seen & ~dilate_cells(g, torch.cat([cone | ~seen, torch.zeros(g.geometry.n_cells - n0, dtype=torch.bool)]), 1)[:n0]
    assert background.sum() > 0.05 * n0, int(background.sum())  # the subject leaves much of the seen box empty
    assert not bool(bits[background].any()) and not bool(g.allowed.bool()[:n0][background].any())
    assert bool(bits[~seen].all())  # never seen: kept
    g.bits.fill_(1)
    g.allowed.fill_(1)
    cover_subject_(g, sr)  # without carve nothing is removed
    assert bool(g.bits.bool().all())


def in_frame(grid, sr, view):
    from pnerf_fast.ops.occgrid import cell_positions

    n0 = grid.geometry.res ** 3
    world = sr.transform.inverse().apply(cell_positions(grid.geometry, torch.arange(n0)).double().numpy())
    uv, depth = sr.cameras[view].project(world)
    H, W = sr.hw
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H) & (depth > 0)
    return torch.as_tensor(ok)


def load_training_mean(tiny):  # noqa: F811
    from pnerf_fast.face.procrustes import generalized_procrustes

    ds = load_dataset(tiny["data"])
    return generalized_procrustes(np.stack([ds.subject(n).landmarks for n in ds.subjects("train")]))


def test_angle_bands():
    assert [band_of(a) for a in (0.0, 19.9, 20.0, 39.9, 40.0, 75.0)] == ["0-20", "0-20", "20-40", "20-40", "40+", "40+"]
    per_view = {"psnr": [30.0, 20.0, 10.0, 12.0]}
    out = split_by_angle(per_view, [10.0, 30.0, 50.0, 60.0])
    assert out["0-20"] == {"psnr": 30.0, "n_views": 1}
    assert out["40+"] == {"psnr": 11.0, "n_views": 2}
    assert split_by_angle(per_view, [10.0, 11.0, 12.0, 13.0]).keys() == {"0-20"}
    assert BAND_NAMES == ("0-20", "20-40", "40+")


def test_view_angles_of_the_rig(tiny):  # noqa: F811
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    a = view_angles(subj, list(range(subj.num_views)))
    assert a[subj.frontal_index] == pytest.approx(0.0, abs=1e-6)
    assert all(0 < x < 90 for i, x in enumerate(a) if i != subj.frontal_index)


def test_oracle_and_eval_report(latent_prior, tiny):  # noqa: F811
    """The oracle sees every view, so on the views it trained on it beats the prior's
    untouched mean head; eval reports input view, bands, oracle and gap."""
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    like = PortraitModel.load(latent_prior)
    before = {k: v.clone() for k, v in like.field.state_dict().items()}
    sr = SubjectRays(subj, like.mean_face, "canonical")
    every = list(range(subj.num_views))
    prior_only = score_subject(PortraitField(like, sr.transform), subj, views=every, lpips=False)
    for start in ("prior", "scratch"):
        orc = fit_oracle(subj, like, steps=60, start=start)
        assert orc.info["start"] == start
        assert orc.model.field.latent_dim == (like.field.latent_dim if start == "prior" else 0)
        # its grid holds the subject's whole visual hull, whatever the prior's grid holds
        hull = subject_hull(orc.model.grid, sr)
        assert bool(orc.model.grid.allowed.bool()[hull].all())
        if start == "prior":  # it learned from every view: better on them than the prior's mean head
            assert score_subject(orc, subj, views=every, lpips=False)["psnr"] > prior_only["psnr"] + 0.5
    for k, v in like.field.state_dict().items():  # the prior it started from is left as it was
        assert torch.equal(v, before[k]), k
    assert fit_oracle(subj, like, seconds=1.0).info["steps"] > 0  # a time budget
    with pytest.raises(ValueError, match="start"):
        fit_oracle(subj, like, seconds=1.0, start="nope")
    for bad in ({"seconds": float("inf")}, {"seconds": None}, {"steps": 0}):
        with pytest.raises(ValueError, match="seconds|steps"):
            fit_oracle(subj, like, **bad)
    res = evaluate_prior(tiny["data"], latent_prior, "test", progress=False, lpips=False, oracle_seconds=2.0)
    r = res["subjects"][0]
    assert {"input", "by_angle", "oracle", "oracle_gap_db"} <= set(r)
    assert r["oracle_gap_db"] == pytest.approx(r["oracle"]["psnr"] - r["psnr"])
    assert set(r["by_angle"]) <= set(BAND_NAMES) and r["by_angle"]
    assert sum(b["n_views"] for b in r["by_angle"].values()) == len(r["views"])
    assert {"input", "by_angle", "oracle", "oracle_gap_db"} <= set(res["mean"])
    # the outline: light-stage subjects have masks, so each view's silhouette is scored too
    from pnerf_fast.commands.eval import format_report
    from pnerf_fast.evaluate import SILHOUETTE_KEYS

    for row in (r, res["mean"], r["oracle"]):
        assert set(SILHOUETTE_KEYS) <= set(row)
        assert 0 <= row["silhouette_iou"] <= 1 and 0 <= row["silhouette_err_share"] <= 1
    assert all(len(r["per_view"][k]) == len(r["views"]) for k in SILHOUETTE_KEYS)
    assert all("silhouette_iou" in b for b in r["by_angle"].values())
    assert "outline IoU" in format_report(res)


def test_shipped_priors_by_name():
    from pnerf_fast.train.finetune import DEFAULT_PRIOR, SHIPPED_PRIORS, prior_path

    assert DEFAULT_PRIOR == "latent"
    assert prior_path(None) == SHIPPED_PRIORS["latent"]
    assert prior_path("meta") == SHIPPED_PRIORS["meta"]
    assert prior_path("portrait") == SHIPPED_PRIORS["portrait"]
    assert str(prior_path("some/file.pt")) == "some/file.pt"
    assert all(p.is_file() for p in SHIPPED_PRIORS.values())


def test_default_prior_follows_the_source():
    """Photos (finetune's own alignment, or a folder `pnerf align` wrote) and the portrait
    light stage's subjects start from the portrait prior; the classic stage's from latent;
    a named prior always wins."""
    from pathlib import Path

    from pnerf_fast.data.format import load_subject
    from pnerf_fast.train.finetune import SHIPPED_PRIORS, default_prior_name, prior_path

    subj = load_subject(Path(__file__).resolve().parents[1] / "pnerf_fast" / "assets" / "demo_subject")
    assert default_prior_name(subj) == "latent" and default_prior_name(None) == "latent"
    for meta in ({"source": "photo", "photo": "me.jpg"}, {"style": "portrait"}):
        subj.meta = meta
        assert default_prior_name(subj) == "portrait", meta
        assert prior_path(None, subj) == SHIPPED_PRIORS["portrait"]
        assert prior_path("meta", subj) == SHIPPED_PRIORS["meta"]
    subj.meta = {"style": "classic"}
    assert default_prior_name(subj) == "latent"


def test_a_dataset_starts_from_the_prior_of_its_first_subject(tiny, tmp_path):  # noqa: F811
    """`pnerf eval` and bench_fidelity: with no --init, the prior for the split's first
    subject (its meta's light stage); a named prior wins; unreadable data: the classic one."""
    import json
    import shutil

    from pnerf_fast.train.finetune import SHIPPED_PRIORS, dataset_prior_path

    assert dataset_prior_path(None, tiny["data"], "test") == SHIPPED_PRIORS["latent"]
    assert dataset_prior_path("meta", tiny["data"], "test") == SHIPPED_PRIORS["meta"]
    assert dataset_prior_path(None, tmp_path / "missing", "test") == SHIPPED_PRIORS["latent"]
    root = tmp_path / "portrait"
    shutil.copytree(tiny["data"], root)
    first = load_dataset(root).subjects("test")[0]
    face = root / first / "face.json"
    d = json.loads(face.read_text())
    d.setdefault("meta", {})["style"] = "portrait"
    face.write_text(json.dumps(d))
    assert dataset_prior_path(None, root, "test") == SHIPPED_PRIORS["portrait"]


def test_finetune_of_a_photo_starts_from_the_portrait_prior(monkeypatch):
    """finetune(init=None) loads the prior that suits the subject it was given."""
    from pathlib import Path

    from pnerf_fast.data.format import load_subject
    from pnerf_fast.train import finetune as ft

    loaded = []
    real = ft.PortraitModel.load

    def spy(path, *a, **kw):
        loaded.append(Path(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(ft.PortraitModel, "load", spy)
    subj = load_subject(Path(__file__).resolve().parents[1] / "pnerf_fast" / "assets" / "demo_subject")
    ft.finetune(subj, steps=0, code_steps=0, progress=False)
    subj.meta = {"source": "photo"}
    ft.finetune(subj, steps=0, code_steps=0, progress=False)
    assert loaded == [ft.SHIPPED_PRIORS["latent"], ft.SHIPPED_PRIORS["portrait"]]


@pytest.mark.parametrize("name", ["latent", "portrait"])
def test_shipped_latent_priors_finetune(name):
    """The package ships the latent prior with its training codes; a short finetune on the
    shipped demo subject runs both stages and moves the code off the mean."""
    from pathlib import Path

    from pnerf_fast.api import load_prior
    from pnerf_fast.data.format import load_subject

    prior = load_prior(name)
    assert prior.cfg.method == "latent" and prior.field.latent_dim > 0
    assert prior.codes is not None and prior.codes.shape[0] >= 100
    assert prior.cfg.finetune.cover and prior.cfg.finetune.code_steps > 0
    subj = load_subject(Path(__file__).resolve().parents[1] / "pnerf_fast" / "assets" / "demo_subject")
    mean = prior.field.latent.detach().clone()
    pf = finetune(subj, init=prior, code_steps=2, steps=1, rays_per_step=256, progress=False)
    assert pf.info["steps"] == 3 and pf.info["code_steps"] == 2
    assert not torch.equal(pf.model.field.latent.detach(), mean)


def test_empty_reg_empties_the_cells_that_cover_added(latent_prior, tiny):  # noqa: F811
    """The cells the cover adds were never trained; empty_reg pushes their density down
    (measured at the same points, same seed) compared with the same finetune without it."""
    from pnerf_fast.ops.occgrid import cell_positions

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])

    def run(weight):
        m = PortraitModel.load(latent_prior)
        prior_bits = m.grid.bits.bool().clone()
        m.grid.restrict_(prior_bits & (torch.arange(prior_bits.numel()) % 2 == 0))  # a grid with holes to fill
        before = m.grid.bits.bool().clone()
        m.cfg.finetune.empty_reg = weight
        m.cfg.finetune.update_grid = False
        pf = finetune(subj, init=m, code_steps=5, steps=15, progress=False)
        added = torch.nonzero(pf.model.grid.bits.bool() & ~before).reshape(-1)
        x = cell_positions(pf.model.grid.geometry, added)
        with torch.no_grad():
            return float(pf.model.field.density(x).mean()), added.numel()

    d0, n0 = run(0.0)
    d1, n1 = run(10.0)
    assert n0 == n1 > 0
    assert d1 < d0


def test_default_steps_grow_with_the_input_side(latent_prior, tiny):  # noqa: F811
    """steps_res: an input twice the side it is meant for gets twice the stage-2 steps
    (capped at 4x); an explicit budget is kept as given."""
    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    side = max(subj.images.shape[1:3])
    for res, want in ((side, 3), (side // 2, 6), (1, 12)):
        m = PortraitModel.load(latent_prior)
        m.cfg.finetune.steps, m.cfg.finetune.code_steps, m.cfg.finetune.steps_res = 3, 1, res
        pf = finetune(subj, init=m, progress=False)
        assert pf.info["steps"] == 1 + want, res
    m = PortraitModel.load(latent_prior)
    m.cfg.finetune.steps_res = 1
    assert finetune(subj, init=m, steps=2, code_steps=0, progress=False).info["steps"] == 2


def test_code_rays_sets_the_code_stage_batch(latent_prior, tiny, monkeypatch):  # noqa: F811
    """finetune.code_rays: the code steps draw that many rays, the all-weight steps keep
    rays_per_step; a negative value is refused by the config."""
    from pnerf_fast.train import data as data_mod
    from pnerf_fast.train.config import TrainConfig

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    m = PortraitModel.load(latent_prior)
    m.cfg.finetune.code_rays, m.cfg.finetune.rays_per_step = 64, 128
    sizes = []
    real = data_mod.SubjectRays.batch

    def spy(self, views, n, *a, **k):
        sizes.append(n)
        return real(self, views, n, *a, **k)

    monkeypatch.setattr(data_mod.SubjectRays, "batch", spy)
    finetune(subj, init=m, steps=2, code_steps=3, progress=False)
    assert sizes == [64, 64, 64, 128, 128]
    cfg = TrainConfig()
    cfg.finetune.code_rays = -1
    with pytest.raises(ValueError, match="code_rays"):
        cfg.validate()


def test_latent_init_from_other_subjects_keeps_weights_and_starts_fresh_codes(latent_prior, tiny, tmp_path):  # noqa: F811
    """--init with a latent prior of another training split (another light stage, say):
    its shared weights carry over and the codes start fresh."""
    import json

    src = load_dataset(tiny["data"])
    train = src.subjects("train")
    root = tmp_path / "fewer"
    root.mkdir()
    for name in src.names:
        (root / name).symlink_to((tiny["data"] / name).resolve())
    splits = json.loads((tiny["data"] / "splits.json").read_text())
    splits["train"] = train[:1]
    splits["val"] = splits["val"] + train[1:]
    (root / "splits.json").write_text(json.dumps(splits))
    fy = tmp_path / "tiny_latent.yaml"
    fy.write_text(yaml.safe_dump(TINY_LATENT))
    cfg = tiny_cfg(tiny, method="latent", field=str(fy), latent={"steps": 1, "lr": {"grid": 1e-9, "mlp": 1e-9, "latent": 1e-9}},
                   grid={"hull_min_fraction": 0.01})
    logs = []
    out = tmp_path / "prior.pt"
    pretrain(root, out, cfg, progress=False, log=logs.append, init=latent_prior)
    a, b = PortraitModel.load(latent_prior), PortraitModel.load(out)
    assert b.codes.shape == (1, 8) and a.codes.shape[0] == len(train) > 1
    assert any("fresh subject codes" in str(m) for m in logs)
    sa, sb = a.field.state_dict(), b.field.state_dict()
    for k in sa:
        if k != "latent":  # (almost) zero learning rates: the shared weights are the init's
            torch.testing.assert_close(sa[k], sb[k], msg=k)


def test_scratch_oracle_of_a_volume_prior(latent_prior, tiny):  # noqa: F811
    """A prior whose code also decodes to a feature volume (fast_latent_vol) gets a scratch
    oracle of the same field without the code and without the volume (the volume needs a
    code: the field config refuses one without the other)."""
    from pnerf_fast.train.model import build_field

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    like = PortraitModel.load(latent_prior)
    vol = PortraitModel(like.cfg, like.mean_face, field=build_field({**TINY_LATENT, "latent_volume_res": 4}))
    assert vol.field.volume_params()
    orc = fit_oracle(subj, vol, steps=3, start="scratch")
    assert orc.model.field.latent_dim == 0 and not orc.model.field.volume_params()
    assert orc.info["steps"] == 3


def test_front_codes_learn_from_the_frontal_view_only(tiny, tmp_path):  # noqa: F811
    """latent.front_rays: the code's step sees only the frontal view (scrambling the colours
    of every other view of the subject leaves the learned code exactly as it was), while the
    shared weights learn from all views (the scrambled views change them)."""
    import json
    import shutil

    from PIL import Image

    src = load_dataset(tiny["data"])
    name = src.subjects("train")[0]
    roots = {}
    for kind in ("clean", "scrambled"):
        root = tmp_path / kind
        root.mkdir()
        for n in src.names:
            if n == name:
                shutil.copytree(tiny["data"] / n, root / n)
            else:
                (root / n).symlink_to((tiny["data"] / n).resolve())
        splits = json.loads((tiny["data"] / "splits.json").read_text())
        splits["val"] = splits["val"] + [n for n in splits["train"] if n != name]
        splits["train"] = [name]
        (root / "splits.json").write_text(json.dumps(splits))
        roots[kind] = root
    meta = json.loads((roots["scrambled"] / name / "transforms.json").read_text())
    rng = np.random.default_rng(0)
    for fr in meta["frames"]:
        if fr["file_path"] != meta["frontal_frame"]:  # (the key names the frontal frame's file)
            p = roots["scrambled"] / name / fr["file_path"]
            a = np.array(Image.open(p))
            assert a.shape[2] == 4  # RGBA: keep the alpha (the visual hull that bounds the grid)
            a[..., :3] = rng.integers(0, 256, a[..., :3].shape, dtype=np.uint8)
            Image.fromarray(a).save(p)
    fy = tmp_path / "tiny_latent.yaml"
    fy.write_text(yaml.safe_dump(TINY_LATENT))

    def one_step(front_rays):
        cfg = tiny_cfg(tiny, method="latent", field=str(fy), latent={"steps": 1, "front_rays": front_rays},
                       grid={"hull_min_fraction": 0.01})
        out = {}
        for kind, root in roots.items():
            pretrain(root, tmp_path / f"{kind}{front_rays}.pt", cfg, progress=False, log=lambda *a: None)
            out[kind] = PortraitModel.load(tmp_path / f"{kind}{front_rays}.pt")
        init = torch.empty(1, TINY_LATENT["latent_dim"]).normal_(
            0.0, cfg.latent.code_init_std, generator=torch.Generator().manual_seed(cfg.seed))  # pretrain's draw
        return out["clean"], out["scrambled"], init

    a, b, init = one_step(64)
    assert (a.codes - init).abs().min() > 1e-4  # the code took its step ...
    torch.testing.assert_close(a.codes, b.codes, rtol=0, atol=0)  # ... from the frontal view alone
    sa, sb = a.field.state_dict(), b.field.state_dict()
    assert any(not torch.allclose(sa[k], sb[k]) for k in sa if k != "latent")  # the weights saw all views
    a, b, _ = one_step(0)  # the plain auto-decoder: its codes see every view
    assert not torch.allclose(a.codes, b.codes)
    with pytest.raises(ValueError, match="latent.front_rays"):
        tiny_cfg(tiny, method="latent", field=str(fy), latent={"front_rays": -1})


def test_refit_codes_fits_each_training_code_to_its_frontal_view(latent_prior, tiny, tmp_path):  # noqa: F811
    """scripts/refit_codes.py: every training code becomes the finetune's code-stage fit of
    that subject's frontal view (it fits that view better than the mean head); the shared
    weights stay; a light stage of other subjects is refused."""
    import subprocess
    import sys
    from pathlib import Path

    from pnerf_fast.train.refit import refit_codes

    m = PortraitModel.load(latent_prior)
    names = load_dataset(tiny["data"]).subjects("train")
    out = tmp_path / "refit.pt"
    script = Path(__file__).resolve().parents[1] / "scripts" / "refit_codes.py"
    r = subprocess.run([sys.executable, str(script), str(latent_prior), str(tiny["data"]), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n = PortraitModel.load(out)
    assert n.codes.shape == m.codes.shape and not torch.allclose(n.codes, m.codes)
    torch.testing.assert_close(n.field.latent.detach(), n.codes.mean(0))
    sm, sn = m.field.state_dict(), n.field.state_dict()
    for k in sm:
        if k != "latent":
            torch.testing.assert_close(sm[k], sn[k], msg=k)
    ds = load_dataset(tiny["data"])
    again = refit_codes(m, tiny["data"], progress=False)  # the same fit, in process
    torch.testing.assert_close(again, n.codes)
    assert len(names) >= 2
    apart = refit_codes(m, tiny["data"], progress=False, jobs=2)  # the same fits, in two worker processes
    torch.testing.assert_close(apart, again, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        refit_codes(m, tiny["data"], progress=False, jobs=0)
    k = 0
    sr = SubjectRays(ds.subject(names[k]), m.mean_face, m.cfg.coordinates)
    def frontal_loss(code):
        mm = PortraitModel.load(latent_prior)
        with torch.no_grad():
            mm.field.latent.copy_(code)
        vals = []
        with torch.no_grad():
            for s in range(4):
                g = torch.Generator().manual_seed(s)
                vals.append(float(ray_loss(mm, mm.field, sr, sr.support, 512, g, mm.cfg)))
        return sum(vals)
    assert frontal_loss(n.codes[k]) < frontal_loss(m.field.latent.detach())  # better than the mean head
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for name in ds.names:
        (fewer / name).symlink_to((tiny["data"] / name).resolve())
    import json
    splits = json.loads((tiny["data"] / "splits.json").read_text())
    splits["train"] = splits["train"][:1]
    (fewer / "splits.json").write_text(json.dumps(splits))
    r = subprocess.run([sys.executable, str(script), str(latent_prior), str(fewer), str(tmp_path / "x.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "it was not trained on them" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.pt").exists()


def test_refit_codes_extend_fits_only_the_added_subjects(latent_prior, tiny, tmp_path):  # noqa: F811
    """--extend: a light stage with subjects added keeps the prior's codes for its first
    subjects and fits the added one from its frontal view; without --extend it is refused."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from pnerf_fast.train.refit import refit_codes

    m = PortraitModel.load(latent_prior)
    ds = load_dataset(tiny["data"])
    more = tmp_path / "more"
    more.mkdir()
    for name in ds.names:
        (more / name).symlink_to((tiny["data"] / name).resolve())
    splits = json.loads((tiny["data"] / "splits.json").read_text())
    added = splits["val"][0]
    splits["train"] = splits["train"] + [added]
    splits["val"] = splits["val"][1:]
    (more / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(ValueError, match="not trained on them"):
        refit_codes(m, more, progress=False)
    codes = refit_codes(m, more, progress=False, extend=True)
    n = m.codes.shape[0]
    assert codes.shape == (n + 1, m.codes.shape[1])
    torch.testing.assert_close(codes[:n], m.codes)
    alone = finetune(ds.subject(added), init=PortraitModel.load(latent_prior), steps=0, progress=False, seed=0)
    torch.testing.assert_close(codes[n], alone.model.field.latent.detach())
    script = Path(__file__).resolve().parents[1] / "scripts" / "refit_codes.py"
    out = tmp_path / "ext.pt"
    r = subprocess.run([sys.executable, str(script), str(latent_prior), str(more), str(out), "--extend"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["fitted"] == 1
    torch.testing.assert_close(PortraitModel.load(out).codes, codes)


def test_oracle_train_code_and_volume_change_only_those(latent_prior, tiny):  # noqa: F811
    """fit_oracle(train="code") fits the code alone to every view: every other weight stays the
    prior's, and the fit beats the prior's mean code on those views; train="code+volume" also
    changes the code's feature volume and nothing else. Bad combinations are refused by name."""
    from pnerf_fast.train.model import build_field

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    every = list(range(subj.num_views))
    like = PortraitModel.load(latent_prior)
    vol = PortraitModel(like.cfg, like.mean_face, field=build_field({**TINY_LATENT, "latent_volume_res": 4}))
    vol.codes = like.codes
    sr = SubjectRays(subj, like.mean_face, "canonical")
    mean_code = score_subject(PortraitField(like, sr.transform), subj, views=every, lpips=False)["psnr"]
    for model, train in ((like, "code"), (vol, "code+volume")):
        before = {k: v.clone() for k, v in model.field.state_dict().items()}
        orc = fit_oracle(subj, model, steps=40, start="prior", train=train, rays_per_step=256)
        assert orc.info["train"] == train and orc.info["steps"] == 40
        after = orc.model.field.state_dict()
        free = {"latent"} | ({"volume_mean", "volume_basis"} if train == "code+volume" else set())
        changed = {k for k, v in before.items() if not torch.equal(v, after[k].to(v.device))}
        assert "latent" in changed and changed <= free, (train, changed)
        if train == "code+volume":
            assert changed & {"volume_mean", "volume_basis"}
        else:
            assert score_subject(orc, subj, views=every, lpips=False)["psnr"] > mean_code
        assert all(p.requires_grad for p in orc.model.field.parameters())
        for k, v in model.field.state_dict().items():  # the prior it started from is left as it was
            assert torch.equal(v, before[k]), k
    for bad, match in (({"train": "nope", "steps": 2, "start": "prior"}, "train"),
                       ({"train": "code", "steps": 2}, "start='prior'"),
                       ({"train": "code", "seconds": 1.0, "start": "prior"}, "number of steps"),
                       ({"train": "code+volume", "steps": 2, "start": "prior"}, "feature volume")):
        with pytest.raises(ValueError, match=match):
            fit_oracle(subj, like, **bad)
