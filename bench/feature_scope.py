"""Where each SAE's features lie in the planted truth, beside their CDS (``make feature-scope``).

``python bench/feature_scope.py [--recipes batchtopk,topk,...] [--cache-dir DIR]``: for each baseline recipe
as the planted default trains it, every feature with a CDS is *global*, *local* or *mixed* by the share of its
decoder row in the planted global subspace (``PlantedBackbone.global_share``, cut at ``SCOPE_CUTS``), and
the table gives each group's size and median CDS, the AUROC with which CDS ranks the global features above
the local ones (Mann-Whitney U / (n_global n_local)), and whether the CDS histogram has a partition.  It says
why an SAE misses Table 4's partition: its features mix the two scopes (many mixed features fill the valley),
or they separate and the valley test lacks the power.  SAEs and CDS come from the activation cache (trained
there if missing, as ``pytest bench`` would).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu
from tabulate import tabulate

from scopebench.backbones.planted import SCOPE_CUTS
from scopebench.pipeline.cache import ActivationStore, default_cache_dir
from scopebench.suite.scales import PLANTED_SCALE
from scopebench.suite.workbench import Workbench

BACKBONE = "planted"
RECIPES = "batchtopk,topk,matryoshka,relu,jumprelu"


def scope_row(global_share: np.ndarray, cds: np.ndarray) -> dict[str, float | int]:
    """One SAE's row from per-feature ``global_share`` and ``cds`` (NaN: no CDS, left out)."""
    scored = np.isfinite(cds)
    local_cut, global_cut = SCOPE_CUTS
    groups = {"global": scored & (global_share > global_cut), "local": scored & (global_share < local_cut)}
    groups["mixed"] = scored & ~groups["global"] & ~groups["local"]
    row: dict[str, float | int] = {"scored": int(scored.sum())}
    for name, members in groups.items():
        row[name] = int(members.sum())
        row[f"{name} CDS"] = float(np.median(cds[members])) if members.any() else math.nan
    n_global, n_local = row["global"], row["local"]
    row["AUROC"] = float(mannwhitneyu(cds[groups["global"]], cds[groups["local"]]).statistic / (n_global * n_local)) \
        if n_global and n_local else math.nan
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=RECIPES, help=f"comma-separated baseline recipes (default {RECIPES})")
    parser.add_argument("--cache-dir", type=Path, default=None, help="activation store (default: $SCOPEBENCH_CACHE "
                                                                      "or ~/.cache/scopebench)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    bench = Workbench(ActivationStore(args.cache_dir or default_cache_dir()), progress=not args.no_progress,
                      scales={BACKBONE: PLANTED_SCALE})
    planted = bench.backbone(BACKBONE)
    rows = []
    for recipe in args.recipes.split(","):
        output = bench.run("cds", BACKBONE, recipe)
        share = planted.global_share(bench.sae(BACKBONE, recipe).W_dec).numpy()
        rows.append({"SAE": recipe, **scope_row(share, output.details[0].cds),
                     "partition": "yes" if output.details[1] is not None else "no"})
    print(tabulate([list(row.values()) for row in rows], headers=list(rows[0]), floatfmt=".3g", missingval="nan"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
