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


# SSIM as Wang et al. (2004) define it: an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """A normalised 1-D Gaussian of `size` taps; SSIM's 2-D window is its outer product."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def ssim_per_frame(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of each frame: (..., C, H, W) -> (...).

    Local statistics are Gaussian-weighted over the window positions that fit inside the frame
    (no padding, as Wang et al.'s reference code), computed per channel; the SSIM map is then
    averaged over channels and positions.
    """
    pred, target = torch.broadcast_tensors(pred, target)  # e.g. N samples against one truth
    shape = pred.shape
    channels = shape[-3]
    x = pred.reshape(-1, channels, *shape[-2:]).double()
    y = target.reshape(-1, channels, *shape[-2:]).double()
    taps = gaussian_window().to(x.device)

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        # The 2-D Gaussian is separable: filter rows, then columns, one channel at a time.
        rows = torch.nn.functional.conv2d(image, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        return torch.nn.functional.conv2d(rows, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).float().reshape(shape[:-3])
