"""Speed of the dense probes' training step and of probe targets, each against the literal computation.

Run: ``pytest bench/perf/test_probe_perf.py --benchmark-enable``.

- Depth step: ours (:class:`~scopebench.probes.depth.DepthBinsProbe`: the global token's half of the linear map
  once per image, bins kept last, no resize at the target size) against the paper's order written out: the
  global token concatenated to every patch token, the linear map on the concatenation, bin logits moved to
  ``[B, K, H, W]``, bilinear resize, softmax over the bins and an einsum with the bin centres.  Workload: the
  planted bench's depth probe (batches of 32 images of 14 x 14 tokens of width 256, 256 bins, targets at the
  patch grid).  Loss and gradient must agree to float32 rounding; the step time ratio is recorded.
- Probe targets: :func:`~scopebench.analyses.removal_probes.probing.probe_targets` (``read_target``: the
  scenes' geometry only) against reading each whole rendered sample, on 256 planted scenes; equal exactly.

Speed is recorded in ``extra_info``, never asserted.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from scopebench.analyses.removal_probes.probing import probe_targets
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.scc import square_resize_map
from scopebench.probes.config import DepthConfig
from scopebench.probes.depth import DepthSplit, DepthTask
from scopebench.probes.metrics import scale_invariant_loss

BATCH, GRID, WIDTH = 32, 14, 256
DEPTH = DepthConfig(epochs=1, trials=1, batch_size=BATCH, min_depth=0.5, max_depth=12.0)
STEPS = 20
N_SCENES = 256


def _literal_depth(probe, tokens: torch.Tensor, global_tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The depth head in the paper's order: concatenate, standardise, linear, resize, softmax, expected centre."""
    b, rows, cols, d = tokens.shape
    features = torch.cat([global_tokens[:, None, None, :].expand(b, rows, cols, d), tokens], dim=-1)
    logits = probe.linear(probe.standardize(features)).permute(0, 3, 1, 2)
    resized = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return torch.einsum("bkhw,k->bhw", resized.softmax(dim=1), probe.centres)


def _step_seconds(probe, depth_of, batch) -> float:
    """Fastest of ``STEPS`` forward + backward passes of the scale-invariant loss."""
    tokens, global_tokens, depth = batch
    fastest = float("inf")
    for _ in range(STEPS):
        probe.zero_grad(set_to_none=True)
        start = time.perf_counter()
        scale_invariant_loss(depth_of(tokens, global_tokens, tuple(depth.shape[-2:])), depth).backward()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest


def test_depth_probe_step_against_the_literal_head(benchmark) -> None:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(BATCH, GRID, GRID, WIDTH, generator=generator)
    global_tokens = torch.randn(BATCH, WIDTH, generator=generator)
    depth = 0.5 + 11.0 * torch.rand(BATCH, GRID, GRID, generator=generator)
    probe = DepthTask(DepthSplit(tokens, global_tokens, depth), DEPTH).build(generator)
    batch = (tokens, global_tokens, depth)

    def gradient(depth_of) -> tuple[torch.Tensor, torch.Tensor]:
        probe.zero_grad(set_to_none=True)
        loss = scale_invariant_loss(depth_of(tokens, global_tokens, (GRID, GRID)), depth)
        loss.backward()
        return loss.detach(), probe.linear.weight.grad.clone()

    ours_loss, ours_grad = gradient(probe)
    literal_loss, literal_grad = gradient(lambda *args: _literal_depth(probe, *args))
    # float32 sums over 512 inputs and 256 bins: agreement to a few hundred ulps of the values involved
    torch.testing.assert_close(ours_loss, literal_loss, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(ours_grad, literal_grad, rtol=1e-4, atol=1e-4 * float(literal_grad.abs().max()))

    timings = {}

    def run() -> None:
        timings["literal"] = _step_seconds(probe, lambda *args: _literal_depth(probe, *args), batch)
        timings["ours"] = _step_seconds(probe, probe, batch)

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(literal_step_seconds=timings["literal"], ours_step_seconds=timings["ours"],
                                speedup=timings["literal"] / timings["ours"])


def test_probe_targets_against_rendered_samples(benchmark) -> None:
    scenes = SyntheticScenes(N_SCENES, seed=5)
    timings, results = {}, {}

    def whole_samples() -> dict[str, torch.Tensor]:
        samples = [scenes[i] for i in range(N_SCENES)]
        return {"label": torch.tensor([s.label for s in samples]),
                "depth": torch.stack([square_resize_map(s.depth, GRID).float() for s in samples])}

    def run() -> None:
        start = time.perf_counter()
        results["literal"] = whole_samples()
        timings["literal"] = time.perf_counter() - start
        start = time.perf_counter()
        results["ours"] = {field: probe_targets(scenes, field, GRID) for field in ("label", "depth")}
        timings["ours"] = time.perf_counter() - start

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    for field in ("label", "depth"):
        assert torch.equal(results["ours"][field], results["literal"][field]), field
    benchmark.extra_info.update(n_scenes=N_SCENES, literal_seconds=timings["literal"], ours_seconds=timings["ours"],
                                speedup=timings["literal"] / timings["ours"])
