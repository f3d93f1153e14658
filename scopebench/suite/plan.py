"""The plan of a bench run: per stage, the work its configs imply, an estimated time, and what is cached.

Work comes from the same objects the run reads (the backbone's registry entry, its
:class:`~scopebench.suite.scales.BenchScale` with one config per analysis, the SAE recipe with
the scale's overrides), so the plan cannot drift from the run.  Per stage:

- images, forward passes (image views through the designated block), tokens stored and the bytes
  they take in the activation store (float32);
- SAE optimisation steps; tokens encoded by the SAE (reconstruction, CDS, awCDS, removals);
- EMD pairs per overlap grid side (CDS: at most d_sae x k top images; attention: every overlap
  query of every head of every image, per shift);
- probe image-epochs (3 embeddings x trials x epochs x training images, plus the evaluation passes)
  and the dataset items the probes read for their targets.

An extraction whose entries an earlier stage already writes (same kind, dataset and images: the
planted dense probes share their scenes) is counted once, as the cache makes the run do it once.

The estimate multiplies that work by rates measured on this machine (:func:`calibrate`): a few
forward batches of a random-init model of the same shape (truncated to one and two blocks, the
time of the designated layer's prefix extrapolated per block), a few SAE steps of the recipe's
size, a few hundred EMD pairs per grid side, and a few probe epochs on random features of the
real shapes (``make_plan(estimate_rates="emd")``: the EMD rates alone, in seconds).  Extraction's share is one function of a measured throughput
(:func:`extraction_seconds`), so a loader's measured images/s can replace the calibration's.

Not in the estimate: reading images from disk (calibration renders synthetic scenes of the
backbone's input size, not JPEG decoding), and everything after the measurements (result files,
the leaderboard), which takes seconds.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scopebench.analyses.removal_probes.config import TASKS
from scopebench.suite.scales import BenchScale

if TYPE_CHECKING:  # torch is imported when a plan is made, not when the CLI builds its parser
    from scopebench.backbones.spec import BackboneSpec
    from scopebench.sae.arch import SAERecipeBase

EMBEDDINGS = 3  # removal probes: original, high-CDS removed, low-CDS removed
CACHE_ITEMSIZE = 4  # tokens are stored as float32
SAE_STATE_COPIES = 4  # a trained SAE folder: weights, and the resumable state (weights + two Adam moments)
# image-level classes of the real probe datasets (ImageNet-1K, ADE20K); the planted scenes state their own
REAL_CLASSES = {"cls": 1000, "seg": 150}
PROBE_FORWARD_SHARE = 1 / 3  # an evaluation pass (forward only) costs about a third of a training step


# ---------------------------------------------------------------------------------------------- work
@dataclass(frozen=True)
class ProbeShape:
    """What one probe task trains on: the shapes its calibration reproduces."""

    task: str
    dim: int  # feature width (depth: patch token + global token)
    grid_side: int
    target_size: int  # side of the dense targets (0 for classification)
    n_classes: int  # classes, or depth bins
    batch_size: int


@dataclass(frozen=True)
class StageWork:
    """The work of one stage of a run; every count is read from the run's configs."""

    name: str
    images: int = 0
    views: int = 0  # views per image forwarded (1, or 2 for the SCC pair; 2 x shifts for attention EMD)
    forward: str | None = None  # which forward loop: "tokens", "scc" or "attention" (None: no forward pass)
    tokens_stored: int = 0  # patch + prefix tokens written to the activation store
    cache_bytes: int = 0
    sae_steps: int = 0
    encoded_tokens: int = 0  # tokens through the SAE's encoder (and decoder)
    emd_kind: str | None = None  # "dense" (attention rows) or "sparse" (feature maps)
    emd_method: str = "exact"
    emd_pairs: dict[int, int] = field(default_factory=dict)  # overlap grid side -> pairs
    probe_epochs: int = 0  # trained epochs over all trials and embeddings
    probe_image_epochs: float = 0.0  # image-epochs of training, plus evaluation passes at PROBE_FORWARD_SHARE
    dataset_reads: int = 0  # dataset items read outside a forward loop (the probes' targets)
    probe: ProbeShape | None = None
    # how the activation store names its artefacts (for "what is cached"):
    cache_kind: str | None = None  # token entry kind ("tokens", "scc-s1") or "sae"
    cache_rows: tuple[int, ...] = ()  # images of each token entry of the stage
    cache_purposes: tuple[str, ...] = ()  # bench purposes of those entries (their datasets)
    cache_name: str | None = None  # SAE recipe name

    @property
    def forward_passes(self) -> int:
        return self.images * self.views

    @property
    def total_emd_pairs(self) -> int:
        return sum(self.emd_pairs.values())


