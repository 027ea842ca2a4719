"""CTScribeModel: frozen 3D CT encoder → perceiver bridge + disease prototype memory → (quantized) LLM.

Built from one ``Config`` (``CTScribeModel.from_config``). The ``model`` section:

```yaml
model:
  encoder: {kind: astra|vit, preset: null, tokens: null}  # preset null → vision.preset; tokens null → checkpoint's
                                                 # (astra: [layer4] or e.g. [layer4, layer3, regions]); vit: ...
  resampler: {num_latents: 32, depth: 2, heads: 8, width: null}
  prototypes: {width: 128, per_class: 4, temperature: 0.1, use_visual_tokens: true, use_cues: true}
  llm: {...}                                     # see chatapp.llm
  checkpoint: demo | <dir> | null                # null → random bridge (tests, training from scratch)
  feature_cache: true                            # encoder outputs cached on disk by volume content hash
```

When a checkpoint is given, its architecture (encoder kind, preset, resampler/prototype sizes, LLM name, LoRA) wins
over the config; runtime switches (ablation flags, quantization, device, max_new_tokens) still come from the config.

With region tokens (token set ending with ``regions``) ``encode(volume, regions)`` also takes the 10 region masks;
pass the ones the pipeline has already computed (``Study.regions``), else ``encode`` computes them itself.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chatapp.config import Config
from chatapp.llm import IMAGE_PLACEHOLDER, LLM, load_llm
from chatapp.schema import DEMO_WEIGHTS_NOTICE
from vision.encoder import CTEncoder, FeatureCache, build_encoder, check_preset
from vision.errors import CheckpointError, ConfigError
from vision.prototypes import PrototypeMemory, cue_text
from vision.registry import FINDING_NAMES
from vision.resampler import PerceiverResampler
from vision.volume import CTVolume

log = logging.getLogger(__name__)

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "demo"
SYSTEM_PROMPT = ("You are a radiology assistant drafting chest CT findings. Be concise and factual; "
                 "only describe what the image and the cues support.")
REPORT_INSTRUCTION = "Write the findings section of the radiology report for this chest CT."
ARCH_KEYS = ("encoder", "resampler", "prototypes_arch", "llm_name", "lora", "preset", "preset_params")


class Bridge(nn.Module):
    """The trainable vision-language bridge: perceiver resampler + prototype memory."""

    def __init__(self, enc_dim: int, llm_hidden: int, resampler: dict, prototypes: dict, region_tokens: int = 0):
        super().__init__()
        self.resampler = PerceiverResampler(enc_dim, llm_hidden, num_latents=int(resampler.get("num_latents", 32)),
                                            depth=int(resampler.get("depth", 2)), heads=int(resampler.get("heads", 8)),
                                            width=resampler.get("width"))
        self.prototypes = PrototypeMemory(enc_dim, width=int(prototypes.get("width", 128)),
                                          prototypes_per_class=int(prototypes.get("per_class", 4)),
                                          temperature=float(prototypes.get("temperature", 0.1)),
                                          region_tokens=region_tokens)


def preprocess_volume(volume: CTVolume, preset_name: str, params: dict) -> torch.Tensor:
    """Volume → encoder input (1, X, Y, Z) float32, using ``vision.preprocess`` when it exists.

    The local fallback implements the resize-style presets (crop foreground > HU, area resize, HU window → scale);
    spacing-based presets need ``vision.preprocess``.
    """
    try:
        from vision.preprocess import preprocess  # engineer A's MONAI pipeline
    except ImportError:
        preprocess = None
    if preprocess is not None:
        try:
            res = preprocess(volume, params if params else preset_name)
        except TypeError:
            res = preprocess(volume, preset_name)
        t = res.tensor if hasattr(res, "tensor") else res
        return torch.as_tensor(t, dtype=torch.float32)
    import torch.nn.functional as F

    a = torch.as_tensor(volume.array, dtype=torch.float32)
    thr = params.get("crop_foreground_hu")
    if thr is not None:
        nz = torch.nonzero(a > float(thr))
        if len(nz):
            lo, hi = nz.min(0).values, nz.max(0).values + 1
            a = a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    size = [int(s) for s in params["spatial_size"]]
    mode = "area" if params.get("resize_mode") == "area" else "trilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    a = F.interpolate(a[None, None], size=size, mode=mode, **kw)[0]
    lo_hu, hi_hu = (float(v) for v in params.get("hu_window", [-1000, 1000]))
    s0, s1 = (float(v) for v in params.get("scale_to", [0.0, 1.0]))
    return ((a.clamp(lo_hu, hi_hu) - lo_hu) / (hi_hu - lo_hu) * (s1 - s0) + s0).contiguous()


class CTScribeModel(nn.Module):
    """The multimodal model (see module docstring). Public contract: ``from_config``, ``weights_label``, ``preset``,
    ``encode``, ``predict_findings``, ``visual_embeddings``, ``generate``."""

    def __init__(self, *, encoder: CTEncoder, bridge: Bridge, llm: LLM, arch: dict, preset: str,
                 preset_params: dict, weights_label: str, data_dir: Path, use_visual_tokens: bool = True,
                 use_cues: bool = True, feature_cache: bool = True):
        super().__init__()
        self.encoder = encoder
        self.bridge = bridge
        self.llm = llm
        self.lm = llm.model  # registered so accelerate/DDP see LoRA parameters; checkpoints save only the adapter
        self.arch = arch
        self.preset = preset
        self.preset_params = dict(preset_params)
        self.weights_label = weights_label
        self.use_visual_tokens = bool(use_visual_tokens)
        self.use_cues = bool(use_cues)
        self.data_dir = Path(data_dir)
        self.regions_backend = "auto"  # vision.regions backend for region tokens when encode() gets no masks
        use_cache = feature_cache and encoder.frozen
        self._cache = FeatureCache(self.data_dir / "features", self._cache_namespace()) if use_cache else None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config: Config) -> CTScribeModel:
        """Build encoder, bridge and LLM from ``config`` and load the checkpoint it names (``model.checkpoint``)."""
        from chatapp.checkpoint import load_checkpoint, resolve_checkpoint

        sec = config.section("model")
        ckpt_dir = resolve_checkpoint(sec.get("checkpoint", "demo"))
        ckpt = load_checkpoint(ckpt_dir) if ckpt_dir is not None else None
        arch = arch_from_config(config)
        if ckpt is not None:
            want_preset = (sec.get("encoder") or {}).get("preset")
            if want_preset and want_preset != ckpt.meta["arch"]["preset"]:
                check_preset(ckpt.meta["arch"]["preset"], ckpt.meta["arch"]["preset_params"], want_preset,
                             (config.get("vision.presets") or {}).get(want_preset))
            check_token_set(ckpt.meta["arch"].get("encoder") or {}, sec.get("encoder") or {}, ckpt_dir)
            known = (config.get("vision.presets") or {}).get(ckpt.meta["arch"]["preset"])
            if known is not None:
                check_preset(ckpt.meta["arch"]["preset"], ckpt.meta["arch"]["preset_params"],
                             ckpt.meta["arch"]["preset"], known)
            arch = copy.deepcopy(ckpt.meta["arch"])
        llm_sec = dict(sec.get("llm") or {})
        llm_sec["name_or_path"] = arch["llm_name"]
        llm_sec["lora"] = arch.get("lora")
        cache_dir = Path(config.get("model.cache_dir") or config.data_dir)
        llm = load_llm(llm_sec, cache_dir)
        encoder = build_encoder(arch["encoder"], config.data_dir, tuple(arch["preset_params"]["spatial_size"]))
        bridge = Bridge(encoder.dim, llm.hidden_size, arch["resampler"], arch["prototypes_arch"],
                        region_tokens=int(getattr(encoder, "extra_tokens", 0)))
        protos = sec.get("prototypes") or {}
        label = "random-init bridge (untrained; outputs are meaningless)"
        model = cls(encoder=encoder, bridge=bridge, llm=llm, arch=arch, preset=arch["preset"],
                    preset_params=arch["preset_params"], weights_label=label, data_dir=config.data_dir,
                    use_visual_tokens=protos.get("use_visual_tokens", True), use_cues=protos.get("use_cues", True),
                    feature_cache=bool(sec.get("feature_cache", True)))
        model.regions_backend = str(config.get("regions.backend", "auto") or "auto")
        if ckpt is not None:
            ckpt.apply(model)
            model.weights_label = ckpt.meta.get("weights_label", ckpt_dir.name)
        model.encoder.to(llm.device)  # the LLM is already placed (bnb-quantized models must not be moved)
        model.bridge.to(llm.device)
        model.eval()
        return model

    def set_token_set(self, tokens: list[str]) -> None:
        """Switch the Astra encoder's token set (``model.encoder.tokens``) to retrain the prototype memory for it
        (``bench/train_prototypes.py --tokens``). The bridge's input (layer4) is unchanged; the feature cache moves to
        the new set's namespace and ``arch`` records the set, so a saved checkpoint carries it."""
        from vision.encoder import token_layers

        layers = token_layers({"tokens": tokens})
        if not hasattr(self.encoder, "set_tokens"):
            raise ConfigError(f"model.encoder.tokens selects Astra stages; the {self.encoder.kind} encoder has one set")
        self.encoder.set_tokens(layers)
        self.arch["encoder"] = {**self.arch["encoder"], "tokens": list(layers)}
        old = self.bridge.prototypes
        if old.region_tokens != self.encoder.extra_tokens:  # region head on/off: a fresh memory (to be retrained)
            self.bridge.prototypes = PrototypeMemory(
                self.encoder.dim, width=old.width, num_findings=old.queries.shape[0],
                prototypes_per_class=old.pos.shape[1], temperature=old.temperature,
                region_tokens=self.encoder.extra_tokens).to(old.queries.device)
        if self._cache is not None:
            self._cache = FeatureCache(self.data_dir / "features", self._cache_namespace())

    def _cache_namespace(self) -> str:
        """Feature-cache folder of this encoder (weights + token set), preset and preset parameters."""
        return f"{self.encoder.weights_id}-{self.preset}-{_short_hash(self.preset_params)}"

    # ------------------------------------------------------------------ vision side
    @property
    def needs_regions(self) -> bool:
        """True when the encoder's token set has region tokens (``model.encoder.tokens`` ends with ``regions``):
        ``encode`` then uses the 10 region masks (passed in, or computed with ``vision.regions``)."""
        return bool(getattr(self.encoder, "region_tokens", False))

    @torch.no_grad()
    def encode(self, volume: CTVolume, regions: Any = None) -> torch.Tensor:
        """Encoder tokens (N, D) float32 on CPU; cached on disk by volume content hash for frozen encoders.

        Args:
            volume: the CT.
            regions: only used when ``needs_regions``: the region masks of ``volume`` (a mapping
                ``REGION_KEYS`` → bool (X, Y, Z) in the volume grid, e.g. ``Study.regions``, or a
                ``vision.regions.RegionResult``). ``None`` computes them (``vision.regions.compute_regions``, backend
                ``regions.backend`` of the config), which repeats work the pipeline has usually done already.
        """
        masks = self.region_inputs(volume, regions) if self.needs_regions else None
        key = self.cache_key(volume, masks)
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        x = preprocess_volume(volume, self.preset, self.preset_params)
        dev = next(self.encoder.parameters()).device
        if masks is None:
            tokens = self.encoder(x.unsqueeze(0).to(dev))[0].float().cpu()
        else:
            tokens = self.encoder(x.unsqueeze(0).to(dev), masks.unsqueeze(0).to(dev))[0].float().cpu()
        if key is not None:
            self._cache.put(key, tokens)
        return tokens

    def cache_key(self, volume: CTVolume, masks: torch.Tensor | None = None) -> str | None:
        """Feature-cache key of ``volume`` (None without a cache): its content hash, plus a digest of the region
        inputs (``region_inputs``) when the token set has region tokens, which depend on the masks too."""
        if self._cache is None:
            return None
        key = volume.content_hash()
        if masks is not None:
            import hashlib

            key += "-r" + hashlib.sha256(masks.half().numpy().tobytes()).hexdigest()[:12]
        return key

    def region_inputs(self, volume: CTVolume, regions: Any = None) -> torch.Tensor:
        """Region masks at the encoder input grid: (R, X', Y', Z') float32 fractions, R = len(REGION_KEYS).

        Each mask goes through the preset's geometry (foreground crop box of the volume, area resize to the preset
        size), so voxel i of the result covers the same tissue as voxel i of ``preprocess_volume``. A region that is
        missing from ``regions`` counts as empty (its token is zero). ``regions``: a ``vision.regions.RegionResult``
        (fast: classical masks are resized from their coarse work grid, ~10 ms) or a mapping of volume-grid masks
        (each is resized at full resolution: ~0.2 s per region on a 512x512x100 CT)."""
        import numpy as np

        from vision.registry import REGION_KEYS

        p = self.preset_params
        if p.get("spacing") or not p.get("resize_mode"):
            raise ConfigError(f"region tokens need a crop-and-resize preset; {self.preset!r} resamples by spacing")
        if regions is None:
            from vision.regions import compute_regions

            regions = compute_regions(volume, backend=self.regions_backend)
        arr = np.asarray(volume.array)
        box = [(0, n) for n in arr.shape]
        if p.get("crop_foreground_hu") is not None:
            box = _foreground_box(arr, float(p["crop_foreground_hu"])) or box
        size = [int(s) for s in p["spatial_size"]]
        from vision.regions_ops import UpsampledMasks

        masks, factors = getattr(regions, "masks", regions), (1, 1, 1)
        if isinstance(masks, UpsampledMasks):  # classical RegionResult: resize the coarse work-grid masks exactly
            masks, factors = masks.work, tuple(int(f) for f in masks.factors)
        out = torch.zeros(len(REGION_KEYS), *size)
        for i, k in enumerate(REGION_KEYS):
            m = masks.get(k) if hasattr(masks, "get") else None
            if m is None:
                continue
            m = np.asarray(m)
            want = tuple(-(-n // f) for n, f in zip(arr.shape, factors))
            if m.shape != arr.shape and m.shape != want:
                raise ConfigError(f"region mask {k!r} has shape {m.shape}, the volume {arr.shape}: pass masks in the "
                                  "volume grid")
            out[i] = torch.from_numpy(_area_resize(m, box, size, factors if m.shape != arr.shape else (1, 1, 1)))
        return out

    def _batch(self, tokens: torch.Tensor) -> torch.Tensor:
        dev = next(self.bridge.parameters()).device
        t = tokens.to(dev, torch.float32)
        return t.unsqueeze(0) if t.dim() == 2 else t

    @torch.no_grad()
    def predict_findings(self, tokens: torch.Tensor) -> tuple[dict[str, float], str]:
        """P(present) for all 18 CT-RATE findings (registry order) and the diagnostic cue text."""
        p = torch.sigmoid(self.bridge.prototypes(self._batch(tokens)))[0].cpu().tolist()
        probs = {n: float(v) for n, v in zip(FINDING_NAMES, p)}
        return probs, cue_text(probs)

    @torch.no_grad()
    def novelty(self, tokens: torch.Tensor) -> float | None:
        """Out-of-domain score of one scan's tokens: the share of its region features beyond 3 training SDs
        (``PrototypeMemory.region_novelty``); None for a memory without region tokens."""
        mem = self.bridge.prototypes
        if not mem.region_tokens:
            return None
        return float(mem.region_novelty(mem.split(self._batch(tokens))[1].float())[0])

    def visual_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(num_latents, llm_hidden) visual tokens for injection into the LLM input embeddings.

        The resampler reads only the encoder's first token group (layer4 for Astra), as it was trained."""
        return self.bridge.resampler(self._batch(self.encoder.bridge_tokens(tokens)))[0]

    # ------------------------------------------------------------------ language side
    def prepare_messages(self, messages: list[dict], cues: str | None, visual: bool) -> list[dict]:
        """Insert the cue text into the system message and make sure the image placeholder appears once (or never)."""
        msgs = [dict(m) for m in messages]
        for m in msgs:
            m["content"] = str(m.get("content", "")).replace(IMAGE_PLACEHOLDER, "")
        if visual:
            first_user = next((m for m in msgs if m.get("role") == "user"), None)
            if first_user is None:
                raise ConfigError("generate() needs at least one user message to attach the image to")
            first_user["content"] = f"{IMAGE_PLACEHOLDER}\n{first_user['content']}"
        if cues:
            if msgs and msgs[0].get("role") == "system":
                msgs[0]["content"] = f"{msgs[0]['content']}\n{cues}"
            else:
                msgs.insert(0, {"role": "system", "content": f"{SYSTEM_PROMPT}\n{cues}"})
        return msgs

    def prompt_embeds(self, messages: list[dict], tokens: torch.Tensor | None) -> torch.Tensor:
        """(1, L, hidden) prompt embeddings with visual tokens and cues per the ablation switches."""
        visual = cues = None
        if tokens is not None:
            if self.use_visual_tokens:
                visual = self.visual_embeddings(tokens)
            if self.use_cues:
                cues = self.predict_findings(tokens)[1]
        msgs = self.prepare_messages(messages, cues, visual is not None)
        return self.llm.embed_prompt(self.llm.render(msgs), visual)

    def generate(self, messages: list[dict], *, tokens: torch.Tensor | None = None, max_new_tokens: int | None = None,
                 stream: bool = False) -> str | Iterator[str]:
        """Chat completion for ``messages`` (chat-template dicts). With ``tokens`` (from ``encode``) the visual
        tokens are injected at a placeholder in the first user message and the cue text joins the system prompt."""
        with torch.no_grad():
            emb = self.prompt_embeds(messages, tokens)
        if stream:
            return self.llm.stream(messages, inputs_embeds=emb, max_new_tokens=max_new_tokens)
        return self.llm.generate(messages, inputs_embeds=emb, max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------ training
    def lm_loss(self, tokens: torch.Tensor, prompts: list[list[dict]], targets: list[str],
                max_target_tokens: int | None = None) -> torch.Tensor:
        """Teacher-forced LM loss of ``targets`` given prompts + visual tokens/cues (batch, right padding).

        Args:
            tokens: (B, N, D) encoder tokens.
            prompts: B message lists (without the answer).
            targets: B answer strings.
        """
        tok = self.llm.tokenizer
        emb_layer = self.llm.model.get_input_embeddings()
        dev = emb_layer.weight.device
        seqs, labels = [], []
        for i, (msgs, target) in enumerate(zip(prompts, targets)):
            t = tokens[i]
            visual = self.visual_embeddings(t) if self.use_visual_tokens else None
            cues = self.predict_findings(t)[1] if self.use_cues else None
            text = self.llm.render(self.prepare_messages(msgs, cues, visual is not None))
            p_emb = self.llm.embed_prompt(text, visual)[0]
            ids = tok(target + (tok.eos_token or ""), add_special_tokens=False, return_tensors="pt").input_ids[0]
            ids = ids[:max_target_tokens].to(dev) if max_target_tokens else ids.to(dev)
            seqs.append(torch.cat([p_emb, emb_layer(ids).to(p_emb.dtype)], 0))
            labels.append(torch.cat([torch.full((p_emb.shape[0],), -100, device=dev), ids]))
        L = max(s.shape[0] for s in seqs)
        H = seqs[0].shape[1]
        x = torch.zeros(len(seqs), L, H, dtype=seqs[0].dtype, device=dev)
        y = torch.full((len(seqs), L), -100, dtype=torch.long, device=dev)
        mask = torch.zeros(len(seqs), L, dtype=torch.long, device=dev)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            x[i, :len(s)], y[i, :len(s)], mask[i, :len(s)] = s, lab, 1
        return self.llm.model(inputs_embeds=x, attention_mask=mask, labels=y).loss

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor, prompts: list[list[dict]], targets: list[str],
                lm_weight: float = 1.0, proto_weight: float = 1.0, max_target_tokens: int | None = None
                ) -> dict[str, torch.Tensor]:
        """Training objective (a ``forward`` so accelerate/DDP can wrap the model): LM loss + prototype loss.

        Args:
            tokens: (B, N, D) encoder tokens, or (B, 1, X, Y, Z) preprocessed volumes for a trainable encoder.
            labels: (B, 18) finding labels, NaN = unknown.
        """
        if tokens.dim() == 5:
            tokens = self.encoder(tokens)
        out: dict[str, torch.Tensor] = {}
        total = tokens.new_zeros(())
        if proto_weight:
            out["proto_loss"] = self.prototype_loss(tokens, labels)
            total = total + proto_weight * out["proto_loss"]
        if lm_weight:
            out["lm_loss"] = self.lm_loss(tokens, prompts, targets, max_target_tokens)
            total = total + lm_weight * out["lm_loss"]
        out["loss"] = total
        return out

    def prototype_loss(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Contrastive prototype loss; tokens (B, N, D), labels (B, 18) 0/1/NaN."""
        dev = next(self.bridge.parameters()).device
        return self.bridge.prototypes.loss(tokens.to(dev, torch.float32), labels.to(dev, torch.float32))


def arch_from_config(config: Config) -> dict[str, Any]:
    """The architecture description a checkpoint stores (everything needed to rebuild the modules)."""
    sec = config.section("model")
    enc = dict(sec.get("encoder") or {"kind": "astra"})
    preset = enc.pop("preset", None) or config.get("vision.preset", "astra")
    presets = config.get("vision.presets") or {}
    if preset not in presets:
        raise ConfigError(f"preprocessing preset {preset!r} is not defined under vision.presets "
                          f"(known: {', '.join(presets) or 'none'})")
    protos = dict(sec.get("prototypes") or {})
    llm = dict(sec.get("llm") or {})
    return {
        "encoder": enc,
        "resampler": dict(sec.get("resampler") or {}),
        "prototypes_arch": {k: protos[k] for k in ("width", "per_class", "temperature") if k in protos},
        "llm_name": str(llm.get("name_or_path", "embedded:smollm2-135m-instruct")),
        "lora": llm.get("lora"),
        "preset": preset,
        "preset_params": dict(presets[preset]),
    }


def check_token_set(ckpt_encoder: dict, config_encoder: dict, where: Path) -> None:
    """Raise ``CheckpointError`` when the config asks for another encoder token set than the checkpoint's.

    The prototype memory's weights have the same shapes for any token set, so only this check catches a mismatch.
    """
    want = config_encoder.get("tokens")
    if want is None:
        return
    from vision.encoder import token_layers

    have = token_layers(ckpt_encoder) if ckpt_encoder.get("kind", "astra") == "astra" else ("layer4",)
    if token_layers({"tokens": want}) != have:
        raise CheckpointError(f"encoder token set mismatch: the checkpoint {where} was trained on tokens "
                              f"{list(have)} but the config asks for model.encoder.tokens={want}; set "
                              "model.encoder.tokens: null (use the checkpoint's) or retrain the prototype memory")


def _foreground_box(arr: Any, threshold: float) -> list[tuple[int, int]] | None:
    """The crop box of ``CropForeground`` (voxels > threshold, margin 0) as (start, end) per axis; None if empty."""
    import numpy as np

    box = []
    for ax in range(arr.ndim):
        hits = np.flatnonzero(arr.max(axis=tuple(i for i in range(arr.ndim) if i != ax)) > threshold)
        if hits.size == 0:
            return None
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def _area_resize(mask: Any, box: list[tuple[int, int]], size: list[int], factors: tuple[int, ...]) -> Any:
    """``F.interpolate(mode="area")`` (= adaptive average pooling) of ``mask[box]`` to ``size``, float32 (X, Y, Z).

    ``mask`` is either in the volume grid (factors 1) or on a coarse grid whose voxel i stands for volume voxels
    ``[i*f, (i+1)*f)`` (``vision.regions`` work grid, nearest upsampling). Area pooling is separable: per axis, each
    output bin [s, e) is a weighted sum of the few cells it overlaps (weight = overlap / bin length), computed as K
    shifted ``take``s (K = most cells one bin touches), so the full-resolution mask is never built."""
    import numpy as np

    out = np.asarray(mask)
    for ax in sorted(range(out.ndim), key=lambda a: size[a] / max(1, out.shape[a])):  # most-shrinking axis first
        (lo, hi), n_out, f = box[ax], size[ax], factors[ax]
        n = hi - lo
        i = np.arange(n_out)
        start = lo + (i * n) // n_out  # PyTorch adaptive pooling bins, shifted into the crop box
        end = lo + -(-((i + 1) * n) // n_out)
        c0 = start // f
        shape = [1] * out.ndim
        shape[ax] = n_out
        acc = np.zeros([n_out if k == ax else s for k, s in enumerate(out.shape)], np.float32)
        for k in range(int(((end - 1) // f - c0).max()) + 1):
            c = c0 + k
            w = np.clip(np.minimum(end, (c + 1) * f) - np.maximum(start, c * f), 0, None) / (end - start)
            acc += w.astype(np.float32).reshape(shape) * np.take(out, np.minimum(c, out.shape[ax] - 1), axis=ax)
        out = acc
    return np.ascontiguousarray(out, dtype=np.float32)


def _short_hash(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def is_demo_label(label: str) -> bool:
    return DEMO_WEIGHTS_NOTICE in label
