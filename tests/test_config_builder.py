"""The one typed builder (pnerf_fast/_config.py) that makes the training, field and render
configs from mappings: unknown keys, wrong types and nested sections are named by their
path, the same way in all three."""
import pytest

from pnerf_fast._config import build_config
from pnerf_fast.field.config import field_config_from_dict
from pnerf_fast.render.renderer import RenderConfig
from pnerf_fast.train.config import FinetuneConfig, GroupLR, TrainConfig, config_from_dict


@pytest.mark.parametrize("make, raw, message", [
    (config_from_dict, {"meta": {"alpha": {"grd": 1}}}, r"^config: meta\.alpha\.grd: unknown key \(allowed: grid, latent, mlp\)"),
    (config_from_dict, {"grid": None}, r"^config: grid: must be a mapping, got NoneType"),
    (config_from_dict, {"grid": {"hull": 1}}, r"^config: grid\.hull: must be true or false, got 1"),
    (config_from_dict, {"meta": {"epochs": 2.5}}, r"^config: meta\.epochs: must be an integer, got 2\.5"),
    (config_from_dict, [1, 2], r"^config: top level: must be a mapping, got list"),
    (field_config_from_dict, {"colour_mlp": {}}, r"^field config: colour_mlp: unknown key"),
    (field_config_from_dict, {"density_mlp": {"width": "wide"}}, r"^field config: density_mlp\.width: must be an integer"),
    (field_config_from_dict, {"density": 3}, r"^field config: density: must be a mapping, got int"),
    (RenderConfig.from_dict, {"stp": 0.1}, r"^render config: stp: unknown key"),
    (RenderConfig.from_dict, {"step": "fast"}, r"^render config: step: must be a number, got 'fast'"),
    (RenderConfig.from_dict, {"step": 0}, r"^render config: step: must be a finite number > 0"),
])
def test_bad_values_are_named_by_their_path(make, raw, message):
    with pytest.raises(ValueError, match=message):
        make(raw)


def test_nested_sections_numbers_and_optional_sections():
    cfg = config_from_dict({"meta": {"epochs": 1e3, "alpha": {"grid": 5}}, "finetune": {"lr": None},
                            "render": {"step": 0.05}})
    assert isinstance(cfg, TrainConfig) and cfg.meta.epochs == 1000 and isinstance(cfg.meta.epochs, int)
    assert cfg.meta.alpha == GroupLR(5.0, GroupLR().mlp) and isinstance(cfg.meta.alpha.grid, float)
    assert cfg.finetune.lr is None and cfg.render_config().step == 0.05
    assert build_config(FinetuneConfig, {"lr": {"mlp": 1}}, "x").lr == GroupLR(mlp=1.0)
    assert build_config(RenderConfig, {}, "render config") == RenderConfig()


def test_a_config_file_can_start_from_a_base(tmp_path):
    """``base: OTHER.yaml``: the other file first, then this one's keys over it, section by
    section; a base that leads back to itself, or is no path, is refused by name."""
    from pnerf_fast.train.config import load_train_config

    (tmp_path / "a.yaml").write_text("method: latent\nfinetune:\n  steps: 7\n  lr: {grid: 0.5, mlp: 0.2}\n  spread: 0.3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nfinetune:\n  lr: {grid: 0.1}\n  spread_stop: 0.5\n")
    cfg = load_train_config(tmp_path / "b.yaml")
    assert cfg.method == "latent"
    assert (cfg.finetune.steps, cfg.finetune.spread, cfg.finetune.spread_stop) == (7, 0.3, 0.5)
    assert (cfg.finetune.lr.grid, cfg.finetune.lr.mlp) == (0.1, 0.2)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ValueError, match=r"c\.yaml: base: c\.yaml leads back to itself"):
        load_train_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: 3\n")
    with pytest.raises(ValueError, match=r"d\.yaml: base: must be the path"):
        load_train_config(tmp_path / "d.yaml")
    (tmp_path / "f.yaml").write_text("- 1\n")
    (tmp_path / "g.yaml").write_text("base: f.yaml\n")
    with pytest.raises(ValueError, match=r"f\.yaml \(the base of .*g\.yaml\): top level: must be a mapping"):
        load_train_config(tmp_path / "g.yaml")
    (tmp_path / "e.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_train_config(tmp_path / "e.yaml")
