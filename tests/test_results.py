"""Result records: schema, NaN handling, atomic writes, validation errors, merging."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from scopebench.results import (
    FVU_NORMALISATION, BackboneInfo, ClaimVerdict, DatasetInfo, Definitions, Environment, ResultFileError,
    ResultRecord, SAEInfo, collect_environment, load_result, merge_results, result_path, save_merged, write_result,
)

ENV = Environment(python="3.12.0", torch="2.4.0", device="cpu", date_utc="2026-01-01T00:00:00Z")


def _record(measurements: dict, claims: dict | None = None, sha: str | None = "abc", **defs: object) -> ResultRecord:
    return ResultRecord(
        backbone=BackboneInfo(name="planted"), sae=SAEInfo(name="topk-32", config={"k": 32}, checkpoint_sha256=sha),
        datasets={"table6": DatasetInfo(name="scenes", identity="seed=0", n_images=8, n_tokens=1568)},
        definitions=Definitions(**defs), measurements=measurements, claims=claims or {}, environment=ENV,
    )


def test_roundtrip_turns_nan_into_null(tmp_path: Path) -> None:
    record = _record({"table6": {"fvu_a": 0.25, "fvu_o": math.nan}}, cds_k=10, tau="auto", tau_value=3.5)
    path = result_path(tmp_path, "planted", "topk-32")
    assert path == tmp_path / "planted__topk-32.json"
    write_result(record, path)
    raw = json.loads(path.read_text())
    assert raw["measurements"]["table6"] == {"fvu_a": 0.25, "fvu_o": None}
    assert raw["definitions"]["fvu_normalisation"] == FVU_NORMALISATION and raw["definitions"]["cds_k"] == 10
    assert raw["schema_version"] == 1
    assert load_result(path) == record
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_infinite_values_are_refused() -> None:
    with pytest.raises(ValueError, match="fvu_a is infinite"):
        _record({"table6": {"fvu_a": math.inf}})


def test_load_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    payload = _record({"table6": {"fvu_a": 0.1}}).model_dump(mode="json")
    payload["sae"]["name"] = 7
    payload["measurements"]["table6"]["fvu_a"] = "high"
    path.write_text(json.dumps(payload))
    with pytest.raises(ResultFileError) as info:
        load_result(path)
    message = str(info.value)
    assert str(path) in message and "field 'sae.name'" in message and "measurements.table6.fvu_a" in message
    path.write_text('{"schema_version": 1, "backbone": ')
    with pytest.raises(ResultFileError, match="not valid JSON"):
        load_result(path)
    with pytest.raises(ResultFileError, match="no such result file"):
        load_result(tmp_path / "missing.json")
    payload = _record({}).model_dump(mode="json") | {"schema_version": 2}
    path.write_text(json.dumps(payload))
    with pytest.raises(ResultFileError, match="schema_version"):
        load_result(path)


def test_crash_during_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    first = _record({"table6": {"fvu_a": 0.1}})
    write_result(first, path)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_result(_record({"table6": {"fvu_a": 0.9}}), path)
    monkeypatch.undo()
    assert load_result(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _verdict(passed: bool) -> ClaimVerdict:
    return ClaimVerdict(passed=passed, detail="d", source="Table 6", measured={"fvu_o": 0.1, "fvu_a": 0.2})


def test_merge_updates_what_ran_and_keeps_the_rest(tmp_path: Path) -> None:
    old = _record({"table6": {"fvu_a": 0.2, "fvu_o": 0.1}, "table7": {"attn_emd_out[s=1]": 5.0}},
                  {"table6.a": _verdict(False), "table7.b": _verdict(True)}, cds_k=10, gamma=0.2)
    new = _record({"table6": {"fvu_a": 0.15, "l0_a": 30.0}}, {"table6.a": _verdict(True)}, cds_shift=1)
    merged = merge_results(old, new)
    assert merged.measurements == {"table6": {"fvu_a": 0.15, "fvu_o": 0.1, "l0_a": 30.0},
                                   "table7": {"attn_emd_out[s=1]": 5.0}}
    assert merged.claims["table6.a"].passed and merged.claims["table7.b"].passed
    assert (merged.definitions.cds_k, merged.definitions.cds_shift, merged.definitions.gamma) == (10, 1, 0.2)

    save_merged(old, tmp_path)
    path, note = save_merged(new, tmp_path)
    assert note is None
    assert load_result(path).measurements == merged.measurements


def test_merge_drops_results_of_another_checkpoint() -> None:
    old = _record({"table7": {"attn_emd_out[s=1]": 5.0}}, sha="old")
    new = _record({"table6": {"fvu_a": 0.15}}, sha="new")
    assert merge_results(old, new).measurements == {"table6": {"fvu_a": 0.15}}
    unpinned = _record({"table7": {"attn_emd_out[s=1]": 5.0}}, sha=None)  # written before weights were hashed
    assert merge_results(unpinned, new).measurements == {"table6": {"fvu_a": 0.15}}
    reconfigured = _record({"table6": {"fvu_a": 0.15}}, sha=None)
    reconfigured = reconfigured.model_copy(update={"sae": SAEInfo(name="topk-32", config={"k": 64})})
    assert merge_results(_record({"table7": {"attn_emd_out[s=1]": 5.0}}, sha=None), reconfigured).measurements == \
        {"table6": {"fvu_a": 0.15}}
    same = _record({"table6": {"fvu_a": 0.15}}, sha="old")
    assert "table7" in merge_results(old, same).measurements
    other = ResultRecord(backbone=BackboneInfo(name="dinov2-b"), sae=SAEInfo(name="topk-32"), environment=ENV)
    with pytest.raises(ValueError, match="cannot merge"):
        merge_results(old, other)


def test_collect_environment_reports_installed_versions() -> None:
    import torch

    env = collect_environment(device="cpu")
    assert env.torch == torch.__version__.split("+")[0] or env.torch == torch.__version__
    assert env.date_utc.endswith("Z") and env.device == "cpu"


def test_schema_doc_covers_every_field_quantity_and_claim() -> None:
    from scopebench.claims import CLAIMS, QUANTITIES

    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text(encoding="utf-8")
    nested = {"backbone": BackboneInfo, "sae": SAEInfo, "definitions": Definitions, "environment": Environment}
    for name in ResultRecord.model_fields:
        assert f"`{name}" in doc, name
    for prefix, model in nested.items():
        for name in model.model_fields:
            assert f"`{prefix}.{name}`" in doc or (prefix == "environment" and f"`{name}`" in doc), (prefix, name)
    for name in list(DatasetInfo.model_fields) + list(ClaimVerdict.model_fields):
        assert f"`{name}`" in doc, name
    for name in QUANTITIES:
        assert f"`{name}`" in doc, name
    for claim in CLAIMS:
        assert f"`{claim.id}`" in doc, claim.id
