"""A learnable SAE training workload and the loss-matched timing of one training run.

The stream is a sparse-dictionary model of activations: a fixed random dictionary of unit
rows, each token a non-negative combination of ``active`` atoms with heavy-tailed
(log-normal) coefficients plus small Gaussian noise, scaled so the root-mean-square token
norm is ``sqrt(d_in)`` (the scale our recipes train at, so no implementation rescales).
An SAE can learn it, so its held-out FVU falls steadily, unlike on pure noise.

Every implementation is wrapped as a :class:`Trainee`, loaded with the same starting
weights (:class:`SharedInit`) and trained on the same batches.
After each step the bench measures held-out FVU itself with one selection rule for all:
BatchTopK (``k`` latents per token on average over the held-out batch) applied to the
implementation's own ranking pre-activations and decoded with its own decoder.  The
libraries' thresholded inference encodes are not comparable after a short run (SAELens's
threshold is a moving average that starts at 0; dictionary_learning's starts after step
1,000, so until then its inference encode keeps every positive latent; ours is calibrated
after training), so they are reported at the end but are not the loss curve.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

COEFFICIENT_LOG_STD = 1.0  # log-normal coefficients: a heavy right tail, as SAE codes have


@dataclass(frozen=True)
class SparseDictionaryStream:
    """Seeded training batches and a held-out batch drawn from one sparse dictionary."""

    dictionary: torch.Tensor  # [n_atoms, d_in], unit rows
    batches: list[torch.Tensor]  # each [batch, d_in]
    heldout: torch.Tensor  # [n_heldout, d_in]
    heldout_clean: torch.Tensor  # the held-out tokens without their noise


def _sparse_tokens(dictionary: torch.Tensor, n: int, active: int, noise_std: float,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy, clean)`` tokens: ``active`` distinct atoms each, log-normal weights."""
    n_atoms, d_in = dictionary.shape
    support = torch.rand(n, n_atoms, generator=gen).topk(active, dim=1).indices  # uniform subsets
    coefficient_rms = math.exp(COEFFICIENT_LOG_STD**2)  # sqrt(E[c^2]) of lognormal(0, s)
    scale = math.sqrt(d_in / active) / coefficient_rms  # E||clean||^2 ~ d_in (atoms nearly orthogonal)
    weights = torch.exp(COEFFICIENT_LOG_STD * torch.randn(n, active, generator=gen)) * scale
    clean = _weighted_rows(dictionary, support, weights)
    return clean + noise_std * torch.randn(n, d_in, generator=gen), clean


