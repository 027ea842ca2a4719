"""Retrain only the disease prototype memory of a checkpoint on cached encoder features of synthetic phantoms.

The prototype memory sees the frozen encoder's tokens and feeds the LLM only through the cue text, so it can be
retrained without touching the bridge (which was aligned with the LLM). Phantom seeds ``[seed, seed + n)`` are split
by seed into train and validation (every ``--val-every``-th seed is validation); training uses AdamW with weight
decay, token dropout and early stopping on the validation macro AUROC; the best state is written back into the
checkpoint's ``prototypes.safetensors`` (same keys, same dtype) when ``--write`` is given.

    python bench/train_prototypes.py --checkpoint chatapp/weights/demo --n 400 --write [--tokens layer4,layer3]

``--tokens`` switches the encoder token set (``model.encoder.tokens``) the memory is trained on; ``--write`` records it
in the checkpoint's ``arch.encoder.tokens`` (the bridge keeps reading layer4 only). With a set ending in ``regions``
or ``regions_hu`` the prototype part is trained on the grid tokens, then the region head (one penalty per channel
group: deep features, and for ``regions_hu`` the region statistics) and the per-finding mix are fitted
(``fit_region_head``: head on the training seeds, mix on the validation seeds); ``--head-seed/--head-n`` add phantoms
at another geometry (``--head-shape/--head-spacing``) to that fit only.

Encoder features are cached by content hash under $CTSCRIBE_HOME (the first run encodes every phantom).
``--index FILE.jsonl`` (lines ``{"seed", "key", "labels"}``) skips regenerating phantoms whose features are cached.
Evaluate on unseen seeds with ``bench/bench_model.py --seed 100000 --n 200``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

REPORT_SHAPE = (128, 128, 96)  # the report evaluation's phantom geometry (tools/eval_phantom_reports.py)
REPORT_SPACING = (2.7, 2.7, 3.33)


def load_items(model, seeds: list[int], index: dict[int, dict], shape, spacing) -> list[dict]:
    """Encoder tokens (N, D) and labels (K,) per phantom seed, from the feature cache where the index allows."""
    from chatapp.datasets import PhantomSource
    from chatapp.train import featurize

    items, missing = [], []
    for s in seeds:
        rec = index.get(s)
        hit = model._cache.get(rec["key"]) if rec is not None and model._cache is not None else None
        if hit is None:
            missing.append(s)
        else:
            items.append({"key": f"phantom-{s}", "x": hit, "labels": torch.tensor(rec["labels"]), "seed": s})
    for s in missing:  # consecutive runs are rare here; encode one source per seed (cached afterwards)
        it = featurize(model, PhantomSource(1, seed=s, shape=shape, spacing=spacing), progress=False)[0]
        items.append({**it, "seed": s})
    return sorted(items, key=lambda it: it["seed"])


def macro_auroc(mem, items: list[dict]) -> tuple[float, dict[int, float]]:
    """Macro AUROC over findings with both classes present; per-finding AUROC by finding index."""
    from sklearn.metrics import roc_auc_score

    mem.eval()
    with torch.no_grad():
        p = torch.sigmoid(mem(torch.stack([it["x"] for it in items]).float()))
    y = torch.stack([it["labels"] for it in items])
    per = {k: float(roc_auc_score(y[:, k].numpy(), p[:, k].numpy())) for k in range(y.shape[1])
           if 0 < y[:, k].sum() < len(y)}
    return (sum(per.values()) / len(per) if per else math.nan), per


def fit(mem, train: list[dict], val: list[dict], *, epochs: int, lr: float, wd: float, batch: int,
        keep: float, noise: float, patience: int, seed: int) -> dict:
    """Train ``mem`` in place; returns the history. Keeps the state with the best validation macro AUROC.

    Args:
        keep: fraction of tokens kept per example per step (token dropout).
        noise: std of Gaussian noise added to the layer-normed-scale tokens (relative to each token's std).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([it["x"] for it in train]).float()  # (B, N, D)
    y = torch.stack([it["labels"] for it in train]).float()
    opt = torch.optim.AdamW(mem.parameters(), lr=lr, weight_decay=wd)
    best, best_state, best_epoch, hist = -1.0, None, 0, []
    n_keep = max(1, round(keep * x.shape[1]))
    for epoch in range(1, epochs + 1):
        mem.train()
        order = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            xb = x[idx]
            if n_keep < xb.shape[1]:
                sel = torch.rand(len(idx), xb.shape[1], generator=g).argsort(dim=1)[:, :n_keep]
                xb = torch.gather(xb, 1, sel[..., None].expand(-1, -1, xb.shape[2]))
            if noise > 0:
                xb = xb + noise * xb.std(dim=-1, keepdim=True) * torch.randn(xb.shape, generator=g)
            loss = mem.loss(xb, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        auc, _ = macro_auroc(mem, val)
        hist.append({"epoch": epoch, "loss": tot / len(x), "val_macro_auroc": auc})
        if auc > best:
            best, best_state, best_epoch = auc, copy.deepcopy(mem.state_dict()), epoch
        elif epoch - best_epoch >= patience:
            break
    mem.load_state_dict(best_state)
    return {"best_epoch": best_epoch, "best_val_macro_auroc": best, "history": hist}


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x.float(), x.shape[-1:])


def fit_projected(mem, train: list[dict], val: list[dict], dim: int, extra_tokens: int = 0, extra_dim: int = 0,
                  **kw) -> dict:
    """Train ``mem`` (in_dim D) in a PCA subspace of the layer-normed tokens, then fold the projection back.

    Tokens (N, D) → LayerNorm (no affine) → centred → projection P (dim, D). A small memory with an identity norm
    is trained on the projected tokens (``fit``), and its key/value layers are folded into ``mem``'s:
    ``W_D = W_dim P`` and ``b_D = b_dim - W_dim P c``, with ``mem.norm`` reset to the identity affine. The result is
    exactly the small model's function on the original tokens, at a fraction of the training cost.

    Args:
        extra_tokens: the last ``extra_tokens`` tokens of each example (region tokens) get ``extra_dim`` of the
            ``dim`` directions from their own PCA, so a few tokens among hundreds are not drowned by the grid
            tokens' variance (the rest come from the other tokens' PCA).
    """
    from vision.prototypes import PrototypeMemory

    flat = torch.cat([_layer_norm(it["x"]) for it in train])  # (n*N, D)
    c = flat.mean(0)
    if extra_tokens and extra_dim:
        n_tok = train[0]["x"].shape[0]
        is_extra = (torch.arange(len(flat)) % n_tok) >= n_tok - extra_tokens
        _, _, vg = torch.linalg.svd(flat[~is_extra] - c, full_matrices=False)
        _, _, vr = torch.linalg.svd(flat[is_extra] - flat[is_extra].mean(0), full_matrices=False)
        p = torch.cat([vg[:dim - extra_dim], vr[:extra_dim]])  # (dim, D)
    else:
        _, _, v = torch.linalg.svd(flat - c, full_matrices=False)
        p = v[:dim]  # (dim, D)

    def proj(items):
        return [{**it, "x": (_layer_norm(it["x"]) - c) @ p.T} for it in items]

    small = PrototypeMemory(dim, width=mem.width, num_findings=mem.queries.shape[0],
                            prototypes_per_class=mem.pos.shape[1], temperature=mem.temperature)
    small.norm = torch.nn.Identity()
    res = fit(small, proj(train), proj(val), **kw)
    with torch.no_grad():
        mem.norm.weight.fill_(1.0)
        mem.norm.bias.zero_()
        for name in ("key", "value"):
            s_lin, b_lin = getattr(small, name), getattr(mem, name)
            b_lin.weight.copy_(s_lin.weight @ p)
            b_lin.bias.copy_(s_lin.bias - s_lin.weight @ p @ c)
        for name in ("queries", "pos", "neg", "bias"):
            getattr(mem, name).copy_(getattr(small, name))
    return res


def fit_region_head(mem, train: list[dict], val: list[dict],
                    l2s: tuple[float, ...] = (0.01, 0.02, 0.05, 0.15, 0.5, 1.5), max_iter: int = 200,
                    groups: tuple[tuple[int, int], ...] | None = None) -> dict:
    """Fit ``mem``'s region head (``mem.region_tokens`` > 0) and its mix with the prototype logits (stacking).

    1. Per-feature standardised region tokens (mean/scale from ``train``, stored in the memory's buffers) → per
       channel group (``groups``: [start, stop) channel ranges of every region token; default one group, all
       channels) a logistic regression per finding on ``train`` alone (L-BFGS, L2 penalty ``l2 * |W_k|^2`` per finding
       on its mean loss; 0.12 is scikit-learn's C = 0.01 at 400 examples), one fit per ``l2``; the best validation
       macro AUROC of that group's head alone wins (a penalty per finding, picked on 121 validation phantoms, did
       worse on unseen ones: 0.877 vs 0.885). Separate groups keep a few strong channels (``regions_hu``'s
       intensity statistics) from being drowned by 1,536 deep channels under one shared penalty.
       (The prototype memory's logits cannot be the offset on ``train``: it was fitted there and is over-confident,
       so the head would learn nothing.)
    2. On ``val`` (unseen by both parts): per finding, weights for the prototype logit (``memory_scale``) and for
       each group head's logit, and a bias (L-BFGS, small L2 towards equal weights), folded into the one linear
       head (the group heads use disjoint input columns).
    Returns ``{"l2": [per group], "val_head_macro_auroc": [per group {l2: auc}], "val_macro_auroc"}`` (the last is
    fitted on val: optimistic).
    """
    import torch.nn.functional as F

    def stack(items):
        x = torch.stack([it["x"] for it in items]).float()
        return x, torch.stack([it["labels"] for it in items]).float()

    def lbfgs(params, loss_fn):
        opt = torch.optim.LBFGS(params, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        opt.step(closure)

    def bce(logits, y):
        known = ~torch.isnan(y)
        return F.binary_cross_entropy_with_logits(logits[known], torch.nan_to_num(y)[known])

    def macro(scores, y):
        from sklearn.metrics import roc_auc_score

        per = [roc_auc_score(y[:, k].numpy(), scores[:, k].numpy()) for k in range(y.shape[1])
               if 0 < torch.nan_to_num(y[:, k]).sum() < len(y)]
        return sum(per) / len(per)

    r = mem.region_tokens
    (x_tr, y_tr), (x_va, y_va) = stack(train), stack(val)
    dim = x_tr.shape[-1]
    with torch.no_grad():
        reg = x_tr[:, -r:]
        mean, std = reg.mean(0), reg.std(0)
        scale = torch.where(std > 1e-6, std, torch.ones_like(std))  # zero padding stays zero
        mem.region_mean.copy_(mean)
        mem.region_scale.copy_(scale)
        z_tr = mem.region_features(reg)  # standardised and clipped exactly as at inference
        z_va = mem.region_features(x_va[:, -r:])
        mem_va = mem.memory_logits(x_va)
    heads, l2_chosen, results = [], [], []
    for lo, hi in groups or ((0, dim),):
        cols = (torch.arange(r)[:, None] * dim + torch.arange(lo, hi)[None]).flatten()  # this group in every region
        zt, zv = z_tr[:, cols], z_va[:, cols]
        res, fits = {}, []
        for l2 in l2s:
            w = torch.zeros(y_tr.shape[1], len(cols), requires_grad=True)
            b = torch.zeros(y_tr.shape[1], requires_grad=True)
            # the penalty is per finding (mean over findings of |W_k|^2)
            lbfgs([w, b], lambda w=w, b=b, l2=l2, zt=zt: bce(zt @ w.T + b, y_tr) + l2 * (w ** 2).sum(1).mean())
            with torch.no_grad():
                auc = macro(zv @ w.T + b, y_va)
            res[l2] = round(auc, 4)
            fits.append((auc, w.detach(), b.detach(), l2))
        _, w, b, chosen = max(fits, key=lambda f: f[0])
        full = torch.zeros(mem.region_head.weight.shape)
        full[:, cols] = w
        heads.append((full, b, zv @ w.T + b))
        l2_chosen.append(chosen)
        results.append(res)
    a = torch.ones(y_tr.shape[1], requires_grad=True)
    c = torch.ones(len(heads), y_tr.shape[1], requires_grad=True)
    d = torch.zeros(y_tr.shape[1], requires_grad=True)
    head_va = torch.stack([h[2] for h in heads])  # (G, n, K)
    lbfgs([a, c, d], lambda: bce(a * mem_va + (c[:, None] * head_va).sum(0) + d, y_va)
          + 0.1 * ((a - 1) ** 2 + ((c - 1) ** 2).sum(0)).mean())
    with torch.no_grad():
        mem.memory_scale.copy_(a)
        mem.region_head.weight.copy_(sum(c[g][:, None] * h[0] for g, h in enumerate(heads)))
        mem.region_head.bias.copy_(sum(c[g] * h[1] for g, h in enumerate(heads)) + d)
    return {"l2": l2_chosen, "val_head_macro_auroc": results, "val_macro_auroc": macro_auroc(mem, val)[0],
            "memory_scale": [round(float(v), 3) for v in a.detach()],
            "head_scale": [[round(float(v), 3) for v in cg] for cg in c.detach()]}


def head_sets(args: argparse.Namespace) -> list[tuple[int, int, tuple[int, ...], tuple[float, ...]]]:
    """The region head's extra phantom sets: (first seed, count, shape, spacing mm), the k-th --head-* of each kind
    together; a set without its own --head-shape / --head-spacing is rendered at the report geometry."""
    seeds, ns = args.head_seed or [], args.head_n or []
    if len(seeds) != len(ns):
        raise SystemExit(f"--head-seed given {len(seeds)} times but --head-n {len(ns)} times: give one of each per set")
    shapes, spacings = args.head_shape or [], args.head_spacing or []
    out = []
    for k, (s, n) in enumerate(zip(seeds, ns)):
        shape = tuple(shapes[k]) if k < len(shapes) else REPORT_SHAPE
        spacing = tuple(spacings[k]) if k < len(spacings) else REPORT_SPACING
        if n > 0:
            out.append((s, n, shape, spacing))
    return out


def command_line(args: argparse.Namespace) -> str:
    """The command that rebuilds the checkpoint's prototypes (recorded in its config.json)."""
    parts = ["python bench/train_prototypes.py --checkpoint", str(args.checkpoint)]
    for k, v in vars(args).items():
        if k in ("write", "index", "checkpoint") or v is None:
            continue
        flag = "--" + k.replace("_", "-")
        groups = v if k.startswith("head_") else [v]  # the --head-* options repeat once per phantom set
        for g in groups:
            parts += [flag, " ".join(map(str, g)) if isinstance(g, (list, tuple)) else str(g)]
    return " ".join(parts + ["--write"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="chatapp/weights/demo")
    ap.add_argument("--seed", type=int, default=0, help="phantom seeds [seed, seed + n) (train + validation)")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--val-every", type=int, default=5, help="every k-th seed is a validation phantom")
    ap.add_argument("--index", action="append", default=[], help="JSONL seed→feature-key index (optional)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=40)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--keep", type=float, default=0.75, help="token dropout: fraction of tokens kept")
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--init", choices=("checkpoint", "random"), default="random")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--pca-dim", type=int, default=256, help="train in this PCA subspace, then fold (0: full)")
    ap.add_argument("--tokens", default=None, help="encoder token set, e.g. layer4,layer3 (default: the checkpoint's)")
    ap.add_argument("--region-l2", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.15, 0.5, 1.5],
                    help="L2 penalties tried for the region head (token sets ending with 'regions')")
    ap.add_argument("--head-seed", type=int, action="append", default=None,
                    help="region head only: also fit it on phantom seeds [head-seed, head-seed + head-n) rendered at "
                         "--head-shape / --head-spacing (e.g. the report evaluation's geometry; every --val-every-th "
                         "seed validates the mix). Repeat the four options for more sets: the k-th of each belongs "
                         "together (a set without its own shape/spacing takes the report geometry)")
    ap.add_argument("--head-n", type=int, action="append", default=None)
    ap.add_argument("--head-shape", type=int, nargs=3, action="append", default=None)
    ap.add_argument("--head-spacing", type=float, nargs=3, action="append", default=None)
    ap.add_argument("--write", action="store_true", help="write the best prototypes into the checkpoint")
    args = ap.parse_args()

    from chatapp.cli import set_offline_env

    set_offline_env()
    from safetensors.torch import load_file, save_file

    from chatapp.config import load_config
    from chatapp.model import CTScribeModel
    from vision.encoder import region_channel_groups
    from vision.prototypes import PrototypeMemory
    from vision.registry import FINDING_NAMES

    t0, c0 = time.time(), time.process_time()
    cfg = load_config(None, [f"model.checkpoint={args.checkpoint}", "model.llm.quantization=none"])
    model = CTScribeModel.from_config(cfg)
    old_tokens = model.arch["encoder"].get("tokens")
    if args.tokens:
        model.set_token_set(args.tokens.split(","))
    index: dict[int, dict] = {}
    for f in args.index:
        for line in Path(f).read_text().splitlines():
            rec = json.loads(line)
            index[int(rec["seed"])] = rec
    shape = tuple(model.preset_params["spatial_size"])
    seeds = list(range(args.seed, args.seed + args.n))
    items = load_items(model, seeds, index, shape, (3.6, 3.6, 5.0))
    val = [it for it in items if it["seed"] % args.val_every == 0]
    train = [it for it in items if it["seed"] % args.val_every != 0]
    t_feat = time.time() - t0

    torch.manual_seed(args.train_seed)
    old = model.bridge.prototypes
    a = model.arch["prototypes_arch"]
    n_reg = int(getattr(model.encoder, "extra_tokens", 0))
    mem = PrototypeMemory(model.encoder.dim, width=int(a.get("width", 128)),
                          prototypes_per_class=int(a.get("per_class", 4)),
                          temperature=float(a.get("temperature", 0.1)))  # the prototype part: grid tokens only
    if args.init == "checkpoint":
        mem.load_state_dict(old.state_dict(), strict=False)
    before = macro_auroc(old.float(), val)[0] if model.arch["encoder"].get("tokens") == old_tokens else None

    def grid(items):
        return [{**it, "x": it["x"][:-n_reg]} for it in items] if n_reg else items

    fitter = (lambda *a, **k: fit_projected(*a, dim=args.pca_dim, **k)) if args.pca_dim else fit
    res = fitter(mem, grid(train), grid(val), epochs=args.epochs, lr=args.lr, wd=args.wd, batch=args.batch,
                 keep=args.keep, noise=args.noise, patience=args.patience, seed=args.train_seed)
    if n_reg:  # then the region head and its mix with the prototype logits (see fit_region_head)
        full = PrototypeMemory(model.encoder.dim, width=mem.width, prototypes_per_class=mem.pos.shape[1],
                               temperature=mem.temperature, region_tokens=n_reg)
        full.load_state_dict(mem.state_dict(), strict=False)
        mem = full
        more = []
        for seed0, n, hshape, hspacing in head_sets(args):
            more += load_items(model, list(range(seed0, seed0 + n)), index, hshape, hspacing)
        res["region_head"] = fit_region_head(
            mem, train + [it for it in more if it["seed"] % args.val_every], val + [it for it in more if
                                                                                     it["seed"] % args.val_every == 0],
            l2s=tuple(args.region_l2), groups=region_channel_groups(model.encoder.tokens[-1]))
    after, per = macro_auroc(mem, val)
    out = {"n_train": len(train), "n_val": len(val), "val_macro_auroc_before": before,
           "val_macro_auroc_after": after, "best_epoch": res["best_epoch"],
           "val_per_finding": {FINDING_NAMES[k]: round(v, 3) for k, v in per.items()},
           "featurize_s": round(t_feat, 1), "wall_s": round(time.time() - t0, 1),
           "cpu_s": round(time.process_time() - c0, 1), "args": vars(args)}
    if args.write:
        path = Path(args.checkpoint) / "prototypes.safetensors"
        ref = load_file(str(path))
        sd = mem.state_dict()
        if set(sd) != set(ref) and model.arch["encoder"].get("tokens") == old_tokens:
            raise SystemExit(f"prototype keys differ from {path}: {sorted(set(sd) ^ set(ref))}")
        dtype = next(iter(ref.values())).dtype
        save_file({k: v.detach().to(dtype).contiguous() for k, v in sd.items()}, str(path))
        meta_path = Path(args.checkpoint) / "config.json"
        meta = json.loads(meta_path.read_text())
        meta["arch"]["encoder"] = model.arch["encoder"]  # the token set the memory was trained on
        meta.setdefault("train", {})["prototypes"] = {
            "command": command_line(args),
            "data": {"kind": "phantom", "seed": args.seed, "n": args.n, "val_every": args.val_every},
            "best_epoch": res["best_epoch"], "val_macro_auroc": round(after, 4),
            **({"region_head": res["region_head"]} if "region_head" in res else {})}
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        out["written"] = str(path)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
