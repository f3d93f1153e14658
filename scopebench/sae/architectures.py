"""Our SAE architectures and the ``build_sae`` factory keyed by architecture name."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from scopebench.sae.dictionary import _EPS, DictionarySAE
from scopebench.sae.sparse_ops import Selection, batch_topk_flat_indices, gathered_pre_activations, sparse_decode
from scopebench.sae.validation import ConfigFloat, ConfigInt, SAEConfigError, validate_model

DEFAULT_GROUP_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def matryoshka_prefix_sizes(fractions: Iterable[float], d_sae: int) -> list[int]:
    """Prefix sizes of ``group_fractions``; they must strictly increase and end at ``d_sae``."""
    fractions = list(fractions)
    sizes = [max(1, round(f * d_sae)) for f in fractions]
    if not sizes or sizes[-1] != d_sae or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"group_fractions {fractions} give prefix sizes {sizes} for d_sae={d_sae}: they "
                         "must strictly increase and end at d_sae (fraction 1.0); drop fractions that round "
                         "to the same size")
    return sizes


# --- config schemas: what each architecture reads from its config (config.json of a native checkpoint).
# Keys the architecture does not read (training hyperparameters recorded with the weights) are kept as they are.


class SAEConfigSchema(BaseModel):
    """Fields every architecture reads.  Strict: ``"32"``, ``32.0`` or ``true`` are not integers."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    architecture: str
    d_in: ConfigInt = Field(gt=0, description="a positive integer: the token dimension of the backbone layer")
    d_sae: ConfigInt | None = Field(None, gt=0, description="a positive integer: the number of latents")
    expansion_factor: ConfigInt | None = Field(None, gt=0, description="a positive integer: d_sae / d_in "
                                               "(used only when d_sae is not set)")

    @model_validator(mode="after")
    def _needs_a_size(self) -> SAEConfigSchema:
        if self.d_sae is None and self.expansion_factor is None:
            raise ValueError("d_sae: missing; set 'd_sae' (the number of latents) or 'expansion_factor'")
        return self

    @property
    def resolved_d_sae(self) -> int:
        return self.d_sae if self.d_sae is not None else self.d_in * int(self.expansion_factor or 0)


class TopKConfigSchema(SAEConfigSchema):
    k: ConfigInt = Field(ge=1, description="an integer in [1, d_sae]: the active latents per token")
    aux_k: ConfigInt = Field(256, ge=1, description="a positive integer: dead latents used by the AuxK loss")
    aux_k_coeff: ConfigFloat = Field(1 / 32, ge=0, description="a finite number >= 0: the AuxK loss weight")

    @model_validator(mode="after")
    def _k_fits(self) -> TopKConfigSchema:
        if self.k > self.resolved_d_sae:
            raise ValueError(f"k: {self.k} exceeds d_sae={self.resolved_d_sae}; expected an integer in "
                             f"[1, {self.resolved_d_sae}]: the active latents per token")
        return self


class MatryoshkaConfigSchema(TopKConfigSchema):
    group_fractions: list[ConfigFloat] = Field(
        default_factory=lambda: list(DEFAULT_GROUP_FRACTIONS),
        description="fractions in (0, 1] that strictly increase to 1.0, e.g. [0.0625, 0.125, 0.25, 0.5, 1.0]")
    group_weights: list[ConfigFloat] | None = Field(
        None, description="null, or one finite weight >= 0 per entry of group_fractions")

    @model_validator(mode="after")
    def _groups(self) -> MatryoshkaConfigSchema:
        fractions = self.group_fractions
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"group_fractions: {fractions} must be fractions in (0, 1] ending at 1.0, "
                             "e.g. [0.0625, 0.125, 0.25, 0.5, 1.0]")
        matryoshka_prefix_sizes(fractions, self.resolved_d_sae)
        if self.group_weights is not None:
            if len(self.group_weights) != len(fractions) or any(w < 0 for w in self.group_weights):
                raise ValueError(f"group_weights: {self.group_weights} must be null or one weight >= 0 per entry "
                                 f"of group_fractions {fractions}")
        return self


class ReLUConfigSchema(SAEConfigSchema):
    l1_coeff: ConfigFloat = Field(1.0, ge=0, description="a finite number >= 0: the L1 penalty weight")


class JumpReLUConfigSchema(SAEConfigSchema):
    init_threshold: ConfigFloat = Field(0.1, gt=0, description="a finite number > 0: the initial threshold")
    bandwidth: ConfigFloat = Field(0.05, gt=0, description="a finite number > 0: the straight-through kernel width")
    sparsity_coeff: ConfigFloat = Field(1e-3, ge=0, description="a finite number >= 0: the L0 penalty weight")


