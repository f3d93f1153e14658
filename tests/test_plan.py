"""scopebench.suite.plan and `scopebench plan`: the work counted from the configs, checked against what a tiny
run stores; the estimate's arithmetic; the calibration's extrapolation; the table and the command."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from cli_tables import parse_table

from scopebench.backbones.registry import REGISTRY, get_spec
from scopebench.cli.main import main
from scopebench.cli.plan import WIDTH, render_plan
from scopebench.pipeline.cache import ActivationStore
from scopebench.sae import load_recipe
from scopebench.sae.training import LOSS_LOG_FILE
from scopebench.suite import plan as planning
from scopebench.suite.plan import (
    Calibration, ProbeShape, StageEstimate, StageWork, emd_key, estimate, extraction_seconds, make_plan, plan_work,
)
from scopebench.suite.scales import PAPER_SCALE, PLANTED_SCALE, scale_for
from scopebench.suite.workbench import Workbench

TINY_SCALE = PLANTED_SCALE.updated({
    "train_images": 12, "batch_size": 8, "sae_overrides": {"n_tokens": 4 * 256, "batch_size": 256},
    "reconstruction": {"images": 6}, "cds": {"images": 5}, "attention_emd": {"images": 2},
    "removal_probes": {"task_images": {"seg": (6, 4, 4)}},  # seg's training split: as many images as eval
})


def test_paper_scale_work_is_the_papers_arithmetic() -> None:
    """CLIP-L/14-336 at paper scale: the issue's numbers, from the registry and the paper's sizes."""
    spec = get_spec("clip-l14-336")
    work = {stage.name: stage for stage in plan_work(spec, PAPER_SCALE, load_recipe("batchtopk"), "batchtopk")}
    p = spec.image_size // spec.patch_size  # 24
    assert work["extract train"].tokens_stored == 1_281_167 * (4 + 1)  # 4 sampled patches + CLS per image
    assert work["extract train"].cache_bytes == 1_281_167 * 5 * 1024 * 4
    assert work["train SAE batchtopk"].sae_steps == 1_281_167 * 4 // 4096 == 1251
    attention = work["attention EMD s=1..6"]
    assert attention.emd_pairs == {p - s: 1000 * 16 * (p - s) ** 2 for s in range(1, 7)}
    assert attention.total_emd_pairs == 40_624_000 and attention.forward_passes == 1000 * 2 * 6
    assert work["CDS"].emd_pairs == {23: 1024 * 32 * 10}  # every feature's top-10 images
    assert work["extract eval"].tokens_stored == 5000 * (p * p + 1)
    assert work["probe seg"].probe_epochs == 3 * 5 * 100


def test_work_matches_what_a_tiny_run_stores(tmp_path) -> None:
    """Tokens, bytes and SAE steps the plan counts are those the workbench writes; cached flips to yes."""
    store = ActivationStore(tmp_path / "cache")
    plan = make_plan("planted", "tiny", TINY_SCALE, estimate_rates="none", store=store)
    assert set(plan.cached) <= {"no", "-"}
    bench = Workbench(store, device="cpu", progress=False, scales={"planted": TINY_SCALE})
    entries = {"extract train": bench.tokens("planted", "train").entry,
               "extract eval": bench.tokens("planted", "eval").entry,
               "extract scc s=1": bench.scc_tokens("planted", 1).entry,
               "awCDS": bench.tokens("planted", "scc").entry}  # awCDS reads the CDS images' plain tokens
    bench.sae("planted", "batchtopk")
    stages = {stage.name: stage for stage in plan.stages}
    for name, entry in entries.items():
        tokens = [array for key, array in entry.arrays.items() if key.startswith(("tokens", "prefix"))]
        assert stages[name].tokens_stored == sum(len(a) * a.row_shape[0] for a in tokens)
        assert stages[name].cache_bytes == sum(len(a) * int(np.prod(a.row_shape)) * 4 for a in tokens)
    (sae_folder,) = [path for kind, path in store.find() if kind == "sae"]
    assert len(json.loads((sae_folder / LOSS_LOG_FILE).read_text())) == stages["train SAE batchtopk"].sae_steps
    again = make_plan("planted", "tiny", TINY_SCALE, estimate_rates="none", store=store)
    cached = dict(zip((s.name for s in again.stages), again.cached))
    assert [cached[name] for name in (*entries, "train SAE batchtopk")] == ["yes"] * 5
    # eval's entry has as many images as seg's training split: matched by dataset, it is not taken for it
    assert cached["extract probe-seg"] == cached["extract probe-cls"] == "no"


def test_planted_dense_probes_share_their_scenes_and_are_extracted_once() -> None:
    plan = make_plan("planted", "planted", PLANTED_SCALE, estimate_rates="none")
    stages = {stage.name: stage for stage in plan.stages}
    assert stages["extract probe-seg"].forward_passes == 448 and stages["extract probe-depth"].forward_passes == 0
    assert plan.notes == ["extract probe-depth: the images of extract probe-seg, extracted once"]
    # on real data ADE20K and NYUd are different images: both extracted
    paper = {s.name: s for s in make_plan("dinov2-b", "paper", PAPER_SCALE, estimate_rates="none").stages}
    assert paper["extract probe-depth"].forward_passes == 50_000 + 80 + 654


def _calibration() -> Calibration:
    return Calibration(device="cpu", cores=2, forward_per_second={"tokens": 10.0, "attention": 4.0},
                       sae_step_seconds=0.5, encode_tokens_per_second=1000.0,
                       emd_seconds_per_pair={emd_key("dense", "exact", 3): 0.01, emd_key("dense", "exact", 2): 0.001},
                       probe_seconds_per_image_epoch={"seg": 0.2})


def test_estimate_is_the_work_times_the_measured_rates() -> None:
    stage = StageWork("s", images=5, views=4, forward="attention", sae_steps=3, encoded_tokens=2000,
                      emd_kind="dense", emd_pairs={3: 100, 2: 1000}, probe_image_epochs=7.0,
                      probe=ProbeShape("seg", 8, 4, 16, 3, 2))
    found = estimate(stage, _calibration())
    emd = 100 * 0.01 + 1000 * 0.001
    assert found == StageEstimate(pytest.approx(20 / 4.0 + 3 * 0.5 + 2.0 + emd + 7 * 0.2), pytest.approx(emd))
    emd_only = dataclasses.replace(_calibration(), forward_per_second={}, sae_step_seconds=None,
                                   encode_tokens_per_second=None, probe_seconds_per_image_epoch={})
    assert estimate(stage, emd_only) == StageEstimate(None, pytest.approx(emd))  # the rest was not measured
    assert estimate(StageWork("e", emd_kind="dense", emd_pairs={2: 10}), emd_only).seconds == pytest.approx(0.01)
    assert extraction_seconds(50, 25.0) == 2.0
    with pytest.raises(ValueError, match="views_per_second must be > 0"):
        extraction_seconds(10, 0.0)


def test_forward_rate_extrapolates_per_block(monkeypatch) -> None:
    """1 block: a + b seconds per image, 2 blocks: a + 2b; the designated block `layer` costs a + (layer+1) b."""
    spec = get_spec("deit3-b")  # layer 8
    monkeypatch.setattr(planning, "_calibration_model", lambda spec, blocks, device: blocks)
    loaders = set()

    def seconds(model, loop, n, batch, device, workers, precision):
        loaders.add((workers, precision))
        return 0.3 + 0.2 * model
    monkeypatch.setattr(planning, "_forward_seconds", seconds)
    rates, note = planning.forward_rates(spec, ["tokens", "scc"], batch=32, device="cpu", workers=3, precision="bf16")
    assert loaders == {(3, "bf16")}  # timed through the run's own loader and precision
    assert rates["tokens"] == pytest.approx(1 / (0.3 + 9 * 0.2))
    assert rates["scc"] == pytest.approx(2 / (0.3 + 9 * 0.2))  # an SCC image is two views
    assert "per-block" in note


def test_calibration_measures_real_rates_on_a_tiny_model(monkeypatch) -> None:
    """The calibration's own measurements run (shrunken timm model, SAE steps, EMD, a probe) and are positive."""
    from scopebench.backbones.loader import apply_overrides

    tiny = apply_overrides(get_spec("deit3-s"), {"image_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 32,
                                                 "n_heads": 2, "layer": 2})
    rates, _ = planning.forward_rates(tiny, ["tokens"], batch=2, device="cpu", images=2)
    recipe = load_recipe("topk").model_copy(update={"expansion_factor": 2, "batch_size": 64})
    monkeypatch.setattr(planning, "SAE_DIRECT_PRODUCTS", 32 * 64 * 16)  # force the two-batch extrapolation
    step, encode = planning.sae_rates(recipe, 32, "cpu")
    emd = planning.emd_seconds_per_pair("sparse", "exact", 4, min_seconds=0.01, max_pairs=64)
    probe = planning.probe_seconds_per_image_epoch(ProbeShape("cls", 8, 4, 0, 3, 4), "cpu", epochs=1)
    assert min(rates["tokens"], step, encode, emd, probe) > 0 and math.isfinite(step)


