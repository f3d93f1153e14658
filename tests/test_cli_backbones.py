"""`scopebench backbones`: registry rows against the paper's Table 5, provenance, and local weight status."""
from __future__ import annotations

import json

import pytest
from cli_tables import parse_table

from scopebench.backbones.registry import REGISTRY
from scopebench.backbones.weights import CONFIG_ENV
from scopebench.cli.main import main
from scopebench.cli.backbones import ordinal


pytestmark = pytest.mark.usefixtures("offline_hub")


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(capsys, *argv: str) -> dict[str, dict[str, str]]:
    code, out, _ = _cli(capsys, "backbones", *argv)
    assert code == 0
    return {row["name"]: row for row in parse_table(out, "name")}


def test_ordinal_wording():
    assert [ordinal(n) for n in (1, 2, 3, 4, 10, 11, 12, 13, 21, 22, 23, 40, 101, 111, 112)] == [
        "1st", "2nd", "3rd", "4th", "10th", "11th", "12th", "13th", "21st", "22nd", "23rd", "40th", "101st",
        "111th", "112th"]


# The supplement's Table 5 as DESIGN.md quotes it: (0-based layer, the paper's wording, tau).
TABLE5 = {
    "dinov2-b": ("10", "11th", "100"), "dinov2-l": ("22", "23rd", "100"), "dinov2-g": ("39", "40th (last)", "150"),
    "deit3-s": ("9", "10th", "500"), "deit3-b": ("8", "9th", "500"), "deit3-l": ("17", "18th", "1000"),
    "siglip2-b": ("11", "12th (last)", "150"), "siglip2-l": ("23", "24th (last)", "150"),
    "siglip2-g": ("26", "27th (last)", "300"),
}
# CLIP: the paper does not state layer or tau (our choice, starred: penultimate block, auto); gamma is Table 4's.
CLIP = {"clip-b16": ("10*", "11th*", "auto*", "0.14"), "clip-l14": ("22*", "23rd*", "auto*", "0.2"),
        "clip-l14-336": ("22*", "23rd*", "auto*", "0.13")}


def test_rows_state_table5_and_mark_inferred_values(capsys):
    rows = _rows(capsys)
    assert list(rows) == list(REGISTRY)
    for name, (layer, wording, tau) in TABLE5.items():
        row = rows[name]
        assert (row["layer"], row["layer (paper)"], row["tau"], row["gamma"]) == (layer, wording, tau, "auto")
        assert row["source"] == "timm" and row["weights"] == "missing"
    for name, expected in CLIP.items():
        row = rows[name]
        assert (row["layer"], row["layer (paper)"], row["tau"], row["gamma"]) == expected
        assert row["source"] == "open_clip" and row["tag"] == "openai"
    assert rows["siglip2-g"]["model id"] == "vit_so400m_patch14_siglip_224" and rows["siglip2-g"]["depth"] == "27"
    assert rows["dinov2-b"]["image"] == "518" and rows["dinov2-b"]["patch"] == "14"
    assert rows["planted"]["weights"] == "built-in" and rows["planted"]["layer"] == "1*"


def test_provenance_table(capsys):
    rows = _rows(capsys, "--provenance")
    assert rows["clip-b16"]["layer"] == "inferred" and rows["clip-b16"]["gamma"] == "paper Table 4"
    assert rows["dinov2-g"]["layer"] == "paper Table 5" and rows["dinov2-g"]["tau"] == "paper Table 5"
    assert rows["dinov2-g"]["gamma"] == "–" and rows["deit3-b"]["pretrained_tag"] == "inferred"
    assert rows["siglip2-l"]["depth"] == "model config" and rows["planted"]["n_heads"] == "design"


def test_weights_column_finds_local_files(tmp_path, monkeypatch, capsys):
    snapshot = tmp_path / "hub" / "models--timm--deit3_small_patch16_224.fb_in22k_ft_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"not read by the listing")
    clip = tmp_path / "clip.safetensors"
    clip.write_bytes(b"x")
    config = tmp_path / "weights.json"
    config.write_text(json.dumps({"clip-b16": str(clip)}))
    monkeypatch.setenv(CONFIG_ENV, str(config))
    rows = _rows(capsys)
    found = {name for name, row in rows.items() if row["weights"] == "found"}
    assert found == {"deit3-s", "clip-b16"}
    planted = {"planted", "planted-b", "planted-l"}
    assert {row["weights"] for name, row in rows.items() if name in planted} == {"built-in"}
    assert {row["weights"] for name, row in rows.items() if name not in found | planted} == {"missing"}


def test_name_filter_unknown_name_and_bad_config(tmp_path, monkeypatch, capsys):
    assert list(_rows(capsys, "deit3-l", "clip-b16")) == ["deit3-l", "clip-b16"]
    code, _, err = _cli(capsys, "backbones", "vit-huge")
    assert code == 2 and "unknown backbone(s) vit-huge" in err and "dinov2-b" in err
    config = tmp_path / "weights.yaml"
    config.write_text("clip-b16: /x")
    monkeypatch.setenv(CONFIG_ENV, str(config))
    code, _, err = _cli(capsys, "backbones")
    assert code == 2 and str(config) in err and ".json or .toml" in err


def test_help_names_every_column(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["backbones", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "--provenance" in out and "designated layer" in out and "offline" in out
