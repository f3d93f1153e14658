"""Result records (schema v2): analyses with config + dataset + output, NaN handling, atomic writes, validation
errors, merging, and reading version 1 files."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from scopebench.analyses import ANALYSES, AttentionEMDOutput, ReconstructionOutput
from scopebench.analyses.attention_emd.output import ShiftEMD
from scopebench.results.records import (
    AnalysisRecord, BackboneInfo, ClaimVerdict, DatasetInfo, Environment, ResultFileError, ResultRecord, SAEInfo,
    TakenName,
    collect_environment, load_result, merge_results, output_json, result_path, save_merged, write_result,
)

ENV = Environment(python="3.12.0", torch="2.4.0", device="cpu", date_utc="2026-01-01T00:00:00Z")
V1 = Path(__file__).with_name("data") / "results-v1"
DATA = DatasetInfo(name="scenes", identity="scenes:seed=2", n_images=8)


def _record(values: dict, claims: dict | None = None, sha: str | None = "abc", config: dict | None = None,
            dataset: DatasetInfo | None = DATA) -> ResultRecord:
    output = output_json(ReconstructionOutput(**values))
    return ResultRecord(
        backbone=BackboneInfo(name="planted"), sae=SAEInfo(name="topk-32", config={"k": 32}, checkpoint_sha256=sha),
        analyses={"reconstruction": AnalysisRecord(config=config or {"images": 8, "batch_images": 64},
                                                   dataset=dataset, output=output)},
        claims=claims or {}, environment=ENV)


def _attention(shifts: dict[int, float]) -> ResultRecord:
    output = AttentionEMDOutput(per_shift={s: ShiftEMD(outlier=v, non_outlier=v / 10, n_outlier=3, n_non_outlier=30)
                                           for s, v in shifts.items()}, tau=2.0)
    return ResultRecord(backbone=BackboneInfo(name="planted"), environment=ENV,
                        analyses={"attention_emd": AnalysisRecord(config={"images": 4}, output=output_json(output))})


def test_roundtrip_turns_nan_into_null(tmp_path: Path) -> None:
    record = _record({"fvu_a": 0.25, "fvu_o": math.nan})
    path = result_path(tmp_path, "planted", "topk-32")
    assert path == tmp_path / "planted__topk-32.json"
    write_result(record, path)
    raw = json.loads(path.read_text())
    output = raw["analyses"]["reconstruction"]["output"]
    assert (output["fvu_a"], output["fvu_o"], raw["schema_version"]) == (0.25, None, 2)
    assert raw["analyses"]["reconstruction"]["config"] == {"images": 8, "batch_images": 64}
    assert load_result(path) == record
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_backbone_level_analyses_live_in_the_backbone_record(tmp_path: Path) -> None:
    record = _attention({1: 5.0})
    path, _ = save_merged(record, tmp_path)
    assert path == tmp_path / "planted.json" and load_result(path).sae is None
    misplaced = _record({"fvu_a": 0.1}).model_dump()
    misplaced["analyses"]["attention_emd"] = record.analyses["attention_emd"].model_dump()
    with pytest.raises(ValueError, match="attention_emd: this analysis belongs in the backbone-level record"):
        ResultRecord.model_validate(misplaced)


def test_infinite_values_are_refused() -> None:
    with pytest.raises(ValueError, match="fvu_a is infinite"):
        _record({"fvu_a": math.inf})


def test_load_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    payload = _record({"fvu_a": 0.1}).model_dump(mode="json")
    payload["sae"]["name"] = 7
    payload["analyses"]["reconstruction"]["output"]["fvu_a"] = "high"
    path.write_text(json.dumps(payload))
    with pytest.raises(ResultFileError) as info:
        load_result(path)
    message = str(info.value)
    assert str(path) in message and "field 'sae.name'" in message
    payload["sae"]["name"] = "topk-32"
    payload["analyses"]["reconstruction"]["output"]["fvu_typo"] = 1.0
    path.write_text(json.dumps(payload))
    with pytest.raises(ResultFileError, match=r"analyses.reconstruction.output .*fvu_typo"):
        load_result(path)
    path.write_text('{"schema_version": 2, "backbone": ')
    with pytest.raises(ResultFileError, match="not valid JSON"):
        load_result(path)
    with pytest.raises(ResultFileError, match="no such result file"):
        load_result(tmp_path / "missing.json")
    path.write_text(json.dumps(_record({}).model_dump(mode="json") | {"schema_version": 3}))
    with pytest.raises(ResultFileError, match=r"schema_version 3 cannot be read by this scopebench \(it reads 1, 2\)"):
        load_result(path)


def test_crash_during_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    first = _record({"fvu_a": 0.1})
    write_result(first, path)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_result(_record({"fvu_a": 0.9}), path)
    monkeypatch.undo()
    assert load_result(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _verdict(passed: bool) -> ClaimVerdict:
    return ClaimVerdict(passed=passed, detail="d", source="Table 6", measured={"fvu_o": 0.1, "fvu_a": 0.2})


def test_merge_updates_what_ran_and_keeps_the_rest(tmp_path: Path) -> None:
    old = _record({"fvu_a": 0.2, "fvu_o": 0.1}, {"table6.a": _verdict(False), "table6.b": _verdict(True)})
    new = _record({"fvu_a": 0.15, "l0_a": 30.0}, {"table6.a": _verdict(True)})
    merged = merge_results(old, new)
    output = merged.output("reconstruction")
    assert (output.fvu_a, output.fvu_o, output.l0_a) == (0.15, 0.1, 30.0)  # same config and images: merged
    assert merged.claims["table6.a"].passed and merged.claims["table6.b"].passed
    other_config = _record({"fvu_a": 0.3}, config={"images": 16, "batch_images": 64})
    assert merge_results(old, other_config).output("reconstruction").fvu_o is None  # another config: replaced
    save_merged(old, tmp_path)
    path, note = save_merged(new, tmp_path)
    assert note is None and load_result(path).output("reconstruction") == output


def test_attention_at_more_shifts_merges_into_the_backbone_record(tmp_path: Path) -> None:
    save_merged(_attention({1: 5.0}), tmp_path)
    path, _ = save_merged(_attention({2: 6.0, 3: 7.0}), tmp_path)
    assert load_result(path).output("attention_emd").quantities() == {
        "attn_emd_out[s=1]": 5.0, "attn_emd_non[s=1]": 0.5, "attn_emd_out[s=2]": 6.0, "attn_emd_non[s=2]": 0.6,
        "attn_emd_out[s=3]": 7.0, "attn_emd_non[s=3]": 0.7}


def test_another_model_under_the_same_name_is_refused_unless_replaced(tmp_path: Path) -> None:
    old = _record({"fvu_o": 0.1}, sha="old")
    new = _record({"fvu_a": 0.15}, sha="new")
    with pytest.raises(TakenName, match="planted/topk-32 is already taken by another model .*--replace"):
        merge_results(old, new)
    unpinned = _record({"fvu_o": 0.1}, sha=None)  # written before weights were hashed
    with pytest.raises(TakenName):
        merge_results(unpinned, new)
    reconfigured = new.model_copy(update={"sae": SAEInfo(name="topk-32", config={"k": 64})})
    with pytest.raises(TakenName):
        merge_results(_record({"fvu_o": 0.1}, sha=None), reconfigured)
    path, _ = save_merged(old, tmp_path)
    with pytest.raises(TakenName):
        save_merged(new, tmp_path)
    assert load_result(path).sae.checkpoint_sha256 == "old"
    path, note = save_merged(new, tmp_path, replace=True)
    assert load_result(path).sae.checkpoint_sha256 == "new" and "kept as planted__topk-32.json.replaced-0" in note
    assert load_result(tmp_path / "planted__topk-32.json.replaced-0").sae.checkpoint_sha256 == "old"


def test_version_1_files_are_upgraded_quantity_by_quantity(tmp_path: Path) -> None:
    """The planted results as the v1 suite wrote them: every value lands in its analysis, none twice."""
    for source in V1.glob("*.json"):
        shutil.copy(source, tmp_path / source.name)
    old = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    attention = load_result(tmp_path / "planted__-.json")
    assert attention.sae is None and attention.upgraded_from == 1 and set(attention.analyses) == {"attention_emd"}
    want = {k: v for table in old["planted__-.json"]["measurements"].values() for k, v in table.items()}
    assert attention.output("attention_emd").quantities() == want
    for name in ("planted__batchtopk.json", "planted__topk.json"):
        record = load_result(tmp_path / name)
        got = {k: v for a in record.analyses for k, v in record.output(a).quantities().items() if k != "tau"}
        want = {k: v for table in old[name]["measurements"].values() for k, v in table.items() if v is not None}
        derived = {k: got.pop(k) for k in list(got) if any(k in a.output.DERIVED for a in ANALYSES.values())}
        assert got == want, name  # table3 and figure8 both held cls_top1_*: now stored once
        # quantities added since v1 follow from the stored ones, so the old file gains them when read
        assert derived == {"high_share": want["n_high"] / (want["n_low"] + want["n_high"]),
                           "cls_top1_low_removal_gap": want["cls_top1_original"] - want["cls_top1_low_removed"]}
        assert record.claims.keys() == old[name]["claims"].keys()
        assert record.output("reconstruction").tau == old[name]["definitions"]["tau_value"]
        assert record.analyses["cds"].config == {"k": old[name]["definitions"]["cds_k"],
                                                 "shift": old[name]["definitions"]["cds_shift"]}
    bad = old["planted__topk.json"]
    bad["measurements"]["table6"]["fvu_typo"] = 1.0
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ResultFileError, match="cannot upgrade this v1 file .*fvu_typo: not a quantity"):
        load_result(tmp_path / "bad.json")


def test_collect_environment_reports_installed_versions() -> None:
    import torch

    env = collect_environment(device="cpu")
    assert env.torch == torch.__version__.split("+")[0] or env.torch == torch.__version__
    assert env.date_utc.endswith("Z") and env.device == "cpu"


def test_schema_doc_covers_every_field_and_claim_and_its_quantity_table_is_generated() -> None:
    from scopebench.claims.registry import CLAIMS
    from scopebench.results.records import quantity_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text(encoding="utf-8")
    nested = {"backbone": BackboneInfo, "sae": SAEInfo, "environment": Environment}
    for name in ResultRecord.model_fields:
        assert f"`{name}" in doc, name
    for prefix, model in nested.items():
        for name in model.model_fields:
            assert f"`{prefix}.{name}`" in doc or (prefix == "environment" and f"`{name}`" in doc), (prefix, name)
    for name in list(DatasetInfo.model_fields) + list(ClaimVerdict.model_fields) + list(AnalysisRecord.model_fields):
        assert f"`{name}`" in doc, name
    assert quantity_table() in doc, "the quantity table is stale: paste `scopebench quantities` into the doc"
    for name in ANALYSES:
        assert f"`{name}`" in doc, name
    for claim in CLAIMS:
        assert claim.id in doc or claim.table in doc, claim.id


def test_a_baseline_retrained_elsewhere_is_the_same_model_but_another_recipe_is_not() -> None:
    """Bench-trained baselines are pinned by what they were trained from: another CPU gives other weight bits."""
    old = _record({"fvu_o": 0.1}, sha="bits-on-avx512")
    old = old.model_copy(update={"sae": old.sae.model_copy(update={"training": "key-a"})})
    again = _record({"fvu_a": 0.15}, sha="bits-on-avx2")
    again = again.model_copy(update={"sae": again.sae.model_copy(update={"training": "key-a"})})
    merged = merge_results(old, again).output("reconstruction")
    assert (merged.fvu_o, merged.fvu_a) == (0.1, 0.15)
    other = again.model_copy(update={"sae": again.sae.model_copy(update={"training": "key-b"})})
    with pytest.raises(TakenName):
        merge_results(old, other)
