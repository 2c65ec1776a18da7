"""The preset sweep's search for the first snapshot over the target (benchmarks/bench_presets.py):
it must find what a scan from the start finds, with few evaluations, from any starting guess."""
import math
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from bench_presets import first_crossing  # noqa: E402


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
