"""The loss terms against their definitions written out by hand."""

from __future__ import annotations

import torch

from cvae_dist.loss import cvae_loss, kl_per_frame


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
