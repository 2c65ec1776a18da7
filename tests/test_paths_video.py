"""Camera paths (orbit, dolly zoom, grid, spiral) and frame writers (mp4, gif, PNG folder)."""
import numpy as np
import pytest

from pnerf_fast.geometry.rig import DISTANCE, frontal_camera
from pnerf_fast.render import paths
from pnerf_fast.render.video import depth_to_rgb, make_grid_image, save_png, to_uint8, write_video


def _looks_at(cam, target):
    fwd = -cam.c2w[:3, 2]  # OpenGL: the camera looks down -z
    to_t = np.asarray(target, float) - cam.position
    return np.allclose(fwd, to_t / np.linalg.norm(to_t), atol=1e-9)


# ----------------------------------------------------------------------------- paths

def test_dolly_zoom_keeps_target_plane_fixed_and_moves_the_nose():
    res = 64
    cams = paths.dolly_zoom(12, res)
    d = [np.linalg.norm(c.position) for c in cams]
    assert min(d) == pytest.approx(paths.DOLLY_NEAR) and max(d) == pytest.approx(paths.DOLLY_FAR, rel=1e-3)
    on_plane = np.array([[0.5, 0.5, 0.0], [-0.6, 0.2, 0.0]])
    nose = np.array([0.3, 0.2, 1.0])  # off the plane (and off the optical axis)
    uv_plane = np.stack([c.project(on_plane)[0] for c in cams])
    uv_nose = np.stack([c.project(nose)[0] for c in cams])
    assert np.abs(uv_plane - uv_plane[0]).max() < 1e-9
    # and it is the rig's frontal framing
    assert np.allclose(uv_plane[0], frontal_camera(res).project(on_plane)[0], atol=1e-9)
    assert np.ptp(uv_nose[:, 0]) > 2.0  # pixels; closer cameras push the nose outwards
    near, far = int(np.argmin(d)), int(np.argmax(d))
    centre = res / 2
    assert abs(uv_nose[near, 0] - centre) > abs(uv_nose[far, 0] - centre)
    for c, dist in zip(cams, d):
        assert _looks_at(c, (0, 0, 0))
        assert c.fx == pytest.approx(frontal_camera(res).fx * dist / DISTANCE)


def test_dolly_zoom_loop_and_one_way():
    loop = paths.dolly_zoom(8, 32)
    assert np.allclose(loop[1].position, loop[-1].position)  # symmetric: loops back to the start
    one = paths.dolly_zoom(5, 32, start_distance=3.0, end_distance=6.0, loop=False)
    assert [round(float(np.linalg.norm(c.position)), 6) for c in (one[0], one[-1])] == [3.0, 6.0]
    d = [np.linalg.norm(c.position) for c in one]
    assert np.allclose(np.diff(np.log(d)), np.log(2) / 4)  # geometric spacing


def test_orbit_looks_at_target_keeps_distance_and_stays_in_front():
    target = (0.1, -0.2, 0.05)
    cams = paths.orbit(16, 48, radius=4.0, target=target, yaw_range_deg=40, pitch_amp_deg=8)
    assert len(cams) == 16
    for c in cams:
        assert np.linalg.norm(c.position - np.asarray(target)) == pytest.approx(4.0)
        assert _looks_at(c, target)
        assert (c.width, c.height) == (48, 48)
        assert c.position[2] - target[2] > 0  # in front of the face (+z)
    yaw = np.degrees(np.arctan2([c.position[0] - target[0] for c in cams], [c.position[2] - target[2] for c in cams]))
    assert yaw.max() == pytest.approx(40.0, abs=1e-6) and yaw.min() == pytest.approx(-40.0, abs=1e-6)
    flat = paths.orbit(8, 32, pitch_amp_deg=0)
    assert np.allclose([c.position[1] for c in flat], 0.0)


