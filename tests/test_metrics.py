"""reconstruction_metrics against direct numpy computations on small arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scopebench.analyses.reconstruction.metrics import FVU_DEFINITION, metrics_of_arrays, reconstruction_metrics
from scopebench.sae.base import SparseAutoencoder


class AffineToySAE:
    """codes = relu(x @ E + c), xhat = codes @ D + b: any reconstruction we want to test."""

    def __init__(self, E: torch.Tensor, c: torch.Tensor, D: torch.Tensor, b: torch.Tensor) -> None:
        self.E, self.c, self.D, self.b = E, c, D, b
        self.d_in, self.d_sae = D.shape[1], D.shape[0]

    @property
    def W_dec(self) -> torch.Tensor:
        return self.D

    @property
    def config(self) -> dict:
        return {"architecture": "toy"}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.E + self.c)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.D + self.b


def _data(n: int = 60, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen) * 2 + 3.0  # non-zero mean on purpose
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::7] = True
    return x, mask


def _random_sae(d: int = 5, d_sae: int = 8, seed: int = 1) -> AffineToySAE:
    gen = torch.Generator().manual_seed(seed)
    return AffineToySAE(
        torch.randn(d, d_sae, generator=gen), torch.randn(d_sae, generator=gen) - 1.0,
        torch.randn(d_sae, d, generator=gen) * 0.3, torch.randn(d, generator=gen),
    )


def _direct(sae: AffineToySAE, x: torch.Tensor) -> dict[str, float]:
    xn = x.double().numpy()
    codes = sae.encode(x).numpy()
    xh = sae.decode(sae.encode(x)).double().numpy()
    fvu = ((xn - xh) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    cos = ((xn * xh).sum(1) / (np.linalg.norm(xn, axis=1) * np.linalg.norm(xh, axis=1))).mean()
    energy = codes.astype(np.float64) ** 2
    coded = energy.sum(1) > 0
    top1 = (energy.max(1)[coded] / energy.sum(1)[coded]).mean() if coded.any() else math.nan
    return {"fvu": fvu, "l0": (codes != 0).sum(1).mean(), "cos": cos, "rate": (codes != 0).mean(0), "top1": top1}


def test_toy_sae_satisfies_protocol():
    assert isinstance(_random_sae(), SparseAutoencoder)


def test_metrics_match_direct_computation_for_all_and_outliers():
    x, mask = _data()
    sae = _random_sae()
    m = reconstruction_metrics(sae, [(x, mask)])
    everything, outliers = _direct(sae, x), _direct(sae, x[mask])
    assert m.fvu_all == pytest.approx(everything["fvu"], rel=1e-6)
    assert m.fvu_outlier == pytest.approx(outliers["fvu"], rel=1e-6)
    assert m.l0_all == pytest.approx(everything["l0"])
    assert m.l0_outlier == pytest.approx(outliers["l0"])
    assert m.cos_all == pytest.approx(everything["cos"], rel=1e-6)
    assert m.cos_outlier == pytest.approx(outliers["cos"], rel=1e-6)
    assert (m.n_all, m.n_outlier) == (60, int(mask.sum()))
    assert m.dead_fraction == pytest.approx((everything["rate"] == 0).mean())
    assert m.dense_fraction == pytest.approx((everything["rate"] > 0.10).mean())
    assert m.outlier_top1_share == pytest.approx(outliers["top1"], rel=1e-9)
    assert m.outlier_shared_latents == int((outliers["rate"] > 0.5).sum())
    assert m.definition == FVU_DEFINITION and "mu_T" in m.definition


def test_metrics_of_plain_arrays_equal_the_sae_path():
    """Any SAE, run by anyone: tokens, reconstructions and codes give the same numbers without an SAE object."""
    x, mask = _data()
    sae = _random_sae()
    codes = sae.encode(x)
    assert metrics_of_arrays(x, sae.decode(codes), codes, mask) == reconstruction_metrics(sae, [(x, mask)])
    with pytest.raises(ValueError, match=r"need x and xhat \[n, d_in\] and codes \[n, d_sae\]"):
        metrics_of_arrays(x, x[:3], codes, mask)


def test_outlier_code_anatomy_tells_one_strong_latent_from_a_broad_weak_code():
    """Same L0 bookkeeping, two outlier codes: one latent carrying the token, or the token spread evenly."""
    n, d_sae = 8, 12
    x = torch.ones(n, 3)
    mask = torch.tensor([True] * 4 + [False] * 4)
    strong = torch.zeros(n, d_sae)
    strong[:4, 0] = 5.0
    strong[torch.arange(4), 1 + torch.arange(4)] = 1.0  # one weak latent of its own per outlier: fires on 1 of 4
    broad = torch.zeros(n, d_sae)
    broad[:4, :10] = 1.0
    broad[1, :10] = 0.0  # a token with no code: left out of the share, counted in the firing rate
    one = metrics_of_arrays(x, x, strong, mask)
    assert one.outlier_top1_share == pytest.approx(25 / 26)
    assert one.outlier_shared_latents == 1
    spread = metrics_of_arrays(x, x, broad, mask)
    assert spread.outlier_top1_share == pytest.approx(1 / 10)
    assert spread.outlier_shared_latents == 10  # each fires on 3 of the 4 outliers
    none = metrics_of_arrays(x, x, broad, torch.zeros(n, dtype=torch.bool))
    assert math.isnan(none.outlier_top1_share) and none.outlier_shared_latents == 0


U32, U64 = 2.0**-24, 2.0**-53  # unit roundoff of float32 / float64


def _gamma(k: int, u: float = U32) -> float:
    """Higham's gamma_k = k u / (1 - k u): a k-term sum or dot product, in any order, is within gamma_k sum |terms|.

    (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5 and Lemma 3.1.)
    Kernels sum in an order that depends on batch shape, thread count and CPU ISA (AVX2 vs
    AVX-512, FMA or not), so two evaluations may differ, but each is within this bound.
    """
    return k * u / (1 - k * u)


def _rounding_tolerances(sae: AffineToySAE, x: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far two evaluations of reconstruction_metrics on the same tokens may differ by rounding alone.

    Per token, one float32 evaluation of ``pre = x @ E + c`` is within
    ``e1 = gamma_{d+1} (|x| @ |E| + |c|)`` of the exact value; relu is 1-Lipschitz; then
    ``xhat = codes @ D + b`` is within ``e2 = gamma_{m+1} (|codes| @ |D| + |b|) + e1 @ |D|``.
    Two evaluations differ by at most ``delta = 2 e2`` per element.  The metrics add float64
    sums (n d terms) in batch order.  Returns relative tolerances for FVU (to first order,
    ``sum(2 |r| delta + delta^2) / sum r^2`` plus the float64 terms of numerator and
    denominator), absolute ones for the mean cosine (``||y/|y| - y'/|y'||| <= 2 ||y - y'|| / |y|``),
    and ``margin``: the smallest ``|pre| / (2 e1)``, which must exceed 1 for L0 and the firing
    counts to be identical (no pre-activation close enough to 0 to change sign).
    """
    d, m = sae.d_in, sae.d_sae
    x64, E, c, D, b = (t.double() for t in (x, sae.E, sae.c, sae.D, sae.b))
    pre = (x @ sae.E + sae.c).double()
    e1 = _gamma(d + 1) * (x64.abs() @ E.abs() + c.abs())
    codes = pre.clamp(min=0)
    e2 = _gamma(m + 1) * ((codes + 2 * e1) @ D.abs() + b.abs()) + e1 @ D.abs()
    delta = 2 * e2
    xhat = sae.decode(sae.encode(x)).double()
    tolerances = {"margin": float((pre.abs() / (2 * e1)).min())}
    for name, rows in (("all", slice(None)), ("outlier", mask)):
        xs, r, dl, xh = x64[rows], (x64 - xhat)[rows], delta[rows], xhat[rows]
        n = xs.shape[0]
        sq_err = float((r**2).sum())
        numerator = float((2 * r.abs() * dl + dl**2).sum()) + 2 * _gamma(n * d + 2, U64) * sq_err
        centred = float(((xs - xs.mean(0)) ** 2).sum())
        denominator = 2 * _gamma(n * d + n + d + 3, U64) * float((xs**2).sum() + (xs.abs().sum(0) ** 2).sum() / n)
        tolerances[f"fvu_{name}"] = numerator / sq_err + denominator / centred
        tolerances[f"cos_{name}"] = float((2 * dl.norm(dim=1) / xh.norm(dim=1)).mean()) + 2 * _gamma(n + 2 * d + 6, U64)
    return tolerances


