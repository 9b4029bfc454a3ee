"""PSNR and SSIM against their definitions written out by hand and an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvae_dist.metrics import average_psnr, course_psnr, psnr_per_frame, ssim_per_frame


def test_psnr_per_frame_by_hand():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1, 0] += 0.3  # MSE 0.09 / 3 = 0.03 -> 15.23 dB
    torch.testing.assert_close(psnr_per_frame(pred, target), torch.tensor([20.0, -10 * math.log10(0.03)]))
    assert psnr_per_frame(target, target).tolist() == [100.0, 100.0]  # identical frames are capped, not inf


def test_course_psnr_averages_mse_before_the_log():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[0] += 0.1
    pred[1] += 0.3
    per_frame = psnr_per_frame(pred, target).mean()
    assert course_psnr(pred, target).item() == pytest.approx(-10 * math.log10((0.01 + 0.09) / 2))
    assert course_psnr(pred, target) < per_frame  # the course's figure is biased low


def test_average_over_predicted_frames_and_the_course_denominator():
    psnr = torch.tensor([100.0] + [30.0] * 629)
    assert average_psnr(psnr).item() == pytest.approx(30.0)
    assert average_psnr(psnr, course_scoring=True).item() == pytest.approx(30.0 * 629 / 628)


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
