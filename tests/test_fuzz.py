"""Bad input and hostile files, through the CLI (in process) and the Python API.

Every malformed input must give, on the command line, exit code 2 and ONE line on
stderr that names the file, field or argument (never a traceback, never a hang); in the
API a ValueError or FileNotFoundError (SubjectFormatError, FaceAlignmentError and
UnsafeCheckpointError are ValueErrors). Hostile pickles (an object whose ``__reduce__``
creates a marker file) are fed through every door that reads a checkpoint: the marker
must never appear. Outputs that would overwrite an input are refused and the input is
left byte-identical.

The inputs are generated here (no files in the repository); one tiny light stage, a
tiny prior and a tiny portrait are made once per module. Training calls use 0-1 steps.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import pnerf_fast
from pnerf_fast.cli import main as pnerf
from pnerf_fast.data.format import SubjectFormatError, load_dataset, load_subject
from pnerf_fast.data.lightstage import generate_lightstage
from pnerf_fast.train.config import load_train_config
from pnerf_fast.train.model import PortraitField, PortraitModel, UnsafeCheckpointError, load_checkpoint

TINY_FIELD = {
    "name": "tiny",
    "backend": "torch",
    "encoding": {"type": "hashgrid", "n_levels": 2, "n_features": 2, "log2_table": 8, "base_res": 4, "finest_res": 16},
    "dir_encoding": {"type": "sh", "degree": 1},
    "density_mlp": {"width": 8, "n_hidden": 1, "geo_features": 4},
    "color_mlp": {"width": 8, "n_hidden": 1},
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "stage"
    generate_lightstage(data, subjects=3, res=24, seed=5, views=3, spp=1, workers=1, progress=False,
                        contact_sheet_path=None)
    field_yaml = root / "tiny_field.yaml"
    field_yaml.write_text(yaml.safe_dump(TINY_FIELD))
    cfg_dict = {"field": str(field_yaml), "rays_per_step": 32, "image_scale": 1.0, "render": {"step": 0.1},
                "grid": {"res": 8}, "joint": {"steps": 1}, "meta": {"epochs": 1, "n_support": 1, "n_query": 1},
                "finetune": {"steps": 1, "rays_per_step": 32}}
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(cfg_dict))
    prior = root / "prior.pt"
    assert pnerf(["pretrain", "--data", str(data), "--method", "random", "--config", str(cfg), "--out", str(prior),
                  "--quiet"]) == 0
    portrait = root / "portrait.pt"
    assert pnerf(["finetune", str(data / "subject_000"), "--init", str(prior), "--out", str(portrait), "--steps", "1",
                  "--quiet"]) == 0
    photo = root / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photo)
    return {"root": root, "data": data, "cfg": cfg, "cfg_dict": cfg_dict, "field": field_yaml, "prior": prior,
            "portrait": portrait, "photo": photo, "n": [0]}


def fresh(world, name: str) -> Path:
    """A new empty folder under the module's root."""
    world["n"][0] += 1
    d = world["root"] / f"{name}_{world['n'][0]}"
    d.mkdir()
    return d