def test_streaming_over_batches_equals_one_batch():
    x, mask = _data(n=90)
    sae = _random_sae()
    whole = reconstruction_metrics(sae, [(x, mask)])
    pieces = reconstruction_metrics(sae, [(x[:13], mask[:13]), (x[13:14], mask[13:14]), (x[14:], mask[14:])])
    tol = _rounding_tolerances(sae, x, mask)
    assert tol["margin"] > 1  # no pre-activation within rounding of 0: codes fire identically in both runs
    for field in ("l0_all", "l0_outlier", "dead_fraction", "dense_fraction"):
        assert getattr(pieces, field) == getattr(whole, field), field
    for field in ("fvu_all", "fvu_outlier"):
        assert getattr(pieces, field) == pytest.approx(getattr(whole, field), rel=tol[field], abs=0), field
    for field in ("cos_all", "cos_outlier"):
        assert getattr(pieces, field) == pytest.approx(getattr(whole, field), rel=0, abs=tol[field]), field
    # the tolerances are far below what losing one token does: a dropped batch is still caught
    dropped = reconstruction_metrics(sae, [(x[:13], mask[:13]), (x[14:], mask[14:])])
    assert abs(dropped.fvu_all / whole.fvu_all - 1) > 10 * tol["fvu_all"]
    assert abs(dropped.cos_all - whole.cos_all) > 10 * tol["cos_all"]


