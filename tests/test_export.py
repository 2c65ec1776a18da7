"""pnerf export (meshes, point clouds) and nerfstudio camera_path.json files (issue 16)."""
import json

import numpy as np
import pytest
import torch

import trimesh

from pnerf_fast.cli import main as pnerf
from pnerf_fast.data.format import load_subject
from pnerf_fast.export import MeshConfig, extract_mesh, occupied_mask
from pnerf_fast.face.procrustes import SimilarityTransform
from pnerf_fast.ops.occgrid import OccupancyGrid
from pnerf_fast.render import paths
from pnerf_fast.render.camera_path import cameras_from_camera_path, read_camera_path, write_camera_path

from test_render_cli import tiny_portrait  # noqa: F401  (a module-scoped fixture: tiny light stage + portrait)

AABB = (-1.5,) * 3 + (1.5,) * 3
CENTRE = np.array([0.15, -0.1, 0.2])  # canonical
RADIUS = 0.7                         # canonical


def sphere_density(x):
    """sigma = 100 inside, 0 outside, 50 (the iso-level used below) exactly at RADIUS."""
    r = (x - torch.as_tensor(CENTRE, dtype=x.dtype)).norm(dim=-1)
    return 100.0 * torch.sigmoid((RADIUS - r) * 25.0)


def sphere_field(x, d):
    return sphere_density(x), torch.sigmoid(4 * x)  # colour varies with position


def transform():
    a = np.deg2rad(35.0)
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k  # Rodrigues
    return SimilarityTransform(1.7, rot, np.array([0.3, -0.4, 0.25]))  # world -> canonical


@pytest.fixture(scope="module")
def sphere_grid():
    g = OccupancyGrid(AABB, res=32)
    g.mark_from_density(sphere_density, threshold=1.0)
    return g


def test_sphere_exports_with_the_right_world_radius(sphere_grid):
    tf = transform()
    mesh = extract_mesh(sphere_density, sphere_grid, tf, MeshConfig(res=96, threshold=50.0), color_fn=sphere_field)
    world_centre = tf.inverse().apply(CENTRE)
    world_radius = RADIUS / tf.scale
    r = np.linalg.norm(mesh.vertices - world_centre, axis=1)
    assert np.all(np.abs(r / world_radius - 1) < 0.02), (r.min(), r.max(), world_radius)
    assert mesh.is_watertight
    # Outward normals, and the enclosed volume of a sphere of that radius.
    n = mesh.vertex_normals
    assert np.mean(np.sum(n * (mesh.vertices - world_centre), 1) > 0) > 0.99
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * world_radius ** 3, rel=0.03)
    # Vertex colours come from the field at the (canonical) surface point.
    canon = tf.apply(mesh.vertices)
    want = torch.sigmoid(4 * torch.as_tensor(canon)).numpy() * 255
    got = mesh.visual.vertex_colors[:, :3].astype(np.float64)
    assert np.abs(got - want).mean() < 12


def test_density_is_read_only_in_occupied_cells(sphere_grid):
    g = OccupancyGrid(AABB, res=8)
    g.fill_(False)
    g.bits[: 8 ** 3 // 2] = 1  # x < 0 only
    mesh = extract_mesh(lambda x: torch.full((x.shape[0],), 100.0), g, None, MeshConfig(res=32, threshold=50.0))
    assert mesh.vertices[:, 0].max() < 0.05
    pts = torch.tensor([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-9.0, 0.0, 0.0]])
    assert occupied_mask(g, pts).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="threshold"):
        extract_mesh(sphere_density, sphere_grid, None, MeshConfig(res=16, threshold=500.0))


