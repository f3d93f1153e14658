"""awCDS per token and its mean per token-norm percentile bin, against direct computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scopebench.analyses.awcds.tokens import awcds_by_norm_percentile, token_awcds
from tiny_sae import ReluSAE


def test_token_awcds_matches_a_direct_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    n_img, n_tok, d_in, d_sae = 5, 9, 4, 6
    W = rng.normal(size=(d_in, d_sae))
    tokens = rng.normal(size=(n_img, n_tok, d_in)).astype(np.float32)
    tokens[1, 3] = 0.0  # no feature active -> NaN
    cds = rng.random(d_sae)
    cds[2] = np.nan  # unscored feature: ignored in both sums
    out = token_awcds(ReluSAE(torch.from_numpy(W)), tokens, cds, batch_size=2, progress=False)
    for i in range(n_img):
        for t in range(n_tok):
            a = np.maximum(tokens[i, t].astype(np.float64) @ W, 0.0)
            used = [j for j in range(d_sae) if a[j] > 0 and np.isfinite(cds[j])]
            expected = sum(a[j] * cds[j] for j in used) / sum(a[j] for j in used) if used else np.nan
            np.testing.assert_allclose(out.awcds[i, t], expected, rtol=1e-5, equal_nan=True)
            assert out.norms[i, t] == pytest.approx(np.linalg.norm(tokens[i, t].astype(np.float64)))
    assert np.isnan(out.awcds[1, 3])


def test_percentile_bins_average_equal_count_norm_slices() -> None:
    rng = np.random.default_rng(1)
    norms = rng.permutation(np.arange(1.0, 201.0))  # 200 distinct norms: 20 bins of 10 tokens
    awcds = rng.random(200)
    awcds[norms == 200.0] = np.nan  # the largest token is unscored
    table = awcds_by_norm_percentile(norms, awcds, n_bins=20, top_fraction=0.01)
    by_norm = awcds[np.argsort(norms)].reshape(20, 10)
    np.testing.assert_allclose(table["mean_awcds"].to_numpy()[:20], np.nanmean(by_norm, axis=1), rtol=1e-12)
    assert table["n_tokens"].tolist()[:20] == [10] * 20
    assert table["norm_lo"].tolist()[:20] == [1.0 + 10 * i for i in range(20)]
    top = table.iloc[20]  # top 1% of 200 tokens = norms 199 and 200, only 199 is scored
    assert top["bin"] == "top 1%" and top["n_tokens"] == 2 and top["n_scored"] == 1
    assert table["is_top"].tolist() == [False] * 20 + [True]
    assert top["mean_awcds"] == pytest.approx(awcds[norms == 199.0][0])


def test_bad_inputs_name_the_problem() -> None:
    sae = ReluSAE(torch.eye(3))
    with pytest.raises(ValueError, match="d_sae=3"):
        token_awcds(sae, np.zeros((1, 2, 3), np.float32), np.zeros(4), progress=False)
    with pytest.raises(ValueError, match="equal size"):
        awcds_by_norm_percentile(np.ones(3), np.ones(4))
