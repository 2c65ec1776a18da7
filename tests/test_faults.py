"""Faults (issue 15 part 4): `pnerf pretrain` killed with SIGKILL mid-run resumes, loses at
most one checkpoint interval and ends bit-identical to an uninterrupted run (same thread
count); a NaN or infinite loss (or gradient) in pretraining or finetuning is skipped with a
warning, MAX_BAD_STEPS in a row stop the run with NonFiniteLossError (exit code 2 from the
CLI), and no NaN ever reaches a checkpoint."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml

from pnerf_fast.cli import main as cli_main
from pnerf_fast.train import finetune as finetune_mod
from pnerf_fast.train import pretrain as pretrain_mod
from pnerf_fast.train.config import load_train_config
from pnerf_fast.train.finetune import finetune
from pnerf_fast.train.model import PortraitModel
from pnerf_fast.train.pretrain import MAX_BAD_STEPS, NonFiniteLossError, pretrain

from test_train import TINY_FIELD, tiny_stage  # noqa: E402  (the tests' tiny field and stage)
STEPS = 60  # joint steps of the kill test


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = tiny_stage(root / "stage")
    (root / "field.yaml").write_text(yaml.safe_dump(TINY_FIELD))
    cfg = {"method": "joint", "field": str(root / "field.yaml"), "rays_per_step": 96, "image_scale": 1.0, "seed": 0,
           "render": {"step": 0.05}, "grid": {"res": 16, "update_every": 1, "warmup_updates": 0},
           "joint": {"steps": STEPS}, "finetune": {"steps": 8, "rays_per_step": 128},
           # a checkpoint at every step boundary: one interval is one step
           "checkpoint_every_s": 0.0}
    (root / "joint.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "data": data}


def quiet(*a, **k):
    pass


# ---------------------------------------------------------------------------- kill -9
class _Reader(threading.Thread):
    """Collects a pipe's bytes as they come."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.data, self.lock = pipe, b"", threading.Lock()
        self.start()

    def run(self):
        for chunk in iter(lambda: self.pipe.read1(4096), b""):
            with self.lock:
                self.data += chunk

    def text(self) -> str:
        with self.lock:
            return self.data.decode(errors="replace")


def _visits_shown(text: str) -> int:
    """The last step count the progress bar printed (it prints after each completed step)."""
    counts = [int(m) for m in re.findall(rf"(\d+)/{STEPS}\b", text)]
    return max(counts, default=0)