def run_bad(argv, capsys, *expect):
    """Run the CLI; it must exit 2 with one line on stderr that contains each of ``expect``."""
    capsys.readouterr()
    code = pnerf([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit code {code} for {argv}; stderr: {err[-2000:]}; stdout: {out[-500:]}"
    assert "Traceback" not in err and "Traceback" not in out, err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err[-2000:]}"
    for e in expect:
        assert str(e) in lines[0], f"{e!r} not in {lines[0]!r}"
    return lines[0]


def digest(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode())
            if p.is_file():
                h.update(p.read_bytes())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- hostile pickles


class Hostile:
    """Unpickling this runs ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _hostile_files(world, folder: Path, marker: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["whole"] = folder / "whole.pt"
    torch.save(Hostile(marker), files["whole"])
    st = torch.load(world["portrait"], weights_only=True)
    st["extra"]["portrait"]["info"]["note"] = Hostile(marker)
    files["embedded"] = folder / "embedded.pt"
    torch.save(st, files["embedded"])
    st = torch.load(world["prior"], weights_only=True)
    st["field_state"] = dict(st["field_state"], evil=Hostile(marker))
    files["in_weights"] = folder / "in_weights.pt"
    torch.save(st, files["in_weights"])
    files["raw_pickle"] = folder / "raw.pt"
    files["raw_pickle"].write_bytes(pickle.dumps({"format": "pnerf_fast.checkpoint", "x": Hostile(marker)}, protocol=2))
    return files


def test_hostile_payload_is_live(world, tmp_path):
    """Sanity check of the payload: an unrestricted load does create the marker."""
    marker = tmp_path / "marker"
    files = _hostile_files(world, tmp_path / "h", marker)
    torch.load(files["whole"], weights_only=False)
    assert marker.exists()


HOSTILE_KINDS = ["whole", "embedded", "in_weights", "raw_pickle"]
DOORS = ["render", "finetune_init", "eval_init", "pretrain_init", "pretrain_resume", "api_load", "api_load_prior",
         "api_load_checkpoint"]


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
@pytest.mark.parametrize("door", DOORS)
def test_hostile_checkpoint_never_runs(world, capsys, door, kind):
    d = fresh(world, f"hostile_{door}_{kind}")
    marker = d / "MARKER"
    f = _hostile_files(world, d, marker)[kind]
    data, cfg = world["data"], world["cfg"]
    if door == "render":
        line = run_bad(["render", f, "--out", d / "o.mp4", "--quiet", "--frames", "1", "--res", "8"], capsys, f.name)
    elif door == "finetune_init":
        line = run_bad(["finetune", data / "subject_000", "--init", f, "--out", d / "o.pt", "--quiet"], capsys, f.name)
    elif door == "eval_init":
        line = run_bad(["eval", "--data", data, "--init", f, "--steps", "1", "--no-lpips", "--quiet"], capsys, f.name)
    elif door == "pretrain_init":
        line = run_bad(["pretrain", "--data", data, "--config", cfg, "--init", f, "--out", d / "o.pt", "--quiet"],
                       capsys, f.name)
    elif door == "pretrain_resume":
        out = d / "out.pt"
        shutil.copy(f, str(out) + ".resume")
        line = run_bad(["pretrain", "--data", data, "--config", cfg, "--method", "random", "--out", out, "--quiet"],
                       capsys, "out.pt.resume")
    else:
        fn = {"api_load": pnerf_fast.load, "api_load_prior": pnerf_fast.load_prior,
              "api_load_checkpoint": load_checkpoint}[door]
        with pytest.raises(ValueError) as ei:
            fn(f)
        line = str(ei.value)
        assert f.name in line
    assert not marker.exists(), f"{door}: the hostile pickle ran"
    assert "not allowed" in line and "not a pnerf_fast checkpoint" in line, line


def test_hostile_refusal_is_an_unsafe_checkpoint_error(world, tmp_path):
    f = _hostile_files(world, tmp_path / "h", tmp_path / "MARKER")["embedded"]
    with pytest.raises(UnsafeCheckpointError, match="embedded.pt"):
        load_checkpoint(f)
    assert not (tmp_path / "MARKER").exists()


def test_lpips_weights_use_a_restricted_unpickler(tmp_path):
    from pnerf_fast import metrics

    marker = tmp_path / "MARKER"
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": Hostile(marker)}))
    with pytest.raises(ValueError, match="alexnet.ckpt"):
        metrics.load_alexnet_ckpt(str(bad))
    assert not marker.exists()
    # numpy object arrays would smuggle arbitrary objects: refused as well
    obj = tmp_path / "obj.ckpt"
    obj.write_bytes(pickle.dumps({"AlexNet_0": np.array([1, "x"], dtype=object)}))
    with pytest.raises(ValueError, match="obj.ckpt"):
        metrics.load_alexnet_ckpt(str(obj))
    # the shipped weights (plain numpy arrays) still load, when installed
    try:
        path = metrics.alexnet_ckpt_path()
    except (ImportError, FileNotFoundError):
        return
    w = metrics.load_alexnet_ckpt(path)
    assert len(w["conv"]) == 5 and w["conv"][0][0].shape == (64, 3, 11, 11)


def test_every_checkpoint_kind_loads_with_weights_only(world, tmp_path):
    """The shipped priors, a portrait and a pretraining resume file hold only allowed types."""
    assets = Path(pnerf_fast.__file__).parent / "assets"
    for p in sorted(assets.glob("*.pt")):
        assert isinstance(PortraitModel.load(p), PortraitModel)
    assert isinstance(PortraitField.load(world["portrait"]), PortraitField)
    out = tmp_path / "cut.pt"
    cfg = dict(world["cfg_dict"], method="joint", joint={"steps": 5}, checkpoint_every_s=0.0)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    from pnerf_fast.train.pretrain import pretrain

    pretrain(world["data"], out, load_train_config(tmp_path / "c.yaml"), progress=False, log=lambda *a: None,
             max_visits=1)
    resume = Path(str(out) + ".resume")
    assert resume.exists()
    st = load_checkpoint(resume)
    assert "optimizer" in st["extra"] and "rng" in st["extra"]


# ----------------------------------------------------------------------------- images


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def jpeg_claiming(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="JPEG")
    b = bytearray(buf.getvalue())
    i = b.find(b"\xff\xc0")
    struct.pack_into(">HH", b, i + 5, side, side)
    return bytes(b)


def _img_bytes(arr, fmt="PNG", mode=None, **kw) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(h=64, w=64, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _valid_png() -> bytes:
    return _img_bytes(_noise())


BAD_IMAGES = {  # name -> (file name, bytes, expected words in the message)
    "empty": ("empty.jpg", lambda: b"", "empty"),
    "truncated": ("trunc.png", lambda: _valid_png()[:120], "trunc.png"),
    "random_bytes": ("random.png", lambda: os.urandom(2048), "random.png"),
    "text_as_jpg": ("notes.jpg", lambda: b"this is not a picture\n" * 20, "notes.jpg"),
    "one_pixel": ("tiny.png", lambda: _img_bytes(np.zeros((1, 1, 3), np.uint8)), "tiny.png"),
    "png_bomb": ("bomb.png", lambda: png_claiming(100_000, 100_000), "bomb.png"),
    "jpeg_bomb": ("bomb.jpg", lambda: jpeg_claiming(65_500), "bomb.jpg"),
    "png_wide_bomb": ("wide.png", lambda: png_claiming(2_000_000, 100), "wide.png"),
    "no_face_noise": ("noise.png", lambda: _img_bytes(_noise(96, 96)), "noise.png"),
    "no_face_flat": ("flat.jpg", lambda: _img_bytes(np.full((80, 120, 3), 200, np.uint8), "JPEG"), "flat.jpg"),
    "no_face_16bit": ("gray16.png", lambda: _img_bytes((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)),
                      "gray16.png"),
    "no_face_palette": ("pal.png", lambda: _img_bytes(_noise(48, 48), mode="P"), "pal.png"),
    "no_face_cmyk": ("cmyk.jpg", lambda: _img_bytes(_noise(48, 48), "JPEG", mode="CMYK"), "cmyk.jpg"),
    "all_transparent": ("clear.png", lambda: _img_bytes(np.zeros((48, 48, 4), np.uint8)), "clear.png"),
    "directory": ("adir.png", None, "adir.png"),
    "missing": ("missing.png", "missing", "missing.png"),
}


def _make_image(d: Path, name: str) -> Path:
    fname, make, _ = BAD_IMAGES[name]
    p = d / fname
    if make is None:
        p.mkdir()
    elif make != "missing":
        p.write_bytes(make())
    return p


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
@pytest.mark.parametrize("door", ["align", "finetune", "api"])
def test_bad_images(world, capsys, door, name):
    d = fresh(world, f"img_{name}")
    p = _make_image(d, name)
    want = BAD_IMAGES[name][2]
    if door == "align":
        run_bad(["align", p, "--out", d / "subj"], capsys, want)
        assert not (d / "subj").exists()
    elif door == "finetune":
        run_bad(["finetune", p, "--init", world["prior"], "--out", d / "o.pt", "--quiet"], capsys, want)
        assert not (d / "o.pt").exists()
    else:
        from pnerf_fast.face.align import align_photo

        with pytest.raises((ValueError, FileNotFoundError), match=want.replace(".", r"\.")):
            align_photo(str(p))


@pytest.mark.parametrize("arr,why", [
    (np.full((32, 32, 3), np.nan, np.float32), "non-finite"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((8, 8, 5), np.uint8), "shape"),
    (np.zeros((4, 4, 3), np.complex64), "dtype"),
])
def test_bad_image_arrays(arr, why):
    from pnerf_fast.face.align import align_photo

    with pytest.raises(ValueError, match=why):
        align_photo(arr)


# ----------------------------------------------------------------------------- subject folders


def _edit_json(name, mut):
    """A damage function: load the subject's ``name``, apply ``mut`` to it, write it back."""
    def f(s: Path):
        t = json.loads((s / name).read_text())
        mut(t)
        (s / name).write_text(json.dumps(t))
    return f


def _tf(mut):
    return _edit_json("transforms.json", mut)


def _face(mut):
    return _edit_json("face.json", mut)


def _set(d, path, value):
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    if isinstance(d, list):
        d[int(keys[-1])] = value
    else:
        d[keys[-1]] = value


def _tf_set(path, value):
    return _tf(lambda t: _set(t, path, value))


def _face_set(path, value):
    return _face(lambda t: _set(t, path, value))


def _raw(name, text):
    def f(s: Path):
        (s / name).write_text(text) if isinstance(text, str) else (s / name).write_bytes(text)
    return f


def _mat(m):
    return _tf_set("frames.0.transform_matrix", m)


def _lm(fn):
    return _face(lambda t: t.__setitem__("landmarks_3d", fn(np.array(t["landmarks_3d"])).tolist()))


def _image(make):
    def f(s: Path):
        t = json.loads((s / "transforms.json").read_text())
        (s / t["frames"][0]["file_path"]).write_bytes(make())
    return f


def _delete(name):
    return lambda s: (s / name).unlink()


_EYE = np.eye(4)
_DEEP = "[" * 100_000 + "]" * 100_000

BAD_SUBJECTS = {  # name -> (mutation of a valid subject folder, words the message must contain)
    "no_transforms": (_delete("transforms.json"), "transforms.json"),
    "no_face": (_delete("face.json"), "face.json"),
    "transforms_invalid_json": (_raw("transforms.json", "{frames: ["), "transforms.json"),
    "transforms_empty": (_raw("transforms.json", ""), "transforms.json"),
    "transforms_binary": (_raw("transforms.json", b"\xff\xfe\x00garbage\x80"), "transforms.json"),
    "transforms_list": (_raw("transforms.json", "[1, 2]"), "transforms.json"),
    "transforms_deep": (_raw("transforms.json", _DEEP), "transforms.json"),
    "transforms_huge_int": (_raw("transforms.json", '{"frames": [], "w": ' + "9" * 5000 + "}"), "transforms.json"),
    "frames_missing": (_tf(lambda t: t.pop("frames")), "frames"),
    "frames_empty": (_tf_set("frames", []), "frames"),
    "frames_int": (_tf_set("frames", 3), "frames"),
    "frames_null": (_tf_set("frames", None), "frames"),
    "frame_not_object": (_tf_set("frames.0", "view_00.png"), "frames[0]"),
    "file_path_missing": (_tf(lambda t: t["frames"][0].pop("file_path")), "file_path"),
    "file_path_int": (_tf_set("frames.0.file_path", 7), "file_path"),
    "file_path_empty": (_tf_set("frames.0.file_path", ""), "file_path"),
    "file_path_escapes": (_tf_set("frames.0.file_path", "../../etc/passwd"), "file_path"),
    "file_path_absolute": (_tf_set("frames.0.file_path", "/etc/passwd"), "file_path"),
    "file_path_no_file": (_tf_set("frames.1.file_path", "images/nope.png"), "file_path"),
    "file_path_duplicate": (_tf(lambda t: _set(t, "frames.1.file_path", t["frames"][0]["file_path"])), "duplicate"),
    "focal_nan": (_tf_set("fl_x", float("nan")), "fl_x"),
    "focal_inf": (_tf_set("fl_x", float("inf")), "fl_x"),
    "focal_zero": (_tf_set("fl_x", 0), "fl_x"),
    "focal_negative": (_tf_set("fl_y", -30.0), "fl_y"),
    "focal_1e300": (_tf_set("fl_x", 1e300), "fl_x"),
    "focal_1e-300": (_tf_set("fl_y", 1e-300), "fl_y"),
    "focal_10_pow_400": (_raw("transforms.json", None), "fl_x"),  # filled in below
    "focal_string": (_tf_set("fl_x", "40"), "fl_x"),
    "focal_null": (_tf_set("fl_x", None), "fl_x"),
    "focal_bool": (_tf_set("fl_x", True), "fl_x"),
    "cx_nan": (_tf_set("cx", float("nan")), "cx"),
    "w_zero": (_tf_set("w", 0), "w"),
    "w_negative": (_tf_set("w", -24), "w"),
    "w_string": (_tf_set("w", "24"), "w"),
    "w_fraction": (_tf_set("w", 23.5), "w"),
    "w_huge": (_tf_set("w", 10 ** 12), "w"),
    "w_disagrees": (_tf_set("w", 25), "size"),
    "h_disagrees": (_tf_set("h", 23), "size"),
    "intrinsics_missing": (_tf(lambda t: t.pop("cx")), "cx"),
    "matrix_missing": (_tf(lambda t: t["frames"][0].pop("transform_matrix")), "transform_matrix"),
    "matrix_singular": (_mat(np.diag([0, 0, 0, 1.0]).tolist()), "transform_matrix"),
    "matrix_scaled": (_mat(np.diag([2, 2, 2, 1.0]).tolist()), "transform_matrix"),
    "matrix_sheared": (_mat([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "transform_matrix"),
    "matrix_reflection": (_mat(np.diag([1, 1, -1, 1.0]).tolist()), "transform_matrix"),
    "matrix_last_row": (_mat([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 1, 1]]), "transform_matrix"),
    "matrix_nan": (_mat([[float("nan")] * 4] * 4), "transform_matrix"),
    "matrix_far": (_mat([[1, 0, 0, 1e300], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "transform_matrix"),
    "matrix_3x4": (_mat(_EYE[:3].tolist()), "transform_matrix"),
    "matrix_ragged": (_mat([[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "transform_matrix"),
    "matrix_string": (_mat("identity"), "transform_matrix"),
    "matrix_10_pow_400": (_raw("transforms.json", None), "transform_matrix"),  # filled in below
    "frontal_missing": (_tf(lambda t: t.pop("frontal_frame")), "frontal_frame"),
    "frontal_unknown": (_tf_set("frontal_frame", "images/other.png"), "frontal_frame"),
    "frontal_int": (_tf_set("frontal_frame", 0), "frontal_frame"),
    "frontal_list": (_tf_set("frontal_frame", [[[]]]), "frontal_frame"),
    "face_invalid_json": (_raw("face.json", "{"), "face.json"),
    "face_list": (_raw("face.json", "[]"), "face.json"),
    "face_deep": (_raw("face.json", _DEEP), "face.json"),
    "landmark_order": (_face_set("landmark_order", "dlib68"), "landmark_order"),
    "names_int": (_face_set("names", 5), "names"),
    "names_null": (_face_set("names", None), "names"),
    "names_wrong": (_face_set("names", ["a"] * 24), "names"),
    "ibug_int": (_face_set("ibug_indices", 3), "ibug_indices"),
    "ibug_null": (_face_set("ibug_indices", None), "ibug_indices"),
    "landmarks_missing": (_face(lambda t: t.pop("landmarks_3d")), "landmarks_3d"),
    "landmarks_23": (_lm(lambda a: a[:23]), "landmarks_3d"),
    "landmarks_25": (_lm(lambda a: np.concatenate([a, a[:1]])), "landmarks_3d"),
    "landmarks_2_cols": (_lm(lambda a: a[:, :2]), "landmarks_3d"),
    "landmarks_nan": (_lm(lambda a: np.where(np.arange(24)[:, None] == 3, np.nan, a)), "landmarks_3d"),
    "landmarks_coincident": (_lm(lambda a: np.zeros_like(a) + 0.3), "landmarks_3d"),
    "landmarks_collinear": (_lm(lambda a: np.outer(np.linspace(-1, 1, 24), [1, 0.5, 0.2])), "landmarks_3d"),
    "landmarks_x1e6": (_lm(lambda a: a * 1e6), "landmarks_3d"),
    "landmarks_x1e-9": (_lm(lambda a: a * 1e-9), "landmarks_3d"),
    "landmarks_strings": (_lm(lambda a: a.astype(str)), "landmarks_3d"),
    "landmarks_2d_not_object": (_face_set("landmarks_2d", [1, 2]), "landmarks_2d"),
    "landmarks_2d_unknown_frame": (_face_set("landmarks_2d", {"images/zzz.png": [[0, 0]] * 24}), "landmarks_2d"),
    "landmarks_2d_shape": (_face(lambda t: t.__setitem__("landmarks_2d", {
        "images/view_00.png": [[0, 0, 0]] * 24})), "landmarks_2d"),
    "meta_not_object": (_face_set("meta", [1]), "meta"),
    "image_random_bytes": (_image(lambda: os.urandom(500)), "view_00.png"),
    "image_truncated": (_image(lambda: _img_bytes(_noise(24, 24))[:100]), "view_00.png"),
    "image_empty": (_image(lambda: b""), "view_00.png"),
    "image_jpeg": (_image(lambda: _img_bytes(_noise(24, 24), "JPEG")), "view_00.png"),
    "image_gray": (_image(lambda: _img_bytes(_noise(24, 24)[..., 0])), "view_00.png"),
    "image_16bit": (_image(lambda: _img_bytes(np.zeros((24, 24), np.uint16))), "view_00.png"),
    "image_bomb": (_image(lambda: png_claiming(100_000, 100_000)), "view_00.png"),
    "image_missing": (lambda s: (s / "images" / "view_01.png").unlink(), "view_01.png"),
    "image_is_folder": (lambda s: ((s / "images" / "view_01.png").unlink(), (s / "images" / "view_01.png").mkdir()),
                        "view_01.png"),
}


def _pow400_focal(s: Path):
    t = (s / "transforms.json").read_text()
    d = json.loads(t)
    d["fl_x"] = 12345.5
    (s / "transforms.json").write_text(json.dumps(d).replace("12345.5", "1" + "0" * 400))


def _pow400_matrix(s: Path):
    d = json.loads((s / "transforms.json").read_text())
    d["frames"][0]["transform_matrix"][0][3] = 12345.5
    (s / "transforms.json").write_text(json.dumps(d).replace("12345.5", "1" + "0" * 400))


BAD_SUBJECTS["focal_10_pow_400"] = (_pow400_focal, "fl_x")
BAD_SUBJECTS["matrix_10_pow_400"] = (_pow400_matrix, "transform_matrix")


def _subject_copy(world, name) -> Path:
    d = fresh(world, f"subj_{name}")
    s = d / "subject"
    shutil.copytree(world["data"] / "subject_000", s)
    return s


def test_the_unmutated_subject_loads(world):
    s = load_subject(world["data"] / "subject_000")
    assert s.num_views == 3 and s.images.shape == (3, 24, 24, 3)


@pytest.mark.parametrize("name", sorted(BAD_SUBJECTS))
def test_bad_subject_api(world, name):
    s = _subject_copy(world, name)
    mutate, want = BAD_SUBJECTS[name]
    mutate(s)
    with pytest.raises(SubjectFormatError) as ei:
        load_subject(s)
    assert want in str(ei.value) and len(str(ei.value)) < 600, str(ei.value)


@pytest.mark.parametrize("name", sorted(BAD_SUBJECTS))
def test_bad_subject_cli(world, capsys, name):
    s = _subject_copy(world, name)
    mutate, want = BAD_SUBJECTS[name]
    mutate(s)
    out = s.parent / "o.pt"
    run_bad(["finetune", s, "--init", world["prior"], "--out", out, "--quiet", "--steps", "0"], capsys, want)
    assert not out.exists()


@pytest.mark.parametrize("where", ["missing_folder", "is_a_file"])
def test_subject_path_itself(world, capsys, where):
    d = fresh(world, where)
    p = d / "subj"
    if where == "is_a_file":
        p.write_text("x")
    with pytest.raises((SubjectFormatError, FileNotFoundError)):
        load_subject(p)
    run_bad(["finetune", p, "--init", world["prior"], "--out", d / "o.pt", "--quiet"], capsys, "subj")


# ----------------------------------------------------------------------------- dataset roots (splits.json)


def _splits(fn):
    def f(root: Path):
        sp = json.loads((root / "splits.json").read_text())
        r = fn(sp)
        (root / "splits.json").write_text(r if isinstance(r, str) else json.dumps(sp))
    return f


BAD_SPLITS = {
    "missing": (lambda r: (r / "splits.json").unlink(), "splits.json"),
    "invalid_json": (_splits(lambda s: "{train: "), "splits.json"),
    "deep": (_splits(lambda s: _DEEP), "splits.json"),
    "list": (_splits(lambda s: "[]"), "splits.json"),
    "unknown_split": (_splits(lambda s: s.__setitem__("holdout", [])), "holdout"),
    "no_test": (_splits(lambda s: s.pop("test")), "test"),
    "train_int": (_splits(lambda s: s.__setitem__("train", 3)), "train"),
    "non_string_names": (_splits(lambda s: s.__setitem__("train", [1, 2])), "train"),
    "in_two_splits": (_splits(lambda s: s.__setitem__("val", s["train"][:1])), "val"),
    "listed_twice": (_splits(lambda s: s.__setitem__("train", s["train"] * 2)), "train"),
    "unknown_subject": (_splits(lambda s: s["train"].append("subject_999")), "subject_999"),
    "escapes": (_splits(lambda s: s["train"].append("../stage")), "../stage"),
    "dot": (_splits(lambda s: s["train"].append(".")), "train"),
}


def _root_copy(world, name) -> Path:
    d = fresh(world, f"root_{name}")
    r = d / "root"
    shutil.copytree(world["data"], r)
    return r


@pytest.mark.parametrize("name", sorted(BAD_SPLITS))
def test_bad_splits_api(world, name):
    r = _root_copy(world, name)
    BAD_SPLITS[name][0](r)
    with pytest.raises(SubjectFormatError, match="splits.json"):
        load_dataset(r)


@pytest.mark.parametrize("name", sorted(BAD_SPLITS))
@pytest.mark.parametrize("cmd", ["pretrain", "eval"])
def test_bad_splits_cli(world, capsys, name, cmd):
    r = _root_copy(world, name)
    BAD_SPLITS[name][0](r)
    if cmd == "pretrain":
        argv = ["pretrain", "--data", r, "--config", world["cfg"], "--out", r.parent / "o.pt", "--quiet"]
    else:
        argv = ["eval", "--data", r, "--init", world["prior"], "--steps", "1", "--no-lpips", "--quiet"]
    run_bad(argv, capsys, "splits.json", BAD_SPLITS[name][1])


# ----------------------------------------------------------------------------- checkpoints


def _st(world, which="portrait"):
    return torch.load(world[which], weights_only=True)


def _ck_save(obj):
    def f(world, p: Path):
        torch.save(obj(world) if callable(obj) else obj, p)
    return f


def _ck_bytes(make):
    def f(world, p: Path):
        p.write_bytes(make(world))
    return f


def _ck_mut(fn, which="portrait"):
    def f(world, p: Path):
        st = _st(world, which)
        fn(st)
        torch.save(st, p)
    return f


def _first_float(st):
    return next(k for k, v in st["field_state"].items() if v.is_floating_point())


def _nan_weight(st):
    k = _first_float(st)
    st["field_state"][k] = torch.full_like(st["field_state"][k], float("nan"))


def _inf_weight(st):
    k = _first_float(st)
    st["field_state"][k] = st["field_state"][k].clone()
    st["field_state"][k].view(-1)[0] = float("inf")


def _int_weights(st):
    st["field_state"] = {k: v.long() for k, v in st["field_state"].items()}


def _drop_weight(st):
    st["field_state"].pop(_first_float(st))


def _other_width(st):
    st["field_config"] = copy.deepcopy(st["field_config"])
    st["field_config"]["density_mlp"]["width"] = 32


def _grid_nan(st):
    k = next(k for k, v in st["grid_state"].items() if v.is_floating_point())
    st["grid_state"][k] = torch.full_like(st["grid_state"][k], float("nan"))


BAD_CHECKPOINTS = {  # name -> (writer, words the message must contain)
    "empty": (_ck_bytes(lambda w: b""), "empty"),
    "truncated": (_ck_bytes(lambda w: w["portrait"].read_bytes()[:5000]), "cannot read"),
    "random_bytes": (_ck_bytes(lambda w: os.urandom(4096)), "cannot read"),
    "text": (_ck_bytes(lambda w: b"a plain text file\n"), "cannot read"),
    "json": (_ck_bytes(lambda w: b'{"format": "pnerf_fast.checkpoint"}'), "cannot read"),
    "zip_of_garbage": (_ck_bytes(lambda w: _zip_garbage()), "cannot read"),
    "list": (_ck_save([1, 2, 3]), "not a pnerf_fast checkpoint"),
    "tensor": (_ck_save(torch.zeros(3)), "not a pnerf_fast checkpoint"),
    "no_format": (_ck_mut(lambda st: st.pop("format")), "not a pnerf_fast checkpoint"),
    "wrong_format": (_ck_mut(lambda st: st.__setitem__("format", "nerfstudio")), "not a pnerf_fast checkpoint"),
    "wrong_version": (_ck_mut(lambda st: st.__setitem__("version", 99)), "version"),
    "version_string": (_ck_mut(lambda st: st.__setitem__("version", "1")), "version"),
    "no_field_state": (_ck_mut(lambda st: st.pop("field_state")), "field_state"),
    "no_grid_state": (_ck_mut(lambda st: st.pop("grid_state")), "grid_state"),
    "no_train_config": (_ck_mut(lambda st: st.pop("train_config")), "train_config"),
    "field_state_list": (_ck_mut(lambda st: st.__setitem__("field_state", [1, 2])), "field_state"),
    "field_state_int": (_ck_mut(lambda st: st.__setitem__("field_state", 7)), "field_state"),
    "field_state_values": (_ck_mut(lambda st: st.__setitem__("field_state", {"a": 1})), "field_state"),
    "grid_state_list": (_ck_mut(lambda st: st.__setitem__("grid_state", [])), "grid_state"),
    "int_weights": (_ck_mut(_int_weights), "field_state"),
    "missing_weight": (_ck_mut(_drop_weight), "do not match"),
    "config_mismatch": (_ck_mut(_other_width), "do not match"),
    "field_config_bad": (_ck_mut(lambda st: st.__setitem__("field_config", {"bogus": 1})), "field_config"),
    "field_config_int": (_ck_mut(lambda st: st.__setitem__("field_config", 3)), "field_config"),
    "train_config_bad": (_ck_mut(lambda st: st.__setitem__("train_config", {"rays_per_step": -1})), "rays_per_step"),
    "train_config_list": (_ck_mut(lambda st: st.__setitem__("train_config", [1])), "train_config"),
    "nan_weights": (_ck_mut(_nan_weight), "NaN"),
    "inf_weights": (_ck_mut(_inf_weight), "NaN or infinite"),
    "nan_grid": (_ck_mut(_grid_nan), "grid_state"),
    "mean_face_garbage": (_ck_mut(lambda st: st.__setitem__("mean_face", "x")), "mean_face"),
    "mean_face_nan": (_ck_mut(lambda st: st.__setitem__("mean_face", [[float("nan")] * 3] * 24)), "mean_face"),
    "latent_codes_bad": (_ck_mut(lambda st: st.__setitem__("latent_codes", torch.zeros(3))), "latent_codes"),
    "extra_list": (_ck_mut(lambda st: st.__setitem__("extra", [])), "extra"),
    "prior_not_portrait": (_ck_mut(lambda st: None, which="prior"), "not a finetuned portrait"),
    "portrait_no_transform": (_ck_mut(lambda st: st["extra"]["portrait"].pop("transform")), "transform"),
    "portrait_bad_transform": (_ck_mut(lambda st: st["extra"]["portrait"].__setitem__(
        "transform", {"scale": -1, "rotation": [[1, 0, 0]] * 3, "translation": [0, 0, 0]})), "portrait"),
    "portrait_transform_int": (_ck_mut(lambda st: st["extra"]["portrait"].__setitem__("transform", 3)), "transform"),
    "portrait_no_camera_fields": (_ck_mut(lambda st: st["extra"]["portrait"].__setitem__(
        "frontal_camera", {"fx": 1.0})), "frontal_camera"),
    "portrait_camera_nan": (_ck_mut(lambda st: st["extra"]["portrait"]["frontal_camera"].__setitem__(
        "fx", float("nan"))), "frontal_camera"),
    "portrait_camera_c2w": (_ck_mut(lambda st: st["extra"]["portrait"]["frontal_camera"].__setitem__(
        "c2w", [[1, 2]])), "portrait"),
    "portrait_not_object": (_ck_mut(lambda st: st["extra"].__setitem__("portrait", [1])), "portrait"),
    "portrait_background": (_ck_mut(lambda st: st["extra"]["portrait"].__setitem__("background", "white")),
                            "background"),
}


def _zip_garbage() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02garbage")
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(BAD_CHECKPOINTS))
@pytest.mark.parametrize("door", ["render", "api"])
def test_bad_checkpoints(world, capsys, door, name):
    d = fresh(world, f"ck_{name}")
    p = d / f"{name}.pt"
    BAD_CHECKPOINTS[name][0](world, p)
    want = BAD_CHECKPOINTS[name][1]
    if door == "render":
        run_bad(["render", p, "--frames", "1", "--res", "8", "--out", d / "o.gif", "--quiet"], capsys, p.name, want)
        assert not (d / "o.gif").exists()
    else:
        with pytest.raises(ValueError) as ei:
            pnerf_fast.load(p)
        assert p.name in str(ei.value) and want in str(ei.value), str(ei.value)


PRIOR_DOOR_CASES = sorted(n for n in BAD_CHECKPOINTS if not n.startswith("portrait") and n != "prior_not_portrait")


@pytest.mark.parametrize("name", PRIOR_DOOR_CASES)
def test_bad_init_checkpoints(world, capsys, name):
    d = fresh(world, f"init_{name}")
    p = d / f"{name}.pt"
    BAD_CHECKPOINTS[name][0](world, p)
    run_bad(["finetune", world["data"] / "subject_001", "--init", p, "--out", d / "o.pt", "--quiet"], capsys, p.name)
    assert not (d / "o.pt").exists()


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_checkpoint_path_itself(world, capsys, what):
    d = fresh(world, f"ckpath_{what}")
    p = d / "model.pt"
    if what == "folder":
        p.mkdir()
    with pytest.raises((ValueError, FileNotFoundError), match="model.pt"):
        pnerf_fast.load(p)
    with pytest.raises((ValueError, FileNotFoundError), match="model.pt"):
        pnerf_fast.load_prior(p)
    run_bad(["render", p, "--out", d / "o.gif", "--quiet"], capsys, "model.pt")


# ----------------------------------------------------------------------------- configs


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)) + "rays_per_step: *i\n"

BAD_CONFIGS = {  # name -> (YAML text or a dict to dump, words the message must contain)
    "unknown_key": ({"rays_per_stepz": 5}, "rays_per_stepz"),
    "unknown_nested": ({"grid": {"resolution": 5}}, "grid.resolution"),
    "method_unknown": ({"method": "magic"}, "method"),
    "method_int": ({"method": 3}, "method"),
    "coordinates_unknown": ({"coordinates": "polar"}, "coordinates"),
    "background_unknown": ({"background": "green"}, "background"),
    "optimizer_unknown": ({"meta": {"optimizer": "lbfgs"}}, "meta.optimizer"),
    "rays_zero": ({"rays_per_step": 0}, "rays_per_step"),
    "rays_negative": ({"rays_per_step": -5}, "rays_per_step"),
    "rays_string": ({"rays_per_step": "many"}, "rays_per_step"),
    "rays_fraction": ({"rays_per_step": 1.5}, "rays_per_step"),
    "rays_bool": ({"rays_per_step": True}, "rays_per_step"),
    "finetune_rays_zero": ({"finetune": {"rays_per_step": 0}}, "finetune.rays_per_step"),
    "finetune_steps_negative": ({"finetune": {"steps": -1}}, "finetune.steps"),
    "image_scale_zero": ({"image_scale": 0}, "image_scale"),
    "image_scale_big": ({"image_scale": 2}, "image_scale"),
    "lr_inf": (("append", "joint:\n  lr:\n    mlp: .inf\n"), "joint.lr.mlp"),
    "lr_nan": (("append", "meta:\n  alpha:\n    grid: .nan\n"), "meta.alpha.grid"),
    "lr_negative": ({"finetune": {"lr": {"mlp": -1.0}}}, "finetune.lr.mlp"),
    "lr_string": ({"latent": {"lr": {"grid": "fast"}}}, "latent.lr.grid"),
    "lr_final_inf": (("append", "latent:\n  lr_final: .inf\n"), "latent.lr_final"),
    "code_lr_nan": (("append", "finetune:\n  code_lr: .nan\n"), "finetune.code_lr"),
    "threshold_nan": (("append", "grid:\n  threshold: .nan\n"), "grid.threshold"),
    "decay_big": ({"grid": {"decay": 3.0}}, "grid.decay"),
    "grid_res_zero": ({"grid": {"res": 0}}, "grid.res"),
    "grid_res_huge": ({"grid": {"res": 100000}}, "grid.res"),
    "checkpoint_negative": ({"checkpoint_every_s": -1}, "checkpoint_every_s"),
    "checkpoint_inf": (("append", "checkpoint_every_s: .inf\n"), "checkpoint_every_s"),
    "epochs_zero": ({"meta": {"epochs": 0}}, "meta.epochs"),
    "joint_steps_negative": ({"joint": {"steps": -5}}, "joint.steps"),
    "render_step_string": ({"render": {"step": "fast"}}, "step"),
    "render_step_zero": ({"render": {"step": 0}}, "step"),
    "render_step_nan": (("append", "render:\n  step: .nan\n"), "step"),
    "render_unknown": ({"render": {"speed": 1}}, "speed"),
    "render_list": ({"render": [1]}, "render"),
    "render_segment_zero": ({"render": {"segment": 0}}, "segment"),
    "meta_list": ({"meta": [1, 2]}, "meta"),
    "top_level_list": (("raw", "- 1\n- 2\n"), "top level"),
    "top_level_string": (("raw", "hello\n"), "top level"),
    "invalid_yaml": (("raw", "grid: [1, 2\n"), "invalid YAML"),
    "tab_indent": (("raw", "grid:\n\tres: 3\n"), "invalid YAML"),
    "alias_bomb": (("raw", ALIAS_BOMB), "alias"),
    "deep_yaml": (("raw", "[" * 20000 + "]" * 20000), "cfg.yaml"),
    "binary": (("raw", b"\xff\xfe\x00\x01garbage"), "cfg.yaml"),
    "python_object_tag": (("raw", "method: !!python/object/apply:os.system ['touch MARKER']\n"), "invalid YAML"),
    "field_preset_unknown": ({"field": "gigantic"}, "gigantic"),
    "field_file_missing": ({"field": "/nonexistent/field.yaml"}, "field.yaml"),
}

BAD_FIELD_YAML = {
    "field_yaml_invalid": ("encoding: [\n", "invalid YAML"),
    "field_yaml_aabb_nan": ("aabb: [.nan, -1, -1, 1, 1, 1]\n", "aabb"),
    "field_yaml_unknown": ("bogus: 1\n", "bogus"),
    "field_yaml_width_string": ("density_mlp:\n  width: wide\n", "density_mlp.width"),
    "field_yaml_alias_bomb": (ALIAS_BOMB.replace("rays_per_step", "name"), "alias"),
}


def _write_cfg(world, d: Path, spec) -> Path:
    """``spec``: a dict merged into the valid tiny config, ("append", text) appended to
    it (a later top-level key replaces the earlier one), or ("raw", text or bytes)."""
    p = d / "cfg.yaml"
    if isinstance(spec, dict):
        text = yaml.safe_dump({**world["cfg_dict"], **spec})
    elif spec[0] == "append":
        text = yaml.safe_dump(world["cfg_dict"]) + spec[1]
    else:
        text = spec[1]
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS) + sorted(BAD_FIELD_YAML))
def test_bad_configs(world, capsys, name):
    d = fresh(world, f"cfg_{name}")
    os.chdir(d)  # a tag that ran would touch ./MARKER
    try:
        if name in BAD_FIELD_YAML:
            text, want = BAD_FIELD_YAML[name]
            fy = d / "field.yaml"
            fy.write_text(yaml.safe_dump(TINY_FIELD) + text if "alias" not in name else text)
            cfg = _write_cfg(world, d, {"field": str(fy)})
            want_file = "field.yaml"
        else:
            text, want = BAD_CONFIGS[name]
            cfg = _write_cfg(world, d, text)
            want_file = None
        run_bad(["pretrain", "--data", world["data"], "--config", cfg, "--out", d / "o.pt", "--quiet"], capsys, want,
                *([want_file] if want_file else []))
        with pytest.raises((ValueError, FileNotFoundError)):
            if name in BAD_FIELD_YAML or name.startswith("field_"):
                from pnerf_fast.train.model import build_field

                build_field(load_train_config(cfg).field)
            else:
                load_train_config(cfg)
        assert not (d / "o.pt").exists() and not (d / "MARKER").exists()
    finally:
        os.chdir(world["root"])


@pytest.mark.parametrize("item,want", [
    ("grid.res", "--set"), ("=3", "--set"), ("grid.res=[1, 2", "--set"), ("bogus=1", "bogus"),
    ("grid.res=-3", "grid.res"), ("rays_per_step.x=1", "rays_per_step"), ("render.step=fast", "step"),
    ("joint.lr.mlp=.inf", "joint.lr.mlp"),
])
def test_bad_set_overrides(world, capsys, item, want):
    d = fresh(world, "set")
    run_bad(["pretrain", "--data", world["data"], "--config", world["cfg"], "--set", item, "--out", d / "o.pt",
             "--quiet"], capsys, want)


# ----------------------------------------------------------------------------- CLI arguments


def _cli_cases():
    P, S, I, R = "{portrait}", "{subject}", "{prior}", "{root}"
    c = []
    for res in ("0", "7", "5000", "-1", "abc"):
        c.append((["render", P, "--res", res, "--out", "{d}/o.gif"], "--res"))
    for fr in ("0", "-3", "100001", "x"):
        c.append((["render", P, "--frames", fr, "--out", "{d}/o.gif"], "--frames"))
    c += [(["render", P, "--fps", "0", "--out", "{d}/o.gif"], "--fps"),
          (["render", P, "--chunk", "0", "--out", "{d}/o.gif"], "--chunk"),
          (["render", P, "--path", "spiral", "--out", "{d}/o.gif"], "--path"),
          (["render", P, "--out", "{d}/o.avi", "--frames", "1", "--res", "8"], "o.avi"),
          (["render", P, "--out", "/proc/pnerf_out.gif", "--frames", "1", "--res", "8"], "--out"),
          (["render", P, "--out", "", "--frames", "1"], "--out"),
          (["render", P], "--out")]
    for st in ("-1", "x"):
        c.append((["finetune", S, "--init", I, "--out", "{d}/o.pt", "--steps", st], "--steps"))
    c.append((["finetune", S, "--init", I, "--out", "{d}/o.pt", "--code-steps", "-2"], "--code-steps"))
    for sec in ("0", "-1", "nan", "inf", "-inf", "x"):
        c.append((["finetune", S, "--init", I, "--out", "{d}/o.pt", "--seconds", sec], "--seconds"))
    for res in ("10", "100000"):
        c.append((["finetune", S, "--init", I, "--out", "{d}/o.pt", "--res", res], "--res"))
    c += [(["finetune", S, "--init", I, "--out", "/proc/pnerf.pt"], "--out"),
          (["finetune", S, "--init", I, "--out", ""], "--out"),
          (["finetune", "", "--init", I, "--out", "{d}/o.pt"], "source"),
          (["finetune", S, "--init", I, "--out", "{d}"], "--out"),
          (["finetune", S, "--init", I, "--out", "{d}/o.pt", "--preview", "{d}/p.jpg"], "--preview"),
          (["finetune", S, "--init", "nonexistent_prior", "--out", "{d}/o.pt"], "nonexistent_prior"),
          (["finetune", S, "--init", I], "--out")]
    for res in ("0", "15", "100000", "-5"):
        c.append((["align", "{photo}", "--out", "{d}/s", "--res", res], "--res"))
    c += [(["align", "{photo}", "--out", "/proc/pnerf_subject"], "--out"),
          (["align", "", "--out", "{d}/s"], "photo"),
          (["align", "{photo}", "--out", "{d}/s", "--preview", "{d}/p.jpg"], "--preview"),
          (["align", "{d}/nope.png", "--out", "{d}/s"], "nope.png")]
    for ms in ("-1", "0", "nan", "inf"):
        c.append((["pretrain", "--data", R, "--config", "{cfg}", "--out", "{d}/o.pt", "--max-seconds", ms],
                  "--max-seconds"))
    c += [(["pretrain", "--data", R, "--config", "{cfg}", "--out", "{d}/o.pt", "--epochs", "0"], "--epochs"),
          (["pretrain", "--data", R, "--config", "{cfg}", "--out", "{d}/o.pt", "--steps", "-1"], "--steps"),
          (["pretrain", "--data", R, "--config", "{cfg}", "--out", "{d}/o.pt", "--method", "magic"], "--method"),
          (["pretrain", "--data", R, "--config", "{cfg}", "--out", "/proc/pnerf.pt"], "--out"),
          (["pretrain", "--data", R, "--config", "{d}/none.yaml", "--out", "{d}/o.pt"], "none.yaml"),
          (["pretrain", "--data", "{d}/nodata", "--config", "{cfg}", "--out", "{d}/o.pt"], "--data"),
          (["pretrain", "--data", R, "--config", "{cfg}", "--out", "{d}/o.pt", "--init", "{d}/x.pt"], "x.pt")]
    for sec in ("0", "-1", "nan", "inf"):
        c.append((["eval", "--data", R, "--init", I, "--seconds", sec, "--no-lpips"], "--seconds"))
    c += [(["eval", "--data", R, "--init", I, "--split", "holdout"], "--split"),
          (["eval", "--data", "{d}/nodata", "--init", I, "--no-lpips"], "nodata")]
    c += [(["lightstage", "--out", "{d}/ls", "--splits", "a,b,c"], "--splits"),
          (["lightstage", "--out", "{d}/ls", "--splits", "0.5,0.5"], "--splits"),
          (["lightstage", "--out", "{d}/ls", "--res", "x"], "--res"),
          (["frobnicate"], "frobnicate"),
          (["render", P, "--out", "{d}/o.gif", "--bogus-flag"], "--bogus-flag")]
    return c


CLI_CASES = _cli_cases()


@pytest.mark.parametrize("i", range(len(CLI_CASES)), ids=[f"{c[0][0]}-{'_'.join(c[0][1:])[-40:]}" for c in CLI_CASES])
def test_bad_cli_arguments(world, capsys, i):
    argv, want = CLI_CASES[i]
    d = fresh(world, "cli")
    subst = {"{portrait}": world["portrait"], "{subject}": world["data"] / "subject_001", "{prior}": world["prior"],
             "{root}": world["data"], "{cfg}": world["cfg"], "{photo}": world["photo"], "{d}": d}
    args = []
    for a in argv:
        for k, v in subst.items():
            a = a.replace(k, str(v))
        args.append(a)
    run_bad(args + ["--quiet"] if argv[0] in ("render", "finetune", "pretrain", "eval", "lightstage") and
            "--bogus-flag" not in argv else args, capsys, want)
    assert not Path("/proc/pnerf.pt").exists()


# ----------------------------------------------------------------------------- outputs that would destroy inputs


def _overwrite_cases():
    return {
        "finetune_photo_onto_photo": (lambda w, d: (["finetune", d / "photo.png", "--out", d / "photo.png"],
                                                    d / "photo.png")),
        "finetune_init_onto_init": (lambda w, d: (["finetune", w["data"] / "subject_001", "--init", d / "p.pt",
                                                   "--out", d / "p.pt"], d / "p.pt")),
        "finetune_preview_onto_photo": (lambda w, d: (["finetune", d / "photo.png", "--init", d / "p.pt", "--out",
                                                       d / "o.pt", "--preview", d / "photo.png"], d / "photo.png")),
        "pretrain_init_onto_init": (lambda w, d: (["pretrain", "--data", d / "root", "--config", w["cfg"], "--init",
                                                   d / "p.pt", "--out", d / "p.pt"], d / "p.pt")),
        "pretrain_config_onto_config": (lambda w, d: (["pretrain", "--data", d / "root", "--config", d / "c.yaml",
                                                       "--out", d / "c.yaml"], d / "c.yaml")),
        "finetune_onto_transforms": (lambda w, d: (["finetune", d / "root" / "subject_001", "--init", d / "p.pt",
                                                    "--out", d / "root" / "subject_001" / "transforms.json"],
                                                   d / "root" / "subject_001")),
        "finetune_onto_subject_image": (lambda w, d: (["finetune", d / "root" / "subject_001", "--init", d / "p.pt",
                                                       "--out", d / "root" / "subject_001" / "images" / "view_00.png"],
                                                      d / "root" / "subject_001")),
        "finetune_onto_subject_folder": (lambda w, d: (["finetune", d / "root" / "subject_001", "--init", d / "p.pt",
                                                        "--out", d / "root" / "subject_001"],
                                                       d / "root" / "subject_001")),
        "align_preview_onto_photo": (lambda w, d: (["align", d / "photo.png", "--out", d / "s", "--preview",
                                                    d / "photo.png"], d / "photo.png")),
        "align_mask_preview_onto_photo": (lambda w, d: (["align", d / "photo.png", "--out", d / "s",
                                                         "--mask-preview", d / "photo.png"], d / "photo.png")),
        "align_view_onto_its_subject": (lambda w, d: (["align", d / "root" / "subject_001" / "images" / "view_00.png",
                                                       "--out", d / "root" / "subject_001"],
                                                      d / "root" / "subject_001")),
        "align_photo_onto_its_folder": (lambda w, d: (["align", d / "photo.png", "--out", d], d / "photo.png")),
        "pretrain_onto_splits": (lambda w, d: (["pretrain", "--data", d / "root", "--config", w["cfg"], "--out",
                                                d / "root" / "splits.json"], d / "root")),
        "pretrain_onto_a_subject_file": (lambda w, d: (["pretrain", "--data", d / "root", "--config", w["cfg"],
                                                        "--out", d / "root" / "subject_000" / "face.json"],
                                                       d / "root")),
        "render_onto_model_folder": (lambda w, d: (["render", d / "m.pt", "--out", d / "m.pt"], d / "m.pt")),
        "eval_json_onto_splits": (lambda w, d: (["eval", "--data", d / "root", "--init", d / "p.pt", "--steps", "1",
                                                 "--no-lpips", "--json", d / "root" / "splits.json"], d / "root")),
    }


OVERWRITE_CASES = _overwrite_cases()


@pytest.mark.parametrize("name", sorted(OVERWRITE_CASES))
def test_outputs_never_overwrite_inputs(world, capsys, name):
    d = fresh(world, f"over_{name}")
    shutil.copy(world["photo"], d / "photo.png")
    shutil.copy(world["prior"], d / "p.pt")
    shutil.copy(world["portrait"], d / "m.pt")
    shutil.copy(world["cfg"], d / "c.yaml")
    shutil.copytree(world["data"], d / "root")
    argv, protected = OVERWRITE_CASES[name](world, d)
    before = digest(protected)
    run_bad(argv + ["--quiet"] if argv[0] != "align" else argv, capsys, "refusing")
    assert digest(protected) == before


# ----------------------------------------------------------------------------- atomic writes


def test_writers_leave_no_partial_file(tmp_path, monkeypatch):
    """A writer that fails half-way leaves the previous output intact and no temporary files."""
    from pnerf_fast.render import video
    from pnerf_fast.train.model import save_atomic

    png = tmp_path / "a.png"
    video.save_png(png, np.zeros((4, 4, 3), np.uint8))
    before = png.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    import imageio.v2 as imageio

    monkeypatch.setattr(imageio, "imwrite", boom)
    with pytest.raises(OSError):
        video.save_png(png, np.ones((4, 4, 3), np.uint8))
    assert png.read_bytes() == before
    monkeypatch.undo()

    gif = tmp_path / "v.gif"
    video.write_video([np.zeros((4, 4, 3), np.uint8)] * 2, gif, fps=4)
    g0 = gif.read_bytes()
    with pytest.raises(ValueError):
        video.write_video([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5, 3), np.uint8)], gif, fps=4)
    assert gif.read_bytes() == g0

    pt = tmp_path / "c.pt"
    save_atomic({"a": torch.zeros(2)}, pt)
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_atomic({"a": torch.ones(2)}, pt)
    monkeypatch.undo()
    assert torch.equal(torch.load(pt, weights_only=True)["a"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "c.pt", "v.gif"]


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    """Written through a temporary file (mkstemp makes it 0600), an output still ends up
    with the permissions a plain open() gives: others can read a shared portrait."""
    import os

    from pnerf_fast.render import video
    from pnerf_fast.train.model import save_atomic

    old = os.umask(0o022)
    try:
        save_atomic({"a": torch.zeros(2)}, tmp_path / "c.pt")
        video.save_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
        for name in ("c.pt", "a.png"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
        from pnerf_fast.data.format import load_subject, write_splits, write_subject
        from pnerf_fast.geometry.cameras import Camera

        cam = Camera(fx=20.0, fy=20.0, cx=8.0, cy=8.0, width=16, height=16, c2w=np.eye(4))
        lms = np.random.default_rng(0).normal(size=(24, 3))
        for _ in range(2):  # a new folder, then one replaced
            write_subject(tmp_path / "ds" / "s0", cameras=[cam], images=[np.zeros((16, 16, 4), np.float32)],
                          landmarks=lms)
            assert (tmp_path / "ds" / "s0").stat().st_mode & 0o777 == 0o755
        load_subject(tmp_path / "ds" / "s0")
        write_splits(tmp_path / "ds", ["s0"], [], [])
        assert (tmp_path / "ds" / "splits.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- real faces (MediaPipe)


def test_face_too_small_is_refused_and_several_faces_take_the_largest(world, capsys):
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip("mediapipe")
    d = fresh(world, "faces")
    face = Image.fromarray(skimage_data.astronaut())
    canvas = Image.new("RGB", (1200, 1200), (90, 90, 90))
    canvas.paste(face.resize((24, 24)), (600, 600))
    canvas.save(d / "small.png")
    run_bad(["align", d / "small.png", "--out", d / "s1"], capsys, "small.png")
    assert not (d / "s1").exists()
    two = Image.new("RGB", (1024, 512))
    two.paste(face, (0, 0))
    two.paste(face.resize((256, 256)), (640, 128))
    two.save(d / "two.png")
    capsys.readouterr()
    assert pnerf(["align", str(d / "two.png"), "--out", str(d / "s2"), "--no-segment"]) == 0
    assert "faces" in capsys.readouterr().out
    assert load_subject(d / "s2").num_views == 1


def test_eval_of_a_test_subject_with_only_its_frontal_frame(world, capsys):
    r = _root_copy(world, "frontal_only")
    test = json.loads((r / "splits.json").read_text())["test"][0]
    s = r / test
    t = json.loads((s / "transforms.json").read_text())
    t["frames"] = [f for f in t["frames"] if f["file_path"] == t["frontal_frame"]]
    (s / "transforms.json").write_text(json.dumps(t))
    f = json.loads((s / "face.json").read_text())
    if f.get("landmarks_2d"):
        f["landmarks_2d"] = {k: v for k, v in f["landmarks_2d"].items() if k == t["frontal_frame"]}
    (s / "face.json").write_text(json.dumps(f))
    run_bad(["eval", "--data", r, "--init", world["prior"], "--steps", "1", "--no-lpips", "--quiet"], capsys, test)
