"""``device`` flows from the API and the CLI to every tensor.

There is no GPU here, so the requested device is made distinguishable from the CPU in
two ways:
- the ``meta`` device: the resolver is patched to hand out ``meta``, and what can run on
  meta (loading a checkpoint, the renderer's ray and output allocation) must put every
  tensor there;
- a device-recording mode for what cannot run on meta (finetune, pretraining: native
  kernels): the patched resolver hands out ``meta``, a TorchFunctionMode records every
  tensor that pnerf_fast code creates and runs it on the CPU instead. A creation site
  that passes no device (torch's CPU default) or a literal string ("cpu", a parameter's
  default that nobody overrode) is a violation; sites that pass the requested device (or
  the device of a tensor that has it) are fine, and the requested device must be seen
  in the data, finetune and training code.
The resolver itself and the CLI's --device errors are tested directly.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch.overrides import TorchFunctionMode

import pnerf_fast
from pnerf_fast import _device
from pnerf_fast.cli import main as pnerf
from pnerf_fast.data.format import load_subject
from pnerf_fast.render import renderer as renderer_mod
from pnerf_fast.geometry.cameras import Camera, look_at, pixel_rays
from pnerf_fast.render.renderer import RenderOutput, render_image
from pnerf_fast.train.finetune import ASSETS, default_prior_path, finetune
from pnerf_fast.train.model import PortraitField, PortraitModel

PKG = str(Path(pnerf_fast.__file__).resolve().parent) + os.sep
OVERRIDES = str(Path(torch.__file__).resolve().parent / "overrides.py")
FAKE = torch.device("meta")
REAL_RESOLVE = _device.resolve_device
REAL_GENERATOR = torch.Generator

# Host-side by design: the visual hull projects the grid's cell centres through the
# numpy cameras once per fit; its result is moved to the grid's device (train/hull.py).
HOST_SIDE = ("train/hull.py",)


# ----------------------------------------------------------------------------- the resolver

def _no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _fake_gpus(monkeypatch, count=2, kernels=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr("pnerf_fast._native.has_cuda_kernels", lambda: kernels)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CUDA", "cuda:", "cuda:-1", "meta", "", " cpu", "mps", "cpu:0"])
def test_bad_device_strings_are_refused_naming_the_argument(bad):
    with pytest.raises(ValueError, match=r"argument 'device': must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        _device.resolve_device(bad)
    with pytest.raises(ValueError, match="argument --device: must be"):
        _device.resolve_device(bad, "--device")


@pytest.mark.parametrize("bad", [0, 1.5, ["cpu"], True])
def test_non_strings_are_refused(bad):
    with pytest.raises(ValueError, match="argument 'device'"):
        _device.resolve_device(bad)


def test_cpu_only_machine_gets_the_cpu_silently_and_a_clear_error_for_cuda(monkeypatch):
    _no_gpu(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all on the CPU path
        assert _device.resolve_device("auto") == torch.device("cpu")
        assert _device.resolve_device(None) == torch.device("cpu")
        assert _device.resolve_device("cpu") == torch.device("cpu")
        assert _device.resolve_device(torch.device("cpu")) == torch.device("cpu")
    for cuda in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ValueError, match="argument 'device': 'cuda.*no CUDA device"):
            _device.resolve_device(cuda)


def test_auto_picks_cuda_only_with_a_gpu_and_cuda_kernels(monkeypatch):
    _fake_gpus(monkeypatch, kernels=True)
    assert _device.resolve_device("auto") == torch.device("cuda", 0)
    assert _device.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert _device.resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"2 CUDA device\(s\)"):
        _device.resolve_device("cuda:2")
    _fake_gpus(monkeypatch, kernels=False)
    assert _device.resolve_device("auto") == torch.device("cpu")  # no CUDA kernels: auto stays on the CPU


def test_backend_info_reports_the_auto_device(monkeypatch):
    _no_gpu(monkeypatch)
    assert pnerf_fast.backend_info()["device"] == "cpu"
    _fake_gpus(monkeypatch, kernels=True)
    assert pnerf_fast.backend_info()["device"] == "cuda:0"


def test_backend_info_from_the_shell_names_a_device():
    r = subprocess.run([sys.executable, "-c", "import pnerf_fast; print(pnerf_fast.backend_info()['device'])"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    want = "cuda:0" if torch.cuda.is_available() and pnerf_fast._native.has_cuda_kernels() else "cpu"
    assert r.stdout.strip().splitlines()[-1] == want


# ----------------------------------------------------------------------------- the CLI

COMMANDS = {
    "finetune": ["finetune", "{d}/subject", "--out", "{d}/o.pt", "--quiet"],
    "render": ["render", "{d}/p.pt", "--out", "{d}/o.gif", "--quiet"],
    "export": ["export", "{d}/p.pt", "--mesh", "{d}/m.ply", "--quiet"],
    "view": ["view", "{d}/p.pt", "--quiet"],
    "eval": ["eval", "--data", "{d}/data", "--quiet"],
    "pretrain": ["pretrain", "--data", "{d}/data", "--out", "{d}/o.pt", "--quiet"],
    "demo": ["demo", "--out", "{d}/demo", "--quiet"],
}


def _cli(argv, capsys):
    capsys.readouterr()
    code = pnerf([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def test_every_computing_command_has_device():
    from pnerf_fast.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    have = {name for name, p in sub.choices.items() if any("--device" in a.option_strings for a in p._actions)}
    assert have == set(COMMANDS)  # align (MediaPipe), lightstage, info: no torch computation of ours to place


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
@pytest.mark.parametrize("value,want", [("gpu", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
                                        ("cuda:x", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
                                        ("cuda", "no CUDA device")])
def test_cli_bad_device_is_one_line_and_exit_2(cmd, value, want, tmp_path, capsys, monkeypatch):
    _no_gpu(monkeypatch)
    argv = [a.replace("{d}", str(tmp_path)) for a in COMMANDS[cmd]] + ["--device", value]
    code, out, lines = _cli(argv, capsys)
    assert code == 2, (code, out, lines)
    assert len(lines) == 1 and "Traceback" not in out, lines
    assert lines[0].startswith(f"pnerf {cmd}: error: argument --device: "), lines[0]
    assert want in lines[0]
    assert not list(tmp_path.iterdir())  # refused before anything was read or written


def test_cli_cuda_on_a_cpu_only_machine_in_a_fresh_process(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pnerf_fast.cli", "render", str(tmp_path / "p.pt"), "--out",
                        str(tmp_path / "o.gif"), "--device", "cuda"], capture_output=True, text=True, env=env,
                       timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("pnerf render: error: argument --device: 'cuda'"), lines[0]


def test_cli_passes_the_device_to_the_api(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_finetune(source, **kw):
        seen.append(kw["device"])
        raise ValueError("stop here")

    monkeypatch.setattr("pnerf_fast.api.finetune", fake_finetune)
    code, _, lines = _cli(["finetune", str(tmp_path / "s"), "--out", str(tmp_path / "o.pt"), "--device", "cpu",
                           "--quiet"], capsys)
    assert code == 2 and lines == ["pnerf finetune: error: stop here"]
    assert seen == [torch.device("cpu")]


# ----------------------------------------------------------------------------- the fake device


@pytest.fixture
def fake_device(monkeypatch):
    """Every resolve_device in pnerf_fast hands out the meta device; the arguments it was
    asked with are recorded."""
    asked = []

    def resolve(device="auto", arg="device"):
        REAL_RESOLVE(device if device != FAKE else "cpu", arg)  # still validated
        asked.append(device)
        return FAKE

    patched = 0
    for name, mod in list(sys.modules.items()):
        if name.startswith("pnerf_fast") and getattr(mod, "resolve_device", None) is REAL_RESOLVE:
            monkeypatch.setattr(mod, "resolve_device", resolve)
            patched += 1
    assert patched >= 4
    return asked


class Recorder(TorchFunctionMode):
    """Runs tensors asked for on ``meta`` on the CPU, and records, per pnerf_fast source
    line, the device every tensor factory was given there."""

    FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.rand, torch.randn, torch.randint,
                 torch.randperm, torch.arange, torch.tensor, torch.as_tensor, torch.linspace, torch.eye,
                 torch.from_numpy}

    def __init__(self):
        super().__init__()
        self.sites: dict[str, set] = {}

    @staticmethod
    def _site(depth=2):
        """The pnerf_fast line that called the torch function (None: a call from torch
        itself, a test, tqdm, ...); "init" for a module's constructor (parameters and
        buffers are made on the CPU there and the module is moved as a whole)."""
        f = sys._getframe(depth)
        while f is not None and (f.f_code.co_filename == __file__ or f.f_code.co_filename.startswith(OVERRIDES)):
            f = f.f_back
        if f is None or not f.f_code.co_filename.startswith(PKG):
            return None
        if f.f_code.co_name == "__init__" and isinstance(f.f_locals.get("self"), torch.nn.Module):
            return "init"
        return f"{f.f_code.co_filename[len(PKG):]}:{f.f_lineno}"

    @staticmethod
    def _cpu(x):
        return torch.device("cpu") if (x == FAKE if isinstance(x, torch.device) else x == "meta") else x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.FACTORIES and not (func in (torch.as_tensor, torch.tensor) and args
                                           and isinstance(args[0], torch.Tensor) and "device" not in kwargs):
            site = self._site()
            if site not in (None, "init"):
                d = kwargs.get("device")
                kind = ("none" if d is None else "str:" + d if isinstance(d, str)
                        else "requested" if d == FAKE else f"tensor's ({d})")
                self.sites.setdefault(site, set()).add(kind)
        if "device" in kwargs:
            kwargs["device"] = self._cpu(kwargs["device"])
        args = tuple(self._cpu(a) if isinstance(a, (torch.device, str)) else a for a in args)
        return func(*args, **kwargs)

    def violations(self):
        return {s: k for s, k in self.sites.items()
                if any(x == "none" or x.startswith("str:") for x in k) and not s.startswith(HOST_SIDE)}

    def requested_in(self, path: str) -> bool:
        return any(s.startswith(path + ":") and "requested" in k for s, k in self.sites.items())


@pytest.fixture
def generators(monkeypatch):
    """torch.Generator, recording the device each one pnerf_fast makes is asked for."""
    made = []  # the device asked for: FAKE, a tensor's or generator's device, or "cpu" when none was given

    class RecordingGenerator(REAL_GENERATOR):  # a subclass: torch's own annotations still see a class
        def __new__(cls, device="cpu"):
            if Recorder._site(1) not in (None, "init"):
                made.append(device)
            return super().__new__(cls, device=Recorder._cpu(device))

        def __init__(self, device="cpu"):
            pass

    monkeypatch.setattr(torch, "Generator", RecordingGenerator)
    return made


@pytest.fixture(scope="module")
def prior():
    """The shipped latent prior on the CPU (module-scoped: made before any patch)."""
    return PortraitModel.load(default_prior_path(), "cpu")


def _prior(prior):
    model = copy.deepcopy(prior)
    fc = model.cfg.finetune
    # exercise every tensor-making path of a fit: the code stage on few rays, mirrored
    # rays, the opacity penalty on the cells the cover adds, the depth spread (per-sample
    # values), a grid refresh (every 32 steps)
    fc.code_rays, fc.empty_reg, fc.mirror_radius = 32, 0.1, 1.35
    fc.spread = 0.1
    return model


@pytest.fixture(scope="module")
def subject():
    return load_subject(ASSETS / "demo_subject")


def test_finetune_creates_every_tensor_on_the_requested_device(subject, prior, fake_device, generators):
    rec = Recorder()
    with rec:
        pf = finetune(subject, init=_prior(prior), steps=32, code_steps=2, rays_per_step=32, mirror=0.25,
                      progress=False, device="cpu")
    assert fake_device and fake_device[0] == "cpu"      # the user's argument reached the resolver
    assert generators and all(g == FAKE for g in generators), generators  # one: the fit's
    bad = rec.violations()
    assert not bad, f"tensors made off the requested device (site: devices given): {bad}"
    for path in ("train/data.py", "train/finetune.py", "ops/occgrid.py"):
        assert rec.requested_in(path), f"no tensor in {path} was made on the requested device: {rec.sites}"
    assert pf.info["steps"] == 34


def test_the_recorder_catches_sites_that_ignore_the_device(subject):
    """The check above can fail: a pnerf_fast site given no device, or a parameter's
    default string, is reported."""
    from pnerf_fast.ops.occgrid import cell_positions
    from pnerf_fast.ops.raymarch import GridGeometry
    from pnerf_fast.train.data import SubjectRays

    rec = Recorder()
    with rec:
        SubjectRays(subject, None, "world").batch([0], 8, REAL_GENERATOR())  # device left at its "cpu" default
        cell_positions(GridGeometry((-1.0,) * 3 + (1.0,) * 3, 1, 4), torch.arange(3, device=FAKE), device=FAKE)
    bad = rec.violations()
    assert any(s.startswith("train/data.py") for s in bad), rec.sites
    assert not any(s.startswith("ops/occgrid.py") for s in bad), bad  # that one was given the device
    assert rec.requested_in("ops/occgrid.py") and not rec.requested_in("train/data.py")


def test_pretrain_creates_every_tensor_on_the_requested_device(tmp_path, fake_device, generators):
    import yaml
    from test_train import TINY_FIELD, tiny_cfg, tiny_stage

    from pnerf_fast.train.pretrain import pretrain

    data = tiny_stage(tmp_path / "stage")
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(TINY_FIELD))
    tiny = {"field": str(tmp_path / "f.yaml")}
    for method in ("joint", "meta"):
        cfg = tiny_cfg(tiny, method=method, meta={"batch": 2})
        rec = Recorder()
        with rec:
            pretrain(data, tmp_path / f"{method}.pt", cfg, progress=False, log=lambda *a: None, max_visits=2,
                     device="cpu")
        bad = rec.violations()
        assert not bad, f"{method}: tensors made off the requested device: {bad}"
        assert rec.requested_in("train/data.py") and rec.requested_in("train/pretrain.py"), rec.sites
        assert FAKE in generators and all(isinstance(g, torch.device) for g in generators), generators
        # the prior on disk is device-free: it loads on the CPU as it is
        st = torch.load(tmp_path / f"{method}.pt", map_location=None, weights_only=True)
        assert all(t.device.type == "cpu" for t in st["field_state"].values())


# ----------------------------------------------------------------------------- real meta tensors


def _portrait(prior):
    from pnerf_fast.face.procrustes import SimilarityTransform

    cam = Camera(20.0, 20.0, 8.0, 6.0, 16, 12, look_at((0.0, 0.0, 4.0)))
    return PortraitField(copy.deepcopy(prior), SimilarityTransform.identity(), cam)


def test_load_puts_every_tensor_on_the_requested_device(tmp_path, prior, fake_device):
    pf = _portrait(prior)
    pf.save(tmp_path / "p.pt")
    st = torch.load(tmp_path / "p.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in st["field_state"].values())  # saved device-free
    for loaded in (PortraitField.load(tmp_path / "p.pt", device="cpu").model,
                   pnerf_fast.load(tmp_path / "p.pt").model,
                   pnerf_fast.load_prior(device="cpu"),
                   PortraitModel.load(default_prior_path(), "auto")):
        tensors = [*loaded.parameters(), *loaded.buffers()]
        assert tensors and all(t.is_meta for t in tensors)
        assert loaded.codes is not None and loaded.codes.is_meta  # the latent prior's codes move too
        assert loaded.device == FAKE
    assert {"cpu", "auto"} <= set(fake_device)


def test_render_makes_rays_and_images_on_the_requested_device(monkeypatch, prior, fake_device):
    """render(device=...) moves the portrait; the renderer's rays, warp table and outputs
    are all on that device (render_rays is replaced: the kernels do not run on meta)."""
    seen = []

    def fake_render_rays(field, grid, rays, cfg, *, bg=1.0, **kw):
        rays_o = rays.origins
        seen.append((rays_o.device, rays.directions.device, rays.warp_table.device, grid.bits.device,
                     next(field.parameters()).device))
        n = rays_o.shape[0]
        z = torch.zeros(n, device=rays_o.device)
        return RenderOutput(torch.zeros(n, 3, device=rays_o.device), z, z, 0)

    monkeypatch.setattr(renderer_mod, "render_rays", fake_render_rays)
    pf = _portrait(prior)
    assert pf.device == torch.device("cpu")
    out = pf.render(pf.frontal_camera, chunk=50, device="cpu")
    assert fake_device[-1] == "cpu"
    assert pf.device == FAKE and pf.warp_table.is_meta
    assert len(seen) == 4 and all(d == FAKE for s in seen for d in s), seen
    assert set(out) == {"rgb", "depth", "opacity"}
    assert out["rgb"].shape == (12, 16, 3) and all(t.is_meta for t in out.values())


def test_pixel_rays_follow_the_device():
    cam = Camera(20.0, 20.0, 8.0, 6.0, 16, 12, look_at((0.0, 0.0, 4.0)))
    o, d = pixel_rays(cam, None, device="meta")
    assert o.is_meta and d.is_meta and o.shape == (192, 3)
    o, d = pixel_rays(cam, torch.zeros(5, 2, dtype=torch.long), device="meta")
    assert o.is_meta and d.is_meta
    o, d = cam.rays()
    o2, d2 = pixel_rays(cam, torch.stack([torch.arange(192) % 16, torch.arange(192) // 16], -1))
    assert torch.equal(o, o2) and torch.equal(d, d2)  # the CPU values are unchanged


def test_render_image_allocates_on_the_grid_device(monkeypatch):
    def fake_render_rays(field, grid, rays, cfg, *, bg=1.0, **kw):
        rays_o = rays.origins
        n = rays_o.shape[0]
        return RenderOutput(torch.zeros(n, 3, device=rays_o.device), torch.zeros(n, device=rays_o.device),
                            torch.zeros(n, device=rays_o.device), 0)

    monkeypatch.setattr(renderer_mod, "render_rays", fake_render_rays)
    from pnerf_fast.ops.occgrid import OccupancyGrid

    grid = OccupancyGrid((-1.5,) * 3 + (1.5,) * 3, res=8).to("meta")
    cam = Camera(20.0, 20.0, 8.0, 6.0, 16, 12, look_at((0.0, 0.0, 4.0)))
    rgb, depth, opa = render_image(torch.nn.Linear(1, 1).to("meta"), grid, cam, None, chunk=64)
    assert rgb.is_meta and depth.is_meta and opa.is_meta


def test_finetune_moves_a_given_model(subject, prior, fake_device):
    """A PortraitModel passed as ``init`` is copied to the requested device before anything
    is made (checked on meta: the first kernel then fails, on the moved copy); the caller's
    model stays where it was."""
    model = _prior(prior)
    moved = []
    real_to = type(model).to

    def to(self, *a, **k):  # records where finetune's copy is sent
        out = real_to(self, *a, **k)
        moved.append((self is model, all(t.is_meta for t in [*out.parameters(), *out.buffers()])))
        return out

    with mock.patch.object(type(model), "to", to), pytest.raises((NotImplementedError, RuntimeError)):
        finetune(subject, init=model, steps=1, code_steps=0, rays_per_step=8, progress=False, device="cpu")
    assert fake_device[0] == "cpu"
    assert moved and moved[0] == (False, True)  # a copy went to the (fake) device, not the model
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
