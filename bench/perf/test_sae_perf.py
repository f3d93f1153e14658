"""BatchTopK SAE training speed at equal loss (d_in 256, 8192 latents, K 30, batch 4096) vs peers.

What is measured: ours, SAELens (``BatchTopKTrainingSAE`` stepped by its ``SAETrainer``)
and dictionary_learning (``BatchTopKTrainer``) train for ``STEPS`` steps on the same seeded
batches of a learnable synthetic stream (a sparse dictionary, see ``sae_workload.py``),
each with its library's default BatchTopK settings (loss, AuxK, gradient clipping,
decoder-norm handling) at the libraries' shared default Adam lr 3e-4, held constant.  All
start from the same weights (``SharedInit``): over a run this short the libraries' own
initialisations would decide the race (their held-out FVU at init is recorded as
``default_init_fvu``: 0.67 ours (small encoder, decoder bias at the data mean), ~16
dictionary_learning, ~0.96 SAELens).  Each training
step is one pytest-benchmark round, so the benchmark statistics are per-step times (the
per-step throughput); between steps, untimed, the bench measures held-out FVU with one
BatchTopK rule for all.  The common target is the worst final held-out FVU; our case
reports ``speedup_at_equal_loss`` (the fastest peer's training seconds to the target over
ours), the same against each peer alone (``pairwise``) and
``speedup_per_step_vs_fastest_peer``.  Peers are skipped when not installed (the ``peers``
extra); then the per-step ratio uses reference numbers measured earlier on the 2-core dev
machine and no equal-loss ratio is made.  The encode case times our thresholded inference
encode.  Speed is recorded, never asserted.

Run (the peers' cases must run before ours, as in this file's order)::

    HF_HUB_OFFLINE=1 pytest bench/perf/test_sae_perf.py -p no:cacheprovider \\
        --benchmark-enable --benchmark-only --benchmark-json=/tmp/saeperf.json

Latest runs (2 cores shared with other jobs, 30 steps; the FVU curves are deterministic):
held-out FVU 0.951 at the shared start -> ours 0.694, dictionary_learning 0.680, SAELens
0.666 (ours learns slightly less per step), so the target 0.694 takes ours 30 steps,
dictionary_learning 28, SAELens 27.  At 1-min load ~2 (2 min 50 s): fastest-step tokens/s
ours 12,700, dictionary_learning 2,940, SAELens 2,140; to target ours 11.0 s, dictionary_learning
50.1 s, SAELens 58.6 s: ``speedup_at_equal_loss`` 4.6 (goal 2x met).  At load ~3.7 (5 min
12 s): 3,400 / 1,730 / 1,170 tokens/s; 40.1 / 77.6 / 109.9 s: 1.9.  Ours slows far more
under load than the peers do.
"""
from __future__ import annotations

import itertools
import math
import os
import statistics
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import torch

from bench.perf.sae_workload import (
    SparseDictionaryStream,
    SharedInit,
    Trainee,
    TrainingTrace,
    batch_topk_codes,
    equal_loss_comparison,
    fvu,
    heldout_fvu,
    shared_initialisation,
    sparse_dictionary_stream,
    trace_training,
)
from scopebench.sae import build_sae
from scopebench.sae.recipe import load_recipe
from scopebench.sae.training import optimisation_step

D_IN, D_SAE, K, BATCH = 256, 8192, 30, 4096
STEPS = 30
LR = 3e-4  # the default of all three libraries (dictionary_learning's own rule gives 2.8e-4 here)
SEED = 0
N_HELDOUT = 1024
N_ATOMS = 2048  # ground-truth dictionary: a quarter of the SAE's width
NOISE_STD = 0.05  # per dimension; ~0.25% of the token energy
CURVE_EVERY = 10
CALIBRATION_BATCHES = 4  # batches our inference threshold is estimated from after training
ENCODER_GAIN = 0.01  # shared start: SAELens's default init (decoder_init_norm 0.1, tied) as a function
CLEAR_DROP = 0.95  # the final held-out FVU must be at most this fraction of the initial one
REFERENCE_TOKENS_PER_S = {"dictionary_learning": 2150.0, "sae_lens": 1300.0}  # 2 cores, measured earlier
T = TypeVar("T")
_traces: dict[str, TrainingTrace] = {}  # implementation -> its training trace in this session


@pytest.fixture(scope="module")
def stream() -> SparseDictionaryStream:
    """The same seeded batches for every implementation, generated once."""
    return sparse_dictionary_stream(n_batches=STEPS, batch=BATCH, n_heldout=N_HELDOUT, d_in=D_IN,
                                    n_atoms=N_ATOMS, active=K, noise_std=NOISE_STD, seed=SEED)


