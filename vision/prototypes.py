"""Disease prototype memory (after Dia-LLaMA) for the 18 CT-RATE findings.

Each finding k has a learned query that attends over the visual tokens (disease-aware attention) to pool a
finding-specific feature f_k, and M positive and M negative prototypes. The probability of finding k comes from the
difference between f_k's best cosine similarity to its positive and to its negative prototypes; the contrastive
loss pulls f_k towards the prototypes of the correct polarity. The probabilities become a diagnostic cue text that
goes into the LLM prompt.

With ``region_tokens`` R > 0 the last R tokens are region-pooled features (``model.encoder.tokens`` ending with
``regions``): the attention runs over the other tokens, and a linear region head (per-feature standardised region
tokens → one logit per finding) adds its evidence to the prototype logits, which get a per-finding weight
(``memory_scale``: a confident but uninformative prototype logit must not drown the region evidence). Small
focal findings (enlarged nodes, devices) that attention over hundreds of grid tokens misses show in a region's max.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vision.registry import FINDING_NAMES

REGION_Z_CLIP = 3.0  # region head inputs are clipped to +-3 SD of the training distribution


class PrototypeMemory(nn.Module):
    """Per-finding disease-aware attention + positive/negative prototypes.

    Args:
        in_dim: encoder token width D.
        width: prototype space width.
        num_findings: K (18 CT-RATE findings, in registry order).
        prototypes_per_class: M prototypes per finding and polarity.
        temperature: cosine-similarity temperature of the contrastive loss and the logits.
        region_tokens: R region tokens at the end of every token set (0: none, no region head).
    """

    def __init__(self, in_dim: int, width: int = 128, num_findings: int = len(FINDING_NAMES),
                 prototypes_per_class: int = 4, temperature: float = 0.1, region_tokens: int = 0):
        super().__init__()
        self.region_tokens = int(region_tokens)
        if self.region_tokens:
            self.region_head = nn.Linear(self.region_tokens * in_dim, num_findings)
            nn.init.zeros_(self.region_head.weight)
            nn.init.zeros_(self.region_head.bias)
            self.register_buffer("region_mean", torch.zeros(self.region_tokens, in_dim))  # standardisation, fitted
            self.register_buffer("region_scale", torch.ones(self.region_tokens, in_dim))  # with the head
            self.memory_scale = nn.Parameter(torch.ones(num_findings))  # per-finding weight of the prototype logit
        self.norm = nn.LayerNorm(in_dim)
        self.key = nn.Linear(in_dim, width)
        self.value = nn.Linear(in_dim, width)
        self.queries = nn.Parameter(torch.randn(num_findings, width) * width ** -0.5)
        self.pos = nn.Parameter(torch.randn(num_findings, prototypes_per_class, width))
        self.neg = nn.Parameter(torch.randn(num_findings, prototypes_per_class, width))
        self.bias = nn.Parameter(torch.zeros(num_findings))
        self.temperature = float(temperature)
        self.width = int(width)

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, D) → attention tokens (B, N - R, D) and region tokens (B, R, D) (None without a region head)."""
        if not self.region_tokens:
            return tokens, None
        if tokens.shape[-2] <= self.region_tokens:
            raise ValueError(f"{tokens.shape[-2]} tokens: the memory expects grid tokens then {self.region_tokens} "
                             "region tokens (model.encoder.tokens ending with 'regions')")
        return tokens[..., : -self.region_tokens, :], tokens[..., -self.region_tokens:, :]

    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        """Region tokens (B, R, D) → standardised, clipped head inputs (B, R * D).

        Clipping at ``REGION_Z_CLIP`` standard deviations bounds what one feature can add on a CT unlike the training
        data (a real CT put some phantom-constant features thousands of SDs away: logits of +-80 without it)."""
        z = (regions - self.region_mean) / self.region_scale
        return z.clamp(-REGION_Z_CLIP, REGION_Z_CLIP).flatten(1)

    def region_novelty(self, regions: torch.Tensor) -> torch.Tensor:
        """Share (B,) of the region features that lie beyond ``REGION_Z_CLIP`` training standard deviations (before
        the clip): a feature-space out-of-domain score. Constant (padding) features are not counted. 200 + 200 unseen
        phantoms score at most 0.026 with the demo weights, real CTs 0.17-0.72."""
        live = self.region_scale != 1.0  # fitted scales; untouched (padding, never fitted) ones stay exactly 1
        z = (regions - self.region_mean) / self.region_scale
        return ((z.abs() > REGION_Z_CLIP) & live).flatten(1).sum(1) / live.sum().clamp_min(1)

    def region_logits(self, regions: torch.Tensor) -> torch.Tensor:
        """Region tokens (B, R, D) → the region head's logits (B, K)."""
        return self.region_head(self.region_features(regions))

    def memory_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of the prototype part alone (attention tokens only); ``forward`` adds the region head."""
        sp, sn, _ = self.similarities(self.split(tokens)[0])
        return self._logits(sp, sn, None)

    def _logits(self, sp: torch.Tensor, sn: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        """Finding logits (B, K) from the prototype similarities and, with a region head, the region tokens."""
        logits = (sp.amax(-1) - sn.amax(-1)) / self.temperature + self.bias
        if regions is not None:
            logits = self.memory_scale * logits + self.region_logits(regions)
        return logits

    def similarities(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, N, D) → (sim_pos (B, K, M), sim_neg (B, K, M), attention (B, K, N)); cosine similarities.
        ``tokens`` are the attention tokens (``split``)."""
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
        grid, regions = self.split(tokens.unsqueeze(0) if unbatched else tokens)
        sp, sn, _ = self.similarities(grid)
        logits = self._logits(sp, sn, regions)
        return logits[0] if unbatched else logits

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Prototype contrastive loss + BCE on the logits.

        Args:
            tokens: (B, N, D) encoder tokens.
            labels: (B, K) 0/1 finding labels (NaN = unknown, ignored).
        """
        grid, regions = self.split(tokens)
        sp, sn, _ = self.similarities(grid)
        known = ~torch.isnan(labels)
        y = torch.nan_to_num(labels).bool()
        sims = torch.cat([sp, sn], dim=-1) / self.temperature  # (B, K, 2M)
        m = sp.shape[-1]
        correct = torch.cat([y.unsqueeze(-1).expand_as(sp), (~y).unsqueeze(-1).expand_as(sn)], dim=-1)
        log_all = torch.logsumexp(sims, dim=-1)
        log_pos = torch.logsumexp(sims.masked_fill(~correct, float("-inf")), dim=-1)
        contrastive = (log_all - log_pos)[known].mean()
        logits = self._logits(sp, sn, regions)
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