class TopKSAE(DictionarySAE):
    """Per-token top-``k`` of the ReLU pre-activations (Gao et al. 2024), with AuxK."""

    architecture = "topk"
    config_schema: ClassVar[type[SAEConfigSchema]] = TopKConfigSchema

    @property
    def k(self) -> int:
        return int(self.hparams["k"])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        top = pre.topk(min(self.k, self.d_sae), dim=1)
        return torch.zeros_like(pre).scatter_(1, top.indices, torch.relu(top.values))

    def _select(self, pre: torch.Tensor) -> Selection:
        return Selection.from_row_topk(pre.topk(min(self.k, self.d_sae), dim=1).indices)

    def sparse_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Selection, torch.Tensor]:
        """``(x_c, dense pre (no grad), selection, selected code values)`` for a training batch."""
        x_c = x - self.b_dec
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x_c, self.W_enc.T)
        sel = self._select(pre)
        values = torch.relu(gathered_pre_activations(x_c, self.W_enc, self.b_enc, pre, sel))
        return x_c, pre, sel, values

    def training_loss(self, x, dead):
        x_c, pre, sel, values = self.sparse_forward(x)
        xhat = sparse_decode(sel, values, self.W_dec) + self.b_dec
        recon = self.batch_fvu(x, xhat)
        aux = self.auxk_loss(pre, x_c, x - xhat, dead)
        loss = recon + float(self.hparams.get("aux_k_coeff", 1 / 32)) * aux
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[sel.cols[values > 0]] = True
        return loss, {"loss": loss.item(), "fvu": recon.item(), "auxk": aux.item()}, fired


