"""The synthetic light stage: determinism, landmarks on the right features, format output."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pnerf_fast import cli
from pnerf_fast.data import format as F
from pnerf_fast.data import lightstage as L
from pnerf_fast.geometry import rig
from pnerf_fast.face import landmarks as lm

I = lm.INDEX


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # OpenMP threads that wait for each other are very slow on a busy shared machine
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ls") / "a"
    L.generate_lightstage(root, subjects=3, res=24, seed=7, views=3, progress=False, workers=1)
    return root


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    L.generate_lightstage(tmp_path / "b", subjects=3, res=24, seed=7, views=3, progress=False, workers=1)
    a, b = _digest(tiny), _digest(tmp_path / "b")
    assert a == b and len(a) == 3 * 5 + 2  # 3 x (3 png + 2 json) + splits.json + contact sheet
    L.generate_lightstage(tmp_path / "c", subjects=1, res=24, seed=8, views=3, progress=False, workers=1,
                          contact_sheet_path=None)
    c = _digest(tmp_path / "c")
    assert c["subject_000/images/view_00.png"] != a["subject_000/images/view_00.png"]


def test_subject_depends_only_on_seed_and_index():
    p1, p2 = L.subject_params(3, 1), L.subject_params(3, 1)
    assert p1 == p2 and p1 != L.subject_params(3, 2) and p1 != L.subject_params(4, 1)


def test_dataset_loads_and_is_consistent(tiny):
    ds = F.load_dataset(tiny)
    assert [len(ds.subjects(s)) for s in ("train", "val", "test")] == [1, 1, 1]
    assert (tiny / "contact_sheet.png").is_file()
    frontal = []
    for name in ds.names:
        s = ds.subject(name)
        assert s.num_views == 3 and s.frontal_index == 0 and s.masks is not None
        assert s.images.shape == (3, 24, 24, 3)
        # the frontal camera is the rig's
        np.testing.assert_allclose(s.cameras[0].c2w, rig.frontal_camera(24).c2w, atol=1e-12)
        # straight alpha: coverage in multiples of 1/spp, background rgb where alpha is 0
        a = s.masks
        assert np.all(np.abs(a * 4 - np.round(a * 4)) < 1e-2)
        assert np.any((a > 0.1) & (a < 0.9)), "no anti-aliased edge pixels"
        np.testing.assert_allclose(s.images[a == 0], np.broadcast_to(L.BACKGROUND, (int((a == 0).sum()), 3)), atol=1e-6)
        # per-frame 2D landmarks are the projections of the 3D ones
        for k, cam in enumerate(s.cameras):
            np.testing.assert_allclose(s.landmarks_2d[s.file_paths[k]], cam.project(s.landmarks)[0], atol=1e-6)
        # ground-truth pose in meta maps head-space landmarks to the world ones
        h2w = s.meta["head_to_world"]
        params = L.subject_params(7, s.meta["index"])
        head = L.HeadGeometry(params.shape).landmarks()
        world = h2w["scale"] * head @ np.array(h2w["rotation"]).T + np.array(h2w["translation"])
        np.testing.assert_allclose(world, s.landmarks, atol=1e-5)
        frontal.append(s.images[0])
    # distinct subjects look different
    assert np.abs(frontal[0] - frontal[1]).mean() > 0.03


def test_mean_shape_landmarks_near_template_and_on_surface():
    geo = L.HeadGeometry(L.HeadShape())
    pts = geo.landmarks()
    assert np.abs(pts - lm.TEMPLATE).max() < 0.1
    assert float(geo.sdf_pts(torch.tensor(pts)).abs().max()) < 1e-3
    # landmarks move with the shape
    wide = L.HeadGeometry(L.HeadShape(eye_spacing=1.1, width=1.05)).landmarks()
    assert wide[I["eye_left_outer"], 0] - wide[I["eye_right_outer"], 0] > pts[I["eye_left_outer"], 0] - pts[I["eye_right_outer"], 0] + 0.05


def test_pose_applies_to_landmarks():
    params = L.subject_params(0, 4)
    cams = [rig.frontal_camera(16)]
    with torch.no_grad():
        _, world = L.render_subject(params, cams, spp=1)
    head = L.HeadGeometry(params.shape).landmarks()
    pose = params.pose
    np.testing.assert_allclose(world, pose.scale * head @ pose.rotation().T + np.array(pose.translation), atol=1e-9)
    assert max(abs(pose.yaw), abs(pose.pitch), abs(pose.roll)) <= 20 and 0.9 <= pose.scale <= 1.1
    R = pose.rotation()
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) > 0


@pytest.mark.parametrize("index,style", [(0, "classic"), (1, "classic"), (2, "classic"), (3, "portrait"), (8, "portrait")])
def test_landmarks_fall_on_the_right_features(index, style):
    res = 48
    angles = [(0.0, 0.0), (-15.0, 0.0), (15.0, 10.0), (0.0, -12.0)]  # within ~35 deg of the face (head pose <= 20 deg)
    cams = [rig.camera_at(y, p, res) for y, p in angles]
    params = L.subject_params(11, index, style)
    with torch.no_grad():
        imgs, world = L.render_subject(params, cams, spp=4)
    for (yaw, pitch), cam, img in zip(angles, cams, imgs):
        uv, depth = cam.project(world)
        alpha = img[..., 3]
        ui, vi = np.floor(uv).astype(int).T
        assert np.all((ui >= 0) & (ui < res) & (vi >= 0) & (vi < res)), "a landmark projects outside the image"
        nt = I["nose_tip"]
        assert alpha[vi[nt], ui[nt]] == 1.0, "nose tip is not on the head"
        # the subject's right eye is on the image's left in every view of this cap
        assert uv[I["eye_right_outer"], 0] < uv[nt, 0] < uv[I["eye_left_outer"], 0]
        assert uv[I["mouth_right_corner"], 0] < uv[I["mouth_left_corner"], 0]
        # up is up: brows above eyes above the nose tip above the mouth above the chin (v grows downwards)
        assert uv[I["brow_right_mid"], 1] < uv[I["eye_right_outer"], 1] < uv[I["mouth_right_corner"], 1] < uv[I["chin"], 1]
        assert uv[I["nose_bridge"], 1] < uv[nt, 1] < uv[I["upper_lip_top"], 1] < uv[I["lower_lip_bottom"], 1]
        if yaw == 0.0 and pitch == 0.0:  # the nose tip is nearer than the eyes and the chin
            assert depth[nt] < depth[[I["eye_right_outer"], I["eye_left_outer"], I["chin"]]].min()
        # the face landmarks in view land on the head
        for name in ("nose_bridge", "upper_lip_top", "chin", "brow_left_inner", "brow_right_inner"):
            k = I[name]
            assert alpha[vi[k], ui[k]] > 0.5, name
    # from the rig's side cameras (>= 40 deg from the face) the near eye is the near one
    for yaw in (-60.0, 60.0):
        depth = rig.camera_at(yaw, 0.0, res).project(world)[1]
        near, far = ("eye_right_outer", "eye_left_outer") if yaw < 0 else ("eye_left_outer", "eye_right_outer")
        assert depth[I[near]] < depth[I[far]] - 0.3
    # the iris is dark, the sclera light: the frontal image is darker at the eye centre than just inside the corner
    img, cam = imgs[0], cams[0]
    uv = cam.project(world)[0]
    eye_c = 0.5 * (uv[I["eye_left_outer"]] + uv[I["eye_left_inner"]])
    lum = img[..., :3].mean(-1)
    assert lum[int(eye_c[1]), int(eye_c[0])] < lum.max() - 0.1


def test_contact_sheet_and_splits():
    a = np.zeros((5, 6, 4), np.float32)
    a[..., 0] = 1.0
    a[..., 3] = 0.5
    sheet = L.contact_sheet([[a, a], [a]], background=(0, 0, 1), pad=1)
    assert sheet.shape == (2 * 6 + 1, 2 * 7 + 1, 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[1, 1], [128, 0, 128])
    np.testing.assert_array_equal(sheet[7, 8], [0, 0, 255])  # empty cell stays background
    with pytest.raises(ValueError, match=r"images\[0\]\[1\]"):
        L.contact_sheet([[a, np.zeros((4, 4, 3))]])
    assert L._split_counts(40, (0.8, 0.1, 0.1)) == (32, 4, 4)
    assert L._split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1)
    assert L._split_counts(2, (0.8, 0.1, 0.1)) == (2, 0, 0)
    with pytest.raises(ValueError, match="spp"):
        L._subpixel_offsets(0)
    offs = L._subpixel_offsets(4)
    assert len(np.unique(offs[:, 0])) == 4 and len(np.unique(offs[:, 1])) == 4  # rotated grid


def test_cli(tmp_path, capsys):
    rc = cli.main(["lightstage", "--out", str(tmp_path / "ds"), "--subjects", "1", "--res", "16", "--views", "2",
                   "--spp", "1", "--workers", "1", "--quiet"])
    assert rc == 0
    assert "wrote 1 classic subjects x 2 views at 16x16" in capsys.readouterr().out
    s = F.load_subject(tmp_path / "ds" / "subject_000")
    assert s.images.shape == (2, 16, 16, 3) and s.meta["style"] == "classic"
    rc = cli.main(["lightstage", "--out", str(tmp_path / "c"), "--subjects", "1", "--res", "16", "--views", "1",
                   "--spp", "1", "--workers", "1", "--quiet", "--style", "portrait"])
    assert rc == 0 and F.load_subject(tmp_path / "c" / "subject_000").meta["style"] == "portrait"
    assert json.loads((tmp_path / "ds" / "splits.json").read_text())["train"] == ["subject_000"]
    rc = cli.main(["lightstage", "--out", str(tmp_path / "x"), "--subjects", "0", "--quiet"])
    assert rc == 2 and "subjects must be >= 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the portrait light stage


def test_portrait_keeps_identity_and_varies_what_classic_lacks():
    ps = [L.subject_params(5, i, "portrait") for i in range(80)]
    cs = [L.subject_params(5, i, "classic") for i in range(3)]
    # same draws first: the portrait subject keeps the classic one's skin, pose and eyes
    for c, p in zip(cs, ps):
        assert p.appearance.skin == c.appearance.skin and p.pose == c.pose and p.shape.eye_spacing == c.shape.eye_spacing
        assert c.shape.hair_style == "cap" and not c.shape.body and c.lighting == L.Lighting()
    assert {p.shape.hair_style for p in ps} == {"short", "cap", "bob", "long", "curly", "bald"}
    assert all(p.shape.body for p in ps)
    assert 5 <= sum(p.shape.glasses > 0 for p in ps) <= 30 and 3 <= sum(p.shape.beard > 0 for p in ps) <= 25
    assert 20 <= sum(p.shape.smile > 0 for p in ps) <= 60 and sum(p.shape.mouth_open > 0 for p in ps) >= 5
    amb = np.array([p.lighting.ambient for p in ps])
    assert amb.std(0).min() > 0.01  # lighting differs from subject to subject
    assert len({p.appearance.clothes for p in ps}) > 40
    with pytest.raises(ValueError, match="style"):
        L.subject_params(5, 0, "cartoon")


def test_portrait_proportions_are_real_ones():
    """In outer-eye-corner units (ex-ex): the skull rises ~1.3 above the eyes and is ~2.1
    long (adult means, Farkas 1994); the classic heads are too flat and short."""
    def ratios(shape):
        r = L.HeadGeometry(shape).skull_proportions()
        return r["skull_above_eyes"], r["head_length"]

    up_c, len_c = ratios(L.HeadShape())
    up_p, len_p = ratios(L.HeadShape(cranium_lift=0.26, cranium_back=0.20))  # the portrait sampler's means
    assert up_c < 1.15 and len_c < 2.0
    assert 1.2 < up_p < 1.4 and 2.05 < len_p < 2.3, (up_p, len_p)


@pytest.mark.parametrize("style", ["long", "short", "bald"])
def test_portrait_hair_styles(style):
    shape = L.HeadShape(body=True, hair_style=style, hair_volume=0.2, hair_bottom=-1.3, hair_front=0.3,
                        neck_radius=0.5, cranium_lift=0.26, cranium_back=0.2)
    geo = L.HeadGeometry(shape)
    h = lambda x, y, z: float(geo.hair_sdf(torch.tensor([x]), torch.tensor([y]), torch.tensor([z])))  # noqa: E731
    above = h(0.0, 1.35, -0.2)  # just above the top of the skull
    behind_neck = h(0.0, -1.0, -0.75)  # behind the neck, below the ears
    throat = h(0.0, -1.0, 0.45)  # in front of the throat
    assert throat > 0  # no style covers the throat
    if style == "bald":
        assert above > 0 and behind_neck > 0
    elif style == "short":
        assert above < 0 and behind_neck > 0
    else:
        assert above < 0 and behind_neck < 0


def test_portrait_render_body_glasses_and_landmarks():
    params = L.subject_params(3, 6, "portrait")
    params.pose = L.HeadPose()
    params.shape.glasses = 1.0
    params.shape.smile, params.shape.mouth_open = 0.8, 0.04
    far = rig.camera_at(0.0, 0.0, 48, distance=9.0)  # sees the shoulders: the frame spans +-2.4 units
    with torch.no_grad():
        (img_p,), lms = L.render_subject(params, [far], spp=1)
        (img_c,), _ = L.render_subject(L.subject_params(3, 6, "classic"), [far], spp=1)
        (img_f,), _ = L.render_subject(params, [rig.frontal_camera(64)], spp=1)
    u, v = far.project(np.array([[1.4, -2.0, 0.0], [-1.4, -2.0, 0.0]]))[0].astype(int).T
    assert (img_p[v, u, 3] == 1).all() and (img_c[v, u, 3] == 0).all()  # shoulders only on portrait heads
    # the clothes there take the subject's clothes colour (up to the light), not skin
    col = img_p[v, u, :3]
    cl, sk = np.array(params.appearance.clothes), np.array(params.appearance.skin)
    cos = lambda a, b: (a @ b) / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    assert all(cos(c, cl) > cos(c, sk) - 1e-3 for c in col) or np.allclose(cl / cl.sum(), sk / sk.sum(), atol=0.05)
    # landmarks stay on the surface with a smile and an open mouth
    geo = L.HeadGeometry(params.shape)
    assert float(geo.sdf_pts(torch.tensor(geo.landmarks())).abs().max()) < 1e-3
    # the glasses change the frontal view in a band around the eyes, and only there
    cam = rig.frontal_camera(64)
    params.shape.glasses = 0.0
    with torch.no_grad():
        (img_n,), _ = L.render_subject(params, [cam], spp=1)
    changed = np.abs(img_f[..., :3] - img_n[..., :3]).mean(-1) > 0.1
    rows = np.nonzero(changed.any(1))[0]
    uv = cam.project(lms)[0]
    assert changed.sum() > 30
    assert rows.min() >= uv[I["brow_left_mid"], 1] - 4 and rows.max() <= uv[I["nose_tip"], 1] + 2


def test_classic_heads_are_the_first_light_stage():
    """The portrait features are all off for classic heads, so its renders are unchanged."""
    s = L.HeadShape()
    assert (s.cranium_lift, s.cranium_back, s.brow_lift, s.mouth_lift, s.smile, s.mouth_open, s.glasses, s.beard) == (0,) * 8
    assert s.hair_style == "cap" and not s.body and s.neck_radius == 0.36
    geo = L.HeadGeometry(s)
    assert not geo.portrait and "glasses" not in geo.parts(torch.zeros(1), torch.zeros(1), torch.zeros(1))