def _token_bytes(tokens: int, dim: int) -> int:
    return tokens * dim * CACHE_ITEMSIZE


def _extract_stage(name: str, spec: BackboneSpec, images: int, purposes: tuple[str, ...], rows: tuple[int, ...],
                   *, per_image: int | None = None, views: int = 1, kind: str = "tokens") -> StageWork:
    stored = images * views * ((per_image or spec.n_patches) + spec.n_prefix)
    return StageWork(name, images=images, views=views, forward="scc" if views == 2 else "tokens",
                     tokens_stored=stored, cache_bytes=_token_bytes(stored, spec.embed_dim), cache_kind=kind,
                     cache_rows=rows, cache_purposes=purposes)


def sae_steps(recipe: SAERecipeBase, train_images: int, tokens_per_image_stored: int) -> int:
    """Optimisation steps of ``train_sae`` on the stored training tokens (its own arithmetic)."""
    per_epoch = train_images * min(recipe.tokens_per_image, tokens_per_image_stored)
    total = recipe.n_tokens or recipe.epochs * per_epoch
    return max(1, total // recipe.batch_size)


def scaled_recipe(recipe: SAERecipeBase, scale: BenchScale) -> SAERecipeBase:
    """``recipe`` with the scale's overrides, as the workbench trains it."""
    if not scale.sae_overrides:
        return recipe
    return recipe.model_validate({**recipe.model_dump(), **scale.sae_overrides})


def _probe_stages(spec: BackboneSpec, scale: BenchScale, n_classes: dict[str, int]) -> list[StageWork]:
    config = scale.removal_probes
    stages = []
    for task in TASKS:
        counts = tuple(config.images(task, split) for split in ("train", "val", "test"))
        purposes = tuple(f"probe-{task}-{split}" for split in ("train", "val", "test"))
        extract = _extract_stage(f"extract probe-{task}", spec, sum(counts), purposes, counts)
        stages.append(extract)
        probe = {"cls": config.classification, "seg": config.segmentation, "depth": config.depth}[task]
        n_train, n_val, n_test = counts
        trained = EMBEDDINGS * probe.trials * probe.epochs * n_train
        evaluated = EMBEDDINGS * (probe.trials * n_val + n_test)
        patch_tokens = sum(counts) * spec.n_patches
        # classification pools the codes once per split; the dense probes remove each group from every token
        encoded = patch_tokens if task == "cls" else EMBEDDINGS * patch_tokens
        target = 0 if task == "cls" else (config.dense_target_size or spec.image_size)
        dim = spec.embed_dim * (2 if task == "depth" else 1)
        classes = config.depth.n_bins if task == "depth" else n_classes[task]
        stages.append(StageWork(
            f"probe {task}", encoded_tokens=encoded, dataset_reads=sum(counts),
            probe_epochs=EMBEDDINGS * probe.trials * probe.epochs,
            probe_image_epochs=trained + PROBE_FORWARD_SHARE * evaluated,
            probe=ProbeShape(task, dim, spec.grid_side, target, classes, probe.batch_size)))
    return stages


def plan_work(spec: BackboneSpec, scale: BenchScale, recipe: SAERecipeBase, recipe_name: str,
              n_classes: dict[str, int] | None = None) -> list[StageWork]:
    """Every stage of a bench run of ``spec`` with one SAE recipe, in the order the bench runs them."""
    recipe = scaled_recipe(recipe, scale)
    d_in, p = spec.embed_dim, spec.grid_side
    d_sae = int(recipe.sae_config(d_in)["d_sae"])
    per_image = scale.train_patches_per_image
    stored_per_image = per_image or spec.n_patches
    cds, att = scale.cds, scale.attention_emd
    scc_side = p - cds.shift
    stages = [
        _extract_stage("extract train", spec, scale.train_images, ("train",), (scale.train_images,),
                       per_image=per_image),
        StageWork(f"train SAE {recipe_name}", sae_steps=sae_steps(recipe, scale.train_images, stored_per_image),
                  cache_bytes=SAE_STATE_COPIES * (2 * d_in * d_sae + d_sae + d_in) * CACHE_ITEMSIZE,
                  cache_kind="sae", cache_name=recipe_name),
        _extract_stage("extract eval", spec, scale.reconstruction.images, ("eval",), (scale.reconstruction.images,)),
        StageWork("reconstruction", encoded_tokens=scale.reconstruction.images * spec.n_patches),
        _extract_stage(f"extract scc s={cds.shift}", spec, cds.images, ("scc",), (cds.images,), views=2,
                       kind=f"scc-s{cds.shift}"),
        # pass 1 encodes both views' overlap of every image, pass 2 those of the top images again
        StageWork("CDS", encoded_tokens=2 * 2 * cds.images * scc_side**2, emd_kind="sparse",
                  emd_method=cds.emd_method, emd_pairs={scc_side: d_sae * min(cds.k, cds.images)}),
        # awCDS reads the plain (unshifted) tokens of the CDS images: one more extraction
        dataclasses.replace(_extract_stage("awCDS", spec, cds.images, ("scc",), (cds.images,)),
                            encoded_tokens=cds.images * spec.n_patches),
        StageWork(f"attention EMD s={_shift_range(att.shifts)}", images=att.images, views=2 * len(att.shifts),
                  forward="attention", emd_kind="dense", emd_method=att.method,
                  emd_pairs={p - s: att.images * spec.n_heads * (p - s) ** 2 for s in att.shifts}),
    ]
    return stages + _probe_stages(spec, scale, n_classes or REAL_CLASSES)


def _shift_range(shifts: tuple[int, ...]) -> str:
    ordered = sorted(shifts)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}..{ordered[-1]}"
    return ",".join(map(str, ordered))