def test_keep_all_keeps_every_component():
    def two_balls(x):
        r = torch.minimum((x - torch.tensor([-0.7, 0, 0])).norm(dim=-1), (x - torch.tensor([0.7, 0, 0])).norm(dim=-1) * 2)
        return 100.0 * torch.sigmoid((0.4 - r) * 25.0)

    g = OccupancyGrid(AABB, res=16)
    cfg = MeshConfig(res=48, threshold=50.0)
    both = extract_mesh(two_balls, g, None, MeshConfig(res=48, threshold=50.0, keep_all=True))
    one = extract_mesh(two_balls, g, None, cfg)
    assert len(both.split(only_watertight=False)) == 2
    assert len(one.split(only_watertight=False)) == 1
    assert one.vertices[:, 0].max() < 0  # the bigger ball, at -x


def test_texture_bakes_an_atlas(sphere_grid, tmp_path):
    pytest.importorskip("xatlas")
    mesh = extract_mesh(sphere_density, sphere_grid, None, MeshConfig(res=24, threshold=50.0, texture=True,
                                                                      texture_size=128), color_fn=sphere_field)
    assert mesh.visual.kind == "texture" and mesh.visual.uv.shape == (len(mesh.vertices), 2)
    from pnerf_fast.export import write_mesh

    write_mesh(mesh, tmp_path / "ball.glb")
    write_mesh(mesh, tmp_path / "ball.obj")
    assert (tmp_path / "ball.png").is_file() and (tmp_path / "ball.mtl").is_file()
    back = trimesh.load(tmp_path / "ball.obj", force="mesh")
    assert back.visual.kind == "texture"


@pytest.fixture(scope="module")
def head_portrait(tiny_portrait):
    """The shipped prior finetuned for a few steps on a tiny light-stage subject: a real
    head's density (tiny_portrait's own random prior has none yet)."""
    out = tiny_portrait["root"] / "head_portrait.pt"
    assert pnerf(["finetune", str(tiny_portrait["data"] / "subject_002"), "--out", str(out), "--steps", "2",
                  "--code-steps", "2", "--quiet"]) == 0
    return out


def test_finetuned_portrait_exports_one_connected_mesh(head_portrait, tiny_portrait, tmp_path):
    out = tmp_path / "head.glb"
    assert pnerf(["export", str(head_portrait), "--mesh", str(out), "--res", "48",
                  "--points", str(tmp_path / "head_points.ply"), "--views", "4", "--view-res", "16"]) == 0
    mesh = trimesh.load(out, force="mesh")
    assert len(mesh.faces) > 0
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    assert labels.max() == 0  # one component
    assert mesh.visual.kind == "vertex"
    # World space: the mesh lies where the subject's landmarks are (the head).
    lm = load_subject(tiny_portrait["data"] / "subject_002", load_images=False).landmarks
    lo, hi = mesh.bounds
    assert np.all(lm.min(0) >= lo - 1e-6) and np.all(lm.max(0) <= hi + 1e-6)
    # --preview draws it offscreen: three panels, the head (not just background) in each.
    prev = tmp_path / "head.png"
    assert pnerf(["export", str(head_portrait), "--mesh", str(tmp_path / "head2.ply"), "--res", "24",
                  "--preview", str(prev)]) == 0
    import imageio.v2 as imageio

    img = imageio.imread(prev)
    assert img.shape[0] * 3 == img.shape[1]
    for panel in np.split(img, 3, axis=1):
        assert (panel[..., :3] < 200).any(-1).mean() > 0.05
    pc = trimesh.load(tmp_path / "head_points.ply")
    assert len(pc.vertices) > 0 and pc.colors.shape[1] == 4
    for suffix in (".ply", ".obj"):
        assert pnerf(["export", str(head_portrait), "--mesh", str(tmp_path / f"head{suffix}"), "--res", "24"]) == 0
        assert len(trimesh.load(tmp_path / f"head{suffix}", force="mesh").faces) > 0