@pytest.fixture(scope="module")
def shared_init() -> SharedInit:
    return shared_initialisation(D_IN, D_SAE, ENCODER_GAIN, SEED)


def _in_eval_mode(module: torch.nn.Module, fn: Callable[[torch.Tensor], T], x: torch.Tensor) -> T:
    """``fn(x)`` with ``module`` in eval mode and no autograd, restoring its mode after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return fn(x)
    finally:
        module.train(was_training)


def _encode_decode(encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor]
                   ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def codes_and_reconstruction(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = encode(x)
        return codes, decode(codes)

    return codes_and_reconstruction


def _scopebench_trainee(stream: SparseDictionaryStream, init: SharedInit | None,
                        reported: list[dict[str, float]]) -> Trainee:
    """Our BatchTopK recipe (baselines/batchtopk.json) at a constant lr; ``reported`` collects step losses."""
    config = load_recipe("batchtopk").sae_config(D_IN)
    assert config["d_sae"] == D_SAE and config["k"] == K, config
    sae = build_sae(config)
    sae.initialise(torch.Generator().manual_seed(SEED), data_mean=stream.batches[0].mean(0))  # as train_sae does
    if init is not None:
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(sae, name).copy_(getattr(init, name))
    sae.train()
    opt = torch.optim.Adam(sae.parameters(), lr=LR)
    no_dead = torch.zeros(D_SAE, dtype=torch.bool)  # 1M tokens without firing (244 steps) before any is dead

    def step(x: torch.Tensor) -> None:
        reported.append(optimisation_step(sae, opt, x, no_dead, LR)[0])

    def own_batch_codes(x: torch.Tensor) -> torch.Tensor:
        _, _, selection, values = sae.sparse_forward(x)
        return selection.to_dense(values, D_SAE)

    def inference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sae.calibrate_(stream.batches[-CALIBRATION_BATCHES:])  # train_sae does this on fresh batches
        return _encode_decode(sae.encode, sae.decode)(x)

    return Trainee(
        name="scopebench", step=step, ranking=sae.pre_activations, decode=sae.decode,
        own_batch_codes=lambda x: _in_eval_mode(sae, own_batch_codes, x),
        inference=lambda x: _in_eval_mode(sae, inference, x),
        settings={"recipe": "baselines/batchtopk.json", "lr_schedule": "constant",
                  "default_init": "tied unit-norm rows, b_dec = first batch mean",
                  "inference_threshold": f"calibrate_ on the last {CALIBRATION_BATCHES} training batches"},
    )


def _dictionary_learning_trainee(batch_top_k: Any, init: SharedInit | None) -> Trainee:
    trainer = batch_top_k.BatchTopKTrainer(
        steps=STEPS, activation_dim=D_IN, dict_size=D_SAE, k=K, layer=0, lm_name="bench", lr=LR,
        warmup_steps=0, device="cpu", seed=SEED,  # its default warm-up (1,000 steps) must be shorter than the run
    )
    ae = trainer.ae
    if init is not None:  # its first update still sets b_dec to the batch's geometric median, as by default
        with torch.no_grad():
            ae.encoder.weight.copy_(init.W_enc)
            ae.encoder.bias.copy_(init.b_enc)
            ae.decoder.weight.copy_(init.W_dec.T)
            ae.b_dec.copy_(init.b_dec)
    step_numbers = itertools.count()
    return Trainee(
        name="dictionary_learning", step=lambda x: trainer.update(next(step_numbers), x),
        ranking=lambda x: ae.encoder(x - ae.b_dec), decode=ae.decode,
        own_batch_codes=lambda x: _in_eval_mode(ae, lambda y: ae.encode(y, use_threshold=False), x),
        inference=lambda x: _in_eval_mode(ae, _encode_decode(ae.encode, ae.decode), x),
        settings={"trainer": "BatchTopKTrainer defaults (grad clip 1.0)", "warmup_steps": 0,
                  "threshold_start_step": trainer.threshold_start_step,
                  "default_init": "tied unit-norm rows, b_dec = geometric median of the first batch"},
    )


def _sae_lens_inference(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and reconstruction of the JumpReLU SAE that SAELens saves for inference."""
    from sae_lens.saes.sae import SAE

    state = {name: value.detach().clone() for name, value in sae.state_dict().items()}
    sae.process_state_dict_for_saving_inference(state)
    inference = SAE.from_dict(sae.cfg.get_inference_sae_cfg_dict())
    inference.load_state_dict(state)
    with torch.no_grad():
        return _encode_decode(inference.encode, inference.decode)(x)


