"""Perceiver resampler (Flamingo-style): a fixed number of learned latents cross-attend to a variable number of
encoder tokens and are projected to the LLM hidden size, giving the visual tokens injected into the prompt."""

from __future__ import annotations

import torch
from torch import nn


class _Block(nn.Module):
    """Latents attend to [tokens; latents] (pre-norm), then a feed-forward layer; both residual."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_x = nn.LayerNorm(width)
        self.norm_l = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ff = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                                nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        q = self.norm_l(lat)
        kv = torch.cat([self.norm_x(x), q], dim=1)
        lat = lat + self.attn(q, kv, kv, need_weights=False)[0]
        return lat + self.ff(lat)


class PerceiverResampler(nn.Module):
    """Map encoder tokens (B, N, in_dim) to (B, num_latents, out_dim).

    Args:
        in_dim: encoder token width D (2048 for the Astra I3ResNet).
        out_dim: LLM hidden size.
        num_latents: number of visual tokens given to the LLM (32-64 is the usual range).
        depth: cross-attention layers.
        heads: attention heads; must divide ``width``.
        width: internal width (default ``out_dim``).
    """

    def __init__(self, in_dim: int, out_dim: int, num_latents: int = 32, depth: int = 2, heads: int = 8,
                 width: int | None = None):
        super().__init__()
        width = int(width or out_dim)
        if width % heads:
            raise ValueError(f"resampler width {width} must be divisible by heads {heads}")
        self.proj_in = nn.Linear(in_dim, width)
        self.latents = nn.Parameter(torch.randn(num_latents, width) * 0.02)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, N, in_dim) or (N, in_dim). Returns (B, num_latents, out_dim) (or unbatched)."""
        unbatched = tokens.dim() == 2
        x = self.proj_in(tokens.unsqueeze(0) if unbatched else tokens)
        lat = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        for blk in self.blocks:
            lat = blk(x, lat)
        out = self.proj_out(self.norm_out(lat))
        return out[0] if unbatched else out
