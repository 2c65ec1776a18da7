"""scripts/gpu_check.sh, tested where there is no GPU: its syntax, and its --cpu-dry-run,
which runs every step (build reuse, the CUDA tests, the kernel, field and end-to-end
benchmarks) on the CPU with tiny sizes and writes them under one folder."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")


def test_syntax():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


def test_cpu_dry_run_writes_every_output(C, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    r = subprocess.run(["bash", SCRIPT, "--cpu-dry-run", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    for step in ("build", "tests", "kernels", "field", "e2e"):
        assert any(line.startswith(step) and line.rstrip().endswith("ok") for line in summary.splitlines()), summary
    assert "passed" in summary.splitlines()[-1]
    kernels = json.loads((tmp_path / "kernels.json").read_text())
    assert kernels["march_fwd"]["ours_ms"] > 0 and kernels["_meta"]["device"] == "cpu"
    assert json.loads((tmp_path / "field.json").read_text())["mlp_fwd_bwd"]["ours_ms"] > 0
    e2e = json.loads((tmp_path / "e2e.json").read_text())
    assert e2e["render"]["fps"] > 0 and e2e["finetune"]["seconds"] > 0
    log = (tmp_path / "tests.log").read_text()
    import torch

    if not torch.cuda.is_available():
        assert "no CUDA device" in log  # skipped, with the reason


def test_without_a_gpu_it_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "torch.cuda.is_available() is False" in (tmp_path / "summary.txt").read_text()
