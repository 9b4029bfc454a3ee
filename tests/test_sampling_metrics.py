"""SSIM against an independent reference, and evaluation over N latent samples."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cvae_dist import evaluate
from cvae_dist.config import resolve, save_config_file
from cvae_dist.data.course import CourseDataset
from cvae_dist.metrics import average_psnr, psnr_per_frame, ssim_per_frame
from cvae_dist.model import CVAE

C1, C2 = 0.01**2, 0.03**2


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (C, H, W) images in [0, 1], window by window, straight from Wang et al. (2004).

    Every 11x11 window that fits in the image is weighted by a Gaussian of sigma 1.5 written out
    in two dimensions; statistics are per channel; the index is averaged over windows and channels.
    """
    offsets = np.arange(11) - 5
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    weights /= weights.sum()
    channels, height, width = x.shape
    scores = []
    for c in range(channels):
        for top in range(height - 10):
            for left in range(width - 10):
                a, b = x[c, top : top + 11, left : left + 11], y[c, top : top + 11, left : left + 11]
                mu_a, mu_b = (weights * a).sum(), (weights * b).sum()
                var_a, var_b = (weights * (a - mu_a) ** 2).sum(), (weights * (b - mu_b) ** 2).sum()
                cov = (weights * (a - mu_a) * (b - mu_b)).sum()
                scores.append(((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2)))
    return float(np.mean(scores))


def test_ssim_matches_a_window_by_window_reference():
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 16, 24, generator=generator)
    noisy = (truth + 0.1 * torch.randn(truth.shape, generator=generator)).clamp(0, 1)
    ours = ssim_per_frame(noisy, truth)
    assert ours.shape == (2,)
    for frame in range(2):
        assert float(ours[frame]) == pytest.approx(
            reference_ssim(noisy[frame].numpy().astype(np.float64), truth[frame].numpy().astype(np.float64)), abs=1e-6
        )
    assert 0.2 < float(ours[0]) < 0.95


def test_ssim_of_flat_images_has_its_closed_form():
    a, b = 0.3, 0.7
    flat_a, flat_b = torch.full((1, 3, 32, 64), a), torch.full((1, 3, 32, 64), b)
    # No variance anywhere: only the luminance term (2ab + C1) / (a^2 + b^2 + C1) is left.
    assert float(ssim_per_frame(flat_a, flat_b)[0]) == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-6)
    image = torch.rand(4, 5, 3, 32, 64)
    assert torch.allclose(ssim_per_frame(image, image), torch.ones(4, 5), atol=1e-6)


@pytest.fixture
def tiny_weights(dataset_root, tmp_path):
    config = resolve({"preset": ("tiny", "test"), "DR": (str(dataset_root), "test")})
    torch.manual_seed(0)
    model = CVAE(config.model)
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    save_config_file(config, folder / "config.yaml")
    return model.eval(), folder


def test_n_samples_are_rolled_out_together_and_scored_mean_and_best(tiny_weights, dataset_root):
    model, _ = tiny_weights
    video = CourseDataset(dataset_root, 32, 64).val()
    result = evaluate.evaluate_video(model, video, "cpu", length=12, seed=3, samples=4)
    assert result.psnr_samples.shape == (4, 12) and result.ssim_samples.shape == (4, 12)
    assert not torch.equal(result.psnr_samples[0], result.psnr_samples[1])  # the samples differ
    torch.testing.assert_close(result.psnr, result.psnr_samples.mean(0))
    best = int(average_psnr(result.psnr_samples).argmax())
    torch.testing.assert_close(result.best_psnr, result.psnr_samples[best])
    torch.testing.assert_close(result.best_ssim, result.ssim_samples[int(average_psnr(result.ssim_samples).argmax())])
    scores = result.averages()
    assert scores["best_psnr"] >= scores["psnr"] and scores["best_ssim"] >= scores["ssim"]
    # `pred` is the best sample's video, and its scores are what the table says.
    truth = torch.from_numpy(np.array(video.frames[:12])).float() / 255
    assert float(average_psnr(psnr_per_frame(result.pred, truth))) == pytest.approx(scores["best_psnr"], abs=1e-4)


def test_z_mean_is_deterministic(tiny_weights, dataset_root):
    model, _ = tiny_weights
    video = CourseDataset(dataset_root, 32, 64).val()
    first = evaluate.evaluate_video(model, video, "cpu", length=6, seed=1, z="mean")
    second = evaluate.evaluate_video(model, video, "cpu", length=6, seed=2, z="mean")
    assert torch.equal(first.pred, second.pred)


def test_evaluate_cli_writes_mean_and_best_of_n(tiny_weights, dataset_root, tmp_path, capsys):
    _, folder = tiny_weights
    out = tmp_path / "eval"
    code = evaluate.main(["--ckpt", str(folder), "--DR", str(dataset_root), "--out", str(out), "--val_vi_len", "10", "--samples", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "over 3 samples: PSNR mean-of-N" in printed and "SSIM mean-of-N" in printed
    with (out / "psnr_per_frame.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["frame"]) for r in rows] == list(range(1, 10))
    assert all(0 < float(r["ssim"]) <= 1 and float(r["best_psnr"]) > 0 and math.isfinite(float(r["best_ssim"])) for r in rows)
    assert evaluate.main(["--ckpt", str(folder), "--out", str(out), "--samples", "2", "--z", "mean"]) == 2
    assert capsys.readouterr().err == "error: --samples > 1 needs --z prior: with z at its mean every sample is the same\n"
    assert evaluate.main(["--ckpt", str(folder), "--DR", str(dataset_root), "--out", str(out), "--val_vi_len", "100", "--z", "mean"]) == 0
    assert capsys.readouterr().err == (
        f"warning: --val_vi_len 100: the validation video {dataset_root / 'val/val_img'} has 64 frames; rolling out all 64\n"
    )
    assert len((out / "psnr_per_frame.csv").read_text().splitlines()) == 64  # the header and frames 1-63
    assert evaluate.main(["--ckpt", str(folder / "nowhere"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --ckpt {folder / 'nowhere'}: no such file or folder\n"