# --------------------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """Rates measured on this machine for one backbone and recipe (what :func:`estimate` multiplies by)."""

    device: str
    cores: int  # CPU cores the solvers use (core-hours = wall hours x cores on a CPU)
    forward_per_second: dict[str, float]  # forward loop ("tokens", "scc", "attention") -> image views per second
    sae_step_seconds: float | None  # None: not measured (an EMD-only calibration)
    encode_tokens_per_second: float | None
    emd_seconds_per_pair: dict[str, float]  # "<kind>/<method>/<side>" -> seconds per pair
    probe_seconds_per_image_epoch: dict[str, float]  # task -> seconds
    item_seconds: float | None = None  # one dataset item read (calibration: a synthetic scene rendered)
    forward_note: str = ""  # how the forward rate was measured
    seconds: float = 0.0  # how long calibrating took

    def emd_rate(self, kind: str, method: str, side: int) -> float:
        return self.emd_seconds_per_pair[emd_key(kind, method, side)]


def emd_key(kind: str, method: str, side: int) -> str:
    return f"{kind}/{method}/{side}"


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def emd_seconds_per_pair(kind: str, method: str, side: int, *, device: str = "cpu", min_seconds: float = 0.5,
                         max_pairs: int = 4096, seed: int = 0) -> float:
    """Wall seconds per pair of ``grid_w1`` on synthetic maps of ``kind``, doubling the batch until it takes
    ``min_seconds`` (or holds ``max_pairs``), so per-call overheads are amortised as in a run's large batches."""
    from scopebench.emd import grid_w1
    from scopebench.emd.workloads import MAP_KINDS

    rng = np.random.default_rng(seed)
    pairs = 16
    grid_w1(*MAP_KINDS[kind](rng, 4, side), side, method=method, device=device)  # warm-up (thread pool, kernels)
    while True:
        a, b = MAP_KINDS[kind](rng, pairs, side)
        seconds = _timed(lambda: grid_w1(a, b, side, method=method, device=device))
        if seconds >= min_seconds or pairs >= max_pairs:
            return seconds / pairs
        pairs = min(max_pairs, pairs * max(2, int(min_seconds / max(seconds, 1e-3))))


