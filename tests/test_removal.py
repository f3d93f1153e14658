"""Feature-group removal: identities, pooled equivalence, input validation."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from scopebench.analyses.removal_probes.removal import (group_indices, mean_tokens_and_codes, remove_group,
                                                       remove_group_pooled, remove_groups)
from scopebench.sae.base import SparseAutoencoder


class TinySAE(nn.Module):
    """encode = ReLU(x @ W_enc + b_enc), decode = z @ W_dec + b_dec; random, not trained."""

    def __init__(self, d_in: int, d_sae: int, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.d_in, self.d_sae = d_in, d_sae
        self.W_enc = nn.Parameter(torch.randn(d_in, d_sae, generator=generator) / d_in**0.5)
        self.b_enc = nn.Parameter(torch.randn(d_sae, generator=generator) * 0.1)
        self.W_dec = nn.Parameter(torch.randn(d_sae, d_in, generator=generator))
        self.b_dec = nn.Parameter(torch.randn(d_in, generator=generator))

    @property
    def config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "d_sae": self.d_sae}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec


@pytest.fixture
def sae() -> TinySAE:
    return TinySAE(d_in=6, d_sae=10)


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1)) * 2


def test_tiny_sae_satisfies_protocol(sae: TinySAE) -> None:
    assert isinstance(sae, SparseAutoencoder)


@pytest.mark.parametrize("empty", [[], np.array([], dtype=np.int64), torch.zeros(10, dtype=torch.bool)])
def test_empty_group_returns_input_bitwise(sae: TinySAE, tokens: torch.Tensor, empty: Any) -> None:
    out = remove_group(tokens, sae, empty)
    assert torch.equal(out, tokens)
    assert out.data_ptr() != tokens.data_ptr()  # a copy: editing it cannot corrupt the cache


def test_removing_all_features_leaves_error_term_plus_decoder_bias(sae: TinySAE, tokens: torch.Tensor) -> None:
    flat = tokens.reshape(-1, 6)
    with torch.no_grad():
        codes = sae.encode(flat)
        error_term = flat - sae.decode(codes)
    out = remove_group(tokens, sae, range(10)).reshape(-1, 6)
    # x - sum_j z_j d_j = x - (decode(z) - b_dec) = (x - decode(z)) + b_dec
    torch.testing.assert_close(out, error_term + sae.b_dec.detach())
    assert codes.count_nonzero() > 0  # the identity is not vacuous


def test_removal_matches_explicit_sum_over_group(sae: TinySAE, tokens: torch.Tensor) -> None:
    group = [1, 4, 7]
    flat = tokens.reshape(-1, 6)
    with torch.no_grad():
        codes = sae.encode(flat)
        expected = flat.clone()
        for j in group:
            expected -= codes[:, j : j + 1] * sae.W_dec[j]
    out = remove_group(tokens, sae, group)
    assert out.shape == tokens.shape
    torch.testing.assert_close(out.reshape(-1, 6), expected)
    assert not torch.allclose(out.reshape(-1, 6), flat)


def test_mask_indices_and_chunking_agree(sae: TinySAE, tokens: torch.Tensor) -> None:
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[0, 3, 9]] = True
    by_mask = remove_group(tokens, sae, mask)
    by_indices = remove_group(tokens, sae, np.array([9, 0, 3]), chunk_size=4)
    torch.testing.assert_close(by_mask, by_indices)


def test_several_groups_from_one_encoding_equal_each_removal_bitwise(sae: TinySAE, tokens: torch.Tensor) -> None:
    groups = [[0, 3, 9], [], np.array([1, 2]), [0, 3, 9]]
    calls = []
    encode = sae.encode
    sae.encode = lambda x: calls.append(len(x)) or encode(x)  # count the encoder's passes
    together = remove_groups(tokens, sae, groups, chunk_size=4)
    assert sum(calls) == tokens.shape[0] * tokens.shape[1]  # every token encoded once for all four groups
    del sae.encode
    for group, removed in zip(groups, together):
        assert torch.equal(removed, remove_group(tokens, sae, group, chunk_size=4))
    assert torch.equal(together[1], tokens) and together[1].data_ptr() != tokens.data_ptr()  # empty: a copy
    assert not torch.equal(together[0], together[2])


def test_removal_keeps_half_precision_input_dtype(sae: TinySAE, tokens: torch.Tensor) -> None:
    out = remove_group(tokens.half(), sae, [2, 5])
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), remove_group(tokens.half().float(), sae, [2, 5]), atol=1e-2, rtol=1e-2)


def test_pooled_removal_equals_mean_of_token_removal(sae: TinySAE, tokens: torch.Tensor) -> None:
    group = [0, 2, 5, 8]
    mean_x, mean_codes = mean_tokens_and_codes(tokens, sae)
    torch.testing.assert_close(mean_x, tokens.mean(dim=1))
    with torch.no_grad():
        torch.testing.assert_close(mean_codes, sae.encode(tokens).mean(dim=1))
    pooled = remove_group_pooled(mean_x, mean_codes, sae.W_dec.detach(), group)
    torch.testing.assert_close(pooled, remove_group(tokens, sae, group).mean(dim=1))
    assert torch.equal(remove_group_pooled(mean_x, mean_codes, sae.W_dec.detach(), []), mean_x)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ([1, 1], "repeated"),
        ([0, 10], r"\[0, 10\)"),
        ([-1], r"\[0, 10\)"),
        (torch.ones(9, dtype=torch.bool), "one flag per SAE feature"),
        ([0.5], "integer"),
    ],
)
def test_bad_groups_are_rejected(group: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_indices(group, 10)


def test_width_mismatches_are_rejected(sae: TinySAE) -> None:
    with pytest.raises(ValueError, match="d_in"):
        remove_group(torch.zeros(2, 5), sae, [0])
    with pytest.raises(ValueError, match="d_sae"):
        remove_group_pooled(torch.zeros(2, 6), torch.zeros(2, 9), sae.W_dec.detach(), [0])
    with pytest.raises(ValueError, match="same images"):
        remove_group_pooled(torch.zeros(2, 6), torch.zeros(3, 10), sae.W_dec.detach(), [0])
