"""Table 3's classification gain and Figure 8's narrowing gap, in the planted truth.

The bench measures the gain with an SAE (removing its high-CDS features).  This checks the planted data
itself, with no SAE: on the bench's own classification scenes and probe (``PLANTED_SCALE``), a probe on
the pooled local parts alone beats one on the pooled tokens (local + context + global parts), with a
paired-bootstrap interval over the test scenes above zero.  At population level extra features cannot
hurt a linear probe; the gain is the finite-sample nuisance fit the planted backbone's docstring describes.
Across the planted family, the context of the larger sizes says more of the class.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scopebench.analyses.removal_probes.probing import SPLITS, probe_targets
from scopebench.backbones.planted import PlantedBackbone
from scopebench.backbones.registry import get_spec
from scopebench.claims.registry import PLANTED_FAMILY
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.cache import ActivationStore
from scopebench.pipeline.loader import ResizedView, batch_plan, load_views
from scopebench.probes.bootstrap import paired_interval, resampled_top1
from scopebench.probes.classification import ClassificationSplit, train_classification_probe
from scopebench.probes.standardize import fit_standardize
from scopebench.suite.scales import PLANTED_SCALE
from scopebench.suite.workbench import Workbench


@pytest.mark.bench_scale
def test_removing_the_planted_context_raises_a_linear_probes_top1(tmp_path):
    bench = Workbench(ActivationStore(tmp_path), device="cpu", progress=False, scales={"planted": PLANTED_SCALE})
    backbone = bench.backbone("planted")
    resize = ResizedView(backbone.preprocess.image_size, backbone.preprocess.interpolation)
    pooled, labels = {}, {}
    for split in SPLITS:
        data = bench.dataset("planted", f"probe-cls-{split}")
        labels[split] = probe_targets(data, "label", 0)
        parts = []
        for views in load_views(data, np.arange(len(data)), resize, batch_plan(len(data), 128), workers=0,
                                target=torch.device("cpu")):
            truth = backbone.truth(views[""])
            parts.append(torch.stack([truth.local_part.mean(1), (truth.context_part + truth.global_part).mean(1)]))
        pooled[split] = torch.cat(parts, dim=1)
    # the bench's probe, standardised by the full tokens' training statistics as the bench standardises all
    config = PLANTED_SCALE.removal_probes.probe("cls")
    standardizer = fit_standardize(pooled["train"].sum(0))
    n_classes = int(labels["train"].max()) + 1
    correct = {}
    for name, features in (("tokens", lambda s: pooled[s].sum(0)), ("local", lambda s: pooled[s][0])):
        result = train_classification_probe(*(ClassificationSplit(features(s), labels[s]) for s in SPLITS),
                                            n_classes=n_classes, config=config, progress=False,
                                            standardizer=standardizer)
        correct[name] = result.test_scores
    assert len(correct["tokens"]) == PLANTED_SCALE.removal_probes.task_images["cls"][2]
    lo, hi = paired_interval(correct["tokens"], correct["local"], resampled_top1, PLANTED_SCALE.removal_probes.bootstrap)
    gain = 100.0 * (correct["local"].float().mean() - correct["tokens"].float().mean()).item()
    assert lo > 0, f"removing the planted context changes top-1 by {gain:+.2f} points, interval " \
                   f"[{100 * lo:+.2f}, {100 * hi:+.2f}]: it does not mislead the probe"


@pytest.mark.slow
def test_the_larger_planted_sizes_context_tells_a_linear_probe_more_of_the_class():
    """Figure 8's trend, in the planted truth: a probe on what removing the local parts leaves (the pooled
    context and global parts) reads the class better at each larger size of the planted family, so the
    low-removal gap narrows (paired-bootstrap interval of each step over the test scenes above zero)."""
    sizes = {name: PlantedBackbone(get_spec(name), seed=0) for name in PLANTED_FAMILY}
    counts = dict(zip(SPLITS, (256, 64, 256)))
    scenes = {split: SyntheticScenes(n, image_size=get_spec("planted").image_size, seed=40 + i)
              for i, (split, n) in enumerate(counts.items())}
    labels = {split: probe_targets(data, "label", 0) for split, data in scenes.items()}
    resize = ResizedView(sizes[PLANTED_FAMILY[0]].preprocess.image_size,
                         sizes[PLANTED_FAMILY[0]].preprocess.interpolation)
    pixels = {split: [views[""] for views in load_views(data, np.arange(len(data)), resize,
                                                        batch_plan(len(data), 128), workers=0,
                                                        target=torch.device("cpu"))]
              for split, data in scenes.items()}
    config = PLANTED_SCALE.removal_probes.probe("cls").model_copy(update={"epochs": 30, "trials": 1})
    correct = {}
    for name, backbone in sizes.items():
        pooled = {s: torch.cat([(t.context_part + t.global_part).mean(1) for t in map(backbone.truth, pixels[s])])
                  for s in SPLITS}
        splits = [ClassificationSplit(pooled[s], labels[s]) for s in SPLITS]
        correct[name] = train_classification_probe(*splits, n_classes=scenes["train"].n_classes, config=config,
                                                   progress=False).test_scores
    for smaller, larger in zip(PLANTED_FAMILY, PLANTED_FAMILY[1:]):
        lo, hi = paired_interval(correct[smaller], correct[larger], resampled_top1,
                                 PLANTED_SCALE.removal_probes.bootstrap)
        accuracy = {n: 100.0 * correct[n].float().mean().item() for n in (smaller, larger)}
        assert lo > 0, f"context-only top-1 {accuracy}: interval of the step [{100 * lo:+.2f}, {100 * hi:+.2f}]"
