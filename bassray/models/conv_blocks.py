"""1-D convolution building blocks shared by the autoencoders and the critics.

No normalisation layer over time on purpose: GroupNorm/LayerNorm over the time axis would make a
frame's latent depend on the whole input, so encoding a song in one piece and in chunks would
differ. Residual branches are scaled down at init instead, which keeps deep stacks stable.
"""
from __future__ import annotations

import torch
from torch import nn

LEAKY_SLOPE = 0.2


class ResidualBlock1d(nn.Module):
    """``x + conv(act(conv(act(x))))`` with a dilated first conv; keeps shape ``[B, C, N]``."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the length, got {kernel_size}")
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                               padding=dilation * (kernel_size - 1) // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        with torch.no_grad():  # small residual branch at init: the block starts near identity
            self.conv2.weight.mul_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, N] -> [B, C, N]
        return x + self.conv2(self.act(self.conv1(self.act(x))))


def residual_stack(channels: int, blocks: int, kernel_size: int) -> nn.Sequential:
    """``blocks`` residual blocks with dilations 1, 3, 9, ... (a wide receptive field cheaply)."""
    return nn.Sequential(*[ResidualBlock1d(channels, kernel_size, dilation=3 ** (i % 4))
                           for i in range(blocks)])


def _resample_kernel(factor: int) -> tuple[int, int]:
    """(kernel, padding) such that stride ``factor`` maps length N*f <-> N exactly."""
    if factor < 1:
        raise ValueError(f"resampling factor must be >= 1, got {factor}")
    kernel = 2 * factor if factor % 2 == 0 else factor
    return kernel, (kernel - factor) // 2


class Downsample1d(nn.Module):
    """Strided conv: ``[B, C_in, N*f] -> [B, C_out, N]``."""

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        kernel, padding = _resample_kernel(factor)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=factor, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(x))


class Upsample1d(nn.Module):
    """Transposed strided conv: ``[B, C_in, N] -> [B, C_out, N*f]``."""

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        kernel, padding = _resample_kernel(factor)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel, stride=factor, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(x))