def test_kill_9_mid_pretrain_then_resume_is_bit_identical(tiny, tmp_path, one_thread):
    root, data = tiny["root"], tiny["data"]
    cfg = load_train_config(root / "joint.yaml")
    # The uninterrupted run, at one thread like the subprocesses.
    pretrain(data, tmp_path / "ref.pt", cfg, progress=False, log=quiet)
    out = tmp_path / "cut.pt"
    resume = tmp_path / "cut.pt.resume"
    cmd = [sys.executable, "-m", "pnerf_fast.cli", "pretrain", "--data", str(data), "--config",
           str(root / "joint.yaml"), "--out", str(out)]
    # One thread, and a progress line after every step (what the test reads).
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_MININTERVAL="0", TQDM_MINITERS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reader = _Reader(proc.stderr)
    try:
        deadline = time.monotonic() + 120
        while _visits_shown(reader.text()) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"finished or failed before it could be killed: {reader.text()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)  # everything it printed (tqdm flushes each update) up to the kill
    done = _visits_shown(reader.text())
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    st = torch.load(resume, weights_only=True)  # complete, loadable: written atomically
    saved = st["extra"]["progress"]["visits"]
    assert 0 < done < STEPS
    # At most one checkpoint interval lost: with a checkpoint after every step, the step
    # in flight (or whose checkpoint was being written) at the kill.
    assert done - 1 <= saved <= done
    # Resume to the end (a temporary file of a save cut by the kill is cleaned up).
    res = subprocess.run(cmd + ["--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from {resume}: {saved} visits" in res.stdout
    assert not resume.exists() and not list(tmp_path.glob("*.tmp"))
    a, b = PortraitModel.load(tmp_path / "ref.pt"), PortraitModel.load(out)
    for (name, p), q in zip(a.field.named_parameters(), b.field.parameters()):
        assert torch.equal(p, q), name
    for (name, p), q in zip(a.grid.state_dict().items(), b.grid.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.load(out, weights_only=True)["extra"]["progress"]["visits"] == STEPS


# ---------------------------------------------------------------------------- NaN losses
def _nan_on(calls: set, real, kind="loss"):
    """A ray_loss that returns NaN (or a finite loss with a NaN gradient) on the given calls."""
    count = [0]

    def f(*a, **k):
        loss = real(*a, **k)
        count[0] += 1
        if count[0] in calls:
            if kind == "loss":
                return loss * float("nan")
            return loss + torch.sqrt(0.0 * loss)  # value unchanged; d sqrt(0) = inf -> NaN gradients
        return loss
    return f


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_pretrain_skips_a_few_nan_steps_and_saves_finite_weights(tiny, tmp_path, monkeypatch, one_thread, kind):
    cfg = load_train_config(tiny["root"] / "joint.yaml", {"joint": {"steps": 6}})
    monkeypatch.setattr(pretrain_mod, "ray_loss", _nan_on({2, 3, 5}, pretrain_mod.ray_loss, kind))
    with pytest.warns(RuntimeWarning, match=f"the {kind} is NaN or infinite, the step is skipped") as rec:
        res = pretrain(tiny["data"], tmp_path / "p.pt", cfg, progress=False, log=quiet)
    assert sum("skipped" in str(w.message) for w in rec) == 3
    assert res.visits == 6
    st = torch.load(tmp_path / "p.pt", weights_only=True)
    assert all(bool(torch.isfinite(t).all()) for t in st["field_state"].values() if t.is_floating_point())
    PortraitModel.load(tmp_path / "p.pt")  # which itself refuses non-finite weights


@pytest.mark.parametrize("batch", [1, 2])
def test_meta_pretrain_skips_nan_inner_steps_and_stops_on_repeated_ones(tiny, tmp_path, monkeypatch, one_thread,
                                                                         batch):
    """The sequential meta loop (batch 1) and the batched update (batch 2, the distributed
    code path in one process): 2 subjects x 2 epochs x 3 inner steps."""
    over = {"method": "meta", "meta": {"epochs": 2, "n_support": 1, "n_query": 2, "batch": batch}}
    cfg = load_train_config(tiny["root"] / "joint.yaml", over)
    real = pretrain_mod.ray_loss
    monkeypatch.setattr(pretrain_mod, "ray_loss", _nan_on({2, 3, 5}, real))
    with pytest.warns(RuntimeWarning, match="the loss on subject subject_00[01] is NaN") as rec:
        res = pretrain(tiny["data"], tmp_path / "m.pt", cfg, progress=False, log=quiet)
    assert sum("skipped" in str(w.message) for w in rec) == 3 and res.visits == 4
    PortraitModel.load(tmp_path / "m.pt")  # finite
    monkeypatch.setattr(pretrain_mod, "ray_loss", _nan_on(set(range(2, 100)), real))
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="in a row"):
        pretrain(tiny["data"], tmp_path / "m2.pt", cfg, progress=False, log=quiet)
    assert not (tmp_path / "m2.pt").exists()


def test_pretrain_stops_after_repeated_nan_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch,
                                                                                one_thread, capsys):
    calls = set(range(3, 100))  # step 1 and 2 are fine, then every loss is NaN
    monkeypatch.setattr(pretrain_mod, "ray_loss", _nan_on(calls, pretrain_mod.ray_loss))
    out = tmp_path / "p.pt"
    with pytest.warns(RuntimeWarning):
        rc = cli_main(["pretrain", "--data", str(tiny["data"]), "--config", str(tiny["root"] / "joint.yaml"),
                       "--out", str(out), "--steps", "20", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pnerf pretrain: error:") and "NaN" in err[0]
    assert f"{MAX_BAD_STEPS} steps in a row" in err[0]
    assert not out.exists()
    st = torch.load(str(out) + ".resume", weights_only=True)  # the checkpoints it wrote are finite
    assert st["extra"]["progress"]["visits"] == 2 + MAX_BAD_STEPS - 1  # written at every step before the stop
    assert all(bool(torch.isfinite(t).all()) for t in st["field_state"].values() if t.is_floating_point())
    assert issubclass(NonFiniteLossError, ValueError)


def test_pretrain_refuses_to_save_non_finite_weights(tiny, tmp_path, monkeypatch, one_thread):
    """The last line of defence: should the weights become NaN anyway, nothing is written."""
    cfg = load_train_config(tiny["root"] / "joint.yaml", {"joint": {"steps": 2}})
    real_step = torch.optim.Adam.step

    def poisoned(self, *a, **k):
        out = real_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return out
    monkeypatch.setattr(torch.optim.Adam, "step", poisoned)
    with pytest.raises(NonFiniteLossError, match="they were not saved"):
        pretrain(tiny["data"], tmp_path / "p.pt", cfg, progress=False, log=quiet)
    assert not (tmp_path / "p.pt").exists() and not (tmp_path / "p.pt.resume").exists()


@pytest.fixture(scope="module")
def random_prior(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("prior") / "random.pt"
    pretrain(tiny["data"], path, load_train_config(tiny["root"] / "joint.yaml", {"method": "random"}),
             progress=False, log=quiet)
    return path


def _nan_render(calls: set, real):
    count = [0]

    def f(*a, **k):
        out = real(*a, **k)
        count[0] += 1
        return out._replace(rgb=out.rgb * float("nan")) if count[0] in calls else out
    return f


def test_finetune_skips_a_few_nan_steps(tiny, random_prior, monkeypatch, one_thread):
    monkeypatch.setattr(finetune_mod, "render_rays", _nan_render({2, 4}, finetune_mod.render_rays))
    with pytest.warns(RuntimeWarning, match="finetune: step [24]: the loss is NaN") as rec:
        portrait = finetune(tiny["data"] / "subject_000", init=random_prior, steps=8, progress=False)
    assert sum("skipped" in str(w.message) for w in rec) == 2
    assert portrait.info["steps"] == 8
    assert all(bool(torch.isfinite(p).all()) for p in portrait.model.field.parameters())
    assert torch.isfinite(torch.tensor(portrait.info["frontal_psnr"]))


def test_finetune_stops_after_repeated_nan_with_exit_code_2(tiny, random_prior, tmp_path, monkeypatch, one_thread,
                                                            capsys):
    real = finetune_mod.render_rays
    monkeypatch.setattr(finetune_mod, "render_rays", _nan_render(set(range(2, 100)), real))
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match=f"{MAX_BAD_STEPS} steps in a row"):
        finetune(tiny["data"] / "subject_000", init=random_prior, steps=20, progress=False)
    monkeypatch.setattr(finetune_mod, "render_rays", _nan_render(set(range(1, 100)), real))
    out = tmp_path / "portrait.pt"
    with pytest.warns(RuntimeWarning):
        rc = cli_main(["finetune", str(tiny["data"] / "subject_000"), "--init", str(random_prior), "--out", str(out),
                       "--steps", "20", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pnerf finetune: error:") and "NaN" in err[0]
    assert not out.exists()