@pytest.mark.parametrize("args,needle", [
    (["--mesh", "{tmp}/m.ply", "--res", "0"], "--res"),
    (["--mesh", "{tmp}/m.ply", "--res", "5000"], "--res"),
    (["--mesh", "{tmp}/m.stl"], "unknown suffix"),
    (["--points", "{tmp}/p.obj"], "unknown suffix"),
    (["--mesh", "{tmp}/m"], "unknown suffix"),
    (["--mesh", "/proc/no/m.ply"], "cannot write"),
    (["--mesh", "{model}"], "also an input"),
    (["--points", "{model}"], "also an input"),
    (["--mesh", "{tmp}"], "is a folder"),
    (["--mesh", "{tmp}/m.ply", "--threshold", "-1"], "--threshold"),
    (["--mesh", "{tmp}/m.ply", "--threshold", "nan"], "--threshold"),
    (["--mesh", "{tmp}/m.ply", "--points", "{tmp}/m.ply"], "must differ"),
    (["--mesh", "{tmp}/m.ply", "--texture"], "PLY"),
    (["--points", "{tmp}/p.ply", "--views", "0"], "--views"),
    (["--points", "{tmp}/p.ply", "--preview", "{tmp}/m.png"], "--preview"),
    (["--mesh", "{tmp}/m.ply", "--preview", "{tmp}/m.jpg"], ".png"),
    ([], "nothing to export"),
])
def test_bad_export_arguments_are_one_line_exit_2(tiny_portrait, tmp_path, capsys, args, needle):
    model = tiny_portrait["model"]
    argv = [a.format(tmp=tmp_path, model=model) for a in args]
    before = model.read_bytes()
    assert pnerf(["export", str(model), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert model.read_bytes() == before
    assert not list(tmp_path.glob("m*")) and not list(tmp_path.glob("p*"))


def test_export_refuses_a_prior(tiny_portrait, tmp_path, capsys):
    assert pnerf(["export", str(tiny_portrait["prior"]), "--mesh", str(tmp_path / "m.ply")]) == 2
    assert "not a finetuned portrait" in capsys.readouterr().err


# ----------------------------------------------------------------------------- camera paths


@pytest.mark.parametrize("make", [lambda: paths.orbit(7, 40), lambda: paths.dolly_zoom(5, 32),
                                  lambda: [c.scaled(0.5) for c in paths.grid(3, 2, 64)]])
def test_camera_path_round_trip(tmp_path, make):
    cams = make()
    f = tmp_path / "camera_path.json"
    write_camera_path(cams, f, fps=12)
    back, fps = read_camera_path(f)
    assert fps == 12 and len(back) == len(cams)
    for a, b in zip(cams, back):
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_allclose([b.fx, b.fy, b.cx, b.cy], [a.fx, a.fy, a.cx, a.cy], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(b.c2w, a.c2w, rtol=0, atol=1e-6)
    d = json.loads(f.read_text())
    assert d["camera_type"] == "perspective" and len(d["camera_path"][0]["camera_to_world"]) == 16


def test_nerfstudio_camera_path_reads_as_opengl_cameras():
    # A camera at +z looking at the origin (OpenGL: it looks down its own -z), 60° vertical fov.
    c2w = np.eye(4)
    c2w[2, 3] = 4.0
    d = {"camera_type": "perspective", "render_width": 64, "render_height": 48, "seconds": 1.0,
         "camera_path": [{"camera_to_world": c2w.reshape(-1).tolist(), "fov": 60.0, "aspect": 64 / 48}],
         "keyframes": []}
    (cam,), fps = cameras_from_camera_path(d)
    assert fps is None and (cam.width, cam.height) == (64, 48)
    assert cam.fy == pytest.approx(24 / np.tan(np.deg2rad(30))) and cam.fx == cam.fy
    uv, depth = cam.project(np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [32, 24]) and np.testing.assert_allclose(depth, [4, 4])
    assert uv[1, 1] < 24  # world +y is up in the image


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d.pop("render_width"), "render_width"),
    (lambda d: d.update(render_height=0), "render_height"),
    (lambda d: d.update(camera_type="fisheye"), "camera_type"),
    (lambda d: d.update(camera_path=[]), "camera_path"),
    (lambda d: d["camera_path"][0].update(fov=0), "fov"),
    (lambda d: d["camera_path"][0].update(fov="wide"), "fov"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[1, 2, 3]), "16 numbers"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[2.0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1]), "rotation"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, float("nan")]),
     "finite"),
])
def test_bad_camera_paths_name_the_field(mutate, needle):
    d = json.loads(json.dumps(_path_dict()))
    mutate(d)
    with pytest.raises(ValueError, match=needle):
        cameras_from_camera_path(d, "cp.json")