def test_grid_and_spiral():
    g = paths.grid(3, 2, 32)
    assert len(g) == 6
    # row 0 is above, column 0 on the viewer's left (camera at -x)
    assert g[0].position[1] > 0 and g[3].position[1] < 0
    assert g[0].position[0] < 0 < g[2].position[0] and g[1].position[0] == pytest.approx(0)
    assert all(_looks_at(c, (0, 0, 0)) for c in g)
    one = paths.grid(1, 1, 32)
    assert np.allclose(one[0].c2w, frontal_camera(32).c2w)
    s = paths.spiral(10, 32)
    assert np.allclose(s[0].c2w, frontal_camera(32).c2w)
    assert all(np.linalg.norm(c.position) == pytest.approx(DISTANCE) for c in s)


def test_path_argument_errors():
    with pytest.raises(ValueError, match="n_frames"):
        paths.orbit(0, 32)
    with pytest.raises(ValueError, match="start_distance"):
        paths.dolly_zoom(4, 32, start_distance=0)
    with pytest.raises(ValueError, match="n_pitch"):
        paths.grid(2, 0, 32)


# ----------------------------------------------------------------------------- video

@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [rng.random((32, 32, 3)) for _ in range(8)]


@pytest.mark.parametrize("name", ["sub/clip.mp4", "sub/clip.gif"])
def test_write_video_files_read_back(tmp_path, frames, name):
    import imageio.v2 as imageio

    out = write_video(frames, tmp_path / name, fps=12)
    assert out.is_file() and out.stat().st_size > 0
    back = imageio.mimread(str(out))
    assert len(back) == 8
    assert back[0].shape[:2] == (32, 32)
    if name.endswith(".gif"):  # palette per frame: close, not exact
        assert np.abs(back[3][..., :3].astype(int) - to_uint8(frames[3]).astype(int)).mean() < 40


def test_write_video_odd_size_mp4_and_uint8(tmp_path):
    import imageio.v2 as imageio

    fr = [np.full((33, 31, 3), 10 * i, np.uint8) for i in range(8)]
    back = imageio.mimread(str(write_video(fr, tmp_path / "odd.mp4")))
    assert len(back) == 8 and back[0].shape == (34, 32, 3)  # padded to even
    assert abs(int(back[5][16, 16, 1]) - 50) <= 3


def test_write_video_png_folder(tmp_path, frames):
    import imageio.v2 as imageio

    out = write_video(frames, tmp_path / "a" / "frames")
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files[:2]] == ["frame_00000.png", "frame_00001.png"] and len(files) == 8
    assert np.array_equal(imageio.imread(files[2]), to_uint8(frames[2]))


def test_write_video_errors(tmp_path, frames):
    with pytest.raises(ValueError, match="unknown suffix '.avi'"):
        write_video(frames, tmp_path / "x.avi")
    with pytest.raises(ValueError, match=r"frames\[1\] has shape"):
        write_video([frames[0], frames[0][:16]], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="frames is empty"):
        write_video([], tmp_path / "x.mp4")
    assert not any(tmp_path.iterdir())


def test_depth_to_rgb_and_grid(tmp_path):
    depth = np.linspace(2.0, 5.0, 16 * 16).reshape(16, 16)
    opacity = np.ones((16, 16))
    opacity[:2] = 0.2
    img = depth_to_rgb(depth, opacity)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert not img[:2].any()  # background black
    assert img[2:].sum(-1).min() > 0
    assert img[2, 0, 0] > img[2, 0, 2] and img[-1, -1, 2] > img[-1, -1, 0]  # near red, far blue
    fixed = depth_to_rgb(depth, opacity, near=0.0, far=10.0)
    assert not np.array_equal(fixed, img)
    sheet = make_grid_image([img] * 5, ncols=3, pad=2)
    assert sheet.shape == (2 * 18 + 2, 3 * 18 + 2, 3)
    assert np.array_equal(sheet[2:18, 20:36], img) and (sheet[:2] == 255).all()
    p = save_png(tmp_path / "d" / "sheet.png", sheet)
    import imageio.v2 as imageio

    assert np.array_equal(imageio.imread(p), sheet)