def _sae_lens_trainee(sae_lens: Any, init: SharedInit | None) -> Trainee:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(SEED)  # SAELens initialises from the global generator
    sae = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    if init is not None:
        with torch.no_grad():
            sae.W_enc.copy_(init.W_enc.T)
            sae.b_enc.copy_(init.b_enc)
            sae.W_dec.copy_(init.W_dec)
            sae.b_dec.copy_(init.b_dec)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(total_training_samples=STEPS * BATCH, train_batch_size_samples=BATCH, lr=LR,
                             lr_end=LR / 10),  # lr_end is unused by the constant schedule but must be set
        sae=sae, data_provider=iter(()),
    )

    def step(x: torch.Tensor) -> None:  # the body of SAETrainer.fit's loop, without logging or checkpoints
        trainer.maybe_reset_sparsity()
        trainer.step(x)
        trainer.n_training_steps += 1

    def ranking(x: torch.Tensor) -> torch.Tensor:
        hidden_pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
        return hidden_pre * sae.W_dec.norm(dim=-1) if sae.cfg.rescale_acts_by_decoder_norm else hidden_pre

    return Trainee(
        name="sae_lens", step=step, ranking=ranking, decode=sae.decode,
        own_batch_codes=lambda x: _in_eval_mode(sae, sae.encode, x),
        inference=lambda x: _sae_lens_inference(sae, x),
        settings={"trainer": "SAETrainer defaults (constant lr, grad clip 1.0)",
                  "decoder_init_norm": sae.cfg.decoder_init_norm,
                  "rescale_acts_by_decoder_norm": sae.cfg.rescale_acts_by_decoder_norm,
                  "topk_threshold_lr": sae.cfg.topk_threshold_lr,
                  "default_init": "tied rows of norm decoder_init_norm, b_dec = 0"},
    )


def _train_and_record(benchmark: Any, build: Callable[[SharedInit | None], Trainee], stream: SparseDictionaryStream,
                      init: SharedInit) -> TrainingTrace:
    """Train from ``init``, record the run in ``extra_info`` and ``_traces``, then check what could go wrong.

    The held-out FVU of the library's own default initialisation is recorded beside it.
    """
    default_init_fvu = heldout_fvu(build(None), stream.heldout, K)
    trainee = build(init)
    trace = trace_training(benchmark, trainee, stream.batches, stream.heldout, K)
    _traces[trainee.name] = trace
    heldout = stream.heldout
    with torch.no_grad():
        bench_support = batch_topk_codes(trainee.ranking(heldout), K) > 0
        own_codes = trainee.own_batch_codes(heldout)
        own_fvu = fvu(heldout, trainee.decode(own_codes))
        inference_codes, inference_reconstruction = trainee.inference(heldout)
    mismatch = float((bench_support != (own_codes > 0)).sum() / bench_support.sum())
    benchmark.extra_info.update({
        "implementation": trainee.name, "settings": trainee.settings, "steps": STEPS, "lr": LR, "batch": BATCH,
        "init": "shared (see sae_workload.SharedInit)", "default_init_fvu": default_init_fvu,
        "tokens_per_s": BATCH / min(trace.step_seconds),
        "tokens_per_s_median": BATCH / statistics.median(trace.step_seconds),
        "training_seconds": sum(trace.step_seconds),
        "initial_fvu": trace.fvu[0], "final_fvu": trace.fvu[-1], "curve": trace.checkpoints(CURVE_EVERY),
        "inference_fvu": fvu(heldout, inference_reconstruction),
        "inference_l0": float((inference_codes != 0).sum(1).float().mean()),
        "heldout_selection_mismatch": mismatch,
        "load_average_1min": os.getloadavg()[0],
    })
    assert all(math.isfinite(value) for value in trace.fvu), f"{trainee.name}: non-finite held-out FVU {trace.fvu}"
    assert trace.fvu[-1] <= CLEAR_DROP * trace.fvu[0], (
        f"{trainee.name}: held-out FVU went {trace.fvu[0]:.4f} -> {trace.fvu[-1]:.4f} in {STEPS} steps; "
        f"training on learnable data should lower it by at least {1 - CLEAR_DROP:.0%}"
    )
    # the bench's BatchTopK rule must pick what the library itself picks (else the FVU curve measures another model)
    assert mismatch < 1e-3, f"{trainee.name}: bench and library BatchTopK codes differ on {mismatch:.2%} of entries"
    assert own_fvu == pytest.approx(trace.fvu[-1], rel=1e-3)
    return trace


