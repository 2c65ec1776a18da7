"""The preset sweep's search for the first snapshot over the target (benchmarks/bench_presets.py):
it must find what a scan from the start finds, with few evaluations, from any starting guess."""
import math
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from bench_presets import first_crossing, lr_factor, parse_setting, seed_summary, setting_of  # noqa: E402


def _scan(values, target):
    return next((i for i, v in enumerate(values) if v >= target), None)


@pytest.mark.parametrize("seed", range(40))
def test_first_crossing_matches_a_scan(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 300)
    values = sorted(rng.uniform(5.0, 30.0) for _ in range(n))  # a curve that crosses once
    values[0] = 5.0  # snapshot 0 is the untrained field, below the target
    target = rng.uniform(6.0, 32.0)
    calls = []

    def score(i):
        calls.append(i)
        return values[i]

    found = first_crossing(n, score, target, guess=rng.randint(-5, n + 5))
    want = _scan(values, target)
    if want is None:
        assert found is None
        return
    lo, hi, memo = found
    assert hi == want and lo == hi - 1
    assert memo[lo] < target <= memo[hi]
    assert all(memo[i] == values[i] for i in memo)
    assert len(set(calls)) == len(calls)  # no index scored twice
    assert len(calls) <= 2 * math.ceil(math.log2(n)) + 3


def test_first_crossing_from_a_good_guess_costs_few_scores():
    values = [5.0 + 0.1 * i for i in range(200)]  # crosses 24 at index 190
    calls = []

    def score(i):
        calls.append(i)
        return values[i]

    lo, hi, _ = first_crossing(200, score, 24.0, guess=190)
    assert (lo, hi) == (189, 190)
    assert sorted(calls) == [189, 190, 199]  # the last (is it reached at all?), the guess, the one before


def test_first_crossing_with_fewer_than_two_snapshots_is_none():
    assert first_crossing(1, lambda i: 30.0, 24.0, guess=0) is None
    assert first_crossing(0, lambda i: 30.0, 24.0, guess=0) is None


class _Errors:
    """argparse's ``error`` as an exception, to test parse_setting's refusals."""

    def error(self, msg):
        raise ValueError(msg)


def test_parse_setting_with_and_without_decay():
    ap = _Errors()
    assert parse_setting(ap, "256:2e-1/2e-2:0") == {"rays": 256, "lr": {"grid": 0.2, "mlp": 0.02}, "prune_train": False}
    s = parse_setting(ap, "32:1e-2/1e-3:1:0.1@200")
    assert s["prune_train"] is True and s["decay"] == (0.1, 200)
    for bad in ("256:2e-1/2e-2:0:0.1", "256:2e-1/2e-2:0:0@10", "256:2e-1/2e-2:0:0.5@0", "256:2e-1/2e-2:0:1@2:3",
                "256:2e-1/2e-2:2", "0:2e-1/2e-2:0", "256:inf/2e-2:0"):
        with pytest.raises(ValueError, match="--pair/--seeds-of"):
            parse_setting(ap, bad)


def test_lr_factor_decays_to_its_factor_and_holds():
    assert lr_factor(None, 50) == 1.0
    assert lr_factor((0.1, 100), 0) == 1.0
    assert math.isclose(lr_factor((0.1, 100), 50), 0.1 ** 0.5)
    assert math.isclose(lr_factor((0.1, 100), 100), 0.1)
    assert math.isclose(lr_factor((0.1, 100), 400), 0.1)
    vals = [lr_factor((0.25, 30), k) for k in range(40)]
    assert all(a > b for a, b in zip(vals[:30], vals[1:31]))


def test_setting_of_a_row_keeps_what_the_fit_used():
    row = {"rays": 256, "lr": {"grid": 0.2, "mlp": 0.02}, "prune_train": False, "color_alive": False,
           "decay": (0.1, 100), "seed": 3, "ms_per_step": 20.0}
    assert setting_of(row) == {k: row[k] for k in ("rays", "lr", "prune_train", "color_alive", "decay")}
    assert setting_of({"rays": 32, "lr": {"grid": 1.0, "mlp": 1e-3}, "prune_train": True, "seed": 0}) == \
        {"rays": 32, "lr": {"grid": 1.0, "mlp": 1e-3}, "prune_train": True}


def test_seeds_of_and_pair_are_refused_before_any_data_is_read(capsys):
    import bench_presets

    for argv in (["--seeds-of", "nope", "256:2e-1/2e-2:0"], ["--seeds-of", "fast", "256:2e-1"],
                 ["--seeds-of", "fast", "256:2e-1/2e-2:0", "--pair", "256:2e-1/2e-2:0", "32:1e-2/1e-3:0"]):
        with pytest.raises(SystemExit) as e:
            bench_presets.main(argv + ["--data", "/nonexistent/light/stage"])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds-of: PRESET" in err and "a setting is RAYS" in err and "give one of them" in err


def test_seed_summary_counts_misses_and_averages_the_rest():
    rows = [{"s_to_target": 1.0, "ms_per_step": 20.0, "steps_to_target": 50},
            {"s_to_target": None, "ms_per_step": 21.0, "steps_to_target": None},
            {"s_to_target": 3.0, "ms_per_step": 22.0, "steps_to_target": 120},
            {"s_to_target": 1.5, "ms_per_step": 19.0, "steps_to_target": 70}]
    s = seed_summary(rows)
    assert s["s_to_target"] == [1.0, 3.0, 1.5] and s["missed"] == 1
    assert math.isclose(s["mean_s"], 5.5 / 3) and s["median_s"] == 1.5
    assert s["ms_per_step"] == [20.0, 21.0, 22.0, 19.0] and s["steps_to_target"] == [50, None, 120, 70]
    empty = seed_summary([{"s_to_target": None, "ms_per_step": 1.0, "steps_to_target": None}])
    assert empty["mean_s"] is None and empty["median_s"] is None and empty["missed"] == 1
