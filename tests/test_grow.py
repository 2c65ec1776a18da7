"""Growing a latent prior (train/grow.py, scripts/grow_prior.py) and the code in deeper layers
(field ``latent_layers``): the grown field is the same function, it can learn with its new
units, deeper code shifts reach every path (training, inference), and bad input is refused."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pnerf_fast.field.config import field_config_from_dict
from pnerf_fast.field.infer import evaluator
from pnerf_fast.ops.volume import volume_read
from pnerf_fast.train.config import config_from_dict
from pnerf_fast.train.grow import grow_model, max_output_diff
from pnerf_fast.train.model import PortraitModel, build_field

from test_train import TINY_FIELD

ROOT = Path(__file__).resolve().parents[1]


def small(**kw):
    d = {**TINY_FIELD, "name": "tiny_latent", "latent_dim": 4,
         "density_mlp": dict(TINY_FIELD["density_mlp"]), "color_mlp": dict(TINY_FIELD["color_mlp"])}
    for k, v in kw.items():
        if k in ("density_mlp", "color_mlp"):
            d[k].update(v)
        else:
            d[k] = v
    return d


def trained_like(field_cfg, seed=0):
    torch.manual_seed(seed)
    field = build_field(field_cfg)
    with torch.no_grad():  # far from the init, so that a wrong copy shows
        for p in field.parameters():
            p.normal_(0, 0.7)
    m = PortraitModel(config_from_dict({"grid": {"res": 8}, "method": "latent"}), None, field=field)
    m.codes = torch.randn(5, 4)
    with torch.no_grad():
        m.grid.bits.copy_(torch.rand(m.grid.bits.shape) < 0.5)
    return m


BIG = small(latent_layers=3, density_mlp={"width": 24, "n_hidden": 3}, color_mlp={"width": 20, "n_hidden": 2})


def test_grown_field_is_the_same_function_and_the_grid_and_codes_are_copied():
    old = trained_like(small())
    new = grow_model(old, BIG)
    assert new.field.density_net.width == 24 and new.field.density_net.n_hidden == 3
    assert len(new.field.density_z_deep) == 2 and len(new.field.color_z_deep) == 1  # capped at the depth
    assert max_output_diff(old, new) < 1e-5
    assert torch.equal(new.codes, old.codes) and torch.equal(new.grid.bits, old.grid.bits)
    assert torch.equal(new.field.encoding.params, old.field.encoding.params)
    # it is a bigger network, not the old one: moving a new unit's outgoing weight changes the output
    with torch.no_grad():
        new.field.density_net.layers[-1].weight[:, -1] += 1.0
    assert max_output_diff(old, new) > 1e-3


def test_grown_field_learns_through_its_new_units_and_deeper_code_layers():
    old = trained_like(small())
    new = grow_model(old, BIG)
    x = torch.rand(256, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(256, 3), dim=1)
    with new.field.code(new.codes[0]):
        sigma, rgb = new.field(x, d)
        (sigma.mean() + rgb.square().mean()).backward()
    f = new.field
    assert f.density_net.layers[-1].weight.grad[:, 16:].abs().sum() > 0  # the new units' outgoing weights
    assert all(lin.weight.grad.abs().sum() > 0 for lin in f.density_z_deep)
    assert all(lin.weight.grad.abs().sum() > 0 for lin in f.color_z_deep)


def test_deeper_code_shifts_change_the_field_and_inference_matches_training():
    field = trained_like(BIG).field
    x = torch.rand(300, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(300, 3), dim=1)
    with torch.no_grad():
        s0, c0 = field(x, d)
        for lin in field.density_z_deep:  # the deeper shifts are used
            lin.weight.add_(0.5)
        s1, c1 = field(x, d)
        assert (s0 - s1).abs().max() > 1e-3
        ev = evaluator(field, block=64)  # the blocked no-grad path takes the same shifts
        s2 = ev.geometry(x, d)
        c2 = ev.color(torch.arange(300), d)
    assert torch.allclose(s1, s2, rtol=1e-4, atol=1e-5) and torch.allclose(c1, c2, atol=1e-5)


def test_grow_refuses_what_it_cannot_grow_into():
    old = trained_like(small())
    with pytest.raises(ValueError, match="at least as wide"):
        grow_model(old, small(density_mlp={"width": 8}))
    with pytest.raises(ValueError, match="'latent_dim'"):
        grow_model(old, small(latent_dim=2))  # a shorter code
    with pytest.raises(ValueError, match="'encoding'"):
        grow_model(old, small(encoding=dict(TINY_FIELD["encoding"], log2_table=11)))
    with pytest.raises(ValueError, match="latent_layers"):
        field_config_from_dict(small(latent_layers=0))


def test_grow_script_writes_a_loadable_prior_and_reports_errors_cleanly(tmp_path):
    src = tmp_path / "prior.pt"
    trained_like(small()).save(src)
    import yaml

    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(BIG))
    out = tmp_path / "grown.pt"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "grow_prior.py"), str(src), str(out), "--field", str(big)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"max_output_diff": 0' in r.stdout or "e-0" in r.stdout
    grown = PortraitModel.load(out, "cpu")
    assert grown.field.cfg.latent_layers == 3 and grown.codes.shape == (5, 4)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "grow_prior.py"), str(src), str(tmp_path / "x.pt"),
                        "--field", "fast"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: grow:") and "Traceback" not in r.stderr
    assert not (tmp_path / "x.pt").exists()


VOL = small(latent_volume_res=5, latent_volume_features=3)


def test_code_volume_is_read_at_the_point_and_follows_the_code():
    field = build_field(VOL)
    R = 5
    lo, hi = field.cfg.aabb[0], field.cfg.aabb[3]
    step = (hi - lo) / (R - 1)
    with torch.no_grad():
        field.volume_mean.zero_()
        field.volume_basis.zero_()
        field.volume_mean[1, 1, 3, 4] = 2.0   # feature 1 at lattice point (i, j, k) = (1, 3, 4)
        field.volume_basis[2, 0, 4, 0, 1] = 1.0  # feature 0 at (4, 0, 1), scaled by code number 2
    at = lambda i, j, k: torch.tensor([[lo + i * step, lo + j * step, lo + k * step]])  # noqa: E731
    z = torch.zeros(4)
    z[2] = 0.5
    with field.code(z):
        assert torch.allclose(field.volume_features(at(1, 3, 4)), torch.tensor([[0.0, 2.0, 0.0]]))
        assert torch.allclose(field.volume_features(at(4, 1, 3)), torch.zeros(1, 3))  # axes not swapped
        assert torch.allclose(field.volume_features(at(4, 0, 1)), torch.tensor([[0.5, 0.0, 0.0]]))
        half = (at(1, 3, 4) + at(2, 3, 4)) / 2  # trilinear between lattice points
        assert torch.allclose(field.volume_features(half), torch.tensor([[0.0, 1.0, 0.0]]))
    with field.code(torch.zeros(4)):
        assert torch.allclose(field.volume_features(at(4, 0, 1)), torch.zeros(1, 3))


def test_code_volume_is_kept_between_no_grad_reads_until_the_code_or_volume_changes():
    field = build_field(VOL)
    x = torch.rand(50, 3) * 2 - 1

    def direct():  # V(z) from scratch, read at x as a no-grad read reads it (the native read)
        with torch.no_grad():
            z = field._code()
            vol = field.volume_mean + torch.einsum("k,kcxyz->cxyz", z.to(field.volume_basis.dtype), field.volume_basis)
            return volume_read(x, vol.permute(1, 2, 3, 0).contiguous(), field.aabb.tolist())

    with torch.no_grad():
        field.latent.normal_()
        first = field.volume_features(x)
        kept = field._volume_kept[2]
        assert torch.equal(first, direct())
        assert torch.equal(field.volume_features(x), first) and field._volume_kept[2] is kept  # reused
        field.latent[0] += 1.0       # the code moves: a new volume
        assert not torch.equal(field.volume_features(x), first)
        assert torch.equal(field.volume_features(x), direct())
        field.volume_basis[0].mul_(2.0)  # the basis moves (its version): a new volume
        assert torch.equal(field.volume_features(x), direct())
        field.volume_mean.add_(0.5)
        assert torch.equal(field.volume_features(x), direct())
        with field.code(torch.zeros(4)):  # another code tensor with other values
            assert torch.equal(field.volume_features(x), direct())
    out = field.volume_features(x)    # with autograd: computed afresh, differentiable
    out.sum().backward()
    assert field.volume_basis.grad is not None and field.latent.grad is not None


def test_code_volume_of_a_field_made_in_inference_mode_is_read_without_the_cache():
    with torch.inference_mode():  # inference tensors have no version counter to key the cache on
        field = build_field(VOL)
        x = torch.rand(20, 3) * 2 - 1
        a = field.volume_features(x)
        field.latent.add_(1.0)
        b = field.volume_features(x)
    assert not torch.equal(a, b) and getattr(field, "_volume_kept", None) is None


def test_grown_volume_field_is_the_same_function_learns_the_volume_and_infers_alike():
    old = trained_like(small())
    new = grow_model(old, VOL)
    assert new.field.density_net.in_dim == old.field.density_net.in_dim + 3
    assert max_output_diff(old, new) < 1e-5
    groups = new.field.param_groups()
    assert any(p is new.field.volume_basis for p in groups["grid"])
    x = torch.rand(256, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(256, 3), dim=1)
    with new.field.code(new.codes[1]):
        sigma, rgb = new.field(x, d)
        (sigma.mean() + rgb.square().mean()).backward()
    assert new.field.density_net.layers[0].weight.grad[:, -3:].abs().sum() > 0  # the volume's inputs learn
    with torch.no_grad():
        new.field.density_net.layers[0].weight[:, -3:].normal_(0, 1.0)  # now the volume matters
        new.field.volume_basis.normal_(0, 1.0)
        with new.field.code(new.codes[1]):
            s1, c1 = new.field(x, d)
            ev = evaluator(new.field, block=50)
            s2 = ev.geometry(x, d)
            c2 = ev.color(torch.arange(256), d)
        with new.field.code(new.codes[2]):
            s3, _ = new.field(x, d)
    assert (s1 - s3).abs().max() > 1e-3
    assert torch.allclose(s1, s2, rtol=1e-4, atol=1e-5) and torch.allclose(c1, c2, atol=1e-5)
    with pytest.raises(ValueError, match="latent_volume_res"):
        field_config_from_dict(small(latent_volume_res=1))
    with pytest.raises(ValueError, match="latent_volume_res"):
        field_config_from_dict(dict(TINY_FIELD, latent_volume_res=4))


from test_fidelity import TINY_LATENT, latent_prior  # noqa: E402,F401  (fixture)
from test_train import tiny  # noqa: E402,F401  (fixture)


def test_freeze_volume_keeps_the_code_volume_through_the_finetune(latent_prior, tiny):  # noqa: F811
    from pnerf_fast.data.format import load_dataset
    from pnerf_fast.train.finetune import finetune

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    grown = grow_model(PortraitModel.load(latent_prior, "cpu"), {**TINY_LATENT, "latent_volume_res": 4})
    before = grown.field.volume_basis.detach().clone(), grown.field.volume_mean.detach().clone()
    grid_before = grown.field.encoding.params.detach().clone()
    for freeze in (True, False):
        m = copy.deepcopy(grown)
        m.cfg.finetune.freeze_volume = freeze
        pf = finetune(subj, init=m, code_steps=2, steps=4, progress=False)
        f = pf.model.field
        same = torch.equal(f.volume_basis, before[0]) and torch.equal(f.volume_mean, before[1])
        assert same == freeze
        assert not torch.equal(f.encoding.params, grid_before)  # the rest is finetuned either way
        assert f.volume_basis.requires_grad  # handed back trainable


def test_keep_levels_leaves_the_coarse_hash_levels_as_the_code_stage_did(latent_prior, tiny):  # noqa: F811
    from pnerf_fast.data.format import load_dataset
    from pnerf_fast.train.finetune import _kept_levels, _without_rows, finetune

    ds = load_dataset(tiny["data"])
    subj = ds.subject(ds.subjects("test")[0])
    prior = PortraitModel.load(latent_prior, "cpu")
    enc = prior.field.encoding
    k = 2
    first = int(enc.offsets[k])
    before = enc.params.detach().clone()
    for keep in (k, 0):
        m = copy.deepcopy(prior)
        m.cfg.finetune.keep_levels = keep
        f = finetune(subj, init=m, code_steps=2, steps=4, progress=False).model.field
        coarse_same = torch.equal(f.encoding.params[:first], before[:first])
        assert coarse_same == bool(keep)
        assert not torch.equal(f.encoding.params[first:], before[first:])  # the finer levels learn either way
    # both gradient forms lose exactly the kept levels' rows; the hook is gone after the block
    g = torch.arange(1.0, 13.0).reshape(6, 2)
    for form in (g, g.to_sparse()):
        out = _without_rows(form, 4)
        out = out.to_dense() if out.is_sparse else out
        assert torch.equal(out[:4], torch.zeros(4, 2)) and torch.equal(out[4:], g[4:])
    p = prior.field.encoding.params
    with _kept_levels(prior.field, k):
        (p * 1).sum().backward()
    assert torch.all(p.grad[:first] == 0) and torch.all(p.grad[first:] == 1)
    p.grad = None
    (p * 1).sum().backward()
    assert torch.all(p.grad == 1)
    p.grad = None
    with pytest.raises(ValueError, match="keep_levels"):
        with _kept_levels(prior.field, enc.n_levels + 1):
            pass


@pytest.mark.parametrize("bad", [-1, 1.5, "4"])
def test_keep_levels_must_be_a_whole_number_of_levels(bad):
    with pytest.raises(ValueError, match="finetune.keep_levels"):
        config_from_dict({"finetune": {"keep_levels": bad}})


def test_a_longer_code_starts_as_the_same_function_and_its_new_numbers_learn():
    """latent_dim 4 -> 8 (with the code's feature volume and deeper shifts): the grown field is
    the old one for every training code (the codes' new numbers are drawn at random, heard
    nowhere yet), and one step's gradient reaches the new numbers' weights and basis volumes."""
    vol = {"latent_volume_res": 4, "latent_volume_features": 2}
    old = trained_like(small(latent_layers=2, density_mlp={"n_hidden": 2}, **vol))
    new = grow_model(old, small(latent_dim=8, latent_layers=2, density_mlp={"n_hidden": 2}, **vol), seed=3)
    assert new.field.latent_dim == 8 and new.codes.shape == (5, 8)
    assert torch.equal(new.codes[:, :4], old.codes) and new.codes[:, 4:].abs().min() > 0
    assert torch.equal(new.field.volume_mean, old.field.volume_mean)
    assert torch.equal(new.field.volume_basis[:4], old.field.volume_basis)
    assert not new.field.volume_basis[4:].any()
    assert max_output_diff(old, new) < 1e-5
    assert torch.equal(grow_model(old, small(latent_dim=8, latent_layers=2, density_mlp={"n_hidden": 2}, **vol),
                                  seed=3).codes, new.codes)  # deterministic
    x = torch.rand(256, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(256, 3), dim=1)
    f = new.field
    with f.code(new.codes[0]):
        sigma, rgb = f(x, d)
        (sigma.mean() + rgb.square().mean()).backward()
    assert f.volume_basis.grad[4:].abs().sum() > 0
    assert f.density_z.weight.grad[:, 4:].abs().sum() > 0 and f.color_z.weight.grad[:, 4:].abs().sum() > 0
    assert f.density_z_deep[0].weight.grad[:, 4:].abs().sum() > 0
