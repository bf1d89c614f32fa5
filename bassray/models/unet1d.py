"""Conditional 1-D U-Net for latent diffusion (docs/design.md §2.2, paper §3.2).

Input: the noisy target latent z_t [B, Dy, L] concatenated with the mix latent c_x [B, Dx, L]
(and, with ``self_condition``, the model's previous x0 estimate [B, Dy, L]); output: v [B, Dy, L]. Residual conv blocks, down/up-sampling by 2 per level, self-attention with
Dynamic Positional Bias at the lower resolutions (so any length works), and a sinusoidal embedding
of t concatenated to the feature maps before every block, as the paper does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bassray.config import UNetConfig


def _groups(channels: int) -> int:
    return math.gcd(32, channels)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of continuous t in [0, 1]: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual path; the time embedding is concatenated first."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch + temb_dim), in_ch + temb_dim)
        self.conv1 = nn.Conv1d(in_ch + temb_dim, out_ch, kernel, padding=kernel // 2)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel, padding=kernel // 2)
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:  # x [B, C, L], temb [B, T]
        h = torch.cat([x, temb[:, :, None].expand(-1, -1, x.shape[-1]).to(x.dtype)], dim=1)
        h = self.conv1(F.silu(self.norm1(h)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class DPBAttention(nn.Module):
    """Multi-head self-attention with Dynamic Positional Bias: softmax(QK^T/sqrt(d) + B),
    B_ij = MLP(i - j) per head. The MLP sees a signed log of the offset, so offsets longer than
    any seen in training map to inputs near the trained range."""

    def __init__(self, channels: int, heads: int, hidden: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} attention heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = nn.Conv1d(channels, channels, 1)
        self.dpb = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, heads))

    def position_bias(self, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        offsets = torch.arange(-(length - 1), length, device=device, dtype=torch.float32)
        feats = torch.sign(offsets) * torch.log1p(offsets.abs())
        table = self.dpb(feats[:, None].to(self.dpb[0].weight.dtype))        # [2L-1, H]
        idx = torch.arange(length, device=device)
        rel = idx[:, None] - idx[None, :] + (length - 1)                      # [L, L]
        return table[rel].permute(2, 0, 1).to(dtype)                          # [H, L, L]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, L]
        b, c, length = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, length).unbind(1)
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))                   # [B, H, L, d]
        bias = self.position_bias(length, x.device, q.dtype)[None]           # [1, H, L, L]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)        # [B, H, L, d]
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, length))


class UNet1d(nn.Module):
    def __init__(self, cfg: UNetConfig, target_dim: int, cond_dim: int):
        super().__init__()
        self.cfg = cfg
        self.target_dim, self.cond_dim = target_dim, cond_dim
        self.self_condition = cfg.self_condition
        chans = [cfg.base_channels * m for m in cfg.channel_mults]
        temb, k, drop = cfg.time_embed_dim, cfg.kernel_size, cfg.dropout
        self.levels = len(chans)
        if not chans or any(not 0 <= lv < self.levels for lv in cfg.attention_levels):
            raise ValueError(f"unet.attention_levels {cfg.attention_levels} must lie in [0, {len(chans)}) "
                             f"for channel_mults {cfg.channel_mults} (one level per entry)")
        self.total_downsampling = 2 ** (self.levels - 1)
        self.time_mlp = nn.Sequential(nn.Linear(temb, 4 * temb), nn.SiLU(), nn.Linear(4 * temb, temb))
        in_dim = target_dim * (2 if cfg.self_condition else 1) + cond_dim
        self.input = nn.Conv1d(in_dim, chans[0], k, padding=k // 2)

        def attention(level: int, ch: int) -> nn.Module:
            if level in cfg.attention_levels:
                return DPBAttention(ch, cfg.num_heads, cfg.dpb_hidden)
            return nn.Identity()

        self.down_blocks, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skip_chans, ch = [chans[0]], chans[0]
        for level, out_ch in enumerate(chans):
            for _ in range(cfg.blocks_per_level):
                self.down_blocks.append(ResBlock(ch, out_ch, temb, k, drop))
                self.down_attn.append(attention(level, out_ch))
                ch = out_ch
                skip_chans.append(ch)
            if level < self.levels - 1:
                self.downsample.append(nn.Conv1d(ch, ch, 4, stride=2, padding=1))
                skip_chans.append(ch)
        self.mid1 = ResBlock(ch, ch, temb, k, drop)
        self.mid_attn = DPBAttention(ch, cfg.num_heads, cfg.dpb_hidden)
        self.mid2 = ResBlock(ch, ch, temb, k, drop)
        self.up_blocks, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(self.levels)):
            out_ch = chans[level]
            for _ in range(cfg.blocks_per_level + 1):
                self.up_blocks.append(ResBlock(ch + skip_chans.pop(), out_ch, temb, k, drop))
                self.up_attn.append(attention(level, out_ch))
                ch = out_ch
            if level > 0:
                self.upsample.append(nn.ConvTranspose1d(ch, ch, 4, stride=2, padding=1))
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.output = nn.Conv1d(ch, target_dim, k, padding=k // 2)
        nn.init.zeros_(self.output.weight)  # start as "predict v = 0": a stable first step
        nn.init.zeros_(self.output.bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                x0_self: torch.Tensor | None = None) -> torch.Tensor:
        """z_t [B, Dy, L], t [B] (or scalar) in [0, 1], cond [B, Dx, L] -> v [B, Dy, L].
        ``x0_self`` [B, Dy, L]: a self-conditioning model's previous x0 estimate (None: zeros, the
        first pass); a model without self-conditioning refuses one."""
        length = z_t.shape[-1]
        if length % self.total_downsampling:
            raise ValueError(f"latent length {length} is not a multiple of {self.total_downsampling}: "
                             f"pad it (bassray.diffusion.sampler.pad_to_multiple does)")
        if cond.shape[-1] != length or cond.shape[1] != self.cond_dim or z_t.shape[1] != self.target_dim:
            raise ValueError(f"expected z_t [B, {self.target_dim}, L] and cond [B, {self.cond_dim}, L], "
                             f"got {tuple(z_t.shape)} and {tuple(cond.shape)}")
        dtype = self.input.weight.dtype
        t = torch.as_tensor(t, device=z_t.device).reshape(-1)
        if t.numel() not in (1, z_t.shape[0]):
            raise ValueError(f"t must hold one time per sample ({z_t.shape[0]}) or one for all, "
                             f"got {t.numel()}")
        t = t.expand(z_t.shape[0])
        temb = self.time_mlp(timestep_embedding(t, self.cfg.time_embed_dim).to(dtype))
        inputs = [z_t, cond]
        if self.self_condition:
            inputs.append(torch.zeros_like(z_t) if x0_self is None else x0_self.to(z_t.dtype))
            if inputs[-1].shape != z_t.shape:
                raise ValueError(f"x0_self must be shaped like z_t {tuple(z_t.shape)}, got {tuple(x0_self.shape)}")
        elif x0_self is not None:
            raise ValueError("this model was not trained with self-conditioning (unet.self_condition): "
                             "it takes no x0_self")
        h = self.input(torch.cat(inputs, dim=1).to(dtype))
        skips = [h]
        blocks = iter(zip(self.down_blocks, self.down_attn))
        for level in range(self.levels):
            for _ in range(self.cfg.blocks_per_level):
                block, attn = next(blocks)
                h = attn(block(h, temb))
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        blocks = iter(zip(self.up_blocks, self.up_attn))
        for i, level in enumerate(reversed(range(self.levels))):
            for _ in range(self.cfg.blocks_per_level + 1):
                block, attn = next(blocks)
                h = attn(block(torch.cat([h, skips.pop()], dim=1), temb))
            if level > 0:
                h = self.upsample[i](h)
        return self.output(F.silu(self.out_norm(h)))


def unet_for(config) -> UNet1d:
    """The U-Net of a whole config: it predicts the bass latent (its pitch as classes with
    ``unet.pitch_classes``, bassray/models/pitch_classes.py) from the mix latent."""
    from bassray.models.pitch_classes import diffused_target_dim
    return UNet1d(config.unet, diffused_target_dim(config), config.mix_autoencoder.latent_dim)
