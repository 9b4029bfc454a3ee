"""The loss terms and PSNR against their definitions written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from cvae_dist.config import PRESETS, ModelConfig
from cvae_dist.data.course import Video, to_unit_float
from cvae_dist.evaluate import evaluate_video
from cvae_dist.loss import cvae_loss, kl_per_frame
from cvae_dist.metrics import average_psnr, course_psnr, psnr_per_frame, ssim_per_frame
from cvae_dist.model import CVAE
from cvae_dist.rollout import generate, one_step


def course_kl_criterion(mu, logvar, batch_size):
    """The course's kl_criterion, verbatim."""
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    KLD /= batch_size
    return KLD


def test_loss_sums_mse_and_kl_over_frames():
    torch.manual_seed(0)
    B, T = 3, 4
    pred, target = torch.rand(B, T, 3, 8, 8), torch.rand(B, T, 3, 8, 8)
    mu, logvar = torch.randn(B, T, 2, 8, 8), torch.randn(B, T, 2, 8, 8)
    mse_loss = torch.nn.MSELoss()
    expected_mse = sum(mse_loss(pred[:, t], target[:, t]) for t in range(T))
    expected_kl = sum(course_kl_criterion(mu[:, t], logvar[:, t], B) for t in range(T))
    terms = cvae_loss(pred, target, mu, logvar, beta=0.25)
    torch.testing.assert_close(terms.mse, expected_mse)
    torch.testing.assert_close(terms.kl, expected_kl)
    torch.testing.assert_close(terms.total, expected_mse + 0.25 * expected_kl)
    last = cvae_loss(pred, target, mu, logvar, beta=1.0, kl_last_frame_only=True)
    torch.testing.assert_close(last.kl, course_kl_criterion(mu[:, -1], logvar[:, -1], B))


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(2, 3, 4, 5, 5)
    assert torch.equal(kl_per_frame(zeros, zeros), torch.zeros(3))
    assert (kl_per_frame(zeros + 0.1, zeros) > 0).all()


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


def test_evaluation_scores_the_network_output_unclamped_as_the_course_does():
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"], output_activation="none")).eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.5)  # frames well outside [0, 1]
    frames = torch.randint(0, 256, (6, 3, 32, 64), dtype=torch.uint8)
    video = Video(frames=frames.numpy(), labels=torch.randint(0, 256, (6, 3, 32, 64), dtype=torch.uint8).numpy())
    truth, labels = to_unit_float(frames), to_unit_float(torch.from_numpy(video.labels))
    with torch.no_grad():
        pred = generate(model, truth[:1], labels[None], z="mean")[0]
        ahead = one_step(model, truth[None], labels[None], z="mean")[0]
    assert pred.min() < 0 or pred.max() > 1

    evaluation = evaluate_video(model, video, "cpu", z="mean")
    torch.testing.assert_close(evaluation.pred, pred)
    torch.testing.assert_close(evaluation.psnr, psnr_per_frame(pred, truth))
    torch.testing.assert_close(evaluation.ssim, ssim_per_frame(pred, truth))
    torch.testing.assert_close(evaluation.one_step_psnr, psnr_per_frame(ahead, truth))
    # A clamp only ever moves a prediction towards the truth's range: it would have scored higher.
    assert evaluation.average < float(average_psnr(psnr_per_frame(pred.clamp(0, 1), truth)))