class BatchTopKSAE(TopKSAE):
    """Top ``k * batch`` activations across the batch (Bussmann et al. 2024).

    At inference a global threshold replaces the batch selection, so codes do not depend
    on the batch.  As in the paper it is the mean, over batches, of the smallest
    activation the batch selection keeps, estimated once training is over
    (:meth:`calibrate_`) so it describes the final weights.  Until then, inference falls
    back to per-token top-k.
    """

    architecture = "batchtopk"

    def __init__(self, d_in: int, d_sae: int, hparams: dict[str, Any] | None = None) -> None:
        super().__init__(d_in, d_sae, hparams)
        self.register_buffer("threshold", torch.tensor(-1.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.threshold) < 0:
            return super().encode(x)
        # the threshold is a mean of positive values, so >= 0 and the output is non-negative;
        # one fused pass instead of where/zeros_like/clamp (about 2x faster on large batches)
        return torch.threshold(self.pre_activations(x), float(self.threshold), 0.0)

    def _select(self, pre: torch.Tensor) -> Selection:
        flat = batch_topk_flat_indices(pre, self.k * pre.shape[0])
        return Selection.from_flat_indices(flat, pre.shape[0], self.d_sae)

    @torch.no_grad()
    def calibrate_(self, batches: Iterable[torch.Tensor]) -> None:
        """Set the inference threshold: mean over ``batches`` of the smallest positive kept activation.

        An exponential average taken during training would be dominated by the early,
        still-changing weights whenever the run is shorter than ~1/(1 - beta) steps, and
        the inference L0 would then miss ``k`` (by 3x on the planted default).
        """
        minima = []
        for x in batches:
            _, _, _, values = self.sparse_forward(x)
            positive = values[values > 0]
            if positive.numel():
                minima.append(positive.min())
        if not minima:
            raise ValueError("no calibration batch kept a positive activation; the SAE is not trained")
        self.threshold.copy_(torch.stack(minima).mean())

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        super().fold_input_scale_(scale)
        if float(self.threshold) >= 0:
            self.threshold.div_(scale)


class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK with nested dictionary prefixes (Bussmann et al. 2025, arXiv 2502.20578).

    Latents ``[0, m_i)`` alone must reconstruct the input for every prefix size ``m_i``;
    the loss is the weighted sum of the prefixes' reconstruction losses.
    """

    architecture = "matryoshka"
    config_schema: ClassVar[type[SAEConfigSchema]] = MatryoshkaConfigSchema

    @property
    def prefix_sizes(self) -> list[int]:
        """One prefix size per entry of ``group_fractions``, in that order (so ``group_weights`` line up)."""
        return matryoshka_prefix_sizes(self.hparams.get("group_fractions", DEFAULT_GROUP_FRACTIONS), self.d_sae)

    def training_loss(self, x, dead):
        x_c, pre, sel, values = self.sparse_forward(x)
        sizes = self.prefix_sizes
        weights = self.hparams.get("group_weights") or [1.0 / len(sizes)] * len(sizes)
        if len(weights) != len(sizes):
            raise ValueError(f"group_weights has {len(weights)} entries but there are {len(sizes)} prefixes {sizes}")
        recon = x.new_zeros(())
        parts: dict[str, float] = {}
        for size, weight in zip(sizes, weights):
            xhat = sparse_decode(sel, values * (sel.cols < size), self.W_dec) + self.b_dec
            prefix_loss = self.batch_fvu(x, xhat)
            recon = recon + weight * prefix_loss
            parts[f"fvu_{size}"] = prefix_loss.item()
        aux = self.auxk_loss(pre, x_c, x - xhat, dead)
        loss = recon + float(self.hparams.get("aux_k_coeff", 1 / 32)) * aux
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[sel.cols[values > 0]] = True
        return loss, {"loss": loss.item(), "fvu": parts[f"fvu_{self.d_sae}"], "auxk": aux.item(), **parts}, fired


class ReLUSAE(DictionarySAE):
    """ReLU codes with an L1 penalty (decoder rows are unit-norm, so no norm weighting)."""

    architecture = "relu"
    config_schema: ClassVar[type[SAEConfigSchema]] = ReLUConfigSchema

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activations(x))

    def training_loss(self, x, dead):
        codes = self.encode(x)
        xhat = self.decode(codes)
        recon = self.batch_fvu(x, xhat)
        scale = (x - x.mean(0)).norm(dim=1).mean().clamp_min(_EPS)
        l1 = codes.sum(dim=1).mean() / scale
        loss = recon + float(self.hparams.get("l1_coeff", 1.0)) * l1
        return loss, {"loss": loss.item(), "fvu": recon.item(), "l1": l1.item()}, (codes > 0).any(dim=0)


class _JumpReLUFunction(torch.autograd.Function):
    """``pre * H(pre - theta)``; straight-through (rectangle kernel) gradient for ``theta``."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth: float):  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((pre - theta).abs() < eps / 2).to(grad.dtype) / eps
        grad_theta = (-theta * window * grad).sum(0)
        return grad * (pre > theta), grad_theta, None


class _StepFunction(torch.autograd.Function):
    """``H(pre - theta)``; straight-through gradient for ``theta`` only."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth: float):  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((pre - theta).abs() < eps / 2).to(grad.dtype) / eps
        return torch.zeros_like(pre), (-window * grad).sum(0), None


class JumpReLUSAE(DictionarySAE):
    """JumpReLU (Rajamanoharan et al. 2024): per-latent thresholds trained with an STE and an L0 penalty."""

    architecture = "jumprelu"
    config_schema: ClassVar[type[SAEConfigSchema]] = JumpReLUConfigSchema

    def __init__(self, d_in: int, d_sae: int, hparams: dict[str, Any] | None = None) -> None:
        super().__init__(d_in, d_sae, hparams)
        init = float(self.hparams.get("init_threshold", 0.1))
        self.log_threshold = nn.Parameter(torch.full((d_sae,), float(torch.log(torch.tensor(init)))))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.pre_activations(x))
        return pre * (pre > self.threshold)

    def training_loss(self, x, dead):
        pre = torch.relu(self.pre_activations(x))
        bandwidth = float(self.hparams.get("bandwidth", 0.05))
        theta = self.threshold
        codes = _JumpReLUFunction.apply(pre, theta, bandwidth)
        recon = self.batch_fvu(x, self.decode(codes))
        l0 = _StepFunction.apply(pre, theta, bandwidth).sum(dim=1).mean()
        loss = recon + float(self.hparams.get("sparsity_coeff", 1e-3)) * l0
        return loss, {"loss": loss.item(), "fvu": recon.item(), "l0": l0.item()}, (codes > 0).any(dim=0)

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        super().fold_input_scale_(scale)
        self.log_threshold.sub_(float(torch.log(torch.tensor(scale))))


ARCHITECTURES: dict[str, type[DictionarySAE]] = {
    cls.architecture: cls for cls in (BatchTopKSAE, TopKSAE, ReLUSAE, JumpReLUSAE, MatryoshkaSAE)
}

_STRUCTURAL_KEYS = ("architecture", "d_in", "d_sae")


def validate_sae_config(config: Any, source: str = "SAE config") -> tuple[type[DictionarySAE], int, int]:
    """``(architecture class, d_in, d_sae)`` of ``config``, its fields checked against the architecture's schema.

    Raises :class:`~scopebench.sae.validation.SAEConfigError` naming ``source`` (e.g. the config.json path),
    each bad field and what it should be; the config itself is not changed (unread keys are allowed).
    """
    if not isinstance(config, Mapping):
        raise SAEConfigError(f"{source}: an SAE config must be a JSON object / dict, got {type(config).__name__}")
    name = config.get("architecture")
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise SAEConfigError(f"{source}: unknown SAE architecture {name!r} (field 'architecture'); "
                             f"known: {sorted(ARCHITECTURES)}")
    if config.get("d_in") is None:
        raise SAEConfigError(f"{source}: SAE config needs 'd_in' (the token dimension); set it or let train_sae "
                             "infer it")
    cls = ARCHITECTURES[name]
    schema_model = getattr(cls, "config_schema", SAEConfigSchema)
    schema = validate_model(schema_model, dict(config), source, f"{name} SAE config")
    return cls, schema.d_in, schema.resolved_d_sae


def build_sae(config: dict[str, Any], *, source: str = "SAE config") -> DictionarySAE:
    """Instantiate an (untrained, zero) SAE from ``{"architecture", "d_in", "d_sae", **hparams}``.

    Recipe configs with ``expansion_factor`` instead of ``d_sae`` are accepted.  The fields the
    architecture reads are validated first (types and ranges); errors name ``source``.
    """
    cls, d_in, d_sae = validate_sae_config(config, source)
    hparams = {k: v for k, v in config.items() if k not in _STRUCTURAL_KEYS}
    return cls(d_in, d_sae, hparams)
