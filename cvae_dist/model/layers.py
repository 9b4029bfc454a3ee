"""The course's building blocks, with its parameter names so that state dicts match.

Every layer is stride 1 and padded, so a feature map keeps the frame's height and width.
"""

from __future__ import annotations

import torch
from torch import nn

# The course writes `nn.LeakyReLU(True)` in two places, which sets negative_slope=1.0
# (an identity) rather than inplace=True. These slopes reproduce either reading.
FIXED_SLOPE = 0.01
COURSE_BUG_SLOPE = 1.0


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1)


class ResidualBlock(nn.Module):
    """conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU, plus a 1x1 `skip` when widths differ."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch)
        self.leaky_relu = nn.LeakyReLU(negative_slope=FIXED_SLOPE)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.skip = conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.leaky_relu(self.conv2(self.leaky_relu(self.conv1(x))))
        identity = x if self.skip is None else self.skip(x)
        return out + identity


class DepthConv(nn.Module):
    """1x1 conv + LeakyReLU -> depthwise 3x3 -> 1x1, plus a 1x1 `adaptor` when widths differ."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Sequential(conv1x1(in_ch, in_ch), nn.LeakyReLU(negative_slope=FIXED_SLOPE))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, kernel_size=3, padding=1, groups=in_ch)
        self.conv2 = conv1x1(in_ch, out_ch)
        self.adaptor = conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + identity


class ConvFFN(nn.Module):
    """A gated 1x1 feed-forward: expand to 4x, gate one half by LeakyReLU of the other, project back."""

    def __init__(self, channels: int):
        super().__init__()
        # 4x at every width, as the course: a cap on the width would change the state dict of wide models.
        self.conv = conv1x1(channels, channels * 4)
        self.conv_out = conv1x1(channels * 2, channels)
        self.relu = nn.LeakyReLU(negative_slope=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.conv(x).chunk(2, dim=1)
        return x + self.conv_out(value * self.relu(gate))


class DepthConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.block = nn.Sequential(DepthConv(in_ch, out_ch), ConvFFN(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class RGB_Encoder(nn.Sequential):  # noqa: N801 - the course's class name
    """Frame (3 channels) -> `out_ch` features."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            ResidualBlock(in_ch, out_ch // 8),
            DepthConvBlock(out_ch // 8, out_ch // 8),
            ResidualBlock(out_ch // 8, out_ch // 4),
            DepthConvBlock(out_ch // 4, out_ch // 4),
            ResidualBlock(out_ch // 4, out_ch // 2),
            DepthConvBlock(out_ch // 2, out_ch // 2),
            nn.Conv2d(out_ch // 2, out_ch, kernel_size=3, padding=1),
        )


class Label_Encoder(nn.Sequential):  # noqa: N801
    """Pose image (3 channels) -> `out_ch` features."""

    def __init__(self, in_ch: int, out_ch: int, slope: float):
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, out_ch // 2, kernel_size=7),
            nn.BatchNorm2d(out_ch // 2),
            nn.LeakyReLU(negative_slope=slope),
            ResidualBlock(out_ch // 2, out_ch),
        )


class Gaussian_Predictor(nn.Sequential):  # noqa: N801
    """Frame and pose features -> (mu, logvar) of the posterior, `out_ch` channels each."""

    def __init__(self, in_ch: int, out_ch: int, slope: float):
        super().__init__(
            ResidualBlock(in_ch, out_ch // 4),
            DepthConvBlock(out_ch // 4, out_ch // 4),
            ResidualBlock(out_ch // 4, out_ch // 2),
            DepthConvBlock(out_ch // 2, out_ch // 2),
            ResidualBlock(out_ch // 2, out_ch),
            nn.LeakyReLU(negative_slope=slope),
            nn.Conv2d(out_ch, out_ch * 2, kernel_size=1),
        )

    def forward(self, frame_feature: torch.Tensor, label_feature: torch.Tensor):
        mu, logvar = super().forward(torch.cat([frame_feature, label_feature], dim=1)).chunk(2, dim=1)
        return mu, logvar


class Decoder_Fusion(nn.Sequential):  # noqa: N801
    """Previous-frame, pose and latent features -> `out_ch` decoder features."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            DepthConvBlock(in_ch, in_ch),
            ResidualBlock(in_ch, in_ch // 4),
            DepthConvBlock(in_ch // 4, in_ch // 2),
            ResidualBlock(in_ch // 2, in_ch // 2),
            DepthConvBlock(in_ch // 2, out_ch // 2),
            nn.Conv2d(out_ch // 2, out_ch, kernel_size=1),
        )

    def forward(self, frame_feature: torch.Tensor, label_feature: torch.Tensor, z: torch.Tensor):
        return super().forward(torch.cat([frame_feature, label_feature, z], dim=1))


class Generator(nn.Sequential):
    """Decoder features -> an RGB frame (before any output activation)."""

    def __init__(self, in_ch: int, out_ch: int = 3):
        super().__init__(
            DepthConvBlock(in_ch, in_ch),
            ResidualBlock(in_ch, in_ch // 2),
            DepthConvBlock(in_ch // 2, in_ch // 2),
            ResidualBlock(in_ch // 2, in_ch // 4),
            DepthConvBlock(in_ch // 4, in_ch // 4),
            ResidualBlock(in_ch // 4, in_ch // 8),
            DepthConvBlock(in_ch // 8, in_ch // 8),
            nn.Conv2d(in_ch // 8, out_ch, kernel_size=1),
        )
