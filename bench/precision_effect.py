"""What a bf16 forward pass does to the suite's numbers, against fp32 (the README's precision table).

Two parts, both printed as Markdown tables:

- ``results FP32_DIR BF16_DIR``: every numeric quantity of the planted result files of two bench
  runs that differ only in ``--precision`` (same seed, same SAE recipe), with the relative change;
- ``random-init``: random-init models of the real families (registry geometry, seed 0; DINOv2 at 224 px) on synthetic
  scenes: how far bf16 tokens are from fp32 ones, and the attention EMD (every overlap query, SCC
  shift 1) at both precisions.  Random weights have no outliers or SAE, so this part shows the
  rounding a family's forward adds, not a claim.

``make precision-effect`` runs both (the bench runs first).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from scopebench.analyses.attention_emd.accumulator import AttentionEMDAccumulator
from scopebench.backbones import load_backbone
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.extract import iter_forward, scc_views
from scopebench.pipeline.scc import overlap_index

# registry name -> geometry overrides: DINOv2 at 224 px (16x16 patches) instead of 518, so exact EMD stays quick
FAMILIES = {"clip-b16": {}, "dinov2-b": {"image_size": 224}, "deit3-b": {}, "siglip2-b": {}}


def _numbers(tree: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON tree, by dotted path."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _numbers(value, f"{prefix}{key}.").items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix[:-1]: float(tree)}
    return {}


def results_table(fp32_dir: Path, bf16_dir: Path) -> str:
    lines = ["| file | quantity | fp32 | bf16 | relative change |", "|---|---|---|---|---|"]
    for path in sorted(fp32_dir.glob("planted*.json")):
        other = bf16_dir / path.name
        if not other.is_file():
            continue
        records = [json.loads(p.read_text())["analyses"] for p in (path, other)]
        assert json.loads(other.read_text())["backbone"]["precision"] == "bf16", f"{other} is not a bf16 run"
        for analysis in sorted(set(records[0]) & set(records[1])):
            before, after = (_numbers(r[analysis]["output"]) for r in records)
            for name in sorted(set(before) & set(after)):
                a, b = before[name], after[name]
                change = "0" if a == b else (f"{(b - a) / abs(a):+.2%}" if a else "n/a")
                lines.append(f"| {path.stem} | {analysis}.{name} | {a:.6g} | {b:.6g} | {change} |")
    return "\n".join(lines)


def _scc_forward(backbone, scenes, shift: int, precision: str) -> tuple[torch.Tensor, float]:
    """Tokens of view A ``[n, N, D]`` and the mean attention EMD over every overlap query (no outlier split)."""
    spec = backbone.spec
    accumulator = AttentionEMDAccumulator(overlap_index(spec.grid_side, shift), spec.n_prefix)
    tokens = []
    with torch.inference_mode():
        for _, views in iter_forward(backbone, scenes, np.arange(len(scenes)), scc_views(backbone, shift), 4,
                                     torch.device("cpu"), attention=True, precision=precision):
            a, b = views["_a"], views["_b"]
            accumulator.update(a.attention, b.attention, torch.zeros(a.tokens.shape[:2], dtype=torch.bool))
            tokens.append(a.tokens)
    return torch.cat(tokens), float(accumulator.result().mean_non_outlier)


def random_init_table(n_images: int) -> str:
    scenes = SyntheticScenes(n_images, image_size=256, seed=0)
    lines = ["| backbone (random init) | token relative error, mean / max | min cosine | attention EMD s=1, fp32 | "
             "bf16 | relative change |", "|---|---|---|---|---|---|"]
    for name, overrides in FAMILIES.items():
        backbone = load_backbone(name, random_init=True, overrides=overrides)
        full, emd_full = _scc_forward(backbone, scenes, 1, "fp32")
        reduced, emd_reduced = _scc_forward(backbone, scenes, 1, "bf16")
        error = (reduced - full).norm(dim=-1) / full.norm(dim=-1)
        cosine = torch.nn.functional.cosine_similarity(reduced, full, dim=-1)
        label = name + "".join(f", {key} {value}" for key, value in overrides.items())
        lines.append(f"| {label} | {error.mean():.2e} / {error.max():.2e} | {cosine.min():.6f} | {emd_full:.5f} | "
                     f"{emd_reduced:.5f} | {(emd_reduced - emd_full) / emd_full:+.2%} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    results = sub.add_parser("results")
    results.add_argument("fp32_dir", type=Path)
    results.add_argument("bf16_dir", type=Path)
    random_init = sub.add_parser("random-init")
    random_init.add_argument("--images", type=int, default=8)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(results_table(args.fp32_dir, args.bf16_dir) if args.part == "results" else random_init_table(args.images))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
