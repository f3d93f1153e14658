"""Token norms, the outlier mask and the automatic threshold tau."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scopebench.analyses.outliers import auto_tau, outlier_mask, resolve_tau, token_norms
from scopebench.analyses.valley import UnimodalError, histogram_valley


def bimodal_norms(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """~2% high-norm outliers (around 400) among normal tokens (around 30), like a real ViT layer."""
    rng = np.random.default_rng(seed)
    norms = np.exp(rng.normal(np.log(30.0), 0.15, size=(50, 100)))
    is_outlier = rng.random((50, 100)) < 0.02
    norms[is_outlier] = np.exp(rng.normal(np.log(400.0), 0.15, size=is_outlier.sum()))
    return norms, is_outlier


def test_token_norms_stream_over_a_memmap(tmp_path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "tokens.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(7, 5, 4))
    mm[:] = rng.normal(size=mm.shape)
    mm.flush()
    tokens = np.memmap(path, dtype=np.float32, mode="r", shape=(7, 5, 4))
    expected = np.sqrt((np.array(tokens, dtype=np.float64) ** 2).sum(-1))
    np.testing.assert_allclose(token_norms(tokens, batch_size=3), expected, rtol=1e-12)
    np.testing.assert_allclose(token_norms(torch.from_numpy(np.array(tokens)), batch_size=2), expected, rtol=1e-12)


def test_outlier_mask_is_strictly_above_tau() -> None:
    norms = np.array([[1.0, 5.0, 5.0001], [10.0, 4.9, 0.0]])
    assert outlier_mask(norms, 5.0).tolist() == [[False, False, True], [True, False, False]]
    with pytest.raises(ValueError, match="positive"):
        outlier_mask(norms, -1.0)


def test_auto_tau_falls_between_the_modes_and_recovers_the_outliers() -> None:
    norms, is_outlier = bimodal_norms()
    tau = auto_tau(norms)
    assert norms[~is_outlier].max() < tau < norms[is_outlier].min()
    assert (outlier_mask(norms, tau) == is_outlier).all()
    assert resolve_tau("auto", norms) == tau


def test_valley_of_a_two_gaussian_mixture_is_near_the_density_minimum() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0.0, 1.0, 20000), rng.normal(6.0, 1.0, 20000)])
    assert histogram_valley(x, bins=120) == pytest.approx(3.0, abs=0.4)  # symmetric mixture: minimum at 3


def test_fixed_tau_and_bad_values() -> None:
    assert resolve_tau(150) == 150.0
    with pytest.raises(ValueError, match="'auto'"):
        resolve_tau("median")
    with pytest.raises(ValueError, match="needs the token norms"):
        resolve_tau("auto")
    with pytest.raises(UnimodalError, match="unimodal"):
        auto_tau(np.exp(np.random.default_rng(3).normal(3.0, 0.2, 5000)))


def test_auto_tau_refuses_a_skewed_unimodal_bulk_for_every_seed() -> None:
    # the case: gamma(20) norms have one mode, yet the old histogram rule put tau in the
    # low tail for seed 0 and flagged 99.6% of the tokens as outliers
    for seed in range(50):
        with pytest.raises(UnimodalError, match="log token norms look unimodal"):
            auto_tau(np.random.default_rng(seed).gamma(20, 1.0, 2000))


def test_auto_tau_finds_a_small_outlier_mode_for_every_seed() -> None:
    # 97.5% of 2,000 tokens around norm 10, 2.5% around norm 100 (log-normal, sigma 0.1)
    for seed in range(50):
        rng = np.random.default_rng(seed)
        is_outlier = rng.random(2000) < 0.025
        norms = np.exp(np.where(is_outlier, rng.normal(np.log(100.0), 0.1, 2000), rng.normal(np.log(10.0), 0.1, 2000)))
        tau = auto_tau(norms)
        assert norms[~is_outlier].max() < tau < norms[is_outlier].min(), f"seed {seed}: tau={tau:.2f}"
        norms, is_outlier = bimodal_norms(seed)
        tau = auto_tau(norms)
        assert norms[~is_outlier].max() < tau < norms[is_outlier].min(), f"bimodal_norms({seed}): tau={tau:.2f}"


def test_auto_tau_needs_the_upper_mode_to_be_a_minority() -> None:
    rng = np.random.default_rng(4)
    norms = np.exp(np.concatenate([rng.normal(np.log(10.0), 0.1, 600), rng.normal(np.log(100.0), 0.1, 1400)]))
    assert 10.0 < np.exp(histogram_valley(np.log(norms))) < 100.0  # two modes, but 70% of tokens in the upper one
    with pytest.raises(UnimodalError, match="less than 50% of them above it"):
        auto_tau(norms)
    assert 10.0 < auto_tau(norms, max_outlier_fraction=0.8) < 100.0