def extraction_seconds(forward_passes: int, views_per_second: float) -> float:
    """Seconds to push ``forward_passes`` image views through the designated block at a measured throughput.

    The one place the plan turns forward work into time: pass a loader's measured images/s here
    to replace the calibration's (an SCC pair is two views).
    """
    if views_per_second <= 0:
        raise ValueError(f"views_per_second must be > 0, got {views_per_second}")
    return forward_passes / views_per_second


def _calibration_model(spec: BackboneSpec, blocks: int, device: str) -> Any:
    """A random-init model of ``spec``'s shape with ``blocks`` blocks, the last one designated (planted: itself)."""
    from scopebench.backbones.loader import apply_overrides
    from scopebench.backbones.sources import get_source

    source = get_source(spec.source)
    if not source.takes_weights:
        return source.load(spec, None, 0, device)
    return source.load(apply_overrides(spec, {"depth": blocks, "layer": blocks - 1}), None, 0, device)


LOOP_VIEWS = {"tokens": 1, "scc": 2, "attention": 2}  # views each image of a forward loop passes through the model


def _forward_seconds(model: Any, loop: str, images: int, batch: int, device: str, workers: int = 0,
                     precision: str = "fp32") -> float:
    """Seconds per image (all its views) of one forward loop of the run, on synthetic scenes of the input size,
    through the run's own loading pipeline (``workers`` DataLoader processes, the forward ``precision``)."""
    import torch

    from scopebench.data.scenes import SyntheticScenes
    from scopebench.pipeline.extract import extract_scc_tokens, extract_tokens, iter_forward, scc_views
    from scopebench.pipeline.cache import ActivationStore

    data = SyntheticScenes(images, image_size=model.spec.image_size, seed=99)
    with tempfile.TemporaryDirectory() as folder:
        store = ActivationStore(folder)

        def run() -> None:
            if loop == "tokens":
                extract_tokens(model, data, store, batch_size=batch, device=device, progress=False,
                               workers=workers, precision=precision)
            elif loop == "scc":
                extract_scc_tokens(model, data, store, 1, batch_size=batch, device=device, progress=False,
                                   workers=workers, precision=precision)
            else:  # attention EMD's loop: SCC views with attention, streamed, nothing stored
                with torch.inference_mode():
                    for _ in iter_forward(model, data, np.arange(images), scc_views(model, 1), batch,
                                          torch.device(device), attention=True, workers=workers, precision=precision):
                        pass
            _sync(device)

        seconds = _timed(run)
    return seconds / images


def forward_rates(spec: BackboneSpec, loops: Iterable[str], batch: int, device: str,
                  images: int = 4, own_images: int = 32, workers: int = 0,
                  precision: str = "fp32") -> tuple[dict[str, float], str]:
    """Image views per second of each forward loop through ``spec``'s designated block, and how it was measured.

    Real sources: random-init models truncated to one and two blocks give the per-image cost of the
    data and the patch embedding (a) and of one block (b); the designated block ``layer`` costs
    a + (layer + 1) b, each measured on ``images`` scenes.  The planted backbone is timed as it is, on
    ``own_images`` scenes (enough to amortise each extraction's fixed cost: key, lock, seal).
    """
    from scopebench.backbones.sources import get_source

    loops = list(dict.fromkeys(loops))
    n = min(batch, images)
    if not get_source(spec.source).takes_weights:
        model = _calibration_model(spec, spec.depth, device)
        _forward_seconds(model, "tokens", 2, n, device, workers, precision)  # warm-up
        return ({loop: LOOP_VIEWS[loop] / _forward_seconds(model, loop, own_images, batch, device, workers, precision)
                 for loop in loops}, f"the {spec.name} backbone on {own_images} scenes, {workers} loader workers, {precision}")
    one, two = _calibration_model(spec, 1, device), _calibration_model(spec, 2, device)
    _forward_seconds(one, "tokens", 2, 2, device, workers, precision)  # warm-up
    rates = {}
    for loop in loops:
        t1 = _forward_seconds(one, loop, n, n, device, workers, precision)
        t2 = _forward_seconds(two, loop, n, n, device, workers, precision)
        block = max(t2 - t1, 0.0)
        rates[loop] = LOOP_VIEWS[loop] / (max(t1 - block, 0.0) + (spec.layer + 1) * block)
    return rates, (f"random-init 1- and 2-block models of {spec.name}'s shape on {n} scenes, per-block extrapolation, "
                   f"{workers} loader workers, {precision}")


