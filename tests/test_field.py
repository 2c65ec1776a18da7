from pathlib import Path

import pytest
import torch
import yaml

from pnerf_fast.field import FieldConfig, RadianceField, load_field_config, trunc_exp
from pnerf_fast.field.config import PACKAGE_CONFIGS, config_path, field_config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def rays(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g) * 3 - 1.5
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    return x, d


def test_presets_load_from_their_one_copy():
    for name in ("fast", "fast_latent", "paper"):
        cfg = load_field_config(name)
        assert isinstance(cfg, FieldConfig) and cfg.name == name
        assert config_path(name) == PACKAGE_CONFIGS / f"{name}.yaml"
    fast = load_field_config("fast")
    assert fast.encoding.type == "hashgrid" and fast.encoding.n_levels == 16 and fast.encoding.n_features == 2
    assert 15 <= fast.encoding.log2_table <= 19 and fast.density_mlp.geo_features == 16
    paper = load_field_config("paper")
    assert paper.encoding.n_freqs == 10 and paper.dir_encoding.n_freqs == 4
    assert paper.density_mlp.width == 256 and paper.density_mlp.n_hidden == 8 and paper.density_mlp.skips == [4]


def test_presets_have_one_copy():
    """The field presets live in pnerf_fast/configs/ only (the copy that ships in the
    package); the repository's configs/ holds the pretraining recipes, which name a preset
    and never repeat one."""
    presets = {p.name for p in PACKAGE_CONFIGS.glob("*.yaml")}
    assert {"fast.yaml", "fast_latent.yaml", "paper.yaml"} <= presets
    recipes = {p.name for p in (ROOT / "configs").glob("*.y*ml")}
    assert not presets & recipes, f"configs/ repeats the package presets {sorted(presets & recipes)}"
    for p in (ROOT / "configs").glob("*.yaml"):
        field = yaml.safe_load(p.read_text()).get("field")
        assert field is None or config_path(field) == PACKAGE_CONFIGS / f"{field}.yaml", p.name


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"encoding": {"n_levls": 16}}, "encoding.n_levls"),
        ({"colour_mlp": {}}, "colour_mlp"),
        ({"encoding": {"log2_table": 40}}, "encoding.log2_table"),
        ({"encoding": {"type": "frequency", "n_freqs": 4, "n_levels": 4}}, "encoding.n_levels"),
        ({"density": {"activation": "exp2"}}, "density.activation"),
        ({"backend": "cudnn"}, "backend"),
        ({"aabb": [0, 0, 0, 1, -1, 1]}, "aabb"),
        ({"density_mlp": {"width": "wide"}}, "density_mlp.width"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, patch, key):
    raw = yaml.safe_load((PACKAGE_CONFIGS / "fast.yaml").read_text())
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict) and "type" not in v:  # merge; a new type replaces
            raw[k].update(v)
        else:
            raw[k] = v
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        field_config_from_dict(raw)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_field_config(p)
    with pytest.raises(ValueError, match="preset"):
        load_field_config("fastest")


@pytest.mark.parametrize("name", ["fast", "paper"])
def test_field_shapes_groups_and_low_initial_density(C, name):
    torch.manual_seed(0)
    f = RadianceField(name)
    x, d = rays(256)
    sigma, rgb = f(x, d)
    assert sigma.shape == (256,) and rgb.shape == (256, 3)
    assert torch.all(rgb > 0) and torch.all(rgb < 1) and torch.all(sigma >= 0)
    assert sigma.mean() < 0.2  # exp(h - 3) with h ~ 0 at init: a nearly empty box
    torch.testing.assert_close(f.density(x), sigma)
    groups = f.param_groups()
    assert {id(p) for p in groups["grid"]}.isdisjoint({id(p) for p in groups["mlp"]})
    assert len(groups["grid"]) + len(groups["mlp"]) == len(list(f.parameters()))
    assert (len(groups["grid"]) == 1) == (name == "fast")
    (sigma.sum() + rgb.sum()).backward()
    assert all(p.grad is not None for p in groups["mlp"])


def test_field_backend_switch_same_outputs(C):
    torch.manual_seed(1)
    f = RadianceField("fast")
    with torch.no_grad():  # move the table off its tiny init so features matter
        f.encoding.params.normal_(0, 0.5)
    x, d = rays(500, seed=3)
    out = {}
    for be in ("torch", "fused"):
        f.set_backend(be)
        f.zero_grad()
        s, c = f(x, d)
        (s.sum() + (c * torch.arange(1.0, 4.0)).sum()).backward()
        out[be] = (s, c, f.encoding.params.grad.clone(), f.color_net.layers[0].weight.grad.clone())
    for a, b in zip(out["torch"], out["fused"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'backend'"):
        RadianceField("paper").set_backend("fused")


def test_trunc_exp_gradient_is_clamped():
    x = torch.tensor([0.0, 20.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, torch.exp(torch.tensor(15.0)).item()]))


def test_bad_inputs_name_the_argument():
    f = RadianceField("fast")
    with pytest.raises(ValueError, match="'x'"):
        f.density(torch.rand(4, 2))
    with pytest.raises(ValueError, match="'d'"):
        f(torch.rand(4, 3), torch.rand(5, 3))
