"""Landmark consistency metrics (pnerf_fast/face/consistency.py) on tiny synthetic inputs,
plus one offline MediaPipe check on the astronaut crop. No finetune."""
import numpy as np
import pytest

from pnerf_fast.face import TEMPLATE
from pnerf_fast.face import consistency as fc
from pnerf_fast.geometry.cameras import Camera
from pnerf_fast.render.paths import camera_on_sphere


def simple_camera(f=100.0, c=50.0, size=100) -> Camera:
    """At the origin, looking down -z, y up (identity c2w)."""
    return Camera(fx=f, fy=f, cx=c, cy=c, width=size, height=size, c2w=np.eye(4))


def test_project_known_camera():
    cam = simple_camera()
    pts = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, -2.0], [0.0, 1.0, -4.0]])
    uv = fc.project_landmarks(pts, cam)
    # u = f x / depth + cx, v = -f y / depth + cy (v points down)
    np.testing.assert_allclose(uv, [[50.0, 50.0], [100.0, 50.0], [50.0, 25.0]], atol=1e-12)


def test_project_rig_camera_matches_a_moved_camera():
    # A camera on the sphere at yaw 30 sees the template like a camera at yaw 0 sees the
    # template turned by -30 degrees about y.
    res = 256
    t = np.radians(-30.0)
    rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    a = fc.project_landmarks(TEMPLATE, camera_on_sphere(30.0, 0.0, res))
    b = fc.project_landmarks(TEMPLATE @ rot.T, camera_on_sphere(0.0, 0.0, res))
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert np.all((a > 0) & (a < res)), "the template must lie inside the rig's frame"


def test_projected_equals_itself_nme_zero():
    proj = fc.project_landmarks(TEMPLATE, camera_on_sphere(-20.0, 0.0, 256))
    s = fc.score_view([proj.copy()], proj)
    assert s["detected"] is True
    assert s["nme"] == 0.0
    assert s["iod_px"] > 10


def test_shifted_landmarks_give_the_expected_nme():
    proj = fc.project_landmarks(TEMPLATE, camera_on_sphere(0.0, 0.0, 256))
    iod = np.linalg.norm(proj[16] - proj[19])  # outer eye corners, iBUG 36 and 45
    assert fc.inter_ocular(proj) == pytest.approx(iod)
    shifted = proj + np.array([3.0, 4.0])  # every point 5 px off
    assert fc.nme(shifted, proj) == pytest.approx(5.0 / iod, rel=1e-12)
    s = fc.score_view([shifted], proj)
    assert s["detected"] and s["nme"] == pytest.approx(5.0 / iod, rel=1e-12)
    # half the points off by 10 px, the others exact -> mean error 5 px
    half = proj.copy()
    half[::2, 0] += 10.0
    assert fc.nme(half, proj, normalizer=2.0) == pytest.approx(2.5)
    # only the jaw off: the inner NME does not see it
    jaw = proj.copy()
    jaw[:5] += 20.0
    s = fc.score_view([jaw], proj)
    assert s["nme_inner"] == 0.0 and s["nme"] == pytest.approx(5 * np.hypot(20, 20) / 24 / iod)
    assert len(fc.INNER_POINTS) == 19 and not set(fc.INNER_POINTS) & {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="'points'"):
        fc.nme(proj, proj, points=[24])


def test_match_rejects_a_face_elsewhere_and_picks_the_closest():
    proj = fc.project_landmarks(TEMPLATE, camera_on_sphere(0.0, 0.0, 256))
    far = proj + np.array([500.0, 0.0])
    assert fc.match_detection([far], proj) is None
    s = fc.score_view([far], proj)
    assert s == {"detected": False, "nme": None, "nme_inner": None, "iod_px": pytest.approx(fc.inter_ocular(proj))}
    near, nearer = proj + 6.0, proj + 1.0
    assert fc.match_detection([far, near, nearer], proj) == 2
    assert fc.match_detection([], proj) is None


