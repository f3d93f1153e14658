"""bench/feature_scope.py (``make feature-scope``): a feature's planted scope and what CDS says of it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scopebench.backbones.planted import SCOPE_CUTS, PlantedBackbone
from scopebench.backbones.registry import get_spec
from bench_scripts import load_bench_script


def _module():
    return load_bench_script("feature_scope")


def test_global_share_is_one_on_the_planted_global_atoms_and_zero_on_the_local_ones() -> None:
    planted = PlantedBackbone(get_spec("planted"), seed=0)
    torch.testing.assert_close(planted.global_share(planted.global_atoms), torch.ones(len(planted.global_atoms),
                                                                                   dtype=torch.float64))
    torch.testing.assert_close(planted.global_share(3.0 * planted.context_atoms),  # scale-free
                               torch.ones(len(planted.context_atoms), dtype=torch.float64))
    assert planted.global_share(planted.local_atoms).abs().max() < 1e-6  # float32 atoms: orthogonal to rounding
    half = (planted.global_atoms[0] + planted.local_atoms[0])[None]  # two orthogonal unit vectors: half and half
    assert planted.global_share(half).item() == pytest.approx(0.5, abs=1e-6)


def test_a_row_counts_each_scope_and_ranks_global_above_local_by_the_pairwise_count() -> None:
    study = _module()
    local_cut, global_cut = SCOPE_CUTS
    share = np.array([0.9, 0.95, 0.1, 0.05, 0.0, 0.5, 0.99, 0.1])
    cds = np.array([0.4, 0.1, 0.2, 0.01, 0.02, 0.3, np.nan, 0.15])  # the last global feature has no CDS
    row = study.scope_row(share, cds)
    assert (row["scored"], row["global"], row["local"], row["mixed"]) == (7, 2, 4, 1)
    assert (row["global CDS"], row["mixed CDS"]) == (pytest.approx(0.25), pytest.approx(0.3))
    assert row["local CDS"] == pytest.approx(np.median([0.2, 0.01, 0.02, 0.15]))
    pairs = [(g, l) for g in (0.4, 0.1) for l in (0.2, 0.01, 0.02, 0.15)]
    assert row["AUROC"] == pytest.approx(sum(1.0 if g > l else 0.5 if g == l else 0.0 for g, l in pairs) / 8)
    assert share[0] > global_cut and share[2] < local_cut  # the cuts the rows were built around
    empty = study.scope_row(np.array([0.9]), np.array([0.3]))  # no local feature: no AUROC, no local median
    assert empty["global"] == 1 and math.isnan(empty["AUROC"]) and math.isnan(empty["local CDS"])