def test_table_fits_120_columns_for_every_backbone() -> None:
    for name in REGISTRY:
        plan = make_plan(name, "default", scale_for(name), estimate_rates="none")
        plan.estimates = [StageEstimate(123_456.0 * (i + 1), 0.0) for i in range(len(plan.stages))]
        plan.cached = ["partial"] * len(plan.stages)
        text = render_plan(plan)
        assert max(len(line) for line in text.splitlines()) <= WIDTH, name
        rows = parse_table(text, "stage")
        assert [row["stage"] for row in rows] == [stage.name for stage in plan.stages] + ["total"]


def test_plan_command_prints_every_backbone_and_writes_json(capsys, tmp_path) -> None:
    out = tmp_path / "plans.json"
    code = main(["plan", "--backbone", "all", "--estimate", "none", "--cache-dir", str(tmp_path / "c"), "--json",
                 str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert [plan["backbone"] for plan in json.loads(out.read_text())["plans"]] == list(REGISTRY)
    assert all(f"{name}: " in printed for name in REGISTRY)
    rows = {row["stage"]: row for row in parse_table(printed.split("\n\n", 1)[0].split("\n", 1)[1], "stage")}
    assert rows["extract train"]["images"] == "1.28M" and rows["attention EMD s=1..6"]["grid"] == "13..8"


def test_plan_command_refuses_unknown_names(capsys) -> None:
    assert main(["plan", "--backbone", "vit-huge", "--estimate", "none"]) == 2
    assert "unknown backbone(s) vit-huge; known: clip-b16" in capsys.readouterr().err
    assert main(["plan", "--backbone", "planted", "--recipe", "nosuch", "--estimate", "none"]) == 2
    assert "no SAE recipe" in capsys.readouterr().err
    assert main(["plan", "--backbone", "planted", "--workers", "-1", "--estimate", "none"]) == 2
    assert "--workers -1: give 0" in capsys.readouterr().err