def test_bands_and_detection_rate():
    views = [
        {"yaw": 0.0, "detected": True, "nme": 0.01},
        {"yaw": -10.0, "detected": True, "nme": 0.02}, {"yaw": 10.0, "detected": True, "nme": 0.04},
        {"yaw": -20.0, "detected": False, "nme": None}, {"yaw": 20.0, "detected": True, "nme": 0.1},
        {"yaw": -30.0, "detected": False, "nme": None}, {"yaw": 30.0, "detected": False, "nme": None},
    ]
    b = fc.summarize_bands(views)
    assert b["0"] == {"detect_rate": 1.0, "nme": 0.01, "nme_inner": None, "n_views": 1, "n_detected": 1}
    assert b["10"]["detect_rate"] == 1.0 and b["10"]["nme"] == pytest.approx(0.03)
    assert b["20"]["detect_rate"] == 0.5 and b["20"]["nme"] == pytest.approx(0.1)  # undetected: no error
    assert b["30"] == {"detect_rate": 0.0, "nme": None, "nme_inner": None, "n_views": 2, "n_detected": 0}
    assert fc.band_of_yaw(-29.0) == 30 and fc.band_of_yaw(4.0) == 0
    with pytest.raises(ValueError, match="'detected'"):
        fc.detection_rate([])


def test_bad_inputs_name_the_argument():
    cam = simple_camera()
    with pytest.raises(ValueError, match="'landmarks_world'.*behind"):
        fc.project_landmarks([[0.0, 0.0, 1.0]], cam)
    with pytest.raises(ValueError, match="'landmarks_world'.*rows \\[1\\]"):
        fc.project_landmarks([[0.0, 0.0, -1.0], [np.nan, 0.0, -1.0]], cam)
    with pytest.raises(ValueError, match="'landmarks_world'"):
        fc.project_landmarks(np.zeros((24, 2)), cam)
    p = np.zeros((24, 2))
    with pytest.raises(ValueError, match="'normalizer'"):
        fc.nme(p, p)  # coincident eye corners: no inter-ocular distance
    with pytest.raises(ValueError, match="shapes differ"):
        fc.nme(np.zeros((24, 2)), np.zeros((23, 2)), normalizer=1.0)
    with pytest.raises(ValueError, match="'image'"):
        fc.detect_points24(np.zeros((32, 32)))


def test_render_without_a_face_is_a_detection_failure():
    proj = fc.project_landmarks(TEMPLATE, camera_on_sphere(0.0, 0.0, 256))
    rng = np.random.default_rng(0)
    for img in (np.ones((256, 256, 3), np.float32),                       # an empty (white) render
                rng.random((256, 256, 3)).astype(np.float32)):            # noise
        cands = fc.detect_points24(img)
        assert cands == []
        s = fc.score_view(cands, proj)
        assert s["detected"] is False and s["nme"] is None
    assert fc.summarize_bands([{"yaw": 30.0, **s}])["30"]["detect_rate"] == 0.0


def test_real_crop_detects_its_own_projected_landmarks():
    """The conventions agree end to end: the aligned astronaut's 3D landmarks, projected
    with its camera, land on its 2D landmarks, and MediaPipe on the crop finds them."""
    from skimage.data import astronaut

    from pnerf_fast.face.align import align_photo

    a = align_photo(astronaut(), res=128, segment=False)
    proj = fc.project_landmarks(a.landmarks_world, a.camera)
    np.testing.assert_allclose(proj, a.landmarks_2d, atol=1e-6)
    cands = fc.detect_points24(a.image)
    assert len(cands) == 1 and cands[0].shape == (24, 2)
    s = fc.score_view(cands, proj)
    assert s["detected"] and s["nme"] < 0.05, s
    # the same face mirrored is found again, but not where the unmirrored one was projected
    flipped = fc.detect_points24(a.image[:, ::-1].copy())
    assert len(flipped) == 1
    assert fc.nme(flipped[0], proj) > s["nme"]
