"""`scopebench recipes`: rows against the recipe JSON files themselves, and clear errors for bad ones."""
from __future__ import annotations

import json
from pathlib import Path

from cli_tables import parse_table

from scopebench.cli.main import main
from scopebench.sae.arch import ARCHITECTURES
from scopebench.sae.recipe import BASELINES_DIR


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _shown(value) -> str:
    """A JSON value as the table prints it: numbers as %g, lists without spaces."""
    if isinstance(value, list):
        return "[" + ",".join(_shown(item) for item in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_baseline_rows_match_their_json_files(capsys):
    code, out, _ = _cli(capsys, "recipes")
    assert code == 0
    rows = {row["name"]: row for row in parse_table(out, "name")}
    files = sorted(BASELINES_DIR.glob("*.json"))
    assert list(rows) == [path.stem for path in files] and len(files) >= 5
    for path in files:
        raw = json.loads(path.read_text())
        row = rows[path.stem]
        assert row["architecture"] == raw["architecture"]
        assert row["expansion"] == f"x{raw['expansion_factor']}"
        assert float(row["lr"]) == raw["lr"] and int(row["batch"]) == raw["batch_size"]
        assert row["tokens"] == f"{raw['epochs']} epoch x {raw['tokens_per_image']}/image"
        # the architecture's own fields, from the registry, in declaration order; the file's values where it sets them
        shown = dict(item.split("=", 1) for item in row["architecture fields"].split())
        assert list(shown) == list(ARCHITECTURES[raw["architecture"]].fields)
        for field, value in raw.items():
            if field in shown:
                assert shown[field] == _shown(value)
    assert rows["relu"]["architecture fields"].split() == [  # the cell wraps between fields
        "target_l0=30", "l0_calibration_fraction=0.8", "l0_calibration_gain=0.02", "l1_coeff=0.01"]
    assert rows["topk"]["architecture fields"] == "k=30 aux_k=512 aux_k_coeff=0.03125"
    assert "group_fractions=[0.0625,0.125,0.25,0.5,1]" in rows["matryoshka"]["architecture fields"]
    assert "k=" not in rows["jumprelu"]["architecture fields"]  # no field of another architecture


def test_overrides_show_d_sae_and_token_budget(tmp_path: Path, capsys):
    (tmp_path / "wide.json").write_text(json.dumps({"architecture": "topk", "d_sae": 4096, "k": 8, "lr": 1e-3,
                                                    "batch_size": 512, "n_tokens": 2_000_000}))
    (tmp_path / "long.json").write_text(json.dumps({"architecture": "jumprelu", "expansion_factor": 16,
                                                    "epochs": 3, "tokens_per_image": 2}))
    code, out, _ = _cli(capsys, "recipes", "--baselines-dir", str(tmp_path))
    assert code == 0
    rows = {row["name"]: row for row in parse_table(out, "name")}
    assert list(rows) == ["long", "wide"]
    assert rows["wide"] == {"name": "wide", "architecture": "topk", "expansion": "d_sae=4096", "lr": "0.001",
                            "batch": "512", "tokens": "2,000,000",
                            "architecture fields": "k=8 aux_k=256 aux_k_coeff=0.03125"}  # defaults filled in
    assert rows["long"]["expansion"] == "x16" and rows["long"]["tokens"] == "3 epochs x 2/image"
    assert rows["long"]["batch"] == "4096"  # the recipe default


def test_bad_recipes_are_named_with_exit_2(tmp_path: Path, capsys):
    bad = tmp_path / "typo.json"
    bad.write_text(json.dumps({"architecture": "topk", "expansion": 32}))
    code, out, err = _cli(capsys, "recipes", "--baselines-dir", str(tmp_path))
    assert code == 2 and out == "" and str(bad) in err and "expansion: unknown field" in err
    assert "did you mean 'expansion_factor'?" in err
    bad.write_text("{architecture: topk}")
    code, _, err = _cli(capsys, "recipes", "--baselines-dir", str(tmp_path))
    assert code == 2 and f"recipe {bad} is not valid JSON" in err
    code, _, err = _cli(capsys, "recipes", "--baselines-dir", str(tmp_path / "nowhere"))
    assert code == 2 and "no baselines folder" in err
    bad.unlink()
    code, out, _ = _cli(capsys, "recipes", "--baselines-dir", str(tmp_path))
    assert code == 0 and out == f"no recipes (*.json) in {tmp_path}\n"


def test_good_recipes_are_listed_and_each_bad_one_is_named_with_its_problem(tmp_path: Path, capsys):
    (tmp_path / "good.json").write_text(json.dumps({"architecture": "topk", "k": 8}))
    (tmp_path / "syntax.json").write_text("{architecture: topk}")
    (tmp_path / "range.json").write_text(json.dumps({"architecture": "relu", "lr": -1}))
    (tmp_path / "zgood.json").write_text(json.dumps({"architecture": "relu"}))
    code, out, err = _cli(capsys, "recipes", "--baselines-dir", str(tmp_path))
    assert code == 2
    assert [row["name"] for row in parse_table(out, "name")] == ["good", "zgood"]
    assert f"recipe {tmp_path / 'syntax.json'} is not valid JSON" in err
    assert f"invalid SAE recipe {tmp_path / 'range.json'}:\n  - lr: Input should be greater than 0 (got -1)" in err
    assert "2 invalid recipe(s)" in err and "range.json, syntax.json" in err and "good.json" not in err