def _weighted_rows(dictionary: torch.Tensor, support: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_a weights[t, a] * dictionary[support[t, a]]`` per token ``t``."""
    offsets = torch.arange(0, support.numel(), support.shape[1])
    return F.embedding_bag(support.reshape(-1), dictionary, offsets, mode="sum",
                           per_sample_weights=weights.reshape(-1))


def sparse_dictionary_stream(*, n_batches: int, batch: int, n_heldout: int, d_in: int, n_atoms: int,
                             active: int, noise_std: float, seed: int) -> SparseDictionaryStream:
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_in, generator=gen)
    dictionary = atoms / atoms.norm(dim=1, keepdim=True)
    batches = [_sparse_tokens(dictionary, batch, active, noise_std, gen)[0] for _ in range(n_batches)]
    heldout, heldout_clean = _sparse_tokens(dictionary, n_heldout, active, noise_std, gen)
    return SparseDictionaryStream(dictionary, batches, heldout, heldout_clean)


def fvu(x: torch.Tensor, xhat: torch.Tensor) -> float:
    """Fraction of variance unexplained over the token set (DESIGN.md: centred by the set's mean)."""
    return float(((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def batch_topk_codes(ranking: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k * n_tokens`` largest positive entries of ``ranking`` over the whole batch."""
    flat = torch.relu(ranking).reshape(-1)
    top = flat.topk(k * ranking.shape[0], sorted=False)
    return torch.zeros_like(flat).scatter_(0, top.indices, top.values).reshape(ranking.shape)


@dataclass
class Trainee:
    """One implementation's training step and the views of its model the bench measures.

    ``ranking`` gives the values the implementation's BatchTopK ranks (ReLU applied by the
    bench), ``decode`` maps codes back to tokens, ``own_batch_codes`` is the library's own
    batch-level selection (to check the bench's rule against) and ``inference`` its
    thresholded inference model: ``(codes, reconstruction)``.
    """

    name: str
    step: Callable[[torch.Tensor], Any]
    ranking: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    own_batch_codes: Callable[[torch.Tensor], torch.Tensor]
    inference: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    settings: dict[str, Any] = field(default_factory=dict)


def heldout_fvu(trainee: Trainee, heldout: torch.Tensor, k: int) -> float:
    with torch.no_grad():
        return fvu(heldout, trainee.decode(batch_topk_codes(trainee.ranking(heldout), k)))


@dataclass
class TrainingTrace:
    """Per-step wall seconds and held-out FVU before training (index 0) and after each step."""

    step_seconds: list[float] = field(default_factory=list)
    fvu: list[float] = field(default_factory=list)

    def steps_to(self, target: float) -> int | None:
        """First step count after which held-out FVU is at or below ``target`` (None if never)."""
        return next((i for i, value in enumerate(self.fvu) if value <= target), None)

    def seconds_to(self, target: float) -> float | None:
        steps = self.steps_to(target)
        return None if steps is None else sum(self.step_seconds[:steps])

    def checkpoints(self, every: int) -> list[dict[str, float]]:
        """The curve at every ``every`` steps and at the end: steps, training seconds, FVU."""
        marks = sorted({*range(0, len(self.fvu), every), len(self.fvu) - 1})
        return [{"steps": i, "seconds": sum(self.step_seconds[:i]), "fvu": self.fvu[i]} for i in marks]


def trace_training(benchmark: Any, trainee: Trainee, batches: list[torch.Tensor], heldout: torch.Tensor,
                   k: int) -> TrainingTrace:
    """Train on ``batches`` in order, timing each step alone; held-out FVU is measured between steps.

    The steps are pytest-benchmark rounds (so its statistics are per-step times) and the FVU
    measurement is the untimed setup of each round.  With ``--benchmark-disable`` the same
    loop runs without pytest-benchmark.
    """
    trace = TrainingTrace(fvu=[heldout_fvu(trainee, heldout, k)])
    remaining = iter(batches)

    def next_batch() -> tuple[tuple[torch.Tensor], dict]:
        if trace.step_seconds:
            trace.fvu.append(heldout_fvu(trainee, heldout, k))
        return (next(remaining),), {}

    def timed_step(x: torch.Tensor) -> None:
        start = time.perf_counter()
        trainee.step(x)
        trace.step_seconds.append(time.perf_counter() - start)

    if getattr(benchmark, "disabled", False):
        for _ in batches:
            args, _ = next_batch()
            timed_step(*args)
    else:
        benchmark.pedantic(timed_step, setup=next_batch, rounds=len(batches), iterations=1, warmup_rounds=0)
    trace.fvu.append(heldout_fvu(trainee, heldout, k))
    return trace


def equal_loss_comparison(traces: dict[str, TrainingTrace], ours: str) -> dict[str, Any]:
    """Wall time to reach a common held-out FVU: the worst final FVU among ``traces``.

    ``speedup_at_equal_loss`` is the fastest peer's time to that target over ours (None
    when ours needs no training to reach it).  ``pairwise`` repeats the comparison with
    each peer alone, at the worse of the two final FVUs.
    """
    target = max(trace.fvu[-1] for trace in traces.values())
    peers = [name for name in traces if name != ours]
    seconds = {name: trace.seconds_to(target) for name, trace in traces.items()}
    fastest = min(peers, key=lambda name: math.inf if seconds[name] is None else seconds[name])
    return {
        "target_fvu": target,
        "steps_to_target": {name: trace.steps_to(target) for name, trace in traces.items()},
        "seconds_to_target": seconds,
        "fastest_peer_at_equal_loss": fastest,
        "speedup_at_equal_loss": _ratio(seconds[fastest], seconds[ours]),
        "pairwise": {peer: _pairwise(traces[ours], traces[peer]) for peer in peers},
    }


def _pairwise(ours: TrainingTrace, peer: TrainingTrace) -> dict[str, float | None]:
    target = max(ours.fvu[-1], peer.fvu[-1])
    ours_seconds, peer_seconds = ours.seconds_to(target), peer.seconds_to(target)
    return {"target_fvu": target, "ours_seconds": ours_seconds, "peer_seconds": peer_seconds,
            "speedup": _ratio(peer_seconds, ours_seconds)}


def _ratio(peer_seconds: float | None, ours_seconds: float | None) -> float | None:
    if peer_seconds is None or not ours_seconds:
        return None
    return peer_seconds / ours_seconds


@dataclass(frozen=True)
class SharedInit:
    """One set of starting weights loaded into every implementation (our layout: one row per latent).

    Each library initialises differently, and over a short run the starting loss, not the
    training step, would decide who reaches a loss first.  The shared start is the
    function of SAELens's default (tied rows of norm 0.1, so the encoder-decoder gain is
    0.01) written with unit decoder rows, which ours and dictionary_learning require.
    """

    W_enc: torch.Tensor  # [d_sae, d_in]
    b_enc: torch.Tensor  # [d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in], unit rows
    b_dec: torch.Tensor  # [d_in]


def shared_initialisation(d_in: int, d_sae: int, encoder_gain: float, seed: int) -> SharedInit:
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(d_sae, d_in, generator=gen)
    w_dec = directions / directions.norm(dim=1, keepdim=True)
    return SharedInit(W_enc=encoder_gain * w_dec, b_enc=torch.zeros(d_sae), W_dec=w_dec, b_dec=torch.zeros(d_in))
