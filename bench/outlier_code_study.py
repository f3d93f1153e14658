"""How the SAE trainer's first steps shape BatchTopK's outlier code on the planted default (``make outlier-study``).

``python bench/outlier_code_study.py [--seeds 0 1 2] [--cache-dir DIR] [--out FILE.json]``: for each variant (the
encoder's initial scale, the learning rate and its warm-up, given as planted-scale SAE overrides) and seed,
trains the SAE on the planted default's tokens and prints, per row, what Table 6's L0 claim reads (L0_A, L0_O,
the outlier code's top-1 share and the latents most outliers share, the dead share) beside Table 4's CDS
partition (gamma, n_low/n_high, the high-CDS share).  The first variant is the planted default.  Tokens are
extracted once into the cache and shared by every row; each row trains its own SAE.

A second table says how much the SAE had to learn: its FVU_A beside the FVU that a *random* dictionary of
the same size reaches with L0_A steps of matching pursuit (no training at all), and how close its decoder
comes to the planted atoms (for each atom, the largest |cos| with any latent, averaged) beside the same
for that random dictionary.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from tabulate import tabulate

from scopebench.atomic import write_json_atomic
from scopebench.sae import load_recipe
from scopebench.pipeline.cache import ActivationStore, default_cache_dir
from scopebench.suite.scales import PLANTED_SCALE, BenchScale
from scopebench.suite.workbench import Workbench

#: name -> SAE recipe fields replaced on top of the planted scale's own overrides
VARIANTS: dict[str, dict[str, float | int]] = {
    "default": {},  # the planted scale's trainer: tied encoder, lr 1e-2, 10 warm-up steps
    "untied": {"encoder_init_scale": 0.1},
    "slow start": {"lr": 3e-3, "lr_warmup_steps": 100},
    "v7's trainer": {"encoder_init_scale": 0.1, "lr": 3e-3, "lr_warmup_steps": 100},
}
RECONSTRUCTION = {"L0_A": "l0_a", "L0_O": "l0_o", "O top1": "o_top1_share", "O shared": "o_shared_latents",
                  "dead %": "dead_pct"}
COUNTS = ("O shared", "n_low", "n_high")
CDS = {"gamma": "gamma", "n_low": "n_low", "n_high": "n_high", "high share": "high_share"}
REGIME = ("FVU_A", "random FVU", "atom cos", "random atom cos")
REGIME_IMAGES = 32  # eval images whose tokens the random dictionary's matching pursuit reconstructs


def variant_scale(overrides: dict[str, float | int]) -> BenchScale:
    """The planted scale with ``overrides`` on top of its own SAE overrides (which they extend, not replace)."""
    return PLANTED_SCALE.updated({"sae_overrides": {**PLANTED_SCALE.sae_overrides, **overrides}})


def matching_pursuit_fvu(tokens: torch.Tensor, dictionary: torch.Tensor, steps: int) -> float:
    """FVU of ``steps`` greedy matching-pursuit steps (Mallat & Zhang 1993) over unit-norm ``dictionary`` rows.

    Tokens are centred first (an SAE's decoder bias does that).  Each step removes the residual's projection
    on its best-aligned row, so the residual never grows; no step learns anything about the data.
    """
    residual = tokens.double() - tokens.double().mean(0)
    rows = dictionary.double()
    total = residual.pow(2).sum()
    for _ in range(steps):
        projection = residual @ rows.T
        best = projection.abs().argmax(1)
        residual = residual - projection.gather(1, best[:, None]) * rows[best]
    return float(residual.pow(2).sum() / total)


def atom_recovery(decoder: torch.Tensor, atoms: torch.Tensor) -> float:
    """Mean over ``atoms`` (rows) of the largest |cos| with any ``decoder`` row (1: each atom has its own latent)."""
    unit = torch.nn.functional.normalize
    cos = unit(atoms.double(), dim=1) @ unit(decoder.double(), dim=1).T
    return float(cos.abs().amax(1).mean())


def random_dictionary(d_sae: int, d_in: int, seed: int) -> torch.Tensor:
    """``[d_sae, d_in]`` unit rows drawn uniformly on the sphere."""
    rows = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.nn.functional.normalize(rows, dim=1)


def dictionary_regime(bench: Workbench, recipe: str, l0_a: float, fvu_a: float, seed: int) -> dict[str, float]:
    """The second table's row: what the trained SAE reaches beside a random dictionary of its size."""
    sae, planted = bench.sae("planted", recipe), bench.backbone("planted")
    decoder = sae.W_dec.detach().cpu()
    tokens = torch.tensor(bench.tokens("planted", "eval").tokens[:REGIME_IMAGES]).reshape(-1, sae.d_in)
    atoms = torch.cat([planted.local_atoms, planted.global_atoms])
    reference = random_dictionary(sae.d_sae, sae.d_in, seed)
    return {"FVU_A": fvu_a, "random FVU": matching_pursuit_fvu(tokens, reference, round(l0_a)),
            "atom cos": atom_recovery(decoder, atoms), "random atom cos": atom_recovery(reference, atoms)}


def measure(store: ActivationStore, overrides: dict[str, float | int], seed: int, recipe: str,
            progress: bool) -> dict[str, float | None]:
    """One row: the variant's SAE at ``seed``, its reconstruction, CDS and regime quantities (None where NaN)."""
    bench = Workbench(store, progress=progress, scales={"planted": variant_scale(overrides)}, seed=seed)
    values = bench.run("reconstruction", "planted", recipe).model_dump()
    values.update(bench.run("cds", "planted", recipe).model_dump())
    row = {column: values.get(key) for column, key in {**RECONSTRUCTION, **CDS}.items()}
    row.update(dictionary_regime(bench, recipe, values["l0_a"], values["fvu_a"], seed))
    row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    return {k: int(v) if k in COUNTS and v is not None else v for k, v in row.items()}


def describe(name: str, recipe: str) -> str:
    """``name: encoder init scale, lr, warm-up steps`` of a variant, as the planted scale trains ``recipe``."""
    fields = {**load_recipe(recipe).model_dump(), **variant_scale(VARIANTS[name]).sae_overrides}
    return (f"{name}: encoder {fields['encoder_init_scale']:g} x decoder, lr {fields['lr']:g}, "
            f"warm-up {fields['lr_warmup_steps']} steps")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SAE training seeds (default 0 1 2)")
    parser.add_argument("--recipe", default="batchtopk", help="SAE recipe name or .json path (default batchtopk)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="activation store (default: $SCOPEBENCH_CACHE "
                                                                      "or ~/.cache/scopebench)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows to this JSON file (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    store = ActivationStore(args.cache_dir or default_cache_dir())
    rows = []
    for name, overrides in VARIANTS.items():
        for seed in args.seeds:
            rows.append({"variant": name, "seed": seed,
                         **measure(store, overrides, seed, args.recipe, not args.no_progress)})
    print("\n".join(describe(name, args.recipe) for name in VARIANTS))
    for columns in ([c for c in rows[0] if c not in REGIME], ["variant", "seed", *REGIME]):
        print(tabulate([[row[c] for c in columns] for row in rows], headers=columns, floatfmt=".3g",
                       missingval="nan"))
    if args.out is not None:
        write_json_atomic(args.out, {"recipe": args.recipe, "variants": VARIANTS, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