def test_batchtopk_training_dictionary_learning(benchmark, stream, shared_init):
    batch_top_k = pytest.importorskip("dictionary_learning.trainers.batch_top_k")
    _train_and_record(benchmark, lambda init: _dictionary_learning_trainee(batch_top_k, init), stream, shared_init)


def test_batchtopk_training_sae_lens(benchmark, stream, shared_init):
    sae_lens = pytest.importorskip("sae_lens")
    _train_and_record(benchmark, lambda init: _sae_lens_trainee(sae_lens, init), stream, shared_init)


def _peer_comparison(ours: TrainingTrace) -> dict[str, Any]:
    """Equal-loss and per-step ratios against the peers that ran, else per-step against the reference numbers."""
    peers = {name: trace for name, trace in _traces.items() if name != "scopebench"}
    if peers:
        peer_tokens_per_s = {name: BATCH / min(trace.step_seconds) for name, trace in peers.items()}
        record = {"peer_source": "this run", **equal_loss_comparison(_traces, "scopebench")}
    else:
        peer_tokens_per_s = dict(REFERENCE_TOKENS_PER_S)
        record = {"peer_source": "reference numbers: no peer ran in this session, so no loss-matched comparison",
                  "speedup_at_equal_loss": None}
    fastest = max(peer_tokens_per_s, key=peer_tokens_per_s.__getitem__)
    speedup = record["speedup_at_equal_loss"]
    return {
        **record,
        "peer_tokens_per_s": peer_tokens_per_s,
        "fastest_peer_per_step": fastest,
        "speedup_per_step_vs_fastest_peer": BATCH / min(ours.step_seconds) / peer_tokens_per_s[fastest],
        "goal": "2x the fastest peer at equal loss",
        "goal_met": None if speedup is None else speedup >= 2.0,
    }


def test_batchtopk_training_scopebench(benchmark, stream, shared_init):
    noise_fvu = fvu(stream.heldout, stream.heldout_clean)
    assert noise_fvu < 0.01, f"the stream's ground truth should explain all but its noise, FVU {noise_fvu}"
    rms_norm = float(stream.heldout.pow(2).sum(1).mean().sqrt())
    assert rms_norm == pytest.approx(math.sqrt(D_IN), rel=0.1), f"tokens should be at training scale, rms {rms_norm}"
    reported: list[dict[str, float]] = []
    first_batch_fvu: list[float] = []

    def build(init: SharedInit | None) -> Trainee:
        reported.clear()
        trainee = _scopebench_trainee(stream, init, reported)
        first_batch_fvu[:] = [heldout_fvu(trainee, stream.batches[0], K)]
        return trainee

    ours = _train_and_record(benchmark, build, stream, shared_init)
    # the bench's FVU and our training loss agree on the same batch and model (before the first update)
    assert reported[0]["fvu"] == pytest.approx(first_batch_fvu[0], rel=1e-4)
    comparison = _peer_comparison(ours)
    benchmark.extra_info.update(comparison)
    if comparison["peer_source"] == "this run":
        # every adapter loaded the same weights: the curves start at the same held-out FVU
        assert {name: trace.fvu[0] for name, trace in _traces.items()} == pytest.approx(
            {name: ours.fvu[0] for name in _traces}, rel=1e-4)
        unreached = [name for name, steps in comparison["steps_to_target"].items() if steps is None]
        assert not unreached, f"{unreached} never reached the common target FVU {comparison['target_fvu']:.4f}"


def test_batchtopk_encode_scopebench(benchmark, time_rounds):
    sae = build_sae({"architecture": "batchtopk", "d_in": D_IN, "d_sae": D_SAE, "k": K}).eval()
    sae.initialise(torch.Generator().manual_seed(SEED))
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():  # a threshold that keeps K latents per token on average, as calibration would
        pre = sae.pre_activations(x).flatten()
        sae.threshold.fill_(float(pre.kthvalue(pre.numel() - K * BATCH).values))

    def encode_l0() -> float:
        with torch.no_grad():
            return float((sae.encode(x) > 0).sum(1).float().mean())

    l0, seconds = time_rounds(benchmark, encode_l0, rounds=5)
    benchmark.extra_info.update({"tokens_per_s": BATCH / seconds, "l0": l0})
    assert 10 <= l0 <= 90, f"the threshold should keep ~{K} latents per token, got L0={l0}"  # encode did real work
