"""Result files under concurrency and damage: every save lands, nothing unreadable is merged or lost."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from scopebench.names import InvalidName
from scopebench.results import (
    BackboneInfo, ResultRecord, SAEInfo, collect_environment, load_result, result_path, save_merged,
)

ENV = collect_environment()


def _record(table: str, value: float) -> ResultRecord:
    return ResultRecord(backbone=BackboneInfo(name="planted"), sae=SAEInfo(name="my-sae"),
                        measurements={table: {"x": value}}, environment=ENV)


def _save_after(barrier, results_dir: str, table: str) -> None:
    barrier.wait()
    save_merged(_record(table, 1.0), Path(results_dir))


def test_concurrent_saves_of_one_file_keep_every_table(tmp_path: Path) -> None:
    """Two processes merging different tables into one (backbone, SAE) file at the same instant:
    without the lock, both read the old file and the second write drops the first's table."""
    ctx = mp.get_context("spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork")
    for trial in range(6):
        folder = tmp_path / f"t{trial}"
        save_merged(_record("base", 0.0), folder)
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_save_after, args=(barrier, str(folder), f"table{i}")) for i in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        tables = load_result(result_path(folder, "planted", "my-sae")).measurements
        assert set(tables) == {"base", "table0", "table1", "table2", "table3"}, f"trial {trial} lost a table"


def test_unreadable_result_file_is_set_aside_not_lost(tmp_path: Path) -> None:
    path = result_path(tmp_path, "planted", "my-sae")
    path.write_text('{"schema_version": 1, "backbone": ')  # a truncated file from some other tool
    written, note = save_merged(_record("table6", 0.5), tmp_path)
    assert written == path and load_result(path).measurements == {"table6": {"x": 0.5}}
    aside = tmp_path / "planted__my-sae.json.corrupt-0"
    assert aside.read_text() == '{"schema_version": 1, "backbone": '
    assert note is not None and str(path) in note and aside.name in note


@pytest.mark.parametrize("name", ["my sae", "../evil", "a/b", "ça", "x" * 65, "a__b", ".hidden", ""])
def test_result_path_refuses_names_outside_the_rule(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidName, match="names must be"):
        result_path(tmp_path, "planted", name)


def test_the_backbone_level_record_keeps_its_reserved_slot(tmp_path: Path) -> None:
    assert result_path(tmp_path, "planted", "-").name == "planted__-.json"
