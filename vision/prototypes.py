"""Disease prototype memory (after Dia-LLaMA) for the 18 CT-RATE findings.

Each finding k has a learned query that attends over the visual tokens (disease-aware attention) to pool a
finding-specific feature f_k, and M positive and M negative prototypes. The probability of finding k comes from the
difference between f_k's best cosine similarity to its positive and to its negative prototypes; the contrastive
loss pulls f_k towards the prototypes of the correct polarity. The probabilities become a diagnostic cue text that
goes into the LLM prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vision.registry import FINDING_NAMES


class PrototypeMemory(nn.Module):
    """Per-finding disease-aware attention + positive/negative prototypes.

    Args:
        in_dim: encoder token width D.
        width: prototype space width.
        num_findings: K (18 CT-RATE findings, in registry order).
        prototypes_per_class: M prototypes per finding and polarity.
        temperature: cosine-similarity temperature of the contrastive loss and the logits.
    """

    def __init__(self, in_dim: int, width: int = 128, num_findings: int = len(FINDING_NAMES),
                 prototypes_per_class: int = 4, temperature: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.key = nn.Linear(in_dim, width)
        self.value = nn.Linear(in_dim, width)
        self.queries = nn.Parameter(torch.randn(num_findings, width) * width ** -0.5)
        self.pos = nn.Parameter(torch.randn(num_findings, prototypes_per_class, width))
        self.neg = nn.Parameter(torch.randn(num_findings, prototypes_per_class, width))
        self.bias = nn.Parameter(torch.zeros(num_findings))
        self.temperature = float(temperature)
        self.width = int(width)

    def similarities(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, N, D) → (sim_pos (B, K, M), sim_neg (B, K, M), attention (B, K, N)); cosine similarities."""
        x = self.norm(tokens)
        k, v = self.key(x), self.value(x)  # (B, N, W)
        attn = torch.softmax(torch.einsum("kw,bnw->bkn", self.queries, k) / self.width ** 0.5, dim=-1)
        f = F.normalize(torch.einsum("bkn,bnw->bkw", attn, v), dim=-1)  # (B, K, W)
        sp = torch.einsum("bkw,kmw->bkm", f, F.normalize(self.pos, dim=-1))
        sn = torch.einsum("bkw,kmw->bkm", f, F.normalize(self.neg, dim=-1))
        return sp, sn, attn

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) or (N, D) → logits (B, K) (or (K,)); sigmoid gives P(finding present)."""
        unbatched = tokens.dim() == 2
        sp, sn, _ = self.similarities(tokens.unsqueeze(0) if unbatched else tokens)
        logits = (sp.amax(-1) - sn.amax(-1)) / self.temperature + self.bias
        return logits[0] if unbatched else logits

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Prototype contrastive loss + BCE on the logits.

        Args:
            tokens: (B, N, D) encoder tokens.
            labels: (B, K) 0/1 finding labels (NaN = unknown, ignored).
        """
        sp, sn, _ = self.similarities(tokens)
        known = ~torch.isnan(labels)
        y = torch.nan_to_num(labels).bool()
        sims = torch.cat([sp, sn], dim=-1) / self.temperature  # (B, K, 2M)
        m = sp.shape[-1]
        correct = torch.cat([y.unsqueeze(-1).expand_as(sp), (~y).unsqueeze(-1).expand_as(sn)], dim=-1)
        log_all = torch.logsumexp(sims, dim=-1)
        log_pos = torch.logsumexp(sims.masked_fill(~correct, float("-inf")), dim=-1)
        contrastive = (log_all - log_pos)[known].mean()
        logits = (sp.amax(-1) - sn.amax(-1)) / self.temperature + self.bias
        bce = F.binary_cross_entropy_with_logits(logits[known], y[known].float())
        del m
        return contrastive + bce


def cue_text(probs: dict[str, float], present: float = 0.5, uncertain: float = 0.3) -> str:
    """Diagnostic cue sentence for the prompt from per-finding probabilities (CT-RATE names → P).

    Findings with P >= ``present`` are "likely present", ``uncertain`` <= P < ``present`` "possible", the rest
    "not suggested".
    """
    likely = [f"{n} ({p:.2f})" for n, p in probs.items() if p >= present]
    possible = [f"{n} ({p:.2f})" for n, p in probs.items() if uncertain <= p < present]
    parts = [f"likely present: {', '.join(likely) if likely else 'none'}"]
    if possible:
        parts.append(f"possible: {', '.join(possible)}")
    return "Diagnostic cues from the image model: " + "; ".join(parts) + "."