# An SAE step multiplies batch x d_in x d_sae; above this many products a step is measured at a smaller
# batch and its time extrapolated linearly in the batch (a step's cost is linear in it plus a fixed part).
SAE_DIRECT_PRODUCTS = 2**31
STEP_ROUNDS = 5


def sae_rates(recipe: SAERecipeBase, d_in: int, device: str) -> tuple[float, float]:
    """``(seconds per optimisation step at the recipe's batch, tokens encoded+decoded per second)``."""
    import torch

    from scopebench.sae.arch import build_sae
    from scopebench.sae.training import optimisation_step

    config = recipe.sae_config(d_in)
    sae = build_sae(config)
    sae.initialise(torch.Generator().manual_seed(0))
    sae.to(device).train()
    opt = torch.optim.Adam(sae.parameters(), lr=recipe.lr, betas=recipe.adam_betas)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool, device=device)
    generator = torch.Generator().manual_seed(0)
    full = recipe.batch_size
    measured = full
    # a GPU step at the full batch takes milliseconds, and a small batch would leave the GPU mostly idle
    while torch.device(device).type != "cuda" and measured > 64 and measured * d_in * sae.d_sae > SAE_DIRECT_PRODUCTS:
        measured //= 2

    def step_seconds(batch: int) -> float:
        """The median of STEP_ROUNDS steps after a warm-up: a sustained run's pace, not its luckiest step."""
        batches = [torch.randn(batch, d_in, generator=generator).to(device)  # norm ~ sqrt(d_in), as in training
                   for _ in range(STEP_ROUNDS + 1)]
        optimisation_step(sae, opt, batches[0], dead, recipe.lr)
        _sync(device)
        return statistics.median(_timed(lambda: (optimisation_step(sae, opt, x, dead, recipe.lr), _sync(device)))
                                 for x in batches[1:])

    if measured == full:
        step = step_seconds(full)
    else:
        small, large = step_seconds(measured // 2), step_seconds(measured)
        slope = max(large - small, 0.0) / (measured - measured // 2)
        fixed = max(large - slope * measured, 0.0)
        step = fixed + slope * full if slope > 0 else large * full / measured
    sae.eval()
    x = torch.randn(measured, d_in, generator=generator).to(device)
    with torch.no_grad():
        sae(x)
        _sync(device)
        encode = statistics.median(_timed(lambda: (sae(x), _sync(device))) for _ in range(STEP_ROUNDS))
    return step, measured / encode


# Probe calibration: at most this many target values (images x classes x pixels) per measured batch.
PROBE_MAX_VALUES = 2**25


def probe_seconds_per_image_epoch(shape: ProbeShape, device: str, epochs: int = 2) -> float:
    """Seconds per training image per epoch of the real probe trainer on random inputs of ``shape``."""
    import torch

    from scopebench.probes.classification import ClassificationSplit, train_classification_probe
    from scopebench.probes.config import ClassificationConfig, DepthConfig, SegmentationConfig
    from scopebench.probes.depth import DepthSplit, train_depth_probe
    from scopebench.probes.segmentation import SegmentationSplit, train_segmentation_probe

    g = torch.Generator().manual_seed(0)
    pixels = max(shape.target_size, 1) ** 2
    # on a GPU the run's own batch (a smaller one would leave it idle), within GPU memory
    cap = PROBE_MAX_VALUES * (64 if torch.device(device).type == "cuda" else 1)
    n = max(1, min(shape.batch_size, cap // (shape.n_classes * pixels)))
    side, size = shape.grid_side, shape.target_size

    def run(rows: int, epochs: int) -> None:
        if shape.task == "cls":
            split = lambda k: ClassificationSplit(torch.randn(k, shape.dim, generator=g),  # noqa: E731
                                                  torch.randint(0, shape.n_classes, (k,), generator=g))
            config = ClassificationConfig(epochs=epochs, trials=1, batch_size=n)
            train_classification_probe(split(rows), split(1), n_classes=shape.n_classes, config=config,
                                       device=device, progress=False)
        elif shape.task == "seg":
            split = lambda k: SegmentationSplit(torch.randn(k, side, side, shape.dim, generator=g),  # noqa: E731
                                                torch.randint(0, shape.n_classes, (k, size, size), generator=g))
            config = SegmentationConfig(epochs=epochs, trials=1, batch_size=n, ignore_index=-1)
            train_segmentation_probe(split(rows), split(1), n_classes=shape.n_classes, config=config, device=device,
                                     progress=False)
        else:
            width = shape.dim // 2
            split = lambda k: DepthSplit(torch.randn(k, side, side, width, generator=g),  # noqa: E731
                                         torch.randn(k, width, generator=g),
                                         torch.rand(k, size, size, generator=g) * 9 + 1)
            config = DepthConfig(epochs=epochs, trials=1, batch_size=n, n_bins=shape.n_classes)
            train_depth_probe(split(rows), split(1), config=config, device=device, progress=False)
        _sync(device)

    run(n, 1)  # warm-up
    return _timed(lambda: run(n, epochs)) / (n * epochs)


#: What ``make_plan`` calibrates: every rate, only the EMD solvers' (seconds: the stages that take days on a
#: CPU or minutes on a GPU), or nothing (the work only).
ESTIMATES = ("all", "emd", "none")


def calibrate(spec: BackboneSpec, work: list[StageWork], recipe: SAERecipeBase, *, batch_size: int,
              device: str = "cpu", progress: bool = True, only_emd: bool = False, workers: int = 0,
              precision: str = "fp32") -> Calibration:
    """Measure every rate the estimate of ``work`` needs (a minute to many on a CPU for large models), or with
    ``only_emd`` the EMD solvers' alone (seconds per grid side)."""
    from tqdm.auto import tqdm

    emd_needed = sorted({(stage.emd_kind, stage.emd_method, side) for stage in work if stage.emd_kind
                         for side in stage.emd_pairs})
    probes = [] if only_emd else [stage.probe for stage in work if stage.probe is not None]
    loops = [] if only_emd else [stage.forward for stage in work if stage.forward]
    started = time.perf_counter()
    rates, note, step, encode, item = {}, "not measured", None, None, None
    with tqdm(total=2 + len(emd_needed) + len(probes), desc=f"calibrate {spec.name}", disable=not progress,
              leave=False) as bar:
        if not only_emd:
            rates, note = forward_rates(spec, loops, batch_size, device, workers=workers, precision=precision)
            step, encode = sae_rates(recipe, spec.embed_dim, device)
            item = item_seconds(spec.image_size)
        bar.update(2)
        emd = {}
        for kind, method, side in emd_needed:
            solver_device = device if method == "sinkhorn" else "cpu"
            emd[emd_key(kind, method, side)] = emd_seconds_per_pair(kind, method, side, device=solver_device)
            bar.update()
        probe_rates = {}
        for shape in probes:
            probe_rates[shape.task] = probe_seconds_per_image_epoch(shape, device)
            bar.update()
    return Calibration(device=str(device), cores=os.cpu_count() or 1, forward_per_second=rates,
                       sae_step_seconds=step, encode_tokens_per_second=encode, emd_seconds_per_pair=emd,
                       probe_seconds_per_image_epoch=probe_rates, item_seconds=item, forward_note=note,
                       seconds=time.perf_counter() - started)


def item_seconds(image_size: int, items: int = 8) -> float:
    """Seconds to read one dataset item: a synthetic scene of ``image_size`` rendered (real data: decoded)."""
    from scopebench.data.scenes import SyntheticScenes

    scenes = SyntheticScenes(items, image_size=image_size, seed=98)
    return _timed(lambda: [scenes[i] for i in range(items)]) / items


# ------------------------------------------------------------------------------------------ estimate
@dataclass(frozen=True)
class StageEstimate:
    seconds: float | None  # None: a rate it needs was not measured
    emd_seconds: float  # the EMD share of ``seconds`` (CPU core-hours = this x cores / 3600 for exact EMD)


def estimate(stage: StageWork, calibration: Calibration) -> StageEstimate:
    """Seconds of one stage: its work times the measured rates (None when one of them was not measured)."""
    emd = sum(pairs * calibration.emd_rate(stage.emd_kind, stage.emd_method, side)
              for side, pairs in stage.emd_pairs.items()) if stage.emd_kind else 0.0
    try:
        seconds = emd
        if stage.forward:
            seconds += extraction_seconds(stage.forward_passes, calibration.forward_per_second[stage.forward])
        if stage.sae_steps:
            seconds += stage.sae_steps * _measured(calibration.sae_step_seconds)
        if stage.encoded_tokens:
            seconds += stage.encoded_tokens / _measured(calibration.encode_tokens_per_second)
        if stage.dataset_reads:
            seconds += stage.dataset_reads * _measured(calibration.item_seconds)
        if stage.probe is not None:
            seconds += stage.probe_image_epochs * calibration.probe_seconds_per_image_epoch[stage.probe.task]
    except KeyError:
        return StageEstimate(None, emd)
    return StageEstimate(seconds, emd)


def _measured(rate: float | None) -> float:
    if rate is None:
        raise KeyError("rate not measured")
    return rate


# -------------------------------------------------------------------------------------------- cached
def cached_status(stage: StageWork, backbone: str, entries: list[Any],
                  identities: dict[str, str | None]) -> str:
    """What the activation store already holds of ``stage``: "yes", "k/n" of its entries, "partial", "no" or "-".

    Token entries match on backbone, kind, image count and (when the stage's dataset can be named
    here without reading a dataset) its identity; trained SAEs on backbone and recipe name.
    Analysis outputs other than attention EMD are not cached (they take seconds once tokens and SAE are).
    """
    if stage.cache_kind is None:
        return "-"
    if stage.cache_kind == "sae":
        found = [e for e in entries if e.kind == "sae" and e.info.get("backbone") == backbone
                 and e.info.get("name") == stage.cache_name and e.sealed and e.problem is None]
        return "yes" if found else "no"
    done = partial = 0
    for rows, purpose in zip(stage.cache_rows, stage.cache_purposes):
        identity = identities.get(purpose)
        states = [_token_state(e) for e in entries if e.kind == "tokens" and e.meta is not None
                  and e.meta.key.backbone == backbone and e.meta.key.kind == stage.cache_kind
                  and e.meta.n_rows == rows and (identity is None or e.meta.key.dataset == identity)]
        done += "complete" in states
        partial += "complete" not in states and "incomplete" in states
    total = len(stage.cache_rows)
    if done == total:
        return "yes"
    if done:
        return f"{done}/{total}"
    return "partial" if partial else "no"


def _token_state(entry: Any) -> str:
    if entry.problem is not None:
        return "corrupted"
    return "complete" if entry.meta.complete and entry.sealed else "incomplete"


def store_entries(store: Any) -> list[Any]:
    """Every artefact of ``store`` inspected cheaply (no checksums); none when the folder is missing."""
    if store.root_state() in ("missing", "foreign"):
        return []
    return [store.inspect(kind, path) for kind, path in store.find()]


def dataset_identities(spec: BackboneSpec, scale: BenchScale, work: list[StageWork],
                       data_root: Path | None) -> dict[str, str | None]:
    """Identity of each stage's dataset when it is cheap to name (synthetic scenes), else None."""
    from scopebench.backbones.sources import get_source
    from scopebench.suite.stages import bench_dataset

    purposes = [p for stage in work for p in stage.cache_purposes]
    if not get_source(spec.source).synthetic_scenes:
        return dict.fromkeys(purposes)
    return {p: bench_dataset(spec, p, scale, data_root).identity for p in purposes}


def shared_extractions(work: list[StageWork], identities: dict[str, str | None]) -> tuple[list[StageWork], list[str]]:
    """``work`` with the extractions an earlier stage already writes (same kind, dataset and images) emptied,
    and a note for each: the run reads those entries from the cache (planted: the dense probes share scenes)."""
    seen: dict[tuple[str | None, str, int], str] = {}
    out, notes = [], []
    for stage in work:
        keys = [(stage.cache_kind, identities.get(p), rows) for p, rows in zip(stage.cache_purposes, stage.cache_rows)]
        if stage.forward and keys and all(key[1] is not None and key in seen for key in keys):
            notes.append(f"{stage.name}: the images of {seen[keys[0]]}, extracted once")
            stage = dataclasses.replace(stage, images=0, views=0, forward=None, tokens_stored=0, cache_bytes=0)
        for key in keys:
            if key[1] is not None:
                seen.setdefault(key, stage.name)
        out.append(stage)
    return out, notes


# ------------------------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    backbone: str
    scale: str
    recipe: str
    stages: list[StageWork]
    estimates: list[StageEstimate] | None  # None: not calibrated
    cached: list[str] | None  # None: no store consulted
    calibration: Calibration | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        rows = []
        for i, stage in enumerate(self.stages):
            row = {key: value for key, value in asdict(stage).items() if not key.startswith("cache_")}
            row["emd_pairs"] = {str(side): pairs for side, pairs in stage.emd_pairs.items()}
            row["forward_passes"] = stage.forward_passes
            row["cache_bytes"] = stage.cache_bytes
            row["estimate_seconds"] = None if self.estimates is None else self.estimates[i].seconds
            row["emd_seconds"] = None if self.estimates is None else self.estimates[i].emd_seconds
            row["cached"] = None if self.cached is None else self.cached[i]
            rows.append(row)
        return {"backbone": self.backbone, "scale": self.scale, "recipe": self.recipe, "stages": rows,
                "notes": self.notes,
                "calibration": None if self.calibration is None else asdict(self.calibration)}


def make_plan(backbone: str, scale_name: str, scale: BenchScale, recipe_name: str = "batchtopk", *,
              estimate_rates: str = "all", device: str = "cpu", store: Any = None, data_root: Path | None = None,
              progress: bool = True, workers: int = 0, precision: str = "fp32") -> Plan:
    """The plan of one backbone at one scale for one SAE recipe; ``estimate_rates`` in :data:`ESTIMATES` says
    what is calibrated for its estimates."""
    if estimate_rates not in ESTIMATES:
        raise ValueError(f"estimate_rates must be one of {ESTIMATES}, got {estimate_rates!r}")
    from scopebench.backbones.registry import get_spec
    from scopebench.backbones.sources import get_source
    from scopebench.sae import load_recipe

    spec = get_spec(backbone)
    recipe = load_recipe(recipe_name)
    classes = dict(REAL_CLASSES)
    if get_source(spec.source).synthetic_scenes:
        from scopebench.suite.stages import bench_dataset

        scenes = bench_dataset(spec, "probe-cls-train", scale, data_root)
        classes = {"cls": scenes.n_classes, "seg": scenes.n_classes}
    every = plan_work(spec, scale, recipe, recipe_name, classes)
    identities = dataset_identities(spec, scale, every, data_root)
    work, notes = shared_extractions(every, identities)
    calibration = estimates = None
    if estimate_rates != "none":
        calibration = calibrate(spec, work, scaled_recipe(recipe, scale), batch_size=scale.batch_size, device=device,
                                progress=progress, only_emd=estimate_rates == "emd", workers=workers,
                                precision=precision)
        estimates = [estimate(stage, calibration) for stage in work]
    cached = None
    if store is not None:
        entries = store_entries(store)
        cached = [cached_status(stage, backbone, entries, identities) for stage in work]
    return Plan(backbone, scale_name, recipe_name, work, estimates, cached, calibration, notes)
