"""scripts/floor_prior.py: the classic prior's lowered floor (configs/pretrain_latent_floor.yaml).
`init` keeps a prior's first codes and lowers its grid's floor as finetune.grid_down does;
`merge` puts a run's codes back among the prior's others, with its weights and grid."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pnerf_fast.train.model import PortraitModel

from test_fidelity import latent_prior  # noqa: F401  (fixture)
from test_train import tiny  # noqa: F401  (fixture)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "floor_prior.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_init_then_merge(latent_prior, tmp_path):  # noqa: F811
    prior = PortraitModel.load(latent_prior, "cpu")
    n = len(prior.codes)
    assert n >= 2
    k = n - 1
    r = run("init", latent_prior, tmp_path / "init.pt", "--subjects", k, "--drop", 0.5)
    assert r.returncode == 0, r.stderr
    init = PortraitModel.load(tmp_path / "init.pt", "cpu")
    assert torch.equal(init.codes, prior.codes[:k])
    expect = PortraitModel.load(latent_prior, "cpu")
    expect.lower_grid_floor_(0.5)
    assert init.grid.geometry == expect.grid.geometry and init.cfg.grid.floor_drop == pytest.approx(0.5)
    assert torch.equal(init.grid.bits, expect.grid.bits)

    # a "trained" run: other weights and codes for its k subjects
    with torch.no_grad():
        for p in init.field.parameters():
            p.add_(0.1)
        init.codes = init.codes + 1.0
    init.save(tmp_path / "trained.pt")
    r = run("merge", tmp_path / "trained.pt", latent_prior, tmp_path / "merged.pt")
    assert r.returncode == 0, r.stderr
    m = PortraitModel.load(tmp_path / "merged.pt", "cpu")
    assert m.codes.shape == prior.codes.shape
    assert torch.equal(m.codes[:k], init.codes) and torch.equal(m.codes[k:], prior.codes[k:])
    assert torch.allclose(m.field.latent, m.codes.mean(0))
    for (name, a), b in zip(m.field.state_dict().items(), init.field.state_dict().values()):
        if name != "latent":
            assert torch.equal(a, b), name
    assert m.grid.geometry == init.grid.geometry and m.cfg.grid.floor_drop == pytest.approx(0.5)


@pytest.mark.parametrize("args,needle", [
    (["--subjects", "0"], "--subjects"),
    (["--subjects", "1", "--drop", "0"], "--drop"),
])
def test_init_refuses_bad_arguments(latent_prior, tmp_path, args, needle):  # noqa: F811
    r = run("init", latent_prior, tmp_path / "x.pt", *args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.pt").exists()


def test_a_missing_prior_is_named(tmp_path):
    r = run("merge", tmp_path / "none.pt", tmp_path / "none2.pt", tmp_path / "out.pt")
    assert r.returncode == 2 and "none.pt" in r.stderr and "Traceback" not in r.stderr
