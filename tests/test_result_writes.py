"""Result files under concurrency and damage: every save lands, nothing unreadable is merged or lost."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from scopebench.analyses import RemovalProbesOutput
from scopebench.names import InvalidName
from scopebench.results.records import (
    AnalysisRecord, BackboneInfo, ResultRecord, SAEInfo, collect_environment, load_result, result_path, save_merged,
)

ENV = collect_environment()
FIELDS = ["cls_top1_original", "seg_miou_original", "depth_rmse_original", "cls_top1_low_removed",
          "seg_miou_low_removed"]  # one field per writer: same analysis and config, so they merge


def _record(field: str, value: float) -> ResultRecord:
    return ResultRecord(backbone=BackboneInfo(name="planted"), sae=SAEInfo(name="my-sae"), environment=ENV,
                        analyses={"removal_probes": AnalysisRecord(config={"epochs": 1}, output={field: value})})


def _save_after(barrier, results_dir: str, field: str) -> None:
    barrier.wait()
    save_merged(_record(field, 1.0), Path(results_dir))


def test_concurrent_saves_of_one_file_keep_every_table(tmp_path: Path) -> None:
    """Two processes merging different tables into one (backbone, SAE) file at the same instant:
    without the lock, both read the old file and the second write drops the first's table."""
    ctx = mp.get_context("spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork")
    for trial in range(6):
        folder = tmp_path / f"t{trial}"
        save_merged(_record(FIELDS[0], 0.0), folder)
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_save_after, args=(barrier, str(folder), field)) for field in FIELDS[1:]]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        stored = load_result(result_path(folder, "planted", "my-sae")).output("removal_probes").quantities()
        assert set(stored) - set(RemovalProbesOutput.DERIVED) == set(FIELDS), f"trial {trial} lost an update"


def test_unreadable_result_file_is_set_aside_not_lost(tmp_path: Path) -> None:
    path = result_path(tmp_path, "planted", "my-sae")
    path.write_text('{"schema_version": 1, "backbone": ')  # a truncated file from some other tool
    written, note = save_merged(_record("cls_top1_original", 0.5), tmp_path)
    assert written == path and load_result(path).output("removal_probes").quantities() == {"cls_top1_original": 0.5}
    aside = tmp_path / "planted__my-sae.json.corrupt-0"
    assert aside.read_text() == '{"schema_version": 1, "backbone": '
    assert note is not None and str(path) in note and aside.name in note


@pytest.mark.parametrize("name", ["-", "my sae", "../evil", "a/b", "ça", "x" * 65, "a__b", ".hidden", ""])
def test_result_path_refuses_names_outside_the_rule(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidName, match="names must be"):
        result_path(tmp_path, "planted", name)


def test_the_backbone_level_record_has_a_file_no_sae_name_can_take(tmp_path: Path) -> None:
    assert result_path(tmp_path, "planted", None).name == "planted.json"  # SAE files always hold "__"