def test_perfect_sae_gives_fvu_0_and_cosine_1():
    x, mask = _data()
    d = x.shape[1]
    eye = torch.eye(d)
    # codes = [relu(x), relu(-x)], decoder [I; -I]: xhat = relu(x) - relu(-x) = x exactly.
    sae = AffineToySAE(torch.cat([eye, -eye], 1), torch.zeros(2 * d), torch.cat([eye, -eye], 0), torch.zeros(d))
    m = reconstruction_metrics(sae, [(x, mask)])
    assert m.fvu_all == pytest.approx(0.0, abs=1e-12) and m.fvu_outlier == pytest.approx(0.0, abs=1e-12)
    assert m.cos_all == pytest.approx(1.0) and m.cos_outlier == pytest.approx(1.0)


def test_fvu_is_one_exactly_when_reconstruction_is_the_set_mean():
    x, mask = _data()
    d = x.shape[1]
    # all codes zero (bias -inf-like), xhat = b = mu_T: FVU = 1 over T = all tokens by definition.
    sae = AffineToySAE(torch.zeros(d, 3), -torch.ones(3), torch.randn(3, d), x.double().mean(0).float())
    m = reconstruction_metrics(sae, [(x, mask)])
    assert m.fvu_all == pytest.approx(1.0, rel=1e-6)
    assert m.l0_all == 0 and m.dead_fraction == 1.0 and m.dense_fraction == 0.0
    # ... but the outlier set has its own mean, so the same constant is worse than 1 there.
    assert m.fvu_outlier > 1.0


def test_zero_reconstruction_fvu_is_uncentred_energy_over_centred_energy():
    x, mask = _data()
    d = x.shape[1]
    sae = AffineToySAE(torch.zeros(d, 3), -torch.ones(3), torch.randn(3, d), torch.zeros(d))
    xn = x.double().numpy()
    expected = (xn**2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    m = reconstruction_metrics(sae, [(x, mask)])
    assert expected > 1.5  # x has mean 3, so predicting 0 is much worse than predicting the mean
    assert m.fvu_all == pytest.approx(expected, rel=1e-6)


def test_dense_fraction_threshold_is_strictly_more_than_ten_percent():
    n = 100
    x = torch.zeros(n, 1)
    x[:10, 0] = 1.0  # latent 0 fires on exactly 10% (not dense)
    x2 = torch.zeros(n, 1)
    x2[:11, 0] = 1.0  # latent 1 fires on 11% (dense)
    data = torch.cat([x, x2], 1)
    sae = AffineToySAE(torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2))
    m = reconstruction_metrics(sae, [(data, torch.zeros(n, dtype=torch.bool))])
    assert m.dense_fraction == pytest.approx(0.5)
    assert m.dead_fraction == 0.0


def test_no_outliers_gives_nan_outlier_metrics():
    x, _ = _data()
    m = reconstruction_metrics(_random_sae(), [(x, torch.zeros(len(x), dtype=torch.bool))])
    assert m.n_outlier == 0
    assert all(math.isnan(v) for v in (m.fvu_outlier, m.l0_outlier, m.cos_outlier))
    assert not math.isnan(m.fvu_all)


def test_bad_inputs_name_the_problem():
    x, mask = _data()
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        reconstruction_metrics(_random_sae(), [(x[:, :4], mask)])
    with pytest.raises(ValueError, match="bool"):
        reconstruction_metrics(_random_sae(), [(x, mask.int())])
    with pytest.raises(ValueError, match="no tokens"):
        reconstruction_metrics(_random_sae(), [])
