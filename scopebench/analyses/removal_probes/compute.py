from __future__ import annotations

from scopebench import distributed
from scopebench.analyses.base import Inputs, Unavailable
from scopebench.analyses.removal_probes.config import TASKS, RemovalProbesConfig
from scopebench.analyses.removal_probes.output import RemovalProbesOutput
from scopebench.backbones import get_spec
from scopebench.analyses.removal_probes.probing import (SPLITS, TARGET_FIELDS, OriginalProbe, ProbeInputs,
                                                       ProbeScores, classification_metrics, dense_metrics,
                                                       probe_targets)
from scopebench.precision import with_precision


def _propagation(bench: Inputs, backbone: str, config: RemovalProbesConfig):
    """The backbone's ``propagate`` when the config asks for propagation, else None."""
    if not config.propagate:
        return None
    propagate = getattr(bench.backbone(backbone), "propagate", None)
    if propagate is None:
        raise Unavailable(f"{backbone} has no blocks after its SAE layer to propagate edited tokens through; "
                         "run its removal cases without --propagate")
    return propagate


def _original_probe(bench: Inputs, backbone: str, task: str, config: RemovalProbesConfig,
                    inputs: dict[str, ProbeInputs]) -> OriginalProbe:
    """The original embedding's probe, kept in the activation store: trained once per backbone and task.

    Its tokens do not depend on the SAE, so every SAE benched on ``backbone`` after the first
    pairs its removals with the same probe and trains two probes per task instead of three.
    ``version`` changes whenever the probes' arithmetic does (2: the depth head sums over its bins in the last
    dimension, which moved the planted RMSEs by about 1e-6), so a probe kept by older code is never paired
    with this code's removals.
    """
    model = bench.backbone(backbone)
    key = {"analysis": "removal_probes.original", "backbone": backbone, "weights": model.weights_id,
           "layer": model.spec.layer, "task": task, "version": 2,
           "data": {split: bench.dataset(backbone, f"probe-{task}-{split}").identity for split in SPLITS},
           "config": config.probe(task).model_dump(mode="json"), "propagate": config.propagate,
           "target_size": config.dense_target_size}
    key = with_precision(key, bench.precision)
    return lambda train: bench.persisted(key, ProbeScores, lambda: ProbeScores.of(train()))


def task_scores(bench: Inputs, backbone: str, sae: str, task: str, config: RemovalProbesConfig) -> dict[str, float]:
    """The three embeddings' scores of one task (cls / seg / depth)."""
    spec = get_spec(backbone)
    size = config.dense_target_size or spec.image_size
    inputs = {}
    for split in SPLITS:
        purpose = f"probe-{task}-{split}"
        acts = bench.tokens(backbone, purpose)
        dataset = bench.dataset(backbone, purpose)
        targets = bench.once(("probe-targets", backbone, purpose, size),
                             lambda: probe_targets(dataset, TARGET_FIELDS[task], size))
        inputs[split] = ProbeInputs(tokens=acts.tokens, prefix=acts.prefix, targets=targets)
    model = bench.sae(backbone, sae)
    cds = bench.run("cds", backbone, sae)
    _, groups = cds.details
    if groups is None:
        raise Unavailable(f"removal probes need the low/high-CDS partition, and {sae} on {backbone} has none: "
                          f"{cds.no_partition}")
    propagate = _propagation(bench, backbone, config)
    # under torchrun the probes train on rank 0 alone, where the store's memo (a collective there) cannot be used
    original = _original_probe(bench, backbone, task, config, inputs) if distributed.world_size() == 1 else None

    def probe() -> dict[str, float]:
        if task == "cls":
            return classification_metrics(model, groups, inputs, config=config.classification, device=bench.device,
                                          progress=bench.progress, propagate=propagate, bootstrap=config.bootstrap,
                                          original=original)
        return dense_metrics(task, model, groups, inputs,
                             has_cls=spec.has_cls, config=config.probe(task),
                             device=bench.device, progress=bench.progress, propagate=propagate,
                             bootstrap=config.bootstrap, original=original)

    # the inputs above are shared by every rank of a torchrun launch (extraction, the SAE, CDS are split over
    # them); the probes are small and train on rank 0 alone, which hands its scores to the others
    return distributed.from_main(probe, f"{task} probes of {sae} on {backbone}")


def compute(bench: Inputs, backbone: str, sae: str, config: RemovalProbesConfig, *,
            tasks: tuple[str, ...] = TASKS) -> RemovalProbesOutput:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown probe task(s) {unknown}; use {', '.join(TASKS)}")
    values: dict[str, float] = {}
    for task in tasks:  # several tasks: each through bench.run, so each task's scores are memoised on their own
        values.update(bench.run("removal_probes", backbone, sae, tasks=(task,)).quantities()
                      if len(tasks) > 1 else task_scores(bench, backbone, sae, task, config))
    return RemovalProbesOutput(**values)
