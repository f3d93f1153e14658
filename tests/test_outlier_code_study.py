"""bench/outlier_code_study.py (``make outlier-study``): which trainer each variant row describes."""
from __future__ import annotations

import pytest
import torch

from scopebench.suite.scales import PLANTED_SCALE
from bench_scripts import load_bench_script


def _module():
    return load_bench_script("outlier_code_study")


def test_a_variant_extends_the_planted_scales_overrides_and_the_default_row_is_the_planted_default() -> None:
    study = _module()
    assert study.variant_scale(study.VARIANTS["default"]) == PLANTED_SCALE
    old = study.variant_scale(study.VARIANTS["v7's trainer"]).sae_overrides
    assert old["n_tokens"] == PLANTED_SCALE.sae_overrides["n_tokens"]  # kept, not replaced
    assert (old["lr"], old["lr_warmup_steps"], old["encoder_init_scale"]) == (3e-3, 100, 0.1)


def test_each_row_names_the_trainer_it_ran_under_the_planted_scale() -> None:
    """The planted scale sets the encoder scale, the learning rate and the warm-up; a variant replaces some."""
    study = _module()
    assert study.describe("default", "batchtopk") == "default: encoder 1 x decoder, lr 0.01, warm-up 10 steps"
    assert study.describe("untied", "batchtopk") == "untied: encoder 0.1 x decoder, lr 0.01, warm-up 10 steps"
    assert study.describe("slow start", "batchtopk") == "slow start: encoder 1 x decoder, lr 0.003, warm-up 100 steps"


def _orthonormal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.T  # rows


def test_matching_pursuit_over_an_orthonormal_basis_keeps_the_largest_coefficients() -> None:
    """Over an orthonormal basis, m steps remove a token's m largest coefficients: FVU is what the rest leaves."""
    study = _module()
    basis = _orthonormal(8, 0)
    coefficients = torch.randn(200, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tokens = coefficients @ basis
    centred = (tokens - tokens.mean(0)) @ basis.T  # coefficients of the centred tokens
    total = centred.pow(2).sum()
    for steps in (0, 1, 3, 8):
        kept = centred.pow(2).sort(dim=1).values[:, :8 - steps].sum()
        assert study.matching_pursuit_fvu(tokens, basis, steps) == pytest.approx(float(kept / total), rel=1e-9)
    assert study.matching_pursuit_fvu(tokens, basis, 8) < 1e-20


def test_matching_pursuit_ignores_a_shared_offset_and_never_gets_worse_with_more_steps() -> None:
    study = _module()
    tokens = torch.randn(300, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    dictionary = study.random_dictionary(64, 16, seed=3)
    fvus = [study.matching_pursuit_fvu(tokens, dictionary, steps) for steps in range(6)]
    assert fvus[0] == pytest.approx(1.0)
    assert all(later <= earlier for earlier, later in zip(fvus, fvus[1:]))
    assert fvus[-1] < fvus[0]
    assert study.matching_pursuit_fvu(tokens + 5.0, dictionary, 4) == pytest.approx(fvus[4], rel=1e-9)


def test_atom_recovery_is_one_for_a_dictionary_holding_the_atoms_and_zero_for_one_orthogonal_to_them() -> None:
    study = _module()
    basis = _orthonormal(12, 4)
    atoms, rest = basis[:5], basis[5:]
    holding = torch.cat([rest, -3.0 * atoms[[2, 0, 4, 1, 3]]])  # permuted, sign-flipped, scaled, among others
    assert study.atom_recovery(holding, atoms) == pytest.approx(1.0)
    assert study.atom_recovery(rest, atoms) == pytest.approx(0.0, abs=1e-12)
    halfway = (atoms + rest[:5]) / 2 ** 0.5  # each atom at 45 degrees from its own latent
    assert study.atom_recovery(halfway, atoms) == pytest.approx(2 ** -0.5)


def test_the_random_dictionary_has_unit_rows_and_is_fixed_by_its_seed() -> None:
    study = _module()
    rows = study.random_dictionary(100, 8, seed=5)
    assert rows.shape == (100, 8)
    assert torch.allclose(rows.norm(dim=1), torch.ones(100, dtype=torch.float64))
    assert torch.equal(rows, study.random_dictionary(100, 8, seed=5))
    assert not torch.equal(rows, study.random_dictionary(100, 8, seed=6))
