"""The training objective: per-frame reconstruction MSE plus beta times the per-frame KL."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def kl_per_frame(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x,c) || N(0,I)) of each frame, summed over latent elements and divided by the batch size.

    mu, logvar: (B, T, N, H, W) -> (T,). This is the course's `kl_criterion`, applied per frame.
    """
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return kl.sum(dim=(0, 2, 3, 4)) / mu.shape[0]


def mse_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nn.MSELoss of each frame, averaged over batch, channels and pixels: (B, T, C, H, W) -> (T,)."""
    return F.mse_loss(pred, target, reduction="none").mean(dim=(0, 2, 3, 4))


@dataclass
class LossTerms:
    total: torch.Tensor
    mse: torch.Tensor
    kl: torch.Tensor


def cvae_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float,
    kl_last_frame_only: bool = False,
) -> LossTerms:
    """sum_t MSE(x^_t, x_t) + beta * sum_t KL_t over the predicted frames t = 1..T-1."""
    mse = mse_per_frame(pred.float(), target.float()).sum()
    kl_frames = kl_per_frame(mu.float(), logvar.float())
    kl = kl_frames[-1] if kl_last_frame_only else kl_frames.sum()
    return LossTerms(total=mse + beta * kl, mse=mse, kl=kl)
