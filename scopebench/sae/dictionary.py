"""Parameters and geometry shared by all of our SAE architectures.

``pre = (x - b_dec) @ W_enc.T + b_enc``; ``xhat = codes @ W_dec + b_dec``.  ``W_enc`` is
stored ``[d_sae, d_in]`` (one row per latent) so that sparse backward passes gather rows.
Decoder rows are kept at unit norm: gradients parallel to a row are projected out
before each optimiser step and rows are renormalised after it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn


_EPS = 1e-12
ENCODER_INIT_SCALE = 0.1  # the recipes' default encoder_init_scale: see DictionarySAE.initialise


class _ArchitectureName:
    """``SAE.architecture``: the name its ``config_schema`` declares (``architecture: Literal["topk"]``)."""

    def __get__(self, obj: object, cls: type[DictionarySAE]) -> str:
        return cls.config_schema.architecture_name()


class DictionarySAE(nn.Module):
    """Base class: subclasses set ``config_schema`` and define ``encode`` and ``training_loss``.

    Each architecture lives in its module of :mod:`scopebench.sae.arch` with its ``config_schema`` (an
    ``ArchitectureConfig``: the fields it reads, their defaults and ranges) and is registered by name there.
    """

    #: the architecture's fields (``scopebench.sae.arch._base.ArchitectureConfig`` subclass)
    config_schema: ClassVar[type[Any]]
    architecture: ClassVar[str] = _ArchitectureName()  # type: ignore[assignment]

    def __init__(self, d_in: int, d_sae: int, hparams: dict[str, Any] | None = None) -> None:
        super().__init__()
        if d_in <= 0 or d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={d_in}, d_sae={d_sae}")
        self.d_in = d_in
        self.d_sae = d_sae
        self.hparams: dict[str, Any] = dict(hparams or {})
        self.W_enc = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @property
    def config(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae, **self.hparams}

    def setting(self, name: str) -> Any:
        """Hyperparameter ``name`` as configured, else its default from ``config_schema`` (the one home of defaults)."""
        if name in self.hparams:
            return self.hparams[name]
        return self.config_schema.model_fields[name].get_default(call_default_factory=True)

    @torch.no_grad()
    def initialise(self, generator: torch.Generator, data_mean: torch.Tensor | None = None,
                   encoder_scale: float = ENCODER_INIT_SCALE) -> None:
        """Random unit decoder rows, encoder = ``encoder_scale`` x decoder, ``b_dec`` = data mean.

        Training passes the recipe's ``encoder_init_scale``.  A full-scale tied encoder (1) starts with
        codes as large as the tokens, summed over k random directions: the first reconstructions overshoot
        (FVU far above 1 on heavy-tailed token norms) and early steps are spent undoing that.  A small
        encoder starts near FVU 1, as SAELens' small decoder-norm init does (on planted v6 the same number
        of steps then reached a 9x lower FVU).  With the first steps, the choice also shapes BatchTopK's
        outlier code on the planted default: on v8 at seed 0, L0_O 15.5 with the tied encoder and the planted
        scale's fast start, 28 with the small encoder and the same start, 131 with the small encoder and
        v7's slow start (README, "Fidelity of the planted default"; ``make outlier-study``).
        """
        w = torch.randn(self.d_sae, self.d_in, generator=generator)
        self.W_dec.copy_(w / w.norm(dim=1, keepdim=True).clamp_min(_EPS))
        self.W_enc.copy_(encoder_scale * self.W_dec)
        self.b_enc.zero_()
        self.b_dec.copy_(data_mean if data_mean is not None else torch.zeros(self.d_in))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.T)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, dead: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """``(loss, named loss parts, fired [d_sae] bool)`` for one batch; ``dead`` marks dead latents."""
        raise NotImplementedError  # pragma: no cover - abstract

    @torch.no_grad()
    def calibrate_(self, batches: Iterable[torch.Tensor]) -> None:
        """Estimate inference-only state from training-distribution ``batches`` after training.

        Architectures whose inference rule differs from their training rule (BatchTopK's
        global threshold) override this; for the others inference needs nothing more.
        """

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove the gradient component parallel to each (unit) decoder row."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad.sub_(parallel * self.W_dec)

    @torch.no_grad()
    def normalise_decoder_(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(_EPS))

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        """Make a model trained on ``scale * x`` act on raw ``x`` with codes divided by ``scale``.

        All pre-activations scale by ``1/scale``, so top-k choices are unchanged and
        thresholds (subclasses override to rescale them) keep the same firing pattern.
        """
        self.b_enc.div_(scale)
        self.b_dec.div_(scale)

    @staticmethod
    def batch_fvu(x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
        """Training reconstruction loss: squared error over the batch's centred energy (scale-free)."""
        return (x - xhat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(_EPS)