def _path_dict():
    from pnerf_fast.render.camera_path import cameras_to_camera_path

    return cameras_to_camera_path(paths.orbit(2, 16))


def test_render_saves_and_plays_camera_paths(tiny_portrait, tmp_path, capsys):
    import imageio.v2 as imageio

    model = str(tiny_portrait["model"])
    cp = tmp_path / "orbit.json"
    # --save-camera-path alone writes the path without rendering.
    assert pnerf(["render", model, "--path", "dolly-zoom", "--frames", "3", "--res", "20", "--save-camera-path", str(cp)]) == 0
    saved, _ = read_camera_path(cp)
    want = paths.dolly_zoom(3, 20)
    assert len(saved) == 3 and all(np.allclose(a.c2w, b.c2w, atol=1e-6) and abs(a.fy - b.fy) < 1e-6
                                   for a, b in zip(saved, want))
    out = tmp_path / "played.mp4"
    assert pnerf(["render", model, "--camera-path", str(cp), "--out", str(out), "--no-depth", "--quiet"]) == 0
    frames = imageio.mimread(out)
    assert len(frames) == 3 and frames[0].shape[:2] == (20, 20)
    # --res rescales a path; nerfstudio paths may be non-square.
    d = json.loads(cp.read_text())
    d["render_width"], d["render_height"] = 32, 16
    cp2 = tmp_path / "wide.json"
    cp2.write_text(json.dumps(d))
    out2 = tmp_path / "wide"
    assert pnerf(["render", model, "--camera-path", str(cp2), "--res", "8", "--out", str(out2), "--no-depth",
                  "--quiet"]) == 0
    pngs = sorted(out2.glob("*.png"))
    assert len(pngs) == 3 and imageio.imread(pngs[0]).shape[:2] == (8, 16)
    capsys.readouterr()
    # Errors: one line, exit code 2.
    for argv, needle in (
        (["--camera-path", str(cp), "--frames", "4", "--out", str(tmp_path / "x.mp4")], "--frames"),
        (["--camera-path", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.mp4")], "missing.json"),
        (["--save-camera-path", model], "also an input"),
        (["--camera-path", str(cp), "--save-camera-path", str(cp)], "also an input"),
        (["--path", "orbit"], "--out"),
    ):
        assert pnerf(["render", model, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, (argv, err)
    bad = tmp_path / "bad.json"
    bad.write_text("{\"camera_path\": [")
    assert pnerf(["render", model, "--camera-path", str(bad), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_cameras_hold_plain_floats_for_checkpoints():
    # rig cameras have numpy focal lengths; a checkpoint (weights_only load) refuses numpy scalars
    from pnerf_fast.geometry import rig
    from pnerf_fast.train.model import _cam_dict

    d = _cam_dict(rig.frontal_camera(64))
    assert all(type(d[k]) is float for k in ("fx", "fy", "cx", "cy"))


def test_the_documented_camera_path_example_reads():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "EXPORT.md").read_text()
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    cams, fps = cameras_from_camera_path(json.loads(block), "docs/EXPORT.md")
    want = paths.orbit(12, 256)[:2]
    assert fps == 24 and len(cams) == 2
    for a, b in zip(cams, want):
        np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-4)
        assert a.fy == pytest.approx(b.fy)
