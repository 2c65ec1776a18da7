"""benchmarks/bench_twins.py and bench_prior_span.py, at tiny sizes: twins differ from their
subject only in the parameters drawn again, and bad arguments are refused by name."""
import dataclasses
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from pnerf_fast.data.lightstage import subject_params  # noqa: E402


def _flat(p) -> dict:
    return {f"{part}.{k}": v for part in ("shape", "appearance", "pose", "lighting")
            for k, v in dataclasses.asdict(getattr(p, part)).items()}


def test_twins_change_only_the_hidden_parameters():
    import bench_twins

    hidden = ("clothes", "hair_back", "hair_bottom")
    for i in range(72, 80):
        p = subject_params(0, i, "portrait")
        for k in range(3):
            t = bench_twins.twin_params(p, "portrait", hidden, 0, i, k)
            a, b = _flat(p), _flat(t)
            differ = {key for key in a if a[key] != b[key]}
            assert differ <= {"appearance.clothes", "shape.hair_back", "shape.hair_bottom"}, differ
            assert t.shape.hair_style == p.shape.hair_style
            assert "shape.hair_back" in differ  # drawn from a continuous range: always new
            if p.shape.hair_style in ("bob", "long"):
                assert "shape.hair_bottom" in differ
            assert bench_twins.twin_params(p, "portrait", hidden, 0, i, k) == t  # deterministic
        assert _flat(bench_twins.twin_params(p, "portrait", (), 0, i, 0)) == _flat(p)


def test_twins_scores_and_refusals():
    import torch

    import bench_twins

    threads = torch.get_num_threads()

    # twins identical to their subject: every PSNR is the cap, in every band
    r = bench_twins.run("portrait", twins=2, hidden=(), res=16, views=3, subjects=[73], workers=1, lpips=False,
                        progress=False)
    m = r["mean"]
    assert m["twin_front"]["psnr"] == bench_twins.PSNR_CAP and m["mean_of_twins"]["psnr"] == bench_twins.PSNR_CAP
    assert m["one_twin"]["psnr"] == bench_twins.PSNR_CAP
    # other hair cuts at the back: the novel views differ, and the mean of twins is a better guess than one twin
    r = bench_twins.run("portrait", twins=3, hidden=("hair_back", "cranium_back"), res=24, views=5, subjects=[73],
                        workers=1, lpips=False, progress=False)
    m = r["mean"]
    assert m["mean_of_twins"]["psnr"] < bench_twins.PSNR_CAP
    assert m["mean_of_twins"]["psnr"] > m["one_twin"]["psnr"]
    assert m["mean_of_twins"]["psnr_k_inf"] > m["mean_of_twins"]["psnr"]
    assert set(r["per_subject"]) == {"subject_073"} and r["per_subject"]["subject_073"]["hair_style"]
    assert torch.get_num_threads() == threads  # rendering in this process leaves the thread count alone
    for kw, match in (({"hidden": ("nose",)}, "--hidden"), ({"twins": 0}, "--twins"), ({"views": 1}, "--views"),
                      ({"style": "cartoon"}, "--style")):
        with pytest.raises(ValueError, match=match):
            bench_twins.run(**{"subjects": [73], "progress": False, **kw})


def test_twins_mean_is_the_pixel_mean():
    """twins_subject scores the pixel mean of the twins: two twins at +-d around the truth
    make a perfect mean (the cap), and one twin alone is off by d."""
    import bench_twins

    rng = np.random.default_rng(0)
    gt = rng.uniform(0.2, 0.8, (3, 12, 12, 3)).astype(np.float32)
    mask = np.ones((3, 12, 12), bool)
    twins = [(gt + 0.1, mask), (gt - 0.1, mask)]
    r = bench_twins.twins_subject(gt, mask, twins, [10.0, 30.0], lpips=False)
    assert r["mean_of_twins"]["psnr"] == pytest.approx(bench_twins.PSNR_CAP, abs=1e-3)
    assert r["one_twin"]["psnr"] == pytest.approx(20.0, abs=1e-3)  # MSE 0.01
    assert r["twin_front"]["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert set(r["mean_of_twins"]["by_angle"]) == {"0-20", "20-40"}


def test_prior_span_refuses_bad_arguments(capsys):
    import bench_prior_span

    for argv, word in ((["--rows", "nope"], "--rows"), (["--steps", "0"], "--steps"),
                       (["--scratch-seconds", "nan"], "--scratch-seconds"), (["--style", "x"], "--style"),
                       (["--init", "/nonexistent/prior.pt"], "--init")):
        if "--init" not in argv:
            argv = argv + ["--init", "latent"]
        with pytest.raises(SystemExit) as e:
            bench_prior_span.main(argv + ["--data", "/nonexistent/light/stage"])
        assert e.value.code == 2
        assert word in capsys.readouterr().err
