"""The course's network as its own code defines it, to check that checkpoints pass both ways.

Written from the course's description of its layers rather than imported from
cvae_dist, and held to the course's template state dict (tests/data/template_state_dict.json) at its
default widths by test_interop.py. The course writes `nn.LeakyReLU(True)` (a slope of 1.0) in the
label encoder and the Gaussian predictor; its Gaussian predictor's forward also draws z, which
students write, and is left out here. `course_rollout` is the test-time loop of its Tester.py, as
students complete it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.leaky_relu = nn.LeakyReLU(0.01)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x):
        identity = x if self.skip is None else self.skip(x)
        return self.leaky_relu(self.conv2(self.leaky_relu(self.conv1(x)))) + identity


class DepthConv(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, in_ch, 1), nn.LeakyReLU(0.01))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1)
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x):
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + identity


class ConvFFN(nn.Module):
    def __init__(self, in_ch):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, in_ch * 4, 1)
        self.conv_out = nn.Conv2d(in_ch * 2, in_ch, 1)
        self.relu = nn.LeakyReLU(0.1)

    def forward(self, x):
        x1, x2 = self.conv(x).chunk(2, 1)
        return x + self.conv_out(x1 * self.relu(x2))


class DepthConvBlock(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.block = nn.Sequential(DepthConv(in_ch, out_ch), ConvFFN(out_ch))

    def forward(self, x):
        return self.block(x)


class RGB_Encoder(nn.Sequential):  # noqa: N801
    def __init__(self, in_chans, out_chans):
        super().__init__(
            ResidualBlock(in_chans, out_chans // 8),
            DepthConvBlock(out_chans // 8, out_chans // 8),
            ResidualBlock(out_chans // 8, out_chans // 4),
            DepthConvBlock(out_chans // 4, out_chans // 4),
            ResidualBlock(out_chans // 4, out_chans // 2),
            DepthConvBlock(out_chans // 2, out_chans // 2),
            nn.Conv2d(out_chans // 2, out_chans, 3, padding=1),
        )


class Label_Encoder(nn.Sequential):  # noqa: N801
    def __init__(self, in_chans, out_chans):
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_chans, out_chans // 2, kernel_size=7, padding=0),
            nn.BatchNorm2d(out_chans // 2),
            nn.LeakyReLU(True),
            ResidualBlock(out_chans // 2, out_chans),
        )


class Gaussian_Predictor(nn.Sequential):  # noqa: N801
    def __init__(self, in_chans, out_chans):
        super().__init__(
            ResidualBlock(in_chans, out_chans // 4),
            DepthConvBlock(out_chans // 4, out_chans // 4),
            ResidualBlock(out_chans // 4, out_chans // 2),
            DepthConvBlock(out_chans // 2, out_chans // 2),
            ResidualBlock(out_chans // 2, out_chans),
            nn.LeakyReLU(True),
            nn.Conv2d(out_chans, out_chans * 2, kernel_size=1),
        )


class Decoder_Fusion(nn.Sequential):  # noqa: N801
    def __init__(self, in_chans, out_chans):
        super().__init__(
            DepthConvBlock(in_chans, in_chans),
            ResidualBlock(in_chans, in_chans // 4),
            DepthConvBlock(in_chans // 4, in_chans // 2),
            ResidualBlock(in_chans // 2, in_chans // 2),
            DepthConvBlock(in_chans // 2, out_chans // 2),
            nn.Conv2d(out_chans // 2, out_chans, 1, 1),
        )

    def forward(self, img, label, parm):
        return super().forward(torch.cat([img, label, parm], dim=1))


class Generator(nn.Sequential):
    def __init__(self, input_nc, output_nc):
        super().__init__(
            DepthConvBlock(input_nc, input_nc),
            ResidualBlock(input_nc, input_nc // 2),
            DepthConvBlock(input_nc // 2, input_nc // 2),
            ResidualBlock(input_nc // 2, input_nc // 4),
            DepthConvBlock(input_nc // 4, input_nc // 4),
            ResidualBlock(input_nc // 4, input_nc // 8),
            DepthConvBlock(input_nc // 8, input_nc // 8),
            nn.Conv2d(input_nc // 8, output_nc, 1),
        )


class VAE_Model(nn.Module):  # noqa: N801
    """The networks of the course's VAE_Model (its training methods left out), built from its args."""

    def __init__(self, args):
        super().__init__()
        self.frame_transformation = RGB_Encoder(3, args.F_dim)
        self.label_transformation = Label_Encoder(3, args.L_dim)
        self.Gaussian_Predictor = Gaussian_Predictor(args.F_dim + args.L_dim, args.N_dim)
        self.Decoder_Fusion = Decoder_Fusion(args.F_dim + args.L_dim + args.N_dim, args.D_out_dim)
        self.Generator = Generator(input_nc=args.D_out_dim, output_nc=3)


def course_model(F_dim=128, L_dim=32, N_dim=12, D_out_dim=192) -> VAE_Model:
    """The course's network at these widths (its argparse defaults unless given)."""
    return VAE_Model(SimpleNamespace(F_dim=F_dim, L_dim=L_dim, N_dim=N_dim, D_out_dim=D_out_dim))


@torch.no_grad()
def course_rollout(model: VAE_Model, first_frame: torch.Tensor, labels: torch.Tensor, N_dim: int, generator: torch.Generator) -> torch.Tensor:
    """The course's Tester.py loop: each frame from the previous output, its pose and z ~ N(0, I), with no clamp.

    first_frame (3, H, W) and labels (T, 3, H, W) -> (T, 3, H, W), the given frame first; one z of
    (1, N_dim, H, W) is drawn from `generator` per predicted frame, in order."""
    frames = [first_frame[None]]
    for label in labels[1:]:
        z = torch.randn((1, N_dim, *first_frame.shape[-2:]), generator=generator)
        fused = model.Decoder_Fusion(model.frame_transformation(frames[-1]), model.label_transformation(label[None]), z)
        frames.append(model.Generator(fused))
    return torch.cat(frames)
