"""``ForeignSAE``: a linear-encoder SAE holding weights trained by another library.

All supported external formats reduce to ``pre = (x - b_dec * pre_bias) @ W_enc.T + b_enc``
followed by one of: ReLU, per-token top-k, a per-latent threshold (JumpReLU) or a
global threshold (BatchTopK at inference); then ``xhat = codes @ W_dec + b_dec``.
Decoder rows are whatever the source trained (not necessarily unit-norm).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

Activation = Literal["relu", "topk", "jumprelu", "global_threshold"]


class ForeignSAE(nn.Module):
    def __init__(
        self,
        *,
        W_enc: torch.Tensor,  # [d_sae, d_in]
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,  # [d_sae, d_in]
        b_dec: torch.Tensor,
        activation: Activation,
        pre_bias: bool,
        k: int | None = None,
        threshold: torch.Tensor | None = None,
        source: dict[str, Any] | None = None,
        where: str = "foreign SAE",
    ) -> None:
        """``where`` (the file the weights came from) prefixes every error."""
        super().__init__()
        if W_enc.dim() != 2:
            raise ValueError(f"{where}: the encoder weight has shape {tuple(W_enc.shape)}; it must be a matrix")
        d_sae, d_in = W_enc.shape
        shapes = {"W_dec": (W_dec.shape, (d_sae, d_in)), "b_enc": (b_enc.shape, (d_sae,)), "b_dec": (b_dec.shape, (d_in,))}
        for name, (got, want) in shapes.items():
            if tuple(got) != want:
                raise ValueError(f"{where}: {name} has shape {tuple(got)}; with W_enc {tuple(W_enc.shape)} it must "
                                 f"be {want}")
        if activation == "topk":
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
                raise ValueError(f"{where}: a top-k SAE needs k, an integer in [1, d_sae={d_sae}]; got {k!r}")
        if activation in ("jumprelu", "global_threshold"):
            if threshold is None:
                raise ValueError(f"{where}: a {activation} SAE needs a threshold tensor")
            want = (d_sae,) if activation == "jumprelu" else ()
            if tuple(threshold.shape) != want:
                raise ValueError(f"{where}: threshold has shape {tuple(threshold.shape)}; a {activation} SAE "
                                 f"needs {want}")
        tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if threshold is not None:
            tensors["threshold"] = threshold
        bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t.detach().float()).all())]
        if bad:  # the loaders name the file's own tensors first; this also catches overflow in a conversion
            raise ValueError(f"{where}: non-finite (NaN/inf) values in {bad}; the SAE diverged or the file is corrupt")
        self.d_in, self.d_sae = int(d_in), int(d_sae)
        self.activation = activation
        self.pre_bias = pre_bias
        self.k = k
        self.W_enc = nn.Parameter(W_enc.detach().float().clone(), requires_grad=False)
        self.b_enc = nn.Parameter(b_enc.detach().float().clone(), requires_grad=False)
        self.W_dec = nn.Parameter(W_dec.detach().float().clone(), requires_grad=False)
        self.b_dec = nn.Parameter(b_dec.detach().float().clone(), requires_grad=False)
        self.register_buffer("threshold", None if threshold is None else threshold.detach().float().clone())
        self._source = dict(source or {})

    @property
    def config(self) -> dict[str, Any]:
        return {
            "architecture": f"foreign-{self.activation}",
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "k": self.k,
            "pre_bias": self.pre_bias,
            **self._source,
        }

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.b_dec if self.pre_bias else x
        pre = centred @ self.W_enc.T + self.b_enc
        if self.activation == "topk":
            top = pre.topk(min(int(self.k), self.d_sae), dim=1)
            return torch.zeros_like(pre).scatter_(1, top.indices, torch.relu(top.values))
        post = torch.relu(pre)
        if self.activation == "relu":
            return post
        return post * (pre > self.threshold)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
