"""Frame-quality metrics, as the course defines them (data range 1)."""

from __future__ import annotations

import torch

# An identical frame has infinite PSNR; this floor on the MSE caps it at 100 dB.
MIN_MSE = 1e-10


def psnr_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of each frame, with the MSE over its channels and pixels: (..., C, H, W) -> (...)."""
    mse = (pred.float() - target.float()).pow(2).mean(dim=(-3, -2, -1))
    return -10 * torch.log10(mse.clamp_min(MIN_MSE))


def course_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The course's `Generate_PSNR`: the MSE is averaged over the whole batch before the log.

    Kept to compare with numbers from the course code; it is not the mean of per-frame PSNRs.
    """
    mse = (pred.float() - target.float()).pow(2).mean()
    return -10 * torch.log10(mse.clamp_min(MIN_MSE))


def average_psnr(psnr: torch.Tensor, course_scoring: bool = False) -> torch.Tensor:
    """Mean PSNR over frames 1..T-1 of (..., T); frame 0 is given, not predicted.

    `course_scoring` divides the sum by T-2 (628 for 630 frames), as the course's test scorer does.
    """
    predicted = psnr[..., 1:]
    denominator = predicted.shape[-1] - 1 if course_scoring else predicted.shape[-1]
    return predicted.sum(dim=-1) / denominator
