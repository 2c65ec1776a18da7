"""The extension's environment switches (csrc/ops/checks.cpp: env_switch): each is read once,
when first used, in a fresh process; 1/true/yes turn it on, 0/off/false off, anything else
(or unset) leaves its default."""
import json
import os
import subprocess
import sys

import pytest

PROBE = ("import json; import torch; from pnerf_fast import _C; print(json.dumps([_C.debug_checks(), _C.huge_page_outputs(), "
         "_C.hashgrid_simd_enabled(), _C.hashgrid_simd_supported()]))")
NAMES = ("PNERF_DEBUG_CHECKS", "PNERF_HUGEPAGES", "PNERF_SIMD")


def _probe(**env):
    e = {k: v for k, v in os.environ.items() if k not in NAMES}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults():
    debug, huge, simd, supported = _probe()
    assert (debug, huge) == (False, True)
    assert simd == supported  # on wherever the CPU has it


@pytest.mark.parametrize("value,want", [("1", True), ("true", True), ("yes", True),
                                        ("0", False), ("off", False), ("false", False), ("maybe", None), ("", None)])
def test_values(value, want):
    debug, huge, simd, supported = _probe(PNERF_DEBUG_CHECKS=value, PNERF_HUGEPAGES=value, PNERF_SIMD=value)
    # None: an unrecognised value leaves each switch's default (debug off, the others on)
    assert debug == (False if want is None else want)
    assert huge == (True if want is None else want)
    assert simd == ((True if want is None else want) and supported)
